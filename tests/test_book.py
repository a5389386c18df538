"""The book's infrastructure: offline assets, the chart renderer, the real book's configuration
and pages (built with -W into a temporary folder, then opened in headless Chromium), the method
page, and what the built `ci` book shows of its provenance (the status page, the results hashes
on the findings page)."""
from __future__ import annotations

import json
import os
import re
from html import unescape
import shutil
import subprocess
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import pytest
import yaml

from whypretrain.book import assets, build, execute, pdf
from whypretrain.report import charts
from whypretrain import layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_assets_are_local_and_pinned():
    folder = assets.ensure_assets(REPO, quiet=True)
    pins = json.loads((REPO / assets.ASSETS / "versions.json").read_text())
    assert pins["vega-lite"] == alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    for rel in ("vega-bundle.js", "require.js", "widgets/embed-amd.js",
                "mathjax/tex-mml-chtml.js", "mathjax/output/chtml/fonts/woff-v2"):
        assert (folder / rel).exists(), rel
    assert list((folder / "widgets").glob("*.woff2"))  # the widget manager's fonts
    bundle = (folder / "vega-bundle.js").read_text()
    assert bundle.split("\n", 2)[1] == "(function(){" and bundle.rstrip().endswith("})();")
    # the second call is a no-op (the stamp matches)
    mtime = (folder / "vega-bundle.js").stat().st_mtime_ns
    assets.ensure_assets(REPO, quiet=True)
    assert (folder / "vega-bundle.js").stat().st_mtime_ns == mtime


def test_config_names_only_local_scripts():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    sphinx = config["sphinx"]["config"]
    assert "_static" not in sphinx["html_static_path"]
    scripts = [sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"],
               *[js[0] if isinstance(js, list) else js for js in sphinx["html_js_files"]]]
    assert scripts and not [s for s in scripts if "://" in s]
    assert list(sphinx["nb_ipywidgets_js"])[0].endswith("require.js")  # require.js first
    for script in scripts:  # each exists in a static folder
        assert any((REPO / d / script).is_file() for d in sphinx["html_static_path"]), script


def test_renderer_is_switchable(monkeypatch):
    chart = alt.Chart(pd.DataFrame({"x": range(3000), "y": range(3000)})).mark_bar().encode(
        alt.X("x", bin=True), y="count()")
    monkeypatch.delenv(charts.BOOK_ENV, raising=False)
    assert charts.setup() != charts.RENDERER  # Jupyter: Altair's default stays
    monkeypatch.setenv(charts.BOOK_ENV, "1")
    try:
        assert charts.setup() == charts.RENDERER
        html = chart._repr_mimebundle_()["text/html"]
        assert "window.vegaEmbed(el, spec, opts)" in html and "<script src" not in html
        assert '"mode": "vega"' in html  # vegafusion: transforms done in Python
        assert len(html) < 20_000  # 3000 rows aggregated to ~20 bins
        assert "http" not in html.split("var opts")[1].split("function draw")[0]
    finally:
        monkeypatch.delenv(charts.BOOK_ENV)
        charts.setup()
    assert alt.renderers.active != charts.RENDERER


def test_save_png_and_html(tmp_path):
    chart = alt.Chart(pd.DataFrame({"a": [1, 2]}), title="t").mark_bar().encode(x="a:O", y="a:Q")
    assert charts.save(chart, tmp_path / "c.png").stat().st_size > 1000
    html = charts.save(chart, tmp_path / "c.html").read_text()
    assert "cdn.jsdelivr" not in html


def _drop_unexecuted(node, root: Path):
    """The toc without experiment entries whose executed notebook is not there yet."""
    if isinstance(node, list):
        return [n for n in (_drop_unexecuted(item, root) for item in node) if n is not None]
    if isinstance(node, dict):
        entry = node.get("file", "")
        if entry.startswith(layout.EXPERIMENTS + "/") and not (
                root / f"{entry.removesuffix('.ipynb')}.ipynb").is_file():
            return None
        kept = {k: _drop_unexecuted(v, root) if isinstance(v, (list, dict)) else v
                for k, v in node.items()}
        # a part whose chapters are all unexecuted goes too (an empty list is malformed)
        return None if kept.get("chapters") == [] else kept
    return node


@pytest.fixture(scope="module")
def real_book(tmp_path_factory):
    """The repository's narrative pages with its own _config.yml and _toc.yml (less the
    notebooks not executed yet: the ci-preset test of the whole study covers those), built
    with -W into a temporary folder: the reader's _build/html is untouched."""
    root = tmp_path_factory.mktemp("real")
    assets.ensure_assets(REPO, quiet=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book", root / "book",
                    ignore=shutil.ignore_patterns("_assets", ".*", "*.partial"))
    (root / "book" / "_assets").symlink_to(REPO / "book" / "_assets", target_is_directory=True)
    toc = _drop_unexecuted(yaml.safe_load((REPO / "_toc.yml").read_text()), REPO)
    if not (REPO / f"{toc['root']}.ipynb").is_file() and toc["root"].startswith(
            layout.EXPERIMENTS + "/"):  # the answer page is executed: the introduction leads
        toc["root"] = "book/index"
        for part in toc["parts"]:
            part["chapters"] = [c for c in part["chapters"] if c.get("file") != "book/index"]
    (root / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return build.build_book(root)


@pytest.mark.slow
def test_real_book_builds_and_reads_offline(real_book, tmp_path):
    assert (real_book / "book" / "index.html").is_file()
    report = browser.check_book(real_book, screenshots=tmp_path, shot_pages=["book/index.html"])
    assert browser.outside_requests(report) == 0, browser.table(report)
    assert not browser.problems(report), browser.problems(report)
    pages = {p["page"]: p for p in report["pages"]}
    assert "book/classroom.html" in pages and "book/status.html" in pages
    assert pages["book/index.html"]["math"]["rendered"] > 0
    assert pages["book/method.html"]["math"]["rendered"] >= 10  # every formula typeset


# --- the method page ------------------------------------------------------------------------
def test_the_answer_opens_the_book_and_the_method_comes_before_the_experiments():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = list(layout._toc_files(toc))
    assert files[0] == f"{layout.EXPERIMENTS}/00-answer"   # the answer is the first page
    assert files.index("book/method") < min(i for i, f in enumerate(files[1:], 1)
                                            if f.startswith(layout.EXPERIMENTS))
    text = (REPO / "book/method.md").read_text()
    numbers = [int(m) for m in re.findall(r"^## (\d+)\. ", text, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 4
    # every parameter the page names exists, and the open choices of the brief are there
    from whypretrain.presets import PARAMS
    section4 = text.split("## 4. ")[1].split("## 5. ")[0]
    named = set(re.findall(r"`([a-z_]+)`", section4))
    # or_merge, empty_set, tol, player_seed land in presets with the library's half
    expected = set(PARAMS) | {"or_merge", "empty_set", "tol", "player_seed"}
    assert named and named <= expected, named - expected
    for word in ("loss_bound", "`tol`", "empty_set", "or_merge", "weighted Jaccard",
                 "area", "first epoch"):
        assert word in text, word


def test_the_footer_year_is_not_typed():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert str(config["copyright"]).isdigit()  # the first year; the build adds this year



# --- the built `ci` book: its provenance (slow: the whole ci study, shared with test_study) --
def _text(html: str) -> str:
    """What a reader reads: the page without its tags."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.mark.slow
def test_ci_book_has_a_status_page_with_the_code_version(ci_study):
    root, _, code = ci_study
    assert code == 0
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=60).stdout.strip()
    status = _text((root / "_build" / "html" / "book" / "status.html").read_text())
    assert head[:12] in status
    for name in layout.notebook_list(root):
        meta = execute.stored_meta(root / layout.EXPERIMENTS / f"{name}.ipynb")
        assert meta["code"]["commit"] == head and meta["wall_s"] > 0, name
        assert name in status
    assert "torch" in status and "jupyter-book" in status and "cores" in status


@pytest.mark.slow
def test_ci_findings_page_names_the_results_it_read(ci_study):
    root, _, _ = ci_study
    findings = _text((root / "_build" / "html" / "book" / "experiments" / "08-findings.html")
                     .read_text())
    # the setup cells are hidden: the story starts with the title, no stray output
    assert "notebook_params" not in findings and "'whypretrain'" not in findings
    assert re.search(r"\bresults [0-9a-f]{12}\b", findings), \
        "the findings page names no results folder (`results <hash12>`)"


@pytest.mark.slow
def test_ci_first_page_opens_with_the_verdicts(ci_study):
    """The answer page's abstract is glued from the stored findings: every setting's count of
    claims that reproduce and every verdict word the table holds."""
    from whypretrain import presets
    from whypretrain.report import findings
    from whypretrain.study import pipeline

    root, overrides, _ = ci_study
    page = _text((root / "_build" / "html" / "book" / "experiments" / "00-answer.html")
                 .read_text())
    table = pipeline.read(presets.resolve("ci", overrides)).part("findings/claims")
    ran = {s: n for s, n in findings.verdict_counts(table).items() if n != findings.NOT_RUN}
    assert ran
    for setting, count in ran.items():
        assert re.search(rf"{setting}\s*:\s*{count} claims reproduce", page), (setting, count)
    for verdict in set(table.loc[table["setting"].isin(list(ran)), "verdict"]):
        assert verdict in page, verdict


@pytest.mark.slow
def test_ci_findings_and_status_pages_read_in_the_browser(ci_study, tmp_path):
    root, _, _ = ci_study
    pages = ["book/experiments/08-findings.html", "book/status.html", "book/method.html"]
    report = browser.check_book(root / "_build" / "html", pages=pages, screenshots=tmp_path,
                                shot_pages=pages[:2])
    assert browser.outside_requests(report) == 0, browser.table(report)
    assert not browser.problems(report), browser.problems(report)
    assert sorted(p["page"] for p in report["pages"]) == sorted(pages)
    for page in pages[:2]:
        assert (tmp_path / page.replace("/", "__").replace(".html", ".png")).stat().st_size \
            > 10_000


def test_status_page_lists_each_notebook_and_what_differs(tmp_path):
    """Status page markdown from hand-made executed notebooks: one executed on this code, one
    on another machine, one never executed."""
    import nbformat

    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nchapters:\n  - file: book/experiments/a\n"
        "  - file: book/experiments/b\n  - file: book/experiments/c\n")
    (tmp_path / layout.EXPERIMENTS).mkdir(parents=True)
    env = execute.environment(REPO)
    other = {**env, "machine": {"cpu": "Some GPU box CPU", "cores": 64, "gpus": ["NVIDIA H100"],
                                "system": "Linux"}}
    for name, extra, wall in (("a", env, 12.5), ("b", other, 125.0)):
        nb = nbformat.v4.new_notebook()
        nb.metadata[execute.META_KEY] = {"hash": "0" * 64, "preset": "ci",
                                         "overrides": {"tau": 0.1}, "params": {"tau": 0.1},
                                         "executed": "2026-01-02T03:04:05Z", "wall_s": wall,
                                         **extra}
        nbformat.write(nb, str(tmp_path / layout.EXPERIMENTS / f"{name}.ipynb"))
    text = build.status_markdown(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| {doc}")]
    assert len(rows) == 2 and "| c | | | not executed |" in text
    assert "12.5 s" in rows[0] and "2 min 5 s" in rows[1] and "tau=0.1" in rows[0]
    assert env["code"]["commit"][:12] in rows[0]
    assert "Total wall time of the notebooks: 2 min 18 s." in text
    # the machines differ: one table each, named by notebook; the libraries agree: one table
    assert "For a:" in text and "For b:" in text and "NVIDIA H100" in text
    assert text.count("| library | version |") == 1
    assert "| `tau` | 0.1 (default 0.05) |" in text


def test_status_page_says_where_the_computing_time_went(tmp_path):
    """Hand-made results and runs in the notebooks' workdir: a seed's masking and extraction
    times, a second engine on the same games, and the training seconds of each run."""
    import nbformat

    from whypretrain.train import runs

    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nchapters:\n  - file: book/experiments/a\n")
    (tmp_path / build.EXPERIMENTS).mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata[execute.META_KEY] = {"hash": "0" * 64, "preset": "ci", "overrides": {},
                                     "params": {"workdir": "work"}, "wall_s": 3.0,
                                     **execute.environment(REPO)}
    nbformat.write(nb, str(tmp_path / build.EXPERIMENTS / "a.ipynb"))
    work = tmp_path / "work"
    folder = work / "results" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"seed": 1, "preset": "ci"}))
    (folder / "engine-aaaa.json").write_text(json.dumps({"optimizer": "exact"}))
    (folder / "engine-bbbb.json").write_text(json.dumps({"optimizer": "sgd"}))
    (folder / "timings.json").write_text(json.dumps(
        {"seed": 1, "games": 45, "masking_s": 2.5, "extraction_s": {"aaaa": 70.0, "bbbb": 4.0}}))
    for kind, seconds in (("pretrain", 30.0), ("scratch", None)):
        run = runs.Run.create(work, dict(kind=kind, seed=1, num_classes=10, epochs=3))
        run.mark_done(seconds)
    text = build.status_markdown(tmp_path)
    assert "## Computations" in text
    # no study in the workdir names the folder: its own parameters do
    assert ("| not in a study (ci) | 1 | 45 | 2.5 s | exact | 1 min 10 s | `0123456789ab` |"
            in text)
    assert ("| not in a study (ci) | 1 | 45 | same games | sgd | 4.0 s | `0123456789ab` |"
            in text)
    rows = [line for line in text.splitlines() if "| pretrain |" in line or "| scratch |" in line]
    assert len(rows) == 2 and "| 1 | pretrain | 3 | 30.0 s |" in rows[0]
    assert "| 1 | scratch | 3 | not recorded |" in rows[1]
    # the masking of one folder counts once, both engines' extractions count
    assert ("Total: training 30.0 s, masking 2.5 s, extraction 1 min 14 s, notebooks 3.0 s."
            in text)
    # the chart of where the time went: written next to the page, which shows it
    page = build.write_status_page(tmp_path)
    assert f"]({Path(build.STATUS_CHART).name})" in page.read_text()
    image = tmp_path / build.STATUS_CHART
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 5_000


def _results_folder(work: Path, setting: dict, seed: int, runs: dict, finals_only: bool,
                    seconds: float) -> str:
    """A results folder as ``seed_results`` writes it for ``setting``: named by the hash of
    its spec, its engine's parameters under their tag, its times."""
    from whypretrain.study import extraction, seed_results
    from whypretrain.train.runs import run_hash

    spec = seed_results.results_spec(setting, seed, runs, finals_only)
    folder = work / "results" / run_hash(spec)
    folder.mkdir(parents=True)
    engine = extraction.engine_params(setting)
    tag = run_hash(engine)
    (folder / "params.json").write_text(json.dumps({**spec, "preset": setting["preset"]}))
    (folder / f"engine-{tag}.json").write_text(json.dumps(engine))
    (folder / "timings.json").write_text(json.dumps(
        {"seed": seed, "games": 30, "masking_s": seconds, "extraction_s": {tag: 1.0}}))
    return folder.name


def test_status_page_names_each_computation_by_its_setting(tmp_path):
    """A workdir with a ci study's manifest and hand-made results folders of the near setting,
    the disjoint setting and the grid point n=4 (finals only, the near runs): each row names
    the setting or the grid point; a folder of a study's games under another engine says so;
    the runs are named by the setting whose parts read them."""
    from whypretrain import presets
    from whypretrain.book import computations
    from whypretrain.study import settings

    work = tmp_path / "work"
    params = presets.resolve("ci", {"workdir": str(work)})
    transfer = settings.transfer_settings(params)
    near = {kind: f"{kind}-near" for kind in ("pretrain", "probe", "finetune", "scratch")}
    apart = {kind: f"{kind}-apart" for kind in near}
    parts = {f"{group}/knowledge": {"group": group, "sources": {"results": [],
                                                                "runs": list(runs.values())}}
             for group, runs in (("near", near), ("disjoint", apart))}
    (work / "studies" / "s").mkdir(parents=True)
    (work / "studies" / "s" / "study.json").write_text(json.dumps({"params": params,
                                                                   "parts": parts}))
    (work / "runs" / near["pretrain"]).mkdir(parents=True)
    (work / "runs" / near["pretrain"] / "params.json").write_text(json.dumps(
        {"kind": "pretrain", "seed": 0, "epochs": 1, "source": "mnist"}))
    (work / "runs" / near["pretrain"] / "done").write_text(json.dumps({"seconds": 8.0}))
    grid = presets.resolve("ci", {"workdir": str(work), "n": 4})
    names = {
        "near": _results_folder(work, transfer["near"], 0, near, False, 2.0),
        "disjoint": _results_folder(work, transfer["disjoint"], 1, apart, False, 3.0),
        "sensitivity: n=4": _results_folder(work, grid, 0, near, True, 4.0),
        # the grid's games with an engine no point of this study asked for
        "sensitivity: n=4, another engine": _results_folder(
            work, {**grid, "tol": 0.5}, 1, near, True, 5.0),
    }
    lines, chart = computations.section([work], {"a": 1.0}, "chart.png")
    rows = {line.split(" | ")[-1].strip("`| ")[:12]: line for line in lines
            if line.startswith("| ") and line.endswith("` |")}
    for label, folder in names.items():
        assert rows[folder[:12]].startswith(f"| {label} |"), rows[folder[:12]]
    assert rows["pretrain-nea"].startswith("| near | 0 | pretrain | 1 | 8.0 s |")
    assert sum(line.startswith("| disjoint | 1 | 30 | 3.0 s |") for line in lines) == 1
    # the chart's table: each setting's masking and extraction, the runs' training
    table = computations.time_table(*[
        f(work, computations.study_index(work)) for f in (computations.results_rows,
                                                          computations.run_rows)], {"a": 1.0})
    got = {(r.step, r.setting): r.seconds for r in table.itertuples()}
    assert got == {("training", "near"): 8.0, ("masking", "near"): 2.0,
                   ("masking", "disjoint"): 3.0, ("masking", "sensitivity"): 9.0,
                   ("extraction", "near"): 1.0, ("extraction", "disjoint"): 1.0,
                   ("extraction", "sensitivity"): 2.0, ("notebooks", "notebooks"): 1.0}
    assert chart is not None


# --- the book as one PDF --------------------------------------------------------------------
def _chromium_or_skip() -> None:
    """Printing needs Chromium (`make test` installs it); outside CI its absence skips."""
    if not any(shutil.which(name) for name in pdf.BROWSERS):
        if os.environ.get("CI"):
            pytest.fail("no Chromium in CI: bash tests/ensure_browser.sh")
        pytest.skip("no Chromium: bash tests/ensure_browser.sh")


def test_pdf_of_a_missing_book_names_the_commands(tmp_path, capsys):
    """No _build/html: one line naming make study / make book, exit 2, nothing written; a
    toc page the build lacks is named."""
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n"
                                       "  - file: book/method\n")
    assert pdf.main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make study" in err and "make book" in err
    assert not (tmp_path / pdf.PDF).exists()
    (tmp_path / pdf.HTML / "book").mkdir(parents=True)
    (tmp_path / pdf.HTML / "index.html").write_text("<title>x</title>")
    (tmp_path / pdf.HTML / "book" / "index.html").write_text("<title>x</title>")
    with pytest.raises(pdf.MissingBook, match="book/method.html"):
        pdf.pages(tmp_path, tmp_path / pdf.HTML)


def _pdf_holds_every_page(root: Path, out: Path):
    """The book of ``root`` printed to ``out``: one bookmark per page of the toc, in its
    order and named by the page's title, each page at least one sheet."""
    from pypdf import PdfReader

    pages = pdf.pages(root, root / pdf.HTML)
    reader = PdfReader(pdf.write_pdf(root, out))
    marks = [(m.title, reader.get_destination_page_number(m)) for m in reader.outline]
    assert [title for title, _ in marks] == [pdf.title(page) for page in pages]
    starts = [start for _, start in marks] + [len(reader.pages)]
    assert starts[0] == 0 and all(a < b for a, b in zip(starts, starts[1:]))
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    assert len(pages) == len(list(layout._toc_files(toc)))
    return reader


@pytest.mark.slow
def test_pdf_of_the_ci_book_holds_every_page_and_its_charts(ci_study, tmp_path):
    _chromium_or_skip()
    root, _, _ = ci_study
    reader = _pdf_holds_every_page(root, tmp_path / "book.pdf")
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "vega-bundle.js is not loaded" not in text and "whypretrain-chart-error" not in text
    training = [m for m in reader.outline if "Training" in m.title][0]
    first = reader.get_destination_page_number(training)
    # a chart drew: its axis titles are text of the training page's sheets
    assert "epoch" in "\n".join(p.extract_text() for p in reader.pages[first:first + 4])
