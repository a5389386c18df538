"""The study result: every table a study computed, in one folder, with the provenance of each.

``study.compute`` writes it; the findings, the charts and the notebooks only select from it.
Reading never computes: a part that is not there raises ``errors.MissingResults`` with the
command that makes it.

On disk, ``<workdir>/studies/<hash>/`` (the hash covers the study's parameters, ``key``):
- ``study.json``, the manifest: the parameters, the library's version, git commit and code
  fingerprint, the notes (why a transfer setting did not run), and per part its file, the
  group that wrote it and its sources (the results folders and runs it was computed from,
  and the command that rebuilds it);
- ``<part>.parquet``: one table per part, e.g. ``near/knowledge.parquet``;
- ``manifest.json`` in each of these folders: the size and sha256 of each file (``integrity``);
  a damaged part is not current (computed again by ``study``; named by a read), a damaged
  ``study.json`` is an empty one.

Parts come in groups that ``study.compute`` writes together (``GROUPS``): a group is current
when the manifest records it with this library's code fingerprint; otherwise it is computed
again (from the results folders on disk, which are reused).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from whypretrain import __version__, integrity, presets
from whypretrain.errors import MissingResults
from whypretrain.layout import PACKAGE_DIR
from whypretrain.provenance import Sources, attach, command, git_commit
from whypretrain.train.runs import atomic_write, locked, run_hash

STUDY_FORMAT = 1
# what each group's parts hold; "<setting>/..." parts exist for near, disjoint and far
SETTING_PARTS = {
    "metrics": "per-epoch training metrics of the probe, fine-tuned and scratch runs",
    "knowledge": "every seed's knowledge and convergence table (knowledge.TABLE_COLUMNS)",
    "comparisons": "the knowledge tables between models of two seeds (nulls.comparison_table)",
    "replicates": "the final models' Jaccard across seeds (nulls.replicate_table)",
}
NEAR_PARTS = {
    "summary": "mean and 95% interval over seeds of every knowledge measure (stats.summarize)",
    "training": "test accuracy and training loss per epoch, over seeds",
    "accuracy": "final test accuracy and the epoch reaching 95% of it, over seeds",
    "learnable": "per seed: the learnable share's mean and interval over samples",
    "convergence": "area and reach of the convergence curves, over seeds",
    "extraction": "per game: objective, certified lower bound and relative gap",
    "engine": "how exactly the first seed's interactions explain its games",
    "sgd": "SGD against the exact optimum on the first seed's final models",
    "ranks": "the strength of the first sample's interactions by rank (AND-only, AND-OR)",
    "items": "the salient items of the first sample's fine-tuned model",
}
GROUPS: dict[str, tuple[str, ...]] = {
    "near": tuple(f"near/{p}" for p in (*SETTING_PARTS, *NEAR_PARTS)),
    "disjoint": (*(f"disjoint/{p}" for p in SETTING_PARTS), "disjoint/robust"),
    "far": (*(f"far/{p}" for p in SETTING_PARTS), "far/robust"),
    "sensitivity": ("sensitivity", "specifications/knowledge", "specifications/comparisons",
                    "robust"),
}
# where a study runs, reads and writes: not what it computes (the CLI passes absolute paths,
# the notebooks relative ones; the results folders it reads are keyed by their contents)
NOT_KEYED = ("workdir", "device", "data_root")


def key(params: dict) -> str:
    """The study's hash: its parameters but where it runs and where it writes."""
    spec = {k: params[k] for k in presets.PARAMS if k in params and k not in NOT_KEYED}
    spec["study_format"] = STUDY_FORMAT
    return run_hash(spec)


def folder(params: dict) -> Path:
    return Path(params["workdir"]) / "studies" / key(params)


_FINGERPRINT: str | None = None


def fingerprint() -> str:
    """A hash of the library's source files: a group written by other code is computed again."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        h = hashlib.sha256()
        for path in sorted(PACKAGE_DIR.rglob("*.py")):
            h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
        _FINGERPRINT = h.hexdigest()[:16]
    return _FINGERPRINT


def group_of(part: str) -> str:
    for group, parts in GROUPS.items():
        if part in parts:
            return group
    raise ValueError(f"{part!r} is no part of a study result; parts: "
                     f"{', '.join(p for ps in GROUPS.values() for p in ps)}")


def _command(params: dict, group: str) -> str:
    return command("analyze" if group == "near" else "study", params)


@dataclass
class StudyResult:
    """One study's computed tables (``part``), read from its folder (``read``)."""

    path: Path
    params: dict[str, Any]
    manifest: dict[str, Any]

    @classmethod
    def read(cls, params: dict) -> "StudyResult":
        """The study result of ``params`` as it is on disk (possibly without any part yet)."""
        path = folder(params)
        manifest = _manifest(path)
        return cls(path, params, manifest)

    def has(self, part: str) -> bool:
        """Whether ``part`` is on disk, intact, was written by this library's code, and the
        results and runs it was computed from hold no damaged file (``inputs_intact``)."""
        entry = self.manifest["parts"].get(part)
        return entry is not None and entry["code"] == fingerprint() \
            and integrity.intact(self.path / entry["file"]) and self.inputs_intact(entry)

    def inputs_intact(self, entry: dict[str, Any]) -> bool:
        """Whether the results folders and runs of a part's sources hold no damaged file (a
        file removed on purpose does not count, nor the timings: nothing is computed from
        them); a damaged one makes the part not current, so ``study`` computes it again."""
        workdir = Path(self.params["workdir"])
        s = entry["sources"]
        folders = [workdir / "results" / h for h in s["results"]] + \
            [workdir / "runs" / h for h in s["runs"]]
        return not any(p.path.is_file() and p.path.name != "timings.json"
                       for f in folders for p in integrity.problems(f))

    def part(self, name: str) -> pd.DataFrame:
        """The stored table ``name`` with its sources (``provenance.sources_of``); raises
        ``MissingResults`` with the command that makes it when it is not there."""
        group = group_of(name)
        if not self.has(name):
            entry = self.manifest["parts"].get(name)
            stale = entry is not None and entry["code"] != fingerprint()
            file = entry is not None and not stale and self.path / entry["file"]
            damaged = (f" ({file} is damaged)" if file and file.is_file()
                       and not integrity.intact(file) else
                       " (a results folder or run it was computed from holds a damaged file)"
                       if file and file.is_file() else "")
            what = (f"the study result's part {name!r}"
                    + (" (written by another version of the library)" if stale else "")
                    + damaged)
            raise MissingResults(what, _command(self.params, group))
        entry = self.manifest["parts"][name]
        table = pd.read_parquet(io.BytesIO(integrity.read_bytes(
            self.path / entry["file"], _command(self.params, group))))
        s = entry["sources"]
        return attach(table, Sources(tuple(s["results"]), tuple(s["runs"]),
                                     tuple(s["commands"])))

    def seed_results(self, seed: int):
        """One seed's stored games and interactions (``results.load``), for the pages that
        draw single samples; reads only."""
        from whypretrain.study.seed_results import load
        return load(self.params, seed)

    def note(self, name: str, default: str = "") -> str:
        """A note the computation left (e.g. ``far``: why the far setting did not run)."""
        return self.manifest["notes"].get(name, default)

    def parts(self) -> list[str]:
        return [p for p in self.manifest["parts"] if self.has(p)]

    def current(self, group: str) -> bool:
        return all(self.has(p) for p in GROUPS[group])


def _manifest(path: Path) -> dict[str, Any]:
    file = path / "study.json"
    if integrity.intact(file):  # a damaged manifest is an empty one: every group is computed
        try:
            return json.loads(integrity.read_bytes(file))
        except ValueError:  # written before records existed
            pass
    return {"parts": {}, "notes": {}}


def write(params: dict, group: str, parts: dict[str, pd.DataFrame],
          sources: dict[str, Sources], notes: dict[str, str] | None = None) -> StudyResult:
    """Store ``parts`` (every part of ``group``) with their ``sources`` and update the
    manifest; each file is written atomically and the manifest last, under the folder's lock,
    so a crash leaves the previous study result whole."""
    missing = set(GROUPS[group]) - set(parts)
    if missing or set(parts) - set(GROUPS[group]):
        raise ValueError(f"group {group} holds {GROUPS[group]}; got {sorted(parts)}")
    path = folder(params)
    path.mkdir(parents=True, exist_ok=True)
    with locked(path):
        manifest = _manifest(path)
        for name, table in parts.items():
            buf = io.BytesIO()
            clean = table.copy()
            clean.attrs = {}
            clean.to_parquet(buf, index=True)
            file = f"{name}.parquet"
            (path / file).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path / file, buf.getvalue())
            s = sources.get(name, Sources())
            manifest["parts"][name] = dict(
                file=file, group=group, code=fingerprint(), written=time.time(),
                sources={"results": list(s.results), "runs": list(s.runs),
                         "commands": list(s.commands) or [_command(params, group)]})
        manifest["notes"].update(notes or {})
        manifest.update(format=STUDY_FORMAT, version=__version__, commit=git_commit(),
                        code=fingerprint(),
                        params={k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in params.items()})
        _write_manifest(path, manifest)
    return StudyResult(path, params, manifest)


def write_note(params: dict, name: str, text: str) -> StudyResult:
    """Record a note in the manifest (``StudyResult.note``), e.g. why a setting did not run."""
    path = folder(params)
    path.mkdir(parents=True, exist_ok=True)
    with locked(path):
        manifest = _manifest(path)
        manifest["notes"][name] = text
        _write_manifest(path, manifest)
    return StudyResult(path, params, manifest)


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    atomic_write(path / "study.json", json.dumps(manifest, indent=1, default=str).encode())
