"""The book: its layout on disk, its status page, and the jupyter-book build.

Layout: the repository root holds ``_toc.yml`` and ``_config.yml``; an entry
``book/experiments/NAME`` of the toc is the executed copy of ``notebooks/NAME.ipynb``
(``execute.py`` makes it); every other page is a file under ``book/``.

``build_book(root)`` writes the status page (``book/status.md``, generated: a table per notebook
of its parameters, wall time, code version, library versions and machine, read from the
executed notebooks' metadata; and where the time of the computations went, read from the
notebooks' workdirs and named by the setting or grid point each was computed for
(``computations.py``): per results folder the seconds of masking and extraction, per training
run its seconds, and a chart of them, ``book/status-time.png``), then runs
``jupyter-book build --all <root> -W -n --keep-going`` into a fresh folder that replaces ``_build/html`` only when the build passed. The footer's
copyright runs from the first year in ``_config.yml`` to the year of the build.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from whypretrain.book.computations import wall
from whypretrain.distributed import say
from whypretrain.layout import EXPERIMENTS, STATUS_PAGE, notebook_list


# the status page's chart of where the time went (generated next to the page, git-ignored)
STATUS_CHART = "book/status-time.png"


class BuildError(RuntimeError):
    """``jupyter-book build`` failed; the previous book is left in place."""


# ---------------------------------------------------------------------------------------------
# The status page
# ---------------------------------------------------------------------------------------------
def _commit(code: dict | None) -> str:
    if code is None:
        return "not recorded"
    if not code.get("commit"):
        return "not a git checkout"
    return f"`{code['commit'][:12]}`" + (" (modified)" if code.get("dirty") else "")


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def _groups(metas: dict[str, dict], key: str) -> list[tuple[list[str], Any]]:
    """Notebooks grouped by equal ``meta[key]``, in notebook order."""
    out: list[tuple[list[str], Any]] = []
    for name, meta in metas.items():
        value = meta.get(key)
        for names, seen in out:
            if seen == value:
                names.append(name)
                break
        else:
            out.append(([name], value))
    return out


def _fact_tables(metas: dict[str, dict], key: str, header: tuple[str, str],
                 rows) -> list[str]:
    """One two-column table per group of notebooks that share ``meta[key]``."""
    lines: list[str] = []
    groups = _groups(metas, key)
    for names, value in groups:
        if value is None:
            lines += [f"{', '.join(names)}: not recorded (executed before this was recorded).", ""]
            continue
        if len(groups) > 1:
            lines += [f"For {', '.join(names)}:", ""]
        lines += [f"| {header[0]} | {header[1]} |", "|---|---|"]
        lines += [f"| {label} | {_cell(text)} |" for label, text in rows(value)]
        lines.append("")
    return lines


def _notebook_rows(metas: dict[str, dict]) -> tuple[list[str], float]:
    """One row of the status page's notebook table per notebook, and their total wall time."""
    rows, total = [], 0.0
    for name, meta in metas.items():
        if not meta:
            rows.append(f"| {name} | | | not executed | | |")
            continue
        overrides = ", ".join(f"{k}={v}" for k, v in meta.get("overrides", {}).items()) or "none"
        seconds = meta.get("wall_s")
        total += seconds if isinstance(seconds, (int, float)) else 0.0
        when = meta.get("executed", "").replace("T", " ").rstrip("Z")
        rows.append(f"| {{doc}}`{name} <experiments/{name}>` | {meta.get('preset', '')} | "
                    f"{_cell(overrides)} | {when} | {wall(seconds)} | "
                    f"{_commit(meta.get('code'))} |")
    return rows, total


def status_markdown(root: str | os.PathLike) -> str:
    """The status page: per notebook of the book, how its executed copy was made."""
    return status_page(root)[0]


def status_page(root: str | os.PathLike) -> tuple[str, Any]:
    """The status page's Markdown and its chart of where the time went (None when no
    computation recorded a time; the page shows it from ``STATUS_CHART``)."""
    from whypretrain import __version__
    from whypretrain.book.execute import stored_meta
    from whypretrain.presets import PARAMS
    from whypretrain.provenance import code_version

    root = Path(root)
    names = notebook_list(root, check=False)
    metas = {name: stored_meta(root / EXPERIMENTS / f"{name}.ipynb") for name in names}
    executed = {name: meta for name, meta in metas.items() if meta}
    code = code_version(root)
    lines = [
        "# Status of this build", "",
        "How each page of the study was made: the parameters, the code version, the libraries "
        "and the machine that executed its notebook, and how long it took. The build writes "
        "this page from what the runner stores in each executed notebook; a notebook whose "
        "inputs did not change since an earlier run keeps that run's record.", "",
        f"Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by whypretrain "
        f"{__version__}, code version {_commit(code)}.", "",
        "## Notebooks", "",
        "| notebook | preset | overrides | executed (UTC) | wall time | code version |",
        "|---|---|---|---|---|---|",
    ]
    rows, total = _notebook_rows(metas)
    lines += rows
    lines += ["", f"Total wall time of the notebooks: {wall(total)}.", ""]
    if not executed:
        return "\n".join(lines + ["No notebook has been executed yet: run "
                                  "`whypretrain study`.", ""]), None
    computed, chart = _computation_times(root, executed)
    lines += computed

    lines += ["## Parameters", "",
              "Every parameter the notebooks ran with (`whypretrain presets` describes each; "
              "the method page, {doc}`method`, says what they mean)." if
              (root / "book/method.md").is_file() else
              "Every parameter the notebooks ran with (`whypretrain presets` describes each).",
              ""]
    lines += _fact_tables(executed, "params", ("parameter", "value"), lambda params: [
        (f"`{k}`", f"{v}" + ("" if k not in PARAMS or _same(PARAMS[k].default, v)
                             else f" (default {PARAMS[k].default})"))
        for k, v in params.items()])
    lines += ["## Libraries", ""]
    lines += _fact_tables(executed, "versions", ("library", "version"), lambda versions: [
        (name, version or "not installed") for name, version in versions.items()])
    lines += ["## Machine", ""]
    lines += _fact_tables(executed, "machine", ("", ""), lambda machine: [
        ("CPU", machine.get("cpu") or "unknown"), ("cores", f"{machine.get('cores')}"),
        ("GPU", ", ".join(machine.get("gpus") or []) or "none"),
        ("system", machine.get("system") or "unknown")])
    return "\n".join(lines), chart


def _workdirs(root: Path, metas: dict[str, dict]) -> list[Path]:
    """The workdirs the notebooks read, in notebook order (a relative one is taken from the
    root, where the notebooks ran)."""
    out: list[Path] = []
    for meta in metas.values():
        workdir = (meta.get("params") or {}).get("workdir")
        if isinstance(workdir, str):
            path = root / workdir if not Path(workdir).is_absolute() else Path(workdir)
            if path.resolve() not in out:
                out.append(path.resolve())
    return out


def _computation_times(root: Path, executed: dict[str, dict]) -> tuple[list[str], Any]:
    """The section on the computations of the notebooks' workdirs and its chart
    (``computations.section``), the chart's image next to the status page."""
    from whypretrain.book.computations import section

    notebooks = {name: meta.get("wall_s") for name, meta in executed.items()}
    return section(_workdirs(root, executed), notebooks, Path(STATUS_CHART).name)


def _same(default: Any, value: Any) -> bool:
    return (list(default) if isinstance(default, tuple) else default) == value


def write_status_page(root: str | os.PathLike) -> Path:
    from whypretrain import integrity

    root = Path(root)
    path = root / STATUS_PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    text, chart = status_page(root)
    image = root / STATUS_CHART
    if chart is None:
        image.unlink(missing_ok=True)
    else:
        from whypretrain.book.computations import save_chart
        save_chart(chart, image)
    # in the repository's book/: no record (a manifest there would be one more stray file)
    integrity.write(path, text.encode(), record=False)
    return path


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------
def _config_for_build(root: Path, work: Path) -> Path:
    """``_config.yml`` with the copyright from its first year to this year."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    first = str(config.get("copyright", "")).split("-")[0].strip()
    year = time.gmtime().tm_year
    if first.isdigit() and int(first) < year:
        config["copyright"] = f"{first}-{year}"
    elif not first.isdigit():
        config["copyright"] = str(year)
    path = work / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_book(root: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the status page and run ``jupyter-book build --all <root> -W -n --keep-going``
    into a temporary folder that replaces ``out`` (default ``<root>/_build/html``) only when the
    build passed. Raises ``BuildError`` with the build's warnings otherwise. Returns ``out``."""
    from whypretrain.book.assets import ensure_assets

    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / "_build" / "html"
    ensure_assets(root)
    write_status_page(root)
    work = out.parent / f".{out.name}.next"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = _config_for_build(root, work)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", "--all", str(root), "-W", "-n",
           "--keep-going", "--config", str(config), "--path-output", str(work)]
    say("building the book (jupyter-book build --all . -W -n --keep-going) ...")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    built = work / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        log = work / "build.log"
        log.write_text(proc.stdout + proc.stderr)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                    if "WARNING" in line or "ERROR" in line or "Error" in line]
        raise BuildError("the book did not build (the previous book is unchanged); "
                         f"full log: {log}\n" + "\n".join(problems[-30:]))
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(built, out)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    say(f"  built in {time.perf_counter() - start:.1f} s")
    return out
