"""What a notebook calls after its parameters cell: ``notebook_params``, then ``study_result``
(reads the stored study; computes only when the parameters cell's ``compute`` switch is on).

Every notebook in ``notebooks/`` has a cell tagged ``parameters`` whose first line is ``preset =
...``; papermill (``-p name value``) or the runner injects other parameters after it. The next
cell, tagged ``setup``, reads them all::

    from whypretrain.report import charts, notebook
    params = notebook.notebook_params(preset, globals())
    charts.setup()

The kernel's working directory is left alone: the runner starts it at the repository root
(papermill's ``cwd``), and relative ``workdir`` / ``data_root`` values are taken from the
repository root wherever the kernel started (Jupyter starts it in ``notebooks/``), so ``runs/``,
``results/`` and ``data/`` are the same folders as on the command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from whypretrain import presets
from whypretrain.study.catalogue import GROUPS

# Names IPython puts in a notebook's globals that are not parameters.
_NOT_PARAMS = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# The switch of the parameters cell: compute what the page reads when it is missing (True), or
# only read the stored study result (False, the default: the book only reads).
SWITCHES = ("compute",)
EVERY_GROUP = tuple(GROUPS)  # every group of the catalogue, the derived findings last
# Parameters that name folders; a relative one is read from the repository root.
_PATH_PARAMS = ("workdir", "data_root")


def notebook_params(preset: str = "default", namespace: Mapping[str, Any] | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """The validated parameters of a notebook: ``preset`` plus every parameter set in it.

    ``namespace`` is the notebook's ``globals()``: every public, plain value in it (the names
    papermill injected) is read as an override of ``preset``, so a misspelt name stops here too.
    Raises ``ParameterError`` (shown in a notebook as one line) naming the parameter and its
    valid values.
    """
    values: dict[str, Any] = {}
    for name, value in (namespace or {}).items():
        if (name.startswith("_") or name in _NOT_PARAMS or name in SWITCHES or name == "preset"
                or callable(value)
                or type(value).__name__ == "module"):
            continue
        values[name] = value
    values.update(overrides)
    return anchor_paths(presets.resolve(preset, values))


def anchor_paths(params: dict[str, Any], start: str | Path | None = None) -> dict[str, Any]:
    """``params`` with relative ``workdir`` and ``data_root`` made absolute from the repository
    root above ``start`` (default: the working directory); unchanged outside a repository.
    Neither is part of any run's or result's hash, so this changes no name on disk."""
    from whypretrain.layout import find_root

    try:
        root = find_root(start, fallback=False)  # not the library's checkout: only a real parent
    except FileNotFoundError:
        return params
    out = dict(params)
    for name in _PATH_PARAMS:
        if not Path(out[name]).is_absolute():
            out[name] = str(root / out[name])
    return out


def study_result(params: dict[str, Any], compute: bool = False,
                 groups: tuple[str, ...] = ("near",)):
    """The stored study result a page reads, with every part of ``groups`` there
    (``MissingResults``, one line naming the command, otherwise). ``compute`` (the parameters
    cell's switch): first compute what is missing: train and analyse the groups (the far
    setting's games only if they are already there), and derive the findings."""
    from whypretrain.report import parts
    from whypretrain.study import pipeline

    if compute:
        needs = pipeline.COMPUTED if "findings" in groups else groups
        pipeline.compute(params, tuple(g for g in needs if g in pipeline.COMPUTED))
        if "findings" in groups:
            parts.store(params)
    return pipeline.read(params).require(groups)
