"""The runner: train, analyze, execute the notebooks with papermill, build the book.

``study(preset, overrides)`` (the ``whypretrain study`` command) does, in order:

1. ``training.train_study(params)`` and ``study.compute_all(params)`` (both reuse what is
   already on disk);
2. every notebook the book lists, in ``_toc.yml`` order: an entry ``book/experiments/NAME`` is
   the executed copy of ``notebooks/NAME.ipynb``. papermill runs it with the kernel's working
   directory at the repository root (so ``runs/``, ``results/`` and ``data/`` resolve the same
   as on the command line), parameters ``preset`` plus the overrides. A notebook whose hash of
   (source notebook, parameters, library code) equals the one stored in its executed copy is
   skipped. Execution writes to ``_build/.partial/`` and replaces the executed copy only on
   success;
3. ``jupyter-book build --all . -W -n --keep-going`` into a fresh folder that replaces
   ``_build/html`` only when the build passed.

A failure names the notebook and its cell and leaves the previous executed notebooks and the
previous book in place. ``python -m whypretrain.runner assets`` fetches the book's offline
JavaScript (run by ``make setup``); nothing else here needs the network.

``notebook_params(...)`` is what every notebook calls in the cell after its parameters cell.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import presets

PACKAGE_DIR = Path(__file__).resolve().parent
EXPERIMENTS = "book/experiments"   # executed notebooks, as the book shows them (git-ignored)
NOTEBOOKS = "notebooks"            # source notebooks, stored without outputs
ASSETS = "book/_assets"            # fetched / generated JavaScript (git-ignored)
HASH_KEY = "whypretrain"           # executed notebook metadata: {"hash", "params", ...}

# Pinned offline JavaScript of the book (npm registry; sha512 checked after download).
NPM_PINS: dict[str, tuple[str, str]] = {
    "requirejs": ("2.3.8", "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c"
                           "+Jd5otXKGNehIonFlyQXSowL6Mw=="),
    "@jupyter-widgets/html-manager": ("1.0.15", "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4x"
                                                "JDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="),
    "mathjax": ("3.2.2", "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsj"
                         "KPZGJvtRZM1vO+geW0OhGw=="),
}
# Which files of each package the book serves, as (path in the package, path under ASSETS/wp).
_MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "output/chtml.js", "ui", "a11y",
                  "sre", "adaptors")


class ParameterError(ValueError):
    """A bad notebook parameter: shown in a notebook as one line, without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython calls this instead of the traceback
        return [f"\x1b[31mParameterError\x1b[0m: {self}"]


class NotebookError(RuntimeError):
    """A notebook failed during ``execute_notebooks``; the message names it and its cell."""


class BuildError(RuntimeError):
    """``jupyter-book build`` failed; the previous book is left in place."""


# ---------------------------------------------------------------------------------------------
# Parameters inside a notebook
# ---------------------------------------------------------------------------------------------
_NOT_PARAMS = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def notebook_params(preset: str = "default", namespace: Mapping[str, Any] | None = None,
                    chdir: bool = True, **overrides: Any) -> dict[str, Any]:
    """The validated parameters of a notebook: ``preset`` plus every parameter set in it.

    Call it in the cell after the parameters cell, as ``params = runner.notebook_params(preset,
    globals())``: every public, plain value in ``namespace`` (the names papermill injected with
    ``-p``) is read as an override of ``preset``, so a misspelt name stops here too. Raises
    ``ParameterError`` naming the parameter and its valid values.

    With ``chdir`` (the default) the kernel moves to the repository root (the folder above
    that holds ``_toc.yml``), so ``runs/``, ``results/`` and ``data/`` are the same whether the
    notebook runs under the runner, under papermill from anywhere in the repository, or in
    Jupyter from ``notebooks/``.
    """
    values: dict[str, Any] = {}
    for name, value in (namespace or {}).items():
        if (name.startswith("_") or name in _NOT_PARAMS or name == "preset" or callable(value)
                or type(value).__name__ == "module"):
            continue
        values[name] = value
    values.update(overrides)
    try:
        params = presets.resolve(preset, values)
    except ValueError as err:
        raise ParameterError(str(err)) from None
    if chdir:
        try:
            os.chdir(find_root())
        except FileNotFoundError:
            pass
    return params


# ---------------------------------------------------------------------------------------------
# Which notebooks, and whether they are up to date
# ---------------------------------------------------------------------------------------------
def find_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root: the nearest folder, upwards, that holds ``_toc.yml``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    fallback = PACKAGE_DIR.parent.parent
    if (fallback / "_toc.yml").is_file():
        return fallback
    raise FileNotFoundError(f"no _toc.yml in {here} or above: run from the repository")


def _toc_files(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield node[key]
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def notebook_list(root: str | os.PathLike) -> list[str]:
    """Names of the notebooks the book shows, in ``_toc.yml`` order (entries under
    ``book/experiments/``). Each must exist as ``notebooks/NAME.ipynb``."""
    import yaml

    root = Path(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = []
    for entry in _toc_files(toc):
        entry = entry.removesuffix(".ipynb")
        if entry.startswith(EXPERIMENTS + "/"):
            name = entry[len(EXPERIMENTS) + 1:]
            if not (root / NOTEBOOKS / f"{name}.ipynb").is_file():
                raise FileNotFoundError(f"_toc.yml lists {entry}, but {NOTEBOOKS}/{name}.ipynb "
                                        "does not exist")
            names.append(name)
    return names


def library_hash() -> str:
    """Hash of the library's code (every .py of the package), part of each notebook's hash."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def notebook_hash(source: Path, params: Mapping[str, Any], lib_hash: str | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(source.read_bytes())
    digest.update(json.dumps({k: _jsonable(v) for k, v in params.items()}, sort_keys=True,
                             default=str).encode())
    digest.update((lib_hash or library_hash()).encode())
    return digest.hexdigest()


def stored_hash(executed: Path) -> str | None:
    if not executed.is_file():
        return None
    try:
        meta = json.loads(executed.read_text()).get("metadata", {})
    except (OSError, ValueError):
        return None
    return meta.get(HASH_KEY, {}).get("hash")


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------
def _say(text: str) -> None:
    print(text, flush=True)


def _first_line(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0][:80] + (" ..." if len(lines) > 1 or len(lines[0]) > 80 else "")


def _cell_name(executed: Path, err: Any) -> str:
    """'code cell K' (counted in the source notebook, without papermill's injected cell), plus
    the In [N] the reader sees in the executed copy."""
    import nbformat

    try:
        code = [c for c in nbformat.read(str(executed), as_version=4).cells
                if c.cell_type == "code"
                and "injected-parameters" not in c.metadata.get("tags", [])]
        k = next(i for i, c in enumerate(code, 1) if c.execution_count == err.exec_count)
        return f"code cell {k} (In [{err.exec_count}])"
    except Exception:  # the partial copy is unreadable: papermill's own numbers
        return f"cell In [{err.exec_count}]"


def execute_notebooks(root: str | os.PathLike, preset: str = "default",
                      overrides: Mapping[str, Any] | None = None,
                      names: Iterable[str] | None = None, force: bool = False) -> dict[str, str]:
    """Execute the book's notebooks in order; returns ``{name: "executed" | "skipped"}``.

    Raises ``NotebookError`` (naming the notebook, the cell and the error) at the first
    failure; the previous executed copy of that notebook stays as it was, and the failed run is
    kept in ``_build/.partial/NAME.ipynb`` for a look.
    """
    import nbformat
    import papermill as pm

    root = Path(root).resolve()
    overrides = dict(overrides or {})
    params = presets.resolve(preset, overrides)  # raises ValueError before anything runs
    # Injected as typed values (papermill writes them as Python literals).
    injected = {"preset": preset, **{k: _jsonable(params[k]) for k in overrides}}
    names = list(notebook_list(root) if names is None else names)
    out_dir = root / EXPERIMENTS
    partial_dir = root / "_build" / ".partial"
    out_dir.mkdir(parents=True, exist_ok=True)
    partial_dir.mkdir(parents=True, exist_ok=True)
    lib_hash = library_hash()
    status: dict[str, str] = {}
    env_before = os.environ.get("WHYPRETRAIN_BOOK")
    os.environ["WHYPRETRAIN_BOOK"] = "1"  # the kernels inherit it: charts.setup() -> book renderer
    try:
        for i, name in enumerate(names, 1):
            source = root / NOTEBOOKS / f"{name}.ipynb"
            target = out_dir / f"{name}.ipynb"
            digest = notebook_hash(source, params, lib_hash)
            tag = f"[{i}/{len(names)}] {name}"
            if not force and stored_hash(target) == digest:
                _say(f"{tag}: up to date, skipped")
                status[name] = "skipped"
                continue
            _say(f"{tag}: executing ...")
            partial = partial_dir / f"{name}.ipynb"
            start = time.perf_counter()
            try:
                pm.execute_notebook(
                    str(source), str(partial), parameters=injected, cwd=str(root),
                    kernel_name="python3", language="python",
                    progress_bar=sys.stderr.isatty(), log_output=False,
                )
            except pm.PapermillExecutionError as err:
                raise NotebookError(
                    f"notebook {name} failed in {_cell_name(partial, err)} of "
                    f"{source.relative_to(root)} "
                    f"[{_first_line(err.source)}]: {err.ename}: {err.evalue}\n"
                    f"  the failed run is in {partial.relative_to(root)}; the previous "
                    f"{target.relative_to(root)} and the previous book are unchanged") from None
            except Exception as err:  # kernel died, papermill itself failed, ...
                raise NotebookError(f"notebook {name} ({source.relative_to(root)}) failed: "
                                    f"{type(err).__name__}: {err}") from None
            nb = nbformat.read(str(partial), as_version=4)
            nb.metadata[HASH_KEY] = {"hash": digest, "preset": preset, "overrides":
                                     {k: injected[k] for k in overrides},
                                     "library_hash": lib_hash,
                                     "executed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            nbformat.write(nb, str(partial))
            os.replace(partial, target)
            _say(f"{tag}: done in {time.perf_counter() - start:.1f} s")
            status[name] = "executed"
    finally:
        if env_before is None:
            os.environ.pop("WHYPRETRAIN_BOOK", None)
        else:
            os.environ["WHYPRETRAIN_BOOK"] = env_before
    return status


# ---------------------------------------------------------------------------------------------
# Offline JavaScript of the book
# ---------------------------------------------------------------------------------------------
def _vegalite_version() -> str:
    import altair as alt

    return alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]  # "v6.4.1" -> "6.4"


def _asset_pins() -> dict[str, str]:
    import vl_convert

    return {**{name: ver for name, (ver, _) in NPM_PINS.items()},
            "vega-lite": _vegalite_version(), "vl-convert-python": vl_convert.__version__}


def _fetch_npm(name: str, version: str, integrity: str, dest: Path) -> Path:
    """The package tarball, by ``npm pack`` (or the registry's tarball URL when npm is
    missing), its sha512 checked against the pin."""
    dest.mkdir(parents=True, exist_ok=True)
    tarball = None
    if shutil.which("npm"):
        out = subprocess.run(["npm", "pack", "--silent", f"{name}@{version}",
                              "--pack-destination", str(dest)], capture_output=True, text=True,
                             cwd=dest)
        if out.returncode == 0 and out.stdout.strip():
            tarball = dest / out.stdout.strip().splitlines()[-1]
    if tarball is None or not tarball.is_file():
        base = name.split("/")[-1]
        url = f"https://registry.npmjs.org/{name}/-/{base}-{version}.tgz"
        tarball = dest / f"{base}-{version}.tgz"
        with urllib.request.urlopen(url, timeout=120) as resp:
            tarball.write_bytes(resp.read())
    algo, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if actual != expected:
        raise RuntimeError(f"{name}@{version}: integrity mismatch ({tarball})")
    return tarball


def _extract(tarball: Path, members: Iterable[str], dest: Path) -> None:
    """Copy ``package/<member>`` (files or folders) of an npm tarball to ``dest/<member>``."""
    members = [m.rstrip("/") for m in members]
    with tarfile.open(tarball) as tar:
        for info in tar.getmembers():
            rel = info.name.removeprefix("package/")
            if not info.isfile() or not any(rel == m or rel.startswith(m + "/") for m in members):
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(info) as src:  # type: ignore[union-attr]
                out.write_bytes(src.read())


def ensure_assets(root: str | os.PathLike, quiet: bool = False) -> Path:
    """Fetch / generate the book's offline JavaScript into ``book/_assets/wp`` (idempotent: a
    stamp with the pinned versions makes a second call instant). Returns the folder.

    - ``vega-bundle.js``: vega, vega-lite (Altair's version) and vega-embed, from vl-convert,
      wrapped in a function so its top-level names do not clash with Sphinx's;
    - ``require.js``, ``widgets/`` (``@jupyter-widgets/html-manager`` ``dist``: embed-amd.js and
      its fonts), ``mathjax/`` (MathJax 3, the tex-mml-chtml component and what it loads).
    """
    root = Path(root)
    folder = root / ASSETS / "wp"
    stamp = root / ASSETS / "versions.json"
    pins = _asset_pins()
    if stamp.is_file() and json.loads(stamp.read_text()) == pins:
        return folder
    start = time.perf_counter()
    if not quiet:
        _say(f"fetching the book's offline JavaScript into {folder} ...")
    tmp = Path(tempfile.mkdtemp(prefix=".assets-", dir=root / ASSETS if (root / ASSETS).is_dir()
                                else None))
    try:
        new = tmp / "wp"
        new.mkdir()
        import vl_convert

        bundle = vl_convert.javascript_bundle(vl_version=pins["vega-lite"])
        (new / "vega-bundle.js").write_text(
            f"/* vega + vega-lite {pins['vega-lite']} + vega-embed, bundled by vl-convert "
            f"{pins['vl-convert-python']} */\n(function(){{\n{bundle}\n}})();\n")
        tarballs = {name: _fetch_npm(name, ver, integ, tmp / "npm")
                    for name, (ver, integ) in NPM_PINS.items()}
        _extract(tarballs["requirejs"], ["require.js"], new)
        _extract(tarballs["@jupyter-widgets/html-manager"], ["dist"], new / "widgets-pkg")
        widgets = new / "widgets"
        widgets.mkdir()
        for path in (new / "widgets-pkg" / "dist").iterdir():
            # embed-amd.js and the fonts it names by hash; not the maps or the non-AMD build.
            if path.name == "embed-amd.js" or path.suffix in (".woff", ".woff2", ".ttf", ".eot",
                                                             ".svg"):
                shutil.move(str(path), widgets / path.name)
        shutil.rmtree(new / "widgets-pkg")
        _extract(tarballs["mathjax"], [f"es5/{p}" for p in _MATHJAX_PARTS], new / "mathjax-pkg")
        shutil.move(str(new / "mathjax-pkg" / "es5"), new / "mathjax")
        shutil.rmtree(new / "mathjax-pkg")
        (root / ASSETS).mkdir(parents=True, exist_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(new), folder)
        stamp.write_text(json.dumps(pins, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        _say(f"  done in {time.perf_counter() - start:.1f} s ({pins})")
    return folder


# ---------------------------------------------------------------------------------------------
# The book
# ---------------------------------------------------------------------------------------------
def build_book(root: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """``jupyter-book build --all <root> -W -n --keep-going`` into a temporary folder that
    replaces ``out`` (default ``<root>/_build/html``) only when the build passed. Raises
    ``BuildError`` with the build's warnings otherwise. Returns ``out``."""
    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / "_build" / "html"
    ensure_assets(root)
    work = out.parent / f".{out.name}.next"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", "--all", str(root), "-W", "-n",
           "--keep-going", "--path-output", str(work)]
    _say("building the book (jupyter-book build --all . -W -n --keep-going) ...")
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
    _say(f"  built in {time.perf_counter() - start:.1f} s")
    return out


def run_book(preset: str = "default", overrides: Mapping[str, Any] | None = None,
             root: str | os.PathLike | None = None, force: bool = False) -> int:
    """Execute the notebooks and build the book; returns an exit status (0 = the book is new)."""
    root = find_root(root)
    try:
        execute_notebooks(root, preset, overrides, force=force)
        out = build_book(root)
    except (NotebookError, BuildError, FileNotFoundError, ValueError) as err:
        print(f"whypretrain study: {err}", file=sys.stderr, flush=True)
        return 1
    _say(f"\nthe book is ready: open {out / 'index.html'}\n"
         f"  (or serve it: python -m http.server -d {out} and open http://127.0.0.1:8000)")
    return 0


def study(preset: str = "default", overrides: Mapping[str, Any] | None = None,
          root: str | os.PathLike | None = None) -> int:
    """The whole study: train, analyze, execute every notebook, build the book."""
    try:
        params = presets.resolve(preset, overrides)
    except ValueError as err:
        print(f"whypretrain study: {err}", file=sys.stderr)
        return 2
    from .training import train_study  # imported here: the runner must stay light for notebooks
    from .study import compute_all

    _say(f"== training ({preset}) ==")
    train_study(params)
    _say(f"== analysis ({preset}) ==")
    compute_all(params)
    _say("== notebooks and book ==")
    return run_book(preset, overrides, root)


def main(argv: list[str] | None = None) -> int:
    """``python -m whypretrain.runner assets|book [--root R] [--preset P] [--set k=v]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m whypretrain.runner")
    parser.add_argument("command", choices=("assets", "book"),
                        help="assets: fetch the offline JavaScript; book: execute the notebooks "
                             "and build the book (no training)")
    parser.add_argument("--root", default=None)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args(argv)
    root = find_root(args.root)
    if args.command == "assets":
        ensure_assets(root, quiet=False)
        return 0
    return run_book(args.preset, presets.parse_sets(args.sets), root)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
