"""The whole `ci` preset (the `ci_study` fixture of conftest.py), as `make study PRESET=ci` runs it, on a copy of the
repository: train, analyse, execute every notebook with papermill, build the book with -W, then
read it in headless Chromium like a reader (no outside request, charts drawn, widget, math)."""
from __future__ import annotations

import html
import re
import shutil
import sys
from pathlib import Path

import pytest

from whypretrain import cli, layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402

@pytest.mark.slow
def test_ci_study_builds_every_page(ci_study):
    root, _, code = ci_study
    assert code == 0
    names = layout.notebook_list(root)
    assert sorted(names) == sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))
    for name in names:
        assert (root / "book" / "experiments" / f"{name}.ipynb").is_file()
        assert (root / "_build" / "html" / "book" / "experiments" / f"{name}.html").is_file()


@pytest.mark.slow
def test_ci_book_reads_offline_with_charts_widget_and_math(ci_study, tmp_path):
    root, _, _ = ci_study
    report = browser.check_book(root / "_build" / "html", screenshots=tmp_path,
                                shot_pages=["book/experiments/07-explorer.html"])
    assert browser.outside_requests(report) == 0, browser.table(report)
    assert not browser.problems(report), browser.problems(report)
    pages = {p["page"]: p for p in report["pages"]}
    figures = [p for name, p in pages.items() if "experiments/0" in name]
    assert len(figures) == len(layout.notebook_list(root))
    assert sum(p["charts"]["drawn"] for p in figures) >= 12
    assert pages["book/experiments/07-explorer.html"]["widgets"]["rendered"] >= 1
    assert pages["book/experiments/01-primer.html"]["math"]["rendered"] > 0
    findings = (root / "_build" / "html" / "book" / "experiments" / "08-findings.html").read_text()
    assert "Claims that reproduce" in findings and "disjoint" in findings


@pytest.mark.slow
def test_ci_book_names_the_results_and_runs_under_its_tables(ci_study):
    root, overrides, _ = ci_study
    pages = root / "_build" / "html" / "book" / "experiments"
    results = [p.name[:12] for p in (Path(overrides["workdir"]) / "results").iterdir()]
    runs = [p.name[:12] for p in (Path(overrides["workdir"]) / "runs").iterdir()]
    def text_of(name):  # the page as a reader sees it: no tags, one space between words
        raw = re.sub(r"<[^>]+>", " ", (pages / f"{name}.html").read_text())
        return re.sub(r"\s+", " ", html.unescape(raw))
    for name in ("03-knowledge", "05-convergence", "08-findings"):
        text = text_of(name)
        assert any(f"results {h}" in text for h in results), name
        assert any(f"run {h}" in text for h in runs), name
        assert "rebuild: whypretrain" in text and "--preset ci" in text, name
    # the narrative's numbers are glued: the share discarded of the knowledge page is there
    from whypretrain.measures import knowledge, stats
    from whypretrain import presets
    from whypretrain.study import pipeline
    params = presets.resolve("ci", overrides)
    table = pipeline.read(params).part("near/knowledge")
    row = stats.summarize(table).query(f"measure == 'share_discarded' and order == "
                                       f"{knowledge.ALL_ORDERS}").iloc[0]
    share = stats.interval_text(row, pct=True)   # formed again from the seeds' own table
    assert f"fine-tuning discards {share} of the probe" in text_of("03-knowledge")


@pytest.mark.slow
def test_second_study_skips_every_notebook(ci_study, tmp_path):
    """A second study, on its own copy of the first one's repository (the session's stays as
    it is) with the same workdir, hence the same parameters: every notebook is skipped, and
    the workdir's runs and results are read, not written (lock files aside)."""
    root, overrides, _ = ci_study
    copy = tmp_path / "repo"
    shutil.copytree(root, copy, symlinks=True, ignore=shutil.ignore_patterns("work"))
    work = Path(overrides["workdir"])

    def contents():
        return {p: p.read_bytes() for p in work.rglob("*")
                if p.is_file() and not p.name.endswith(".lock")}

    stored = contents()
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "book" / "experiments").glob("*.ipynb")}
    assert len(before) == len(layout.notebook_list(copy))
    assert cli.study("ci", overrides, root=copy) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (copy / "book" / "experiments").glob("*.ipynb")}
    assert before == after
    assert contents() == stored


@pytest.mark.slow
def test_ci_specification_table_has_a_row_for_every_specification(ci_study):
    root, overrides, _ = ci_study
    from whypretrain.report import findings
    from whypretrain import presets
    from whypretrain.study import pipeline
    params = presets.resolve("ci", overrides)
    result = pipeline.read(params)
    spec = findings.specification_table(result)
    grid = pipeline.sensitivity_grid(params)
    varied = {f"{k}={v}" for k, values in grid.items() for v in values if v != params[k]}
    # the lab's sample filter keeps no sample of the ci preset's 3-epoch models (their
    # v(N) - v(empty) stays under one nat): then that point has no rows
    from whypretrain.measures import sparsity
    lab_kept = sparsity.lab_kept(result.part("near/sparsity"))
    assert ("sample_filter=lab" in set(spec["spec"])) == bool(lab_kept)
    assert set(spec["spec"]) | {"sample_filter=lab"} == varied | {"preset"}
    assert len(spec) == len(set(spec["spec"])) * len(findings.KNOWLEDGE_CLAIMS)
    assert spec["verdict"].isin(findings.VERDICTS).all()
    # the preset's own row is the findings page's near column
    near = findings.judge(result).set_index("claim")
    own = spec[spec["spec"] == "preset"].set_index("claim")
    for claim in own.index:
        assert own.loc[claim, "mean"] == pytest.approx(near.loc[claim, "mean"], nan_ok=True)
    agree = findings.agreement(spec)
    assert set(agree.index) == {c.key for c in findings.KNOWLEDGE_CLAIMS}
    assert agree["agree"].between(0, 1).all()


@pytest.mark.slow
def test_ci_robust_items_are_a_share_of_the_canonical_ones(ci_study):
    """Near: per seed and model, the robust items are the canonical items that are salient
    with the same sign under the reverse and hash rules too (a subset of the canonical ones),
    recounted here from the three rules' stored items; the share per model is their ratio,
    averaged over seeds."""
    root, overrides, _ = ci_study
    from whypretrain.report import findings
    from whypretrain import presets
    from whypretrain.study import games, seed_results, pipeline
    params = presets.resolve("ci", overrides)
    result = pipeline.read(params)
    robust = findings.robust_items(result)
    assert list(robust.index) == list(games.MODELS) and (robust["rules"] == 3).all()
    counts = result.part("robust")
    assert len(counts) == 3 * len(params["seeds"])
    shares = {model: [] for model in games.MODELS}
    for seed in params["seeds"]:
        items = [seed_results.load({**params, "rule": rule}, seed,
                                   finals_only=rule != params["rule"])
                 for rule in ("canonical", "reverse", "hash")]
        for model in games.MODELS:
            each = [r.items_of(model, params["tau"], empty_set=params["empty_set"])
                    for r in items]
            canonical = each[0] != 0
            same = canonical & (each[1] == each[0]) & (each[2] == each[0])
            assert not (same & ~canonical).any()  # a subset of the canonical items
            row = counts[(counts["seed"] == seed) & (counts["model"] == model)].iloc[0]
            assert row["robust"] == int(same.sum()) and row["items"] == int(canonical.sum())
            shares[model].append(int(same.sum()) / max(1, int(canonical.sum())))
    for model, values in shares.items():
        assert robust.loc[model, "mean"] == pytest.approx(sum(values) / len(values)), model
    assert robust["mean"].between(0, 1).all()


@pytest.mark.slow
def test_ci_robust_items_in_every_transfer_setting(ci_study):
    """The disjoint and far settings' robust items: per seed and model, the canonical items
    that are salient with the same sign under the reverse and hash rules too, recounted here
    from the three rules' stored items."""
    root, overrides, _ = ci_study
    from whypretrain.report import findings
    from whypretrain import presets
    from whypretrain.study import games, seed_results, pipeline
    params = presets.resolve("ci", overrides)
    result = pipeline.read(params)
    table = findings.robust_by_setting(result)
    assert list(table.columns) == ["near", "disjoint", "far"]
    assert list(table.index) == list(games.MODELS)
    setting = pipeline.transfer_settings(params)["disjoint"]
    counts = result.part("disjoint/robust")
    assert (counts["rules"] == 3).all() and len(counts) == 3 * len(setting["seeds"])
    for seed in setting["seeds"]:
        items = {rule: seed_results.load({**setting, "rule": rule}, seed,
                                    finals_only=rule != setting["rule"])
                 for rule in ("canonical", "reverse", "hash")}
        for model in games.MODELS:
            each = [r.items_of(model, setting["tau"], empty_set=setting["empty_set"])
                    for r in items.values()]
            same = ((each[0] != 0) & (each[1] == each[0]) & (each[2] == each[0])).sum()
            row = counts[(counts["seed"] == seed) & (counts["model"] == model)].iloc[0]
            assert row["robust"] == int(same) <= row["items"] == int((each[0] != 0).sum())


@pytest.mark.slow
def test_ci_identified_items_are_robust_and_the_findings_read_them(ci_study):
    """Per seed and final model (near): identified items <= robust items <= items, since an
    identified item is salient with its sign at every optimum, the three rules' included; the
    findings tables read the part, and the AND-only reading stands beside AND-OR."""
    root, overrides, _ = ci_study
    from whypretrain.report import findings
    from whypretrain import presets
    from whypretrain.study import games, pipeline
    params = presets.resolve("ci", overrides)
    result = pipeline.read(params)
    counts = result.part("identified")
    robust = result.part("robust").set_index(["seed", "model"])
    for (seed, model), c in counts[counts["model"].isin(games.MODELS)].groupby(
            ["seed", "model"]):
        c = c.set_index("measure")["value"]
        assert c["identified"] <= robust.loc[(seed, model), "robust"]
        assert c["items"] == robust.loc[(seed, model), "items"]
    table = findings.identified_items(result)
    assert list(table.index) == list(games.MODELS)
    assert table["mean"].between(0, 1).all()
    claims = findings.identified_claims(result)
    assert list(claims["measure"]) == list(findings.IDENTIFIED_CLAIMS)
    both = result.part("findings/and_only")   # stored by whypretrain study
    assert {"and_or", "and_only", "and_only_verdict"} <= set(both.columns)
    assert both["and_only"].notna().all()
