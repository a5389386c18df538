"""The book's infrastructure: offline assets, the chart renderer, the real book's configuration
(built with -W into a temporary folder, then opened in headless Chromium)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import pytest
import yaml

from whypretrain import charts, runner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_assets_are_local_and_pinned():
    folder = runner.ensure_assets(REPO, quiet=True)
    pins = json.loads((REPO / runner.ASSETS / "versions.json").read_text())
    assert pins["vega-lite"] == alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    for rel in ("vega-bundle.js", "require.js", "widgets/embed-amd.js",
                "mathjax/tex-mml-chtml.js", "mathjax/output/chtml/fonts/woff-v2"):
        assert (folder / rel).exists(), rel
    assert list((folder / "widgets").glob("*.woff2"))  # the widget manager's fonts
    bundle = (folder / "vega-bundle.js").read_text()
    assert bundle.split("\n", 2)[1] == "(function(){" and bundle.rstrip().endswith("})();")
    # the second call is a no-op (the stamp matches)
    mtime = (folder / "vega-bundle.js").stat().st_mtime_ns
    runner.ensure_assets(REPO, quiet=True)
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
        if entry.startswith(runner.EXPERIMENTS + "/") and not (
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
    runner.ensure_assets(REPO, quiet=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book", root / "book",
                    ignore=shutil.ignore_patterns("_assets", ".*", "*.partial"))
    (root / "book" / "_assets").symlink_to(REPO / "book" / "_assets", target_is_directory=True)
    toc = _drop_unexecuted(yaml.safe_load((REPO / "_toc.yml").read_text()), REPO)
    (root / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return runner.build_book(root)


@pytest.mark.slow
def test_real_book_builds_and_reads_offline(real_book, tmp_path):
    assert (real_book / "book" / "index.html").is_file()
    report = browser.check_book(real_book, screenshots=tmp_path, shot_pages=["book/index.html"])
    assert browser.outside_requests(report) == 0, browser.table(report)
    assert not browser.problems(report), browser.problems(report)
    pages = {p["page"]: p for p in report["pages"]}
    assert "book/classroom.html" in pages
    assert pages["book/index.html"]["math"]["rendered"] > 0
