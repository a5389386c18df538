"""Execute the book's notebooks with papermill, and record how each was made.

``execute_notebooks(root, preset, overrides)`` runs every notebook the book lists, in
``_toc.yml`` order (``layout.notebook_list``): ``notebooks/NAME.ipynb`` is executed into
``book/experiments/NAME.ipynb`` with the kernel's working directory at the repository root (so
``runs/``, ``results/`` and ``data/`` resolve as on the command line) and the parameters
``preset`` plus the overrides.

- Skip: a notebook whose hash of (source notebook, parameters, library code) equals the one
  stored in its executed copy is not run again.
- Atomic: execution writes to ``_build/.partial/``; the executed copy is replaced only on
  success, so a failure leaves the previous copy (and the previous book) in place.
- Provenance: the executed copy's metadata ``whypretrain`` holds the hash, the parameters, the
  wall time, the code version (git commit and whether tracked files were modified), the
  library versions and the machine (``environment()``); the book's status page lists them.
- Readers see the story, not the plumbing: in the executed copy the cells tagged ``setup``,
  ``parameters`` and ``injected-parameters`` get myst-nb's ``remove-cell`` tag (the source
  notebooks are unchanged, and the downloadable notebook keeps those cells).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from whypretrain import presets
from whypretrain.distributed import say
from whypretrain.layout import EXPERIMENTS, NOTEBOOKS, PACKAGE_DIR, notebook_list
from whypretrain.provenance import code_version

META_KEY = "whypretrain"     # executed notebook metadata: hash, parameters, provenance
HIDDEN_TAGS = ("setup", "parameters", "injected-parameters")
HIDE_TAG = "remove-cell"     # myst-nb: neither the cell's input nor its output is rendered
# Library versions recorded with each executed notebook (distribution names).
VERSIONS = ("whypretrain", "torch", "numpy", "altair", "papermill", "jupyter-book")


class NotebookError(RuntimeError):
    """A notebook failed; the message names it and its cell."""


# ---------------------------------------------------------------------------------------------
# Hashes: is an executed notebook up to date?
# ---------------------------------------------------------------------------------------------
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


def stored_meta(executed: Path) -> dict[str, Any]:
    """The ``whypretrain`` metadata of an executed notebook ({} when missing or unreadable)."""
    if not executed.is_file():
        return {}
    try:
        return json.loads(executed.read_text()).get("metadata", {}).get(META_KEY, {})
    except (OSError, ValueError):
        return {}


def stored_hash(executed: Path) -> str | None:
    return stored_meta(executed).get("hash")


# ---------------------------------------------------------------------------------------------
# Provenance: code version (provenance.code_version), library versions, machine
# ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """The GPUs nvidia-smi sees (without importing torch in the runner's process)."""
    if not shutil.which("nvidia-smi"):
        return []
    proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                           "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()] \
        if proc.returncode == 0 else []


def environment(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """What made a notebook's numbers besides its parameters: code, libraries, machine."""
    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return {"code": code_version(root), "versions": versions,
            "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "gpus": _gpus(),
                        "system": f"{platform.system()} {platform.release()}"}}


# ---------------------------------------------------------------------------------------------
# Cells the reader does not see
# ---------------------------------------------------------------------------------------------
def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def setup_cells(cells: list[Any]) -> list[int]:
    """Indexes of the cells hidden from readers: those tagged ``setup``, ``parameters`` or
    ``injected-parameters``. A notebook with no ``setup`` tag yet: its code cells before the
    parameters cell, and the code cell right after the parameters that calls
    ``notebook_params``, count as setup."""
    hidden = [i for i, c in enumerate(cells) if set(_tags(c)) & set(HIDDEN_TAGS)]
    if any("setup" in _tags(c) for c in cells):
        return hidden
    code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    params = [i for i in code if set(_tags(cells[i])) & {"parameters", "injected-parameters"}]
    if not params:
        return hidden
    extra = [i for i in code if i < params[0]]
    after = [i for i in code if i > params[-1]]
    if after and "notebook_params" in "".join(cells[after[0]].get("source", "")):
        extra.append(after[0])
    return sorted(set(hidden) | set(extra))


def hide_setup(nb: Any) -> Any:
    """Tag the setup cells of ``nb`` (in place) with ``remove-cell``; returns ``nb``."""
    for i in setup_cells(nb.cells):
        cell = nb.cells[i]
        tags = _tags(cell)
        if HIDE_TAG not in tags:
            cell.metadata["tags"] = tags + [HIDE_TAG]
    return nb


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------
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


def _run_notebook(root: Path, source: Path, partial: Path, injected: dict[str, Any]) -> float:
    """Execute ``source`` into ``partial`` with papermill; its wall time in seconds.
    ``NotebookError`` names the notebook, the cell and the error."""
    import papermill as pm

    target = root / EXPERIMENTS / source.name
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(source), str(partial), parameters=injected, cwd=str(root),
            kernel_name="python3", language="python",
            progress_bar=sys.stderr.isatty(), log_output=False,
        )
    except pm.PapermillExecutionError as err:
        raise NotebookError(
            f"notebook {source.stem} failed in {_cell_name(partial, err)} of "
            f"{source.relative_to(root)} "
            f"[{_first_line(err.source)}]: {err.ename}: {err.evalue}\n"
            f"  the failed run is in {partial.relative_to(root)}; the previous "
            f"{target.relative_to(root)} and the previous book are unchanged") from None
    except Exception as err:  # kernel died, papermill itself failed, ...
        raise NotebookError(f"notebook {source.stem} ({source.relative_to(root)}) failed: "
                            f"{type(err).__name__}: {err}") from None
    return time.perf_counter() - start


def execute_notebooks(root: str | os.PathLike, preset: str = "default",
                      overrides: Mapping[str, Any] | None = None,
                      names: Iterable[str] | None = None, force: bool = False) -> dict[str, str]:
    """Execute the book's notebooks in order; returns ``{name: "executed" | "skipped"}``.

    Raises ``ValueError`` on a bad parameter before any kernel starts, and ``NotebookError``
    (naming the notebook, the cell and the error) at the first failure; the previous executed
    copy of that notebook stays as it was, and the failed run is kept in
    ``_build/.partial/NAME.ipynb`` for a look.
    """
    import nbformat

    root = Path(root).resolve()
    overrides = dict(overrides or {})
    params = presets.resolve(preset, overrides)
    # Injected as typed values (papermill writes them as Python literals).
    injected = {"preset": preset, **{k: _jsonable(params[k]) for k in overrides}}
    names = list(notebook_list(root) if names is None else names)
    out_dir = root / EXPERIMENTS
    partial_dir = root / "_build" / ".partial"
    out_dir.mkdir(parents=True, exist_ok=True)
    partial_dir.mkdir(parents=True, exist_ok=True)
    lib_hash = library_hash()
    env = None  # computed once, on the first notebook that runs
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
                say(f"{tag}: up to date, skipped")
                status[name] = "skipped"
                continue
            say(f"{tag}: executing ...")
            env = env or environment(root)
            partial = partial_dir / f"{name}.ipynb"
            wall = _run_notebook(root, source, partial, injected)
            nb = hide_setup(nbformat.read(str(partial), as_version=4))
            nb.metadata[META_KEY] = {
                "hash": digest, "preset": preset,
                "overrides": {k: injected[k] for k in overrides},
                "params": {k: _jsonable(v) for k, v in params.items()},
                "library_hash": lib_hash,
                "executed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "wall_s": round(wall, 2), **env}
            nbformat.write(nb, str(partial))
            os.replace(partial, target)
            say(f"{tag}: done in {wall:.1f} s")
            status[name] = "executed"
    finally:
        if env_before is None:
            os.environ.pop("WHYPRETRAIN_BOOK", None)
        else:
            os.environ["WHYPRETRAIN_BOOK"] = env_before
    return status
