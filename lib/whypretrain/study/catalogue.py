"""The catalogue: every table the book shows is a *part* on disk, with the function that
produced it and a key of its own inputs.

``study.pipeline.compute`` writes the parts computed from results folders (groups ``near``,
``disjoint``, ``far``, ``sensitivity``); ``report.findings.derive`` writes the parts computed
from other parts (group ``findings``: the claims table with its nulls, effects, intervals and
verdicts, and the specification table). The findings, the charts, the notebooks and the book
only read them. Reading never computes: a part that is not there raises
``errors.MissingResults`` with the command that makes it.

On disk, ``<workdir>/studies/<hash>/`` (the hash covers the study's parameters, ``key``):
- ``study.json``, the manifest: the parameters, the library's version and git commit, the
  notes (why a transfer setting did not run), and per part its file, its group, its
  ``producer`` (the function that wrote it), its ``code`` (the code key of the producer's
  module: ``code_key``), its ``inputs`` (for a derived part, the keys of the parts it read),
  its ``key`` (a hash of the study's parameters, its code and its inputs) and its sources (the
  results folders and runs it was computed from, and the command that rebuilds it);
- ``<part>.parquet``: one table per part, e.g. ``near/knowledge.parquet``.
- ``manifest.json`` in each of these folders: the size and sha256 of each file (``integrity``);
  a damaged part is not current (computed again by ``study``; named by a read), a damaged
  ``study.json`` is an empty one.

A part is current when its file is there, its code key is that of the code now, and every
part it read is current and still has the key it read. The code key covers the producer's
module and every module of the package it imports, nothing else: an edit to a chart (which
no producer imports) recomputes no table; an edit to a measure recomputes the parts whose
producers use it.
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

STUDY_FORMAT = 2  # 2: parts record their producer, code key, inputs and key
# what each group's parts hold; "<setting>/..." parts exist for near, disjoint and far; besides
# these, "<setting>/robust" and "<setting>/face" (nulls.face_table: each seed's final models
# against themselves under the optimal face's other rules) come with the disjoint and far
# groups, and near's with the sensitivity group (its rule points)
SETTING_PARTS = {
    "metrics": "per-epoch training metrics of the probe, fine-tuned and scratch runs",
    "knowledge": "every seed's knowledge and convergence table (knowledge.TABLE_COLUMNS)",
    "comparisons": "the knowledge tables between models of two seeds (nulls.comparison_table)",
    "replicates": "the final models' Jaccard across seeds (nulls.replicate_table)",
    "crossed": "every checkpoint's weighted Jaccard to another seed's final fine-tuned model "
               "(nulls.crossed_table)",
    "sparsity": "per seed, analysed model and sample: how sparse the interactions are and "
                "whether the sample meets the lab's conditions (pipeline.sparsity_table)",
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
FINDINGS_PARTS = {
    "claims": "every claim in every setting: value, nulls, effect, interval, verdict "
              "(findings.transfer_table)",
    "specifications": "every claim under every specification of the grid "
                      "(findings.specification_table)",
    "joint": "per knowledge claim, the sign-flip test over every specification at once "
             "(findings.joint_tests)",
    "and_only": "each headline claim under AND-OR beside AND-only (findings.and_only_claims)",
}
GROUPS: dict[str, tuple[str, ...]] = {
    "near": tuple(f"near/{p}" for p in (*SETTING_PARTS, *NEAR_PARTS)),
    "disjoint": (*(f"disjoint/{p}" for p in SETTING_PARTS), "disjoint/robust", "disjoint/face"),
    "far": (*(f"far/{p}" for p in SETTING_PARTS), "far/robust", "far/face"),
    "sensitivity": ("sensitivity", "specifications/knowledge", "specifications/comparisons",
                    "robust", "identified", "near/face"),
    "findings": tuple(f"findings/{p}" for p in FINDINGS_PARTS),
}
# the function that writes each group (module and name); its module's code key is the
# group's code key
PRODUCERS = {
    "near": "whypretrain.study.pipeline:near_group",
    "disjoint": "whypretrain.study.pipeline:transfer_group",
    "far": "whypretrain.study.pipeline:transfer_group",
    "sensitivity": "whypretrain.study.pipeline:sensitivity_group",
    "findings": "whypretrain.report.parts:store",
}
# the groups whose parts the derived group reads (a group skipped with a note is read as absent)
DERIVED_FROM = {"findings": ("near", "disjoint", "far", "sensitivity")}
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


_CODE_KEYS: dict[str, str] = {}


def _imports(module: str) -> set[str]:
    """The modules of the package that ``module`` imports (function-level imports included)."""
    import ast
    path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
    if not path.is_file():
        path = path.with_suffix("") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("whypretrain"):
            for alias in node.names:  # ``from whypretrain.study import pipeline``: a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _module_file(sub) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("whypretrain."))
    return {m for m in found if _module_file(m)}


def _module_file(module: str) -> Path | None:
    path = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def code_key(module: str) -> str:
    """A hash of the source of ``module`` (dotted, ``whypretrain.study.pipeline``) and of every
    module of the package it imports, directly or not: the code a part's producer runs."""
    if module not in _CODE_KEYS:
        seen, todo = set(), [module]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += sorted(_imports(m) - seen)
        h = hashlib.sha256()
        for m in sorted(seen):
            h.update(m.encode() + b"\0" + _module_file(m).read_bytes())
        _CODE_KEYS[module] = h.hexdigest()[:16]
    return _CODE_KEYS[module]


def producer_code(group: str) -> str:
    return code_key(PRODUCERS[group].split(":")[0])


def group_of(part: str) -> str:
    for group, parts in GROUPS.items():
        if part in parts:
            return group
    raise ValueError(f"{part!r} is no part of a study result; parts: "
                     f"{', '.join(p for ps in GROUPS.values() for p in ps)}")


def _command(params: dict, group: str) -> str:
    return command("analyze" if group == "near" else "study", params)


def _key(*items: Any) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        """Whether ``part`` is on disk, intact and current: written by the code its producer
        runs now, from results and runs that hold no damaged file (``inputs_intact``) and from
        parts that are current and unchanged since it read them."""
        entry = self.manifest["parts"].get(part)
        if entry is None or entry.get("code") != producer_code(entry["group"]) \
                or not integrity.intact(self.path / entry["file"]) \
                or not self.inputs_intact(entry):
            return False
        return all(self.has(name) and self.manifest["parts"][name]["key"] == key
                   for name, key in entry.get("inputs", {}).items())

    def entry(self, part: str) -> dict[str, Any]:
        """The manifest's record of ``part``: its producer, code, inputs, key and sources."""
        return self.manifest["parts"][part]

    def skipped(self, group: str) -> bool:
        """A transfer setting that did not run here (its note says how to run it)."""
        return group in ("disjoint", "far") and self.note(group) not in ("", "computed") \
            and not any(p in self.manifest["parts"] for p in GROUPS[group])

    def missing(self, groups: tuple[str, ...] = tuple(GROUPS)) -> list[str]:
        """The parts of ``groups`` that are not current (a skipped setting's parts excepted)."""
        return [p for g in groups if not self.skipped(g) for p in GROUPS[g] if not self.has(p)]

    def require(self, groups: tuple[str, ...] = tuple(GROUPS)) -> "StudyResult":
        """This result, or ``MissingResults`` naming the first missing part and the command
        that computes it; reads only."""
        missing = self.missing(groups)
        if missing:
            raise MissingResults(f"the study result's part {missing[0]!r} (and "
                                 f"{len(missing) - 1} more)" if len(missing) > 1 else
                                 f"the study result's part {missing[0]!r}",
                                 command("study", self.params))
        return self

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
            stale = entry is not None and entry["code"] != producer_code(entry["group"])
            file = entry is not None and not stale and self.path / entry["file"]
            damaged = (f" ({file} is damaged)" if file and file.is_file()
                       and not integrity.intact(file) else
                       " (a results folder or run it was computed from holds a damaged file)"
                       if file and not self.inputs_intact(entry) else
                       " (a part it was computed from changed)" if file else "")
            what = (f"the study result's part {name!r}"
                    + (" (written by another version of the library)" if stale else "")
                    + damaged)
            raise MissingResults(what, _command(self.params, group))
        entry = self.manifest["parts"][name]
        table = pd.read_parquet(io.BytesIO(integrity.read_bytes(
            self.path / entry["file"], _command(self.params, group))))
        s = entry["sources"]
        return attach(table, Sources(tuple(s["results"]), tuple(s["runs"]),
                                     tuple(s["commands"]), (name,)))

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

    def keys(self, groups: tuple[str, ...]) -> dict[str, str]:
        """The key of every current part of ``groups``: what a derived part records it read."""
        return {p: self.manifest["parts"][p]["key"] for g in groups for p in GROUPS[g]
                if self.has(p)}


def _manifest(path: Path) -> dict[str, Any]:
    file = path / "study.json"
    if integrity.intact(file):  # a damaged manifest is an empty one: every group is computed
        try:
            return json.loads(integrity.read_bytes(file))
        except ValueError:  # written before records existed
            pass
    return {"parts": {}, "notes": {}}


def write(params: dict, group: str, parts: dict[str, pd.DataFrame],
          sources: dict[str, Sources], notes: dict[str, str] | None = None,
          inputs: dict[str, str] | None = None) -> StudyResult:
    """Store ``parts`` (every part of ``group``) with their ``sources`` and update the
    manifest; ``inputs``: the keys of the parts they were computed from (derived groups).
    Each file is written atomically and the manifest last, under the folder's lock, so a
    crash leaves the previous study result whole."""
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
            code = producer_code(group)
            manifest["parts"][name] = dict(
                file=file, group=group, producer=PRODUCERS[group], code=code,
                inputs=dict(inputs or {}), written=time.time(),
                key=_key(key(params), name, code, inputs or {}, s.results, s.runs),
                sources={"results": list(s.results), "runs": list(s.runs),
                         "commands": list(s.commands) or [_command(params, group)]})
        manifest["notes"].update(notes or {})
        manifest.update(format=STUDY_FORMAT, version=__version__, commit=git_commit(),
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
