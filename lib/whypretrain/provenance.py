"""Where a number comes from: the results and runs a reading function read, and the command
that rebuilds them.

Every reading function of ``study`` and ``findings`` returns its table with ``Sources`` in
``table.attrs["sources"]`` (``sources_of(table)``); the notebooks print ``caption(...)`` under
every table and chart: lines ``results <hash12>`` and ``run <hash12>`` (folders
``<workdir>/results/<hash>/`` and ``<workdir>/runs/<hash>/``) and the ``whypretrain`` command.
The code that made them: ``git_commit`` (recorded in every run and results folder) and
``code_version`` (recorded in every executed notebook).
"""
from __future__ import annotations

import html
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from whypretrain.layout import PACKAGE_DIR

SHORT = 12  # characters of a hash shown in captions; the folders carry the full hash
# parameters that hold a path: a rebuild command writes them relative to the repository
PATH_PARAMS = ("data_root", "workdir", "source_folder", "target_folder", "weights")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sources:
    """The results folders and run folders (their hashes) a number was read from, and the
    study result's parts (``near/summary``) it was drawn from."""

    results: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    commands: tuple[str, ...] = field(default=())
    parts: tuple[str, ...] = field(default=())

    def __add__(self, other: "Sources") -> "Sources":
        def merged(a, b):
            return tuple(dict.fromkeys((*a, *b)))
        return Sources(merged(self.results, other.results), merged(self.runs, other.runs),
                       merged(self.commands, other.commands), merged(self.parts, other.parts))

    def rebuilt_by(self, command: str) -> "Sources":
        """The same sources with one command that rebuilds all of them."""
        return Sources(self.results, self.runs, (command,), self.parts)

    def markdown(self) -> str:
        """A Markdown caption that takes one line until opened: the rebuild command and how
        many results folders and runs, then one line per folder and run."""
        lines = [f"results `{h[:SHORT]}`" for h in self.results]
        lines += [f"run `{h[:SHORT]}`" for h in self.runs]
        if not lines and not self.commands and not self.parts:
            return ""
        rebuild = "; ".join(f"rebuild: <code>{html.escape(c)}</code>" for c in self.commands)
        drawn = "".join(f"part <code>{html.escape(p)}</code>; " for p in self.parts)
        summary = f"{drawn}sources: {len(self.results)} results, {len(self.runs)} runs"
        return (f"<details><summary><small>{summary}{'; ' if rebuild else ''}{rebuild}"
                f"</small></summary>\n\n<small>\n\n" + "<br>\n".join(lines)
                + "\n\n</small>\n\n</details>")


def combine(items: Iterable[Sources]) -> Sources:
    out = Sources()
    for s in items:
        out = out + s
    return out


def attach(table: Any, sources: Sources) -> Any:
    """``table`` with ``sources`` in its ``attrs`` (returned for chaining). Stored as plain
    lists, so that whatever serialises a table's attrs (vegafusion does) can."""
    table.attrs["sources"] = {"results": list(sources.results), "runs": list(sources.runs),
                              "commands": list(sources.commands), "parts": list(sources.parts)}
    return table


def sources_of(obj: Any) -> Sources:
    """The ``Sources`` of a table (``attrs``), of an object with ``.sources()``, or itself."""
    if isinstance(obj, Sources):
        return obj
    if hasattr(obj, "sources") and callable(obj.sources):
        return obj.sources()
    attrs = getattr(obj, "attrs", None)
    if isinstance(attrs, dict) and isinstance(attrs.get("sources"), dict):
        s = attrs["sources"]
        return Sources(tuple(s["results"]), tuple(s["runs"]), tuple(s["commands"]),
                       tuple(s.get("parts", ())))
    raise ValueError("no provenance on this object: read it with a function of whypretrain.study.pipeline "
                     "or whypretrain.report.findings")


def caption(*objs: Any):
    """The provenance of ``objs`` as an IPython Markdown object, to show under a table/chart."""
    from IPython.display import Markdown
    return Markdown(combine(sources_of(o) for o in objs).markdown())


def show(obj: Any, *sources: Any) -> None:
    """Display ``obj`` (a chart or table) and under it the provenance of ``sources`` (default:
    ``obj``'s own)."""
    from IPython.display import display
    display(obj)
    display(caption(*(sources or (obj,))))


def _git(folder: Path, *args: str) -> str | None:
    """What ``git -C folder ARGS`` prints, stripped; None without git or when it fails."""
    try:
        proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(folder: str | os.PathLike = PACKAGE_DIR) -> str | None:
    """The commit of the git checkout that holds ``folder`` (default: the library's code);
    None outside git."""
    return _git(Path(folder), "rev-parse", "HEAD") or None


def code_version(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout that holds the library's code (else of
    ``root``); ``dirty`` = tracked files differ from the commit. ``commit`` is None outside git."""
    for folder in (PACKAGE_DIR, *([Path(root)] if root else [])):
        commit = git_commit(folder)
        if commit:
            dirty = bool(_git(folder, "status", "--porcelain", "--untracked-files=no"))
            return {"commit": commit, "dirty": dirty}
    return {"commit": None, "dirty": None}


def portable(value: str) -> str:
    """A path as a reader can paste it: relative to the repository when it lies inside it
    (``.`` for the repository itself), else as it is."""
    if not value or not os.path.isabs(value):
        return value
    path = Path(value).resolve()
    return os.path.relpath(path, REPO) if path.is_relative_to(REPO) else value


def command(verb: str, params: dict) -> str:
    """The ``whypretrain <verb>`` command that makes ``params``' runs or results: its preset and
    every parameter that differs from the preset's value (paths inside the repository written
    relative to it, so the command works in any clone)."""
    from whypretrain import presets
    preset = params.get("preset", "default")
    base = presets.resolve(preset)
    parts = [f"whypretrain {verb} --preset {preset}"]
    for key in presets.PARAMS:
        if key not in params:
            continue
        value = portable(params[key]) if key in PATH_PARAMS else params[key]
        if value != base[key]:
            if isinstance(value, tuple):
                value = ",".join(map(str, value))
            parts.append(f"--set {key}={value}")
    return " ".join(parts)


def glue_text(name: str, text: str) -> None:
    """Glue ``text`` (Markdown) under ``name`` for the narrative (``{glue:md}`name```), so
    numbers in the prose come from the results, never typed."""
    from IPython.display import Markdown
    from myst_nb import glue
    glue(name, Markdown(text), display=False)


def glue_all(texts: dict[str, str]) -> None:
    """``glue_text`` for every ``key: text``."""
    for key, text in texts.items():
        glue_text(key, text)


def glue_table(table: Any, column: str, prefix: str | None = None) -> None:
    """``glue_text`` of every row's ``column`` under ``<prefix>-<index>`` (a MultiIndex joined
    by ``-``; no prefix: the index alone)."""
    for index, text in table[column].items():
        parts = [str(i) for i in (index if isinstance(index, tuple) else (index,))]
        glue_text("-".join(([prefix] if prefix else []) + parts), str(text))
