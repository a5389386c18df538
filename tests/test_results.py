"""The per-seed results pipeline end to end on the `ci` preset: real runs, real games,
complete tables; and reading without computing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from whypretrain.train import data
from whypretrain import distributed, errors, presets
from whypretrain.engine import interactions, sparsify
from whypretrain.measures import curves, knowledge, stats
from whypretrain.study import extraction, games, pipeline, seed_results
from whypretrain.provenance import sources_of
from whypretrain.train.runs import Run


@pytest.fixture(scope="module")
def ci(tmp_path_factory):
    params = presets.resolve("ci", {"workdir": str(tmp_path_factory.mktemp("ci"))})
    for seed in params["seeds"]:  # one by one: what compute_seeds is compared with
        seed_results.compute(params, seed=seed, progress=False)
    pipeline.compute(params, progress=False)  # the study result, from the seeds stored
    return params, seed_results.load(params, seed=0)


def own_workdir(params: dict, tmp_path: Path) -> dict:
    """``params`` on a copy of the module's ci workdir (runs and results), for a test that
    computes in it: the module's stays as the fixture left it."""
    shutil.copytree(params["workdir"], tmp_path / "w", ignore=shutil.ignore_patterns(".lock"))
    return {**params, "workdir": str(tmp_path / "w")}


def test_games_cover_every_checkpoint_and_the_probe(ci):
    params, a = ci
    epochs = list(range(params["epochs"] + 1))
    assert a.labels == [("probe", params["epochs"])] + [("finetune", e) for e in epochs] \
        + [("scratch", e) for e in epochs]
    assert a.result.values.shape == (len(a.labels), len(a.sample_ids), 1 << params["n"])
    assert a.players.shape == (len(a.sample_ids), params["n"])
    # ci explains digits whether or not its models get them right: every class is there
    assert not params["only_correct"]
    assert len(a.sample_ids) == params["samples_per_class"] * 10
    assert a.eligible == a.candidates


def test_interactions_explain_the_games(ci):
    _, a = ci
    bound = 0.04 * (a.result.values[..., -1:] - a.result.values[..., :1]).abs()
    err = (a.result.reconstruct() - a.result.values).abs()
    assert (err <= bound + 1e-9).all()
    assert (a.result.loss <= a.result.loss_start + 1e-9).all()


def test_table_is_complete_and_nan_only_where_undefined(ci):
    params, a = ci
    table = a.table(params["tau"])
    n = params["n"]
    samples = len(a.sample_ids)
    know = table[table["measure"].isin(list(knowledge.KNOWLEDGE_MEASURES))]
    assert (know["epoch"] == params["epochs"]).all()  # the final models' real epoch
    assert set(know["measure"]) == set(knowledge.KNOWLEDGE_MEASURES)
    assert len(know) == samples * len(knowledge.KNOWLEDGE_MEASURES) * (n + 2)
    nan = table[table["value"].isna()]
    assert nan["measure"].str.match("(weighted_|chance_)?(share_|ratio_)").all()
    # where K_preserve has items the ratio is defined
    wide = know[know["order"] == -1].pivot(index="sample", columns="measure", values="value")
    defined = wide["count_preserve"] > 0
    assert wide.loc[defined, "ratio_learnable"].notna().all()
    assert wide.loc[~defined, "ratio_learnable"].isna().all()


def test_final_checkpoint_is_identical_to_itself(ci):
    params, a = ci
    table = a.table(params["tau"])
    final = table[(table["epoch"] == params["epochs"]) & table["measure"].isin(
        ["jaccard_weighted", "jaccard_set"])]
    assert len(final) == 2 * 2 * len(a.sample_ids)
    assert np.allclose(final["value"], 1.0)
    ft_vs_ft = table[(table["model"] == "finetune") & (table["epoch"] == params["epochs"])
                     & (table["measure"] == "jaccard_weighted_vs_finetune")]
    assert np.allclose(ft_vs_ft["value"], 1.0)


def test_results_are_reused_and_resume_to_the_same_numbers(ci):
    params, a = ci
    result = a.path / f"interactions-{a.engine_tag}.pt"
    stamp = result.stat().st_mtime_ns
    again = seed_results.compute(params, seed=0, progress=False)
    assert result.stat().st_mtime_ns == stamp
    result.unlink()   # as if killed during sparsification
    resumed = seed_results.compute(params, seed=0, progress=False)
    assert torch.equal(resumed.result.I_and, again.result.I_and)
    assert torch.equal(resumed.result.I_or, again.result.I_or)


def test_other_engine_parameters_reuse_the_games(ci):
    params, a = ci
    games = (a.path / "games.pt").stat().st_mtime_ns
    # the exact optimiser reads no step count: changing it reuses the interactions too
    same = seed_results.compute({**params, "iterations": 50}, seed=0, progress=False)
    assert same.path == a.path and same.engine_tag == a.engine_tag
    other = seed_results.compute({**params, "optimizer": "sgd", "iterations": 50}, seed=0,
                            progress=False)
    assert other.path == a.path and other.engine_tag != a.engine_tag
    assert (a.path / "games.pt").stat().st_mtime_ns == games
    assert torch.equal(other.result.values, a.result.values)
    assert not torch.equal(other.result.I_and, a.result.I_and)


def test_every_seed_reads_the_same_games(ci):
    """The nulls compare models of two seeds: same samples, same players, other models."""
    params, a = ci
    b = seed_results.compute(params, seed=1, progress=False)
    assert b.path != a.path and b.runs != a.runs
    assert b.sample_ids == a.sample_ids
    assert torch.equal(b.x, a.x) and torch.equal(b.players, a.players)
    assert not torch.equal(b.result.values, a.result.values)


def test_samples_are_those_every_given_model_gets_right(ci):
    """choose_samples keeps what all models classify correctly (ci's scratch models are at
    chance, so the rule is checked on the two seeds' fine-tuned models and a probe)."""
    params, _ = ci
    ds = data.load_datasets(params)
    chosen = [seed_results.find_runs(params, s, ds)[k].load_model().eval()
              for s, k in ((0, "finetune"), (1, "finetune"), (0, "probe"))]
    ids, looked, eligible = games.choose_samples(ds.target_test, chosen, 3, True)
    x, y = (torch.stack([torch.as_tensor(ds.target_test[i][k]) for i in
                         range(len(ds.target_test))]) for k in (0, 1))
    right = torch.stack([m(x).argmax(-1) == y for m in chosen]).all(0)
    assert looked == len(ds.target_test) and eligible == int(right.sum()) > 0
    assert right[ids].all()
    per_class = {c: [i for i in right.nonzero()[:, 0].tolist() if y[i] == c][:3]
                 for c in range(10)}
    assert ids == sorted(i for c in per_class.values() for i in c)


@pytest.mark.slow
def test_rule_and_joint_extraction_reuse_the_games(ci):
    """Another rule or the joint extraction is another engine tag on the same games; the rule
    reaches the same objectives within tol; joint decomposes the final models of every seed
    together (their rows found by ``final_rows``), in one program, and every other checkpoint
    alone."""
    params, a = ci
    reverse = seed_results.compute({**params, "rule": "reverse"}, seed=0, progress=False)
    assert reverse.path == a.path and reverse.engine_tag != a.engine_tag
    torch.testing.assert_close(reverse.result.loss, a.result.loss, rtol=1e-4, atol=0)
    setting = {**params, "extraction": "joint"}
    joint = seed_results.compute_seeds(setting, list(params["seeds"]), progress=False)
    assert len(joint) == len(params["seeds"]) == 2
    assert joint[0].path == a.path and joint[0].engine_tag not in (a.engine_tag,
                                                                  reverse.engine_tag)
    alone = [seed_results.load(params, seed) for seed in params["seeds"]]
    finals = extraction.final_rows(len(a.labels))
    assert finals == [joint[0].row_of(m) for m in games.MODELS]
    # one program: the stacked final models of both seeds, probe, fine-tuned, scratch each
    together = sparsify.sparsify(torch.cat([r.result.values[finals] for r in alone]),
                                 extraction="joint")
    for k, r in enumerate(joint):
        assert torch.equal(r.result.I_and[finals], together.I_and[3 * k:3 * k + 3])
        assert torch.equal(r.result.I_or[finals], together.I_or[3 * k:3 * k + 3])
    # each seed records the pooled program's loss per sample: one number for all six final
    # models, above what seed 0's three models reach in a program of their own
    for r in joint:
        assert torch.equal(r.result.loss[finals], together.loss[:3])
    own = sparsify.sparsify(alone[0].result.values[finals], extraction="joint")
    assert (own.loss[0] < joint[1].result.loss[finals[0]]).all()
    # a single seed's compute reads the same pooled program
    one = seed_results.compute(setting, seed=1, progress=False)
    assert torch.equal(one.result.I_and, joint[1].result.I_and)
    others = [r for r in range(len(a.labels)) if r not in finals]
    scale = float(a.result.values.abs().max())
    torch.testing.assert_close(joint[0].result.I_and[others], a.result.I_and[others], rtol=0,
                               atol=1e-9 * scale)
    p = joint[0].result.params
    assert p["extraction"] == "joint" and p["gap"] <= 1e-4 and p["joint_models"] == 6


def test_players_are_shared_by_every_model_and_fixed_by_the_seed(ci):
    params, a = ci
    import whypretrain.engine.masking as masking
    for j, i in enumerate(a.sample_ids):
        expected = masking.choose_players(a.x[j], params["n"], params["patch"],
                                          games.player_seed(i, params["player_seed"]), params["player_choice"])
        assert torch.equal(a.players[j], expected)


def test_summary_over_seeds_has_spread_columns(ci):
    """Mean over samples per seed, then over the two seeds: sd with ddof 1 and the Student-t
    interval, whose quantile at one degree of freedom is the Cauchy one, tan(pi (0.975 - 1/2)),
    worked out here by hand from each seed's own table."""
    params, a = ci
    b = seed_results.load(params, seed=1)
    table = pd.concat([a.table(params["tau"]), b.table(params["tau"])], ignore_index=True)
    summary = stats.summarize(table)
    assert {"mean", "std", "ci_low", "ci_high", "n_seeds", "n_samples"} <= set(summary.columns)
    key = ["model", "epoch", "measure", "order"]
    for measure in ("count_probe", "share_discarded"):
        rows = table[(table["measure"] == measure) & (table["order"] == knowledge.ALL_ORDERS)]
        for group, part in rows.groupby(key):
            m0, m1 = (part[part["seed"] == s]["value"].dropna().mean() for s in (0, 1))
            row = summary.set_index(key).loc[group]
            assert row["n_seeds"] == 2 and row["n_samples"] == part["value"].notna().sum()
            sd = abs(m0 - m1) / np.sqrt(2)
            half = np.tan(np.pi * (0.975 - 0.5)) * sd / np.sqrt(2)
            assert row["mean"] == pytest.approx((m0 + m1) / 2)
            assert row["std"] == pytest.approx(sd)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx(((m0 + m1) / 2 - half,
                                                                     (m0 + m1) / 2 + half))
    assert (summary["std"] > 0).any()  # the seeds differ somewhere: a spread to check
    one = stats.summarize(a.table(params["tau"]))  # one seed: no spread, no interval
    assert (one["n_seeds"] <= 1).all() and one[["std", "ci_low", "ci_high"]].isna().all().all()


def test_extraction_table_is_each_games_objective_and_certified_bound(ci):
    """One row per game (model, epoch, sample): the engine's objective and lower bound, and the
    relative gap (loss - bound) / loss; the study result holds every seed's."""
    params, a = ci
    t = a.extraction()
    assert sources_of(t).results == (a.hash,)
    assert list(zip(t["model"], t["epoch"], t["sample"])) == [
        (m, e, sid) for m, e in a.labels for sid in a.sample_ids]
    loss, bound = a.result.loss.flatten().numpy(), a.result.loss_bound.flatten().numpy()
    np.testing.assert_array_equal(t["loss"], loss)
    np.testing.assert_array_equal(t["loss_bound"], bound)
    np.testing.assert_allclose(t["gap"], np.where(loss > 0, (loss - bound) / loss, 0.0),
                               rtol=1e-12, atol=1e-15)
    assert (t["loss_bound"] <= t["loss"] + 1e-12).all() and (t["gap"] >= -1e-12).all()
    stored = pipeline.read(params).part("near/extraction")
    b = seed_results.load(params, seed=1)
    both = pd.concat([a.extraction().assign(seed=0), b.extraction().assign(seed=1)])
    pd.testing.assert_frame_equal(stored.reset_index(drop=True),
                                  both.reset_index(drop=True)[list(stored.columns)],
                                  check_dtype=False)


def test_compare_with_sgd_is_the_exact_extraction_against_its_own_reference(ci, monkeypatch):
    """Given the exact solution itself as the SGD result: ratio 1 and Jaccard 1 on every
    final game. On the real SGD run the study stored: its objective is never below the exact
    optimum's certified lower bound (SGD's point is feasible for the same problem)."""
    from types import SimpleNamespace

    params, a = ci
    rows = [a.row_of(m) for m in games.MODELS]
    itself = SimpleNamespace(loss=a.result.loss[rows], stacked=lambda: a.result.stacked()[rows])
    monkeypatch.setattr(extraction.sparsify, "sparsify", lambda *args, **kw: itself)
    same = extraction.compare_with_sgd(a)
    assert list(zip(same["model"], same["sample"])) == [
        (m, sid) for m in games.MODELS for sid in a.sample_ids]
    np.testing.assert_array_equal(same["exact"], a.result.loss[rows].flatten().numpy())
    assert (same["ratio"] == 1).all() and (same["jaccard"] == 1).all()
    assert sources_of(same).results == (a.hash,)
    monkeypatch.undo()
    sgd = pipeline.read(params).part("near/sgd")
    np.testing.assert_array_equal(sgd["exact"], same["exact"])
    bound = a.result.loss_bound[rows].flatten().numpy()
    assert (sgd["sgd"].to_numpy() >= bound * (1 - 1e-9)).all()
    np.testing.assert_allclose(sgd["ratio"], sgd["sgd"] / sgd["exact"], rtol=1e-12)
    assert sgd["jaccard"].between(0, 1).all()


def test_excluding_the_empty_set_is_salience_on_the_other_terms(ci):
    """exclude: the same items as include once the order-0 terms are 0, at a threshold set by
    the other terms only."""
    params, a = ci
    I = a.interactions_of("finetune")
    rest = I.clone()
    rest[..., 0] = 0
    assert torch.equal(knowledge.salient_items(rest, params["tau"], "include"),
                       knowledge.salient_items(I, params["tau"]))
    assert (knowledge.salient_items(I, params["tau"])[..., 0] == 0).all()


def test_analysed_checkpoints_are_even_with_the_first_and_last_epochs():
    assert games.analysed_epochs(list(range(21)), "all") == list(range(21))
    assert games.analysed_epochs(list(range(21)), 8) == [0, 3, 6, 9, 11, 14, 17, 20]
    assert games.analysed_epochs(list(range(21)), 6) == [0, 4, 8, 12, 16, 20]
    assert games.analysed_epochs(list(range(11)), 8) == [0, 1, 3, 4, 6, 7, 9, 10]
    assert games.analysed_epochs(list(range(21)), 2) == [0, 20]
    assert games.analysed_epochs(list(range(5)), 100) == [0, 1, 2, 3, 4]


def test_finals_only_analysis_matches_the_full_one_on_the_final_models(ci, tmp_path):
    params, a = ci
    finals = seed_results.compute(own_workdir(params, tmp_path), seed=0, progress=False,
                                  finals_only=True)
    assert finals.labels == [("probe", params["epochs"]), ("finetune", params["epochs"]),
                             ("scratch", params["epochs"])]
    for model in games.MODELS:
        torch.testing.assert_close(finals.interactions_of(model), a.interactions_of(model),
                                   rtol=0, atol=1e-9)
    table = finals.table(params["tau"])
    assert not table["measure"].str.startswith("jaccard").any()


def test_a_seed_beyond_curve_seeds_is_read_at_its_final_models_only(ci, tmp_path):
    """curve_seeds = 1: seed 1 is analysed at its three final models. Its knowledge rows are
    those of the full analysis; it has no convergence rows; the crossed curves score seed 0
    alone (against seed 1's final fine-tuned model); the comparisons across seeds are the
    full study's."""
    params, _ = ci
    full = pipeline.read(params)
    p = {**own_workdir(params, tmp_path), "curve_seeds": 1}
    short = pipeline.compute(p, progress=False)
    t, f = short.part("near/knowledge"), full.part("near/knowledge")
    final = params["epochs"]
    assert set(t.loc[t["seed"] == 1, "epoch"]) == {final}
    assert not t.loc[t["seed"] == 1, "measure"].str.startswith("jaccard").any()
    keys = ["seed", "sample", "model", "epoch", "measure", "order"]
    def knowledge_rows(table):
        return table[~table["measure"].str.startswith("jaccard") & (table["epoch"] == final)]
    merged = knowledge_rows(f).merge(knowledge_rows(t), on=keys, suffixes=("_full", "_short"),
                                     how="outer")
    assert len(merged) == len(knowledge_rows(f)) == len(knowledge_rows(t))
    np.testing.assert_allclose(merged["value_short"], merged["value_full"], atol=1e-9)
    assert set(curves.convergence_measures(t)["seed"]) == {0}
    crossed = short.part("near/crossed")
    assert set(crossed["seed"]) == {0} and set(crossed["partner"]) == {1}
    pd.testing.assert_frame_equal(
        short.part("near/comparisons").sort_values(keys + ["comparison", "partner"])
        .reset_index(drop=True),
        full.part("near/comparisons").sort_values(keys + ["comparison", "partner"])
        .reset_index(drop=True), check_exact=False, atol=1e-9)
    ds = data.load_datasets(p)
    folder = seed_results.results_path(p, 1, seed_results.find_runs(p, 1, ds), finals_only=True)
    assert (folder / "games.pt").is_file()


def test_reading_finds_what_compute_stored_and_names_its_sources(ci):
    params, a = ci
    read = seed_results.load(params, seed=0)
    assert read.path == a.path and torch.equal(read.result.I_and, a.result.I_and)
    assert read.sources().results == (a.hash,)
    assert set(read.sources().runs) == set(a.runs.values()) and len(a.runs) == 4
    table = pipeline.read(params).part("near/knowledge")   # the study result holds both seeds'
    b = seed_results.load(params, seed=1)
    assert sources_of(table).results == (a.hash, b.hash)
    pd.testing.assert_frame_equal(table, pd.concat([a.table(), b.table()], ignore_index=True))


def test_or_merge_keep_leaves_low_order_or_terms_and_explains_the_same_games(ci):
    params, a = ci
    keep = extraction.run_engine(a.result.values, {**params, "or_merge": "keep"})
    merged = a.result
    low = interactions.popcount(params["n"]) <= 1
    assert keep.I_or[..., low].abs().sum() > 0          # kept as OR
    assert (merged.I_or[..., low] == 0).all()           # moved into AND
    # the same interactions in total: the move only relabels terms
    torch.testing.assert_close(keep.I_and + keep.I_or, merged.I_and + merged.I_or,
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(keep.reconstruct(), merged.reconstruct(), rtol=0, atol=1e-9)


def test_reading_an_empty_workdir_raises_and_writes_nothing(tmp_path):
    params = presets.resolve("ci", {"workdir": str(tmp_path)})
    from whypretrain.report import findings
    result = pipeline.read(params)
    for read in (lambda: seed_results.load(params, 0), lambda: result.part("near/knowledge"),
                 lambda: result.part("near/metrics"), lambda: findings.judge(result),
                 lambda: findings.transfer_table(result), lambda: result.part("sensitivity")):
        with pytest.raises(errors.MissingResults,
                           match="whypretrain (train|analyze|study) --preset ci"):
            read()
    assert list(tmp_path.iterdir()) == []


def test_explorer_shows_the_empty_set_only_under_include(ci):
    from whypretrain.report import charts
    params, a = ci
    _, _, items, members = charts.explorer_data(a, max_items=10 ** 6)
    assert len(items) and not items["label"].str.endswith(" {}").any()
    assert (items["order"] >= 1).all()
    # the strongest real interaction of each sample is 1 in one of the two models
    assert np.allclose(items.groupby("sample")["strength"].max(), 1.0)
    include = seed_results.SeedResults(**{**a.__dict__, "params": {**params, "empty_set": "include"}})
    _, _, items_in, _ = charts.explorer_data(include, max_items=10 ** 6)
    empty = items_in[items_in["order"] == 0]
    assert len(empty) and empty["label"].isin(["AND {}", "OR {}"]).all()
    assert set(members["item_id"]) <= set(items["item_id"])
    # the chart builds from these tables (whichever data transformer an earlier test enabled:
    # vegafusion only serialises to Vega)
    import altair as alt
    with alt.data_transformers.enable("default", max_rows=None):
        charts.explorer(a, tau=params["tau"]).to_dict()


# --- timings and chunks of the extraction -------------------------------------------------------
def test_each_step_records_its_time_and_a_reused_step_keeps_it(ci, tmp_path):
    params, a = ci
    timing = json.loads((a.path / "timings.json").read_text())
    assert timing["seed"] == 0 and timing["games"] == a.result.loss.numel()
    assert timing["masking_s"] > 0 and timing["extraction_s"][a.engine_tag] > 0
    assert not (a.path / f"partial-{a.engine_tag}").exists()  # the chunks went
    own = own_workdir(params, tmp_path)
    folder = Path(own["workdir"]) / "results" / a.hash
    def files():  # the lock file aside: compute takes the folder's lock to read it
        return {p.name: p.read_bytes() for p in folder.iterdir()
                if p.is_file() and p.name != ".lock"}

    before = files()
    again = seed_results.compute(own, seed=0, progress=False)  # everything reused
    assert again.path == folder and files() == before


def test_training_runs_record_their_seconds(ci):
    _, a = ci
    for kind, name in a.runs.items():
        run = Run(a.path.parent.parent / "runs" / name)
        assert run.seconds > 0, kind


@pytest.mark.parametrize("world", [1, 2, 3])
def test_chunks_to_solve_skip_the_kept_ones_and_cover_the_rest_once(world):
    games, kept = 23, [(0, 4), (4, 8), (13, 15)]
    todo = games - sum(end - start for start, end in kept)
    chunks = [c for rank in range(world) for c in extraction._to_solve(
        kept, games, distributed.shard(todo, rank, world), 3)]
    assert all(0 < end - start <= 3 for start, end in chunks)
    assert sorted(g for start, end in chunks + kept for g in range(start, end)) \
        == list(range(games))


def test_kept_chunks_do_not_overlap(tmp_path):
    for name in ("000000000-000000004.pt", "000000004-000000008.pt", "000000004-000000006.pt",
                 "000000006-000000010.pt", "000000012-000000099.pt", ".000000010-12.pt.tmp1"):
        (tmp_path / name).touch()
    # the longest chunk at 4 wins, the one overlapping it and the one past the games are out
    assert extraction._kept_chunks(tmp_path, 20) == [(0, 4), (4, 8)]


# 2 workers in the quick subset (`-m "not slow"`), 1 and 16 with the slow tests
@pytest.mark.parametrize("workers", [pytest.param(1, marks=pytest.mark.slow), 2,
                                     pytest.param(16, marks=pytest.mark.slow)])
def test_a_killed_extraction_resumes_from_its_chunks_bit_for_bit(ci, tmp_path, monkeypatch,
                                                                  workers):
    """Kill (SIGKILL) the extraction once its first two chunks are on disk (the later ones
    held), with 1, 2 or 16 threads solving chunks (as on machines of that many cores); the
    rerun solves only the games of the chunks not kept and ends with the uninterrupted
    (one-piece) result."""
    params, a = ci
    root = a.path.parent.parent
    shutil.copytree(root / "runs", tmp_path / "runs")
    folder = tmp_path / "results" / a.hash
    folder.mkdir(parents=True)
    for name in ("params.json", "games.pt"):
        shutil.copy(a.path / name, folder / name)
    chunk, marker = 2, tmp_path / "stopped"
    assert a.result.loss.numel() > 2 * chunk
    script = Path(__file__).with_name("killed_extraction.py")
    log = tmp_path / "stderr"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(chunk), "2",
                                 str(marker), str(workers)], stderr=err,
                                env={**os.environ, "PYTHONPATH": str(script.parents[1] / "lib")})
    try:
        # the marker, or the script's end: whichever comes first (the script gives up after
        # 600 s, so this wait ends too)
        while not marker.exists() and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), f"the extraction ended before it was killed: {log.read_text()}"
    finally:
        proc.kill()
        proc.wait(timeout=60)
    partial = folder / f"partial-{a.engine_tag}"
    kept = sorted(p.name for p in partial.glob("*.pt"))
    assert kept == ["000000000-000000002.pt", "000000002-000000004.pt"]
    assert not (folder / f"interactions-{a.engine_tag}.pt").exists()

    solved = []  # the first game of each chunk solved, and the chunk's size
    engine = extraction.run_engine

    def recording(values, *args, **kwargs):
        solved.append((next(i for i in range(len(flat)) if torch.equal(flat[i], values[0])),
                       len(values)))
        return engine(values, *args, **kwargs)

    monkeypatch.setattr(extraction, "CHUNK_OUTPUTS", chunk << params["n"])
    monkeypatch.setattr(extraction, "run_engine", recording)
    flat = a.result.values.flatten(0, -2)
    resumed = seed_results.compute({**params, "workdir": str(tmp_path)}, seed=0, progress=False)
    # the kept games were not solved again, the others once each
    assert sorted(start + i for start, size in solved for i in range(size)) \
        == list(range(4, len(flat)))
    assert all(size <= chunk for _, size in solved)
    stored = torch.load(folder / f"interactions-{a.engine_tag}.pt", weights_only=True)
    for key, value in a.result.state_dict().items():
        if torch.is_tensor(value):  # bit for bit, as one piece
            assert torch.equal(stored[key], value), key
            assert torch.equal(getattr(resumed.result, key), value), key
    assert not partial.exists()
    timing = json.loads((folder / "timings.json").read_text())
    assert timing["extraction_s"][a.engine_tag] > 0 and "masking_s" not in timing


@pytest.mark.slow
def test_seeds_computed_side_by_side_equal_seeds_computed_one_by_one(ci, tmp_path):
    """compute_seeds trains and masks seed 1 in a second thread while seed 0 is extracted:
    the same runs, games, interactions and tables, bit for bit, as one seed after the other."""
    params, a = ci
    both = seed_results.compute_seeds({**params, "workdir": str(tmp_path)}, [0, 1], progress=False)
    alone = [a, seed_results.load(params, seed=1)]  # computed by the fixture, one by one
    for r, ref in zip(both, alone):
        assert r.hash == ref.hash and r.runs == ref.runs
        for name in ["games.pt"] + [p.name for p in ref.path.glob(f"table-{ref.engine_tag}-*")]:
            assert (r.path / name).read_bytes() == (ref.path / name).read_bytes(), name
        for key, value in ref.result.state_dict().items():
            if torch.is_tensor(value):
                assert torch.equal(getattr(r.result, key), value), key
        for name in ref.runs.values():  # the checkpoints' tensors (their headers' order varies)
            for file in (ref.path.parents[1] / "runs" / name).glob("*.safetensors"):
                mine, theirs = load_file(tmp_path / "runs" / name / file.name), load_file(file)
                assert mine.keys() == theirs.keys() and all(
                    torch.equal(mine[k], theirs[k]) for k in mine), file


def test_compute_waits_for_the_second_thread_of_an_interrupted_compute_seeds(ci, monkeypatch,
                                                                           tmp_path):
    """An error in the main thread leaves the next seed's preparation running; the next
    compute starts only once it is done (never two threads on the same files). The held
    thread is released when compute joins it: a compute that did not wait would prepare its
    seed while the held thread is still alive (no clock: the order of events decides)."""
    import threading

    params = own_workdir(ci[0], tmp_path)
    monkeypatch.setattr(seed_results._Ahead, "running", [])  # this test's own threads
    prepare, release, order = seed_results._prepare, threading.Event(), []

    def slow_prepare(*args):
        main = threading.current_thread() is threading.main_thread()
        if order and not main:  # the second thread's seed: held until released
            assert release.wait(timeout=600), "never released"
        order.append((main, [t.is_alive() for t in held]))
        return prepare(*args)

    class Interrupted(Exception):
        pass

    def interrupted(*args):
        raise Interrupted

    held, extract = [], seed_results._extract
    monkeypatch.setattr(seed_results, "_prepare", slow_prepare)
    monkeypatch.setattr(seed_results, "_extract", interrupted)
    with pytest.raises(Interrupted):
        seed_results.compute_seeds(params, [0, 0], progress=False)
    held = list(seed_results._Ahead.running)
    assert len(held) == 1 and held[0].is_alive() and len(order) == 1
    join = seed_results._Ahead.join

    def releasing_join(self, timeout=None):  # compute waits for the thread: release it now
        release.set()
        return join(self, timeout)

    monkeypatch.setattr(seed_results, "_extract", extract)
    monkeypatch.setattr(seed_results._Ahead, "join", releasing_join)
    try:
        seed_results.compute(params, seed=0, progress=False)
    finally:
        release.set()
        held[0].join(timeout=600)
    # the first seed (second thread), the held one (alive while it prepared), then compute's
    # own (main thread), once the held thread had ended
    assert order == [(False, []), (False, [True]), (True, [False])]
    assert not seed_results._Ahead.running
