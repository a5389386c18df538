"""The claims as data: verdict rules on hand-made tables, the sensitivity grid, the three
transfer settings on `ci`-sized studies, and reads that never compute."""
import numpy as np
import pandas as pd
import pytest

from whypretrain import errors, presets, provenance
from whypretrain.report import findings
from whypretrain.measures import stats
from whypretrain.study import pipeline
from whypretrain.provenance import sources_of


def est(values):
    return stats.Estimate.of(pd.Series(values, dtype=float))


# --- rules -------------------------------------------------------------------------------------

def inference(values):
    """The crossed jackknife of a mean over seeds with no sample part: its seed folds are the
    leave-one-out means."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return stats.Inference.of(v[0] if len(v) else np.nan, [np.nan] * len(v), [])
    return stats.Inference.of(v.mean(), [np.delete(v, j).mean() for j in range(len(v))], [])


def test_above_rule_needs_the_whole_interval():
    rule = findings.above(0.5)
    assert rule.judge(inference([0.70, 0.72, 0.74])) == findings.AGREES
    assert rule.judge(inference([0.30, 0.32, 0.34])) == findings.DISAGREES
    assert rule.judge(inference([0.40, 0.60, 0.70])) == findings.UNDECIDED
    assert rule.judge(inference([0.6])) == findings.UNDEFINED    # one seed: no interval
    assert rule.judge(inference([0.6, 0.6, 0.6])) == findings.UNDECIDED   # width 0
    assert rule.text == "above 0.5"


def test_inside_rule_for_the_learnable_range_needs_the_whole_interval_too():
    rule = findings.inside(*findings.LEARNABLE_RANGE)
    assert rule.judge(inference([0.30, 0.31, 0.32])) == findings.AGREES
    assert rule.judge(inference([0.50, 0.52, 0.54])) == findings.DISAGREES
    # the mean (0.40) lies in the range, the interval does not: the mean no longer decides
    assert rule.judge(inference([0.30, 0.40, 0.50])) == findings.UNDECIDED
    assert "13%-45%" in rule.text


def hand_made_inputs():
    """Two seeds, two samples each, with known values of every claim's measure."""
    metrics = []
    for seed, (ft, sc) in enumerate([([0.5, 0.95, 0.96], [0.2, 0.5, 0.8]),
                                     ([0.6, 0.95, 0.96], [0.2, 0.4, 0.7])]):
        for model, curve in (("finetune", ft), ("scratch", sc), ("probe", [0.5, 0.6, 0.6])):
            for epoch, acc in enumerate([0.1] + curve):
                metrics.append(dict(seed=seed, model=model, epoch=epoch, test_acc=acc))
    rows = []

    def add(seed, measure, values, model="x", epoch=3, order=-1):
        for sample, v in enumerate(values):
            rows.append(dict(seed=seed, tau=0.05, sample=sample, model=model, epoch=epoch,
                             measure=measure, order=order, value=v))
    for seed in (0, 1):
        add(seed, "share_discarded", [0.8, 0.6])
        add(seed, "share_new", [0.4, 0.2])
        add(seed, "ratio_learnable", [0.3, np.nan])   # undefined ratio: left out
        add(seed, "count_discard", [3, 3], order=3)
        add(seed, "count_preserve", [2, 2], order=1)
        add(seed, "chance_share_discarded", [0.9, 0.9])
        add(seed, "chance_share_new", [0.9, 0.9])
        add(seed, "chance_ratio_learnable", [0.1, 0.1])
        add(seed, "chance_count_discard", [3, 3], order=4)
        add(seed, "chance_count_preserve", [2, 2], order=1)
        add(seed, "weighted_share_discarded", [0.5, 0.5])
        for model, own, ref in (("finetune", [0.6, 0.8, 0.9, 1.0], [0.6, 0.8, 0.9, 1.0]),
                                ("scratch", [0.1, 0.3, 0.6, 1.0], [0.1, 0.2, 0.3, 0.4])):
            for epoch in range(4):
                add(seed, "jaccard_weighted", [own[epoch]] * 2, model, epoch)
                add(seed, "jaccard_weighted_vs_finetune", [ref[epoch]] * 2, model, epoch)
    table = pd.DataFrame(rows)
    # the nulls: the same table as if read across seeds, with other values
    comparisons = []
    for name, discarded in (("replication", {0: 0.50, 1: 0.50}), ("unrelated", {0: 0.9, 1: 0.7}),
                            ("scratch_other", {0: 0.8, 1: 0.8})):
        c = table[table["measure"].isin(["share_discarded", "share_new", "count_discard",
                                         "count_preserve", "ratio_learnable"])].copy()
        c.insert(0, "comparison", name)
        c.insert(2, "partner", 1 - c["seed"])
        is_discarded = c["measure"] == "share_discarded"
        c.loc[is_discarded, "value"] = c.loc[is_discarded, "seed"].map(discarded)
        comparisons.append(c)
    return findings.Inputs(pd.DataFrame(metrics), table, pd.concat(comparisons,
                                                                   ignore_index=True))


def test_claims_on_a_hand_made_table():
    out = findings.judge_inputs(hand_made_inputs()).set_index("claim")
    assert list(out.index) == list(findings.CLAIM_KEYS)
    assert out.loc["accuracy_gap", "mean"] == pytest.approx(((0.96 - 0.8) + (0.96 - 0.7)) / 2)
    # 95% of final: fine-tuned at epoch 2 in both seeds, scratch at 3
    assert out.loc["accuracy_speed", "mean"] == pytest.approx(1.0)
    assert out.loc["share_discarded", "mean"] == pytest.approx(0.7)
    # null: replication 0.5 in both seeds, so the effect is 0.2 with no spread over seeds;
    # the samples (0.8 and 0.6) give it one: leaving either out, 0.3 or 0.1
    assert out.loc["share_discarded", "null"] == pytest.approx(0.5)
    assert out.loc["share_discarded", "effect_mean"] == pytest.approx(0.2)
    assert out.loc["share_discarded", "effect_se"] == pytest.approx(0.1)
    assert out.loc["share_discarded", "effect_df"] == pytest.approx(1.0)   # 2 samples
    assert out.loc["share_discarded", "verdict"] == findings.INCONCLUSIVE
    assert out.loc["share_discarded", "interval_method"] == \
        "crossed jackknife, nulls kept (2 seeds)"
    # beyond the floor: 1 - (1 - 0.7) / (1 - 0.5) = 0.4, below the paper's 50% line
    assert out.loc["share_discarded", "floor_mean"] == pytest.approx(0.4)
    assert out.loc["share_discarded", "ci_high"] <= 1.0       # a share stays a share
    assert out.loc["share_discarded", "reference"] == pytest.approx(0.8)   # unrelated
    assert out.loc["share_discarded", "chance"] == pytest.approx(0.9)
    assert out.loc["share_discarded", "weighted"] == pytest.approx(0.5)
    assert out.loc["share_discarded", "sesoi"] == 0.05
    # the comparisons hold the same share new as the seeds themselves: effect 0
    assert out.loc["share_new", "effect_mean"] == pytest.approx(0.0)
    assert out.loc["learnable", "mean"] == pytest.approx(0.3)
    assert out.loc["learnable", "null"] == pytest.approx(0.1)      # chance
    # (0.3 - 0.1) / (1 - 0.1): the learnable share beyond chance
    assert out.loc["learnable", "floor_mean"] == pytest.approx(2 / 9)
    # the same 0.3 in every seed and the only defined sample: width 0 decides nothing
    assert out.loc["learnable", "verdict"] == findings.INCONCLUSIVE
    assert out.loc["learnable", "paper_verdict"] == findings.UNDECIDED
    assert out.loc["discard_order", "mean"] == pytest.approx(2.0)  # order 3 vs order 1
    assert out.loc["discard_order", "chance"] == pytest.approx(3.0)  # order 4 vs order 1
    assert out.loc["discard_order", "effect_mean"] == pytest.approx(0.0)
    # the replication null has the same gap: an interval [0, 0], which decides nothing
    assert out.loc["discard_order", "verdict"] == findings.INCONCLUSIVE
    assert np.isnan(out.loc["discard_order", "seeds_to_decide"])
    # area: mean over epochs 0..2 of own curve: (0.6+0.8+0.9)/3 - (0.1+0.3+0.6)/3
    assert out.loc["convergence_area", "mean"] == pytest.approx((2.3 - 1.0) / 3)
    # reach 0.5 of the final fine-tuned: fine-tuned at epoch 0, scratch never (T + 1 = 4)
    assert out.loc["convergence_reach", "mean"] == pytest.approx(4.0)
    assert set(out["verdict"]) <= set(findings.VERDICTS)
    assert set(out["paper_verdict"]) <= set(findings.PAPER_VERDICTS)
    assert (out["n_seeds"] == 2).all()
    assert findings.verdict_counts(out.reset_index())["near"] == "0 of 8"
    # with a setting that did not run: one decision line per claim and setting
    both = pd.concat([out.reset_index(), findings.not_run("far", "whypretrain analyze")],
                     ignore_index=True)
    assert set(findings.not_run("far", "x").columns) == set(both.columns)
    lines = findings.decision_lines(both).splitlines()
    assert sum(line.startswith("- ") for line in lines) == 2 * len(findings.CLAIMS)
    assert "**near** (0 of 8 claims reproduce)" in lines and "**far** (not run)" in lines
    assert "SESOI 5.0 pts: **inconclusive**" in findings.decision_lines(both)
    assert findings.verdict_counts(both)["far"] == findings.NOT_RUN
    assert "| share_discarded |" in findings.as_markdown(both)


def test_a_verdict_reads_the_effect_and_its_interval():
    assert findings.verdict(inference([0.10, 0.12, 0.14]), 0.05) == findings.EXCEEDS
    assert findings.verdict(inference([-0.05, 0.02, 0.06]), 0.05) == findings.INCONCLUSIVE
    assert findings.verdict(inference([-0.10, -0.12, -0.14]), 0.05) == findings.BELOW
    assert findings.verdict(inference([-0.001, 0.0, 0.001]), 0.05) == findings.EQUIVALENT
    assert findings.verdict(inference([]), 0.05) == findings.UNDEFINED
    assert findings.verdict(inference([0.7]), 0.05) == findings.UNDEFINED   # one seed
    undecided = hand_made_inputs()
    c = undecided.comparisons
    flip = (c["comparison"] == "replication") & (c["measure"] == "share_discarded")
    c.loc[flip, "value"] = c.loc[flip, "seed"].map({0: 0.6, 1: 0.8})  # effects +0.2 and -0.2
    out = findings.judge_inputs(undecided).set_index("claim")
    assert out.loc["share_discarded", "verdict"] == findings.INCONCLUSIVE
    assert out.loc["share_discarded", "effect_low"] < 0 < out.loc["share_discarded",
                                                                  "effect_high"]


def test_paper_range_is_written_once():
    import pathlib
    lib = pathlib.Path(findings.__file__).parent
    hits = [p.name for p in lib.glob("*.py") if "0.13" in p.read_text()]
    assert hits == ["findings.py"]


# --- grid and settings -----------------------------------------------------------------------

def test_sensitivity_grid_names_every_choice():
    params = presets.resolve("default")
    grid = pipeline.sensitivity_grid(params)
    assert set(grid) == {"tau", "n", "baseline", "optimizer", "empty_set", "or_merge",
                         "player_seed", "samples_per_class", "rule", "mode", "extraction",
                         "sample_filter"}
    assert set(grid["rule"]) == {"canonical", "reverse", "hash"}
    assert set(grid["mode"]) == {"and-or", "and"}
    for key, values in grid.items():
        assert params[key] in values, key          # the preset's own value is a point
    assert set(grid["empty_set"]) == {"exclude", "include"}
    assert set(grid["or_merge"]) == {"and", "keep"}
    assert "sgd" in grid["optimizer"]
    assert len(grid["player_seed"]) == 2 and len(grid["samples_per_class"]) == 3
    settings = list(pipeline.sensitivity_settings(params, grid))
    # only values other than the preset's, of parameters that change games, need new results
    new = [(k, v) for k, v, _, finals in settings if finals]
    assert all(v != params[k] and k not in pipeline.TABLE_ONLY for k, v in new)


def test_transfer_settings_near_disjoint_far(tmp_path):
    params = presets.resolve("ci", {"workdir": str(tmp_path)})
    s = pipeline.transfer_settings(params)
    assert list(s) == list(pipeline.TRANSFER_SETTINGS)
    assert s["near"] is params
    assert (s["disjoint"]["source"], s["disjoint"]["target"]) == ("mnist-0-4", "uci-5-9")
    assert s["disjoint"]["seeds"] == params["seeds"] and s["disjoint"]["n"] == params["n"]
    assert s["far"]["preset"] == "imagenet-uci-ci" and s["far"]["n"] == params["n"]
    assert s["far"]["arch"] == "efficientnet_lite0" and s["far"]["workdir"] == str(tmp_path)
    # the disjoint setting splits the digits: other data have none, and say why
    cifar = presets.resolve("cifar10-resnet18", {"weights": ""})
    assert pipeline.transfer_settings(cifar)["disjoint"] is None
    assert "digit data only" in pipeline.unavailable("disjoint", cifar)
    default = pipeline.transfer_settings(presets.resolve("default"))
    assert default["far"]["preset"] == pipeline.FAR_PRESET


def test_command_names_the_preset_and_what_differs():
    params = presets.resolve("ci", {"tau": 0.1, "seeds": "0,2"})
    assert provenance.command("analyze", params) == \
        "whypretrain analyze --preset ci --set seeds=0,2 --set tau=0.1"


# --- on ci-sized studies ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ci_transfer(tmp_path_factory):
    params = presets.resolve("ci", {"workdir": str(tmp_path_factory.mktemp("transfer"))})
    result = pipeline.compute(params, ("near", "disjoint", "far"), progress=False, far=True)
    return params, result


@pytest.mark.slow
def test_findings_table_has_all_three_settings(ci_transfer):
    params, result = ci_transfer
    assert result.manifest["notes"] == dict(disjoint="computed", far="computed")
    table = findings.transfer_table(result)
    assert list(dict.fromkeys(table["setting"])) == ["near", "disjoint", "far"]
    assert len(table) == 3 * len(findings.CLAIMS)
    assert table["verdict"].isin(findings.VERDICTS).all()
    for setting in ("near", "disjoint", "far"):  # every setting measured most claims
        ran = table[table["setting"] == setting]
        assert ran["mean"].notna().sum() >= 6, setting
        # two seeds: every knowledge claim has a null, an effect and its interval
        knowledge_claims = ran[ran["claim"].isin(["share_discarded", "share_new", "learnable",
                                                  "discard_order"])]
        for column in ("null", "effect_mean", "effect_low", "effect_high", "weighted",
                       "null_unrelated", "null_unrelated_effect_low"):
            assert knowledge_claims[column].notna().all(), (setting, column)
        # the weighted learnable share has no null (no weighted chance); the others have one
        assert knowledge_claims.set_index("claim")["weighted_null"].isna().to_dict() == dict(
            share_discarded=False, share_new=False, learnable=True, discard_order=False)
        # the face rung where the setting extracted other rules (disjoint, far; near's comes
        # with the sensitivity grid), the probe rung everywhere but the learnable share
        shares = knowledge_claims.set_index("claim").loc[["share_discarded", "share_new"]]
        assert shares["null_probe"].notna().all()
        assert shares["null_face"].notna().all() == (setting != "near")
        defined = ran["effect_low"].notna()   # an undefined interval decides nothing
        assert (ran.loc[defined, "effect_low"] <= ran.loc[defined, "effect_mean"]).all()
        assert not ran.loc[~defined, "verdict"].isin(list(findings.DECIDED)).any()
    # both settings' results and runs are named
    sources = sources_of(table)
    assert len(sources.results) >= 3 and len(sources.runs) >= 11
    text = findings.as_markdown(table)
    assert "| claim (paper) | near | disjoint | far |" in text
    assert sources.markdown().count("results `") == len(sources.results)


@pytest.mark.slow
def test_findings_numbers_and_verdicts_are_those_of_the_seeds_tables(ci_transfer):
    """On the real ci data of every setting: the accuracy gap, and the share discarded with
    its replication null, worked out here from the stored per-sample rows (final epoch of
    each run; mean over samples per seed, then over seeds); the verdict is the rule's on
    those numbers."""
    _, result = ci_transfer
    table = findings.transfer_table(result).set_index(["setting", "claim"])
    for setting in ("near", "disjoint", "far"):
        m = result.part(f"{setting}/metrics")
        final = {(s, model): g.loc[g["epoch"].idxmax(), "test_acc"]
                 for (s, model), g in m.groupby(["seed", "model"])}
        seeds = sorted({s for s, _ in final})
        assert len(seeds) == 2
        gap = [final[(s, "finetune")] - final[(s, "scratch")] for s in seeds]
        row = table.loc[(setting, "accuracy_gap")]
        assert row["mean"] == pytest.approx(np.mean(gap)) and row["n_seeds"] == 2
        assert row["sd"] == pytest.approx(np.std(gap, ddof=1))

        def per_seed(t):
            rows = t[(t["measure"] == "share_discarded") & (t["order"] == -1)]
            return pd.Series({s: rows[rows["seed"] == s]["value"].mean() for s in seeds})
        value = per_seed(result.part(f"{setting}/knowledge"))
        c = result.part(f"{setting}/comparisons")
        null = per_seed(c[c["comparison"] == "replication"])
        row = table.loc[(setting, "share_discarded")]
        assert row["mean"] == pytest.approx(value.mean()), setting
        assert row["null"] == pytest.approx(null.mean()), setting
        assert row["effect_mean"] == pytest.approx((value - null).mean()), setting
        assert 0 <= row["mean"] <= 1
        # the verdict reads the effect's interval (before Holm), unless the premise fails
        assert (row["verdict_uncorrected"] == findings.EXCEEDS) == (row["effect_low"] > 0)
        if str(row["premise"]).startswith("fails"):
            assert row["verdict"] == findings.PREMISE_FAILS, setting


@pytest.mark.slow
def test_reading_before_analysing_names_the_analyze_command(ci_transfer):
    params, _ = ci_transfer
    other = {**params, "n": 5}   # the runs exist, these games do not
    with pytest.raises(errors.MissingResults, match="whypretrain analyze --preset ci .*n=5"):
        pipeline.read(other).part("near/knowledge")
    with pytest.raises(errors.MissingResults, match="whypretrain study --preset ci"):
        pipeline.read(params).part("sensitivity")   # the grid is not computed yet


def test_game_counts_of_the_ci_preset():
    counts = pipeline.game_counts(presets.resolve("ci")).set_index("part")
    # 2 seeds x (probe + 4 fine-tuning + 4 scratch checkpoints) x 10 classes x 1 sample
    assert counts.loc["main", "games"] == 2 * 9 * 10
    assert counts.loc["transfer disjoint", "samples"] == 5   # target digits 5..9
    # the far setting (imagenet-uci-ci, 3 epochs) analyses every epoch as main does
    assert counts.loc["transfer far", "models"] == 9
    assert (counts.drop(index=["main", "transfer disjoint", "transfer far"])["models"] == 3).all()


def test_replicate_level_is_the_mean_similarity_of_two_seeds_final_models():
    rows = [dict(seed=s, partner=1 - s, model=m, sample=i, measure="jaccard_weighted", value=v)
            for s in (0, 1) for m, v in (("finetune", 0.4 + 0.1 * s), ("scratch", 0.2))
            for i in range(3)]
    x = findings.Inputs(pd.DataFrame(), pd.DataFrame(), None, pd.DataFrame(rows))
    level = findings.replicate_level(x)
    assert level.loc["finetune", "mean"] == pytest.approx(0.45)
    assert level.loc["scratch", "sd"] == pytest.approx(0.0)
    assert level.loc["finetune", "n_seeds"] == 2


def test_the_ladder_on_stored_ci_results_is_its_hand_computation(ci_transfer):
    """The disjoint setting's ladder of the share discarded, from its stored results: each
    rung recomputed from the seeds' final items (the probe's canonical items that the other
    rules' probe lacks; that the other seed's probe lacks; that the other seed's fine-tuned
    model lacks), mean over samples (and rules), then over seeds."""
    from whypretrain.measures import knowledge
    from whypretrain.study import seed_results, settings
    from whypretrain.train import data
    params, result = ci_transfer
    setting = settings.transfer_settings(params)["disjoint"]
    ds = data.load_datasets(setting)
    tau, empty = setting["tau"], setting["empty_set"]
    loaded = {s: seed_results.load(setting, s, ds) for s in setting["seeds"]}
    rules = {rule: {s: seed_results.load({**setting, "rule": rule}, s, ds, finals_only=True)
                    for s in setting["seeds"]} for rule in pipeline.other_rules(setting)}

    def items(r, model):
        return knowledge.salient_items(r.interactions_of(model), tau, empty)

    def lacks(a, b):
        lost = ((a != 0) & ~knowledge.shared(a, b)).sum((-2, -1)).double()
        return (lost / (a != 0).sum((-2, -1)).double()).numpy()

    hand = {"null_face": [], "null_probe": [], "null_unrelated": []}
    for s, r in loaded.items():
        other = next(o for t, o in loaded.items() if t != s)
        p = items(r, "probe")
        hand["null_face"].append(np.nanmean(np.concatenate(
            [lacks(p, items(rules[rule][s], "probe")) for rule in rules])))
        hand["null_probe"].append(np.nanmean(lacks(p, items(other, "probe"))))
        hand["null_unrelated"].append(np.nanmean(lacks(p, items(other, "finetune"))))
    row = findings.judge(result, "disjoint").set_index("claim").loc["share_discarded"]
    assert rules and len(loaded) == 2
    for rung, values in hand.items():
        assert row[rung] == pytest.approx(np.mean(values), abs=1e-9), rung
    assert row["null_face"] < row["null"]   # the face is a floor: no training differs


def test_game_counts_of_the_default_preset_read_three_seeds_of_curves():
    """The default preset: 5 seeds, the first 3 (``curve_seeds``) at every analysed
    checkpoint, the other 2 at their final models only."""
    params = presets.resolve("default")
    assert pipeline.finals_only_seeds(params) == [(0, False), (1, False), (2, False),
                                                  (3, True), (4, True)]
    counts = pipeline.game_counts(params).set_index("part")
    # (3 seeds x (probe + 8 + 8 checkpoints) + 2 seeds x 3 final models) x 10 classes x 2
    assert counts.loc["main", "games"] == (3 * 17 + 2 * 3) * 20
    assert counts.loc["transfer disjoint", "games"] == (3 * 17 + 2 * 3) * 10
    assert counts.loc["sensitivity n=8", "games"] == 5 * 3 * 20   # final models of every seed
    # every seed in full without curve_seeds, and under the joint extraction
    for change in ({"curve_seeds": 0}, {"n": 8, "extraction": "joint"}):
        assert not any(only for _, only in
                       pipeline.finals_only_seeds(presets.resolve("default", change)))
