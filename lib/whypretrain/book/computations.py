"""The status page's computations: what each one was, and where the time went.

Every results folder (``<workdir>/results/<hash>/``: one seed's games, and per engine tag
their interactions; ``study/seed_results.py``) and every training run
(``<workdir>/runs/<hash>/``) records its parameters and its seconds. What it *was* (the transfer
setting, the point of the sensitivity grid, the seed, the engine) is read back from the study
results in the same workdir (``<workdir>/studies/<hash>/study.json``, ``study/catalogue.py``):

- a run belongs to the setting (near, disjoint, far) whose parts list it in their sources;
- a results folder belongs to the setting of its runs; within it, to the candidate (the
  setting itself, an other rule of the optimal face of a transfer setting, or a point of the
  sensitivity grid: ``study/settings.py``) whose results hash, rebuilt from the candidate's
  parameters, the folder's seed and runs, is the folder's name, and whose engine tag is the
  interactions' tag. Both hashes are exact: a folder is named only by a candidate that would
  have written it.

A folder or a run no study of its workdir names keeps what its parameters say (the preset,
and the source and target of its runs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the order of the settings in the tables and the chart; "sensitivity" is the near setting's
# grid, "notebooks" the notebooks' own time (they read, they do not compute)
SETTINGS = ("near", "disjoint", "far", "sensitivity", "other", "notebooks")
STEPS = ("training", "masking", "extraction", "notebooks")


def read_json(path: Path) -> dict:
    """A stored JSON record; {} when it is missing or damaged (``integrity``)."""
    from whypretrain import integrity

    try:
        return json.loads(integrity.read_bytes(path))
    except (OSError, ValueError):  # integrity.Damaged is a ValueError
        return {}


@dataclass
class Candidate:
    """A results folder a study would write: its name in the book, its setting, its
    parameters and whether it holds the final models only."""

    label: str
    setting: str
    params: dict
    finals_only: bool


@dataclass
class StudyIndex:
    """What the studies of one workdir computed: run hash -> setting, and the candidates."""

    runs: dict[str, str] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)


def _candidates(params: dict) -> list[Candidate]:
    """Every results folder the study of ``params`` reads: each transfer setting, its other
    rules of the optimal face (``pipeline.transfer_group``), each point of the sensitivity grid
    that needs results of its own (``settings.sensitivity_settings``)."""
    from whypretrain.study.pipeline import other_rules
    from whypretrain.study.settings import (finals_only_seeds, sensitivity_settings,
                                            transfer_settings)

    out = []
    for name, setting in transfer_settings(params).items():
        if setting is None:
            continue
        out.append(Candidate(name, name, setting, False))
        if any(only for _, only in finals_only_seeds(setting)):  # seeds beyond curve_seeds
            out.append(Candidate(f"{name}, final models", name, setting, True))
        if name != "near":
            out += [Candidate(f"{name}, rule={rule}", name, {**setting, "rule": rule}, True)
                    for rule in other_rules(setting)]
    for key, value, setting, finals_only in sensitivity_settings(params):
        if finals_only:
            out.append(Candidate(f"sensitivity: {key}={value}", "sensitivity", setting, True))
    return out


def study_index(workdir: Path) -> StudyIndex:
    """The runs' settings and the candidates of every study stored in ``workdir``."""
    index = StudyIndex()
    for manifest in sorted((workdir / "studies").glob("*/study.json")):
        study = read_json(manifest)
        params = study.get("params")
        if not isinstance(params, dict):
            continue
        for part in (study.get("parts") or {}).values():
            if part.get("group") in ("near", "disjoint", "far"):
                for run in (part.get("sources") or {}).get("runs", []):
                    index.runs.setdefault(run, part["group"])
        try:
            index.candidates += _candidates(params)
        except (KeyError, ValueError, TypeError):  # a study of an older version's parameters
            continue
    return index


def name_results(folder: str, spec: dict, tag: str, index: StudyIndex) -> tuple[str, str]:
    """(setting, label) of one results folder's interactions of engine ``tag``."""
    from whypretrain.study.extraction import engine_params
    from whypretrain.study.seed_results import results_spec
    from whypretrain.train.runs import run_hash

    runs = spec.get("runs") or {}
    setting = next((index.runs[r] for r in runs.values() if r in index.runs), None)
    labels, games_only = [], []
    for c in index.candidates:
        if setting != ("near" if c.setting == "sensitivity" else c.setting):
            continue
        try:
            same = run_hash(results_spec(c.params, spec.get("seed"), runs,
                                         c.finals_only)) == folder
            engine = run_hash(engine_params(c.params))
        except (KeyError, TypeError):
            continue
        if same and (not tag or engine == tag):
            labels.append(c)
        elif same:
            games_only.append(c)
    if labels:
        return labels[0].setting, "; ".join(dict.fromkeys(c.label for c in labels))
    if games_only:  # games of a known setting, an engine no study of this workdir asked for
        return games_only[0].setting, f"{games_only[0].label}, another engine"
    return "other", _described(spec, runs)


def _described(spec: dict, runs: dict) -> str:
    """What a folder's own parameters say when no study names it."""
    preset = spec.get("preset") or "no preset"
    return f"not in a study ({preset})" if not runs else f"not in a study ({preset}, " \
        f"{'final models' if spec.get('finals_only') else 'every checkpoint'})"


def engine_name(engine: dict) -> str:
    """The engine of an interactions tag in words: the optimiser, the rule, the extraction."""
    if not engine:
        return ""
    if engine.get("mode") and engine["mode"] != "and-or":
        return engine["mode"]
    extras = [engine[k] for k in ("solution", "extraction") if engine.get(k)]
    name = engine.get("optimizer", "")
    return f"{name} ({', '.join(extras)})" if extras else name


def results_rows(workdir: Path, index: StudyIndex) -> list[dict]:
    """One row per results folder and engine tag."""
    rows = []
    for path in sorted((workdir / "results").glob("*/params.json")):
        folder = path.parent
        spec, timing = read_json(path), read_json(folder / "timings.json")
        extraction = timing.get("extraction_s") or {
            p.stem[len("interactions-"):]: None for p in folder.glob("interactions-*.pt")}
        for tag, seconds in (extraction or {"": None}).items():
            setting, label = name_results(folder.name, spec, tag, index)
            rows.append(dict(setting=setting, label=label, seed=spec.get("seed", ""),
                             folder=folder.name, games=timing.get("games", ""),
                             masking=timing.get("masking_s"),
                             engine=engine_name(read_json(folder / f"engine-{tag}.json")),
                             extraction=seconds))
    return rows


def run_rows(workdir: Path, index: StudyIndex) -> list[dict]:
    """One row per finished training run."""
    from whypretrain.train.runs import KINDS

    rows = []
    for done in sorted((workdir / "runs").glob("*/done")):
        spec, record = read_json(done.parent / "params.json"), read_json(done)
        kind = spec.get("kind", "")
        data = " → ".join(str(spec[k]) for k in ("source", "target") if spec.get(k))
        setting = index.runs.get(done.parent.name)
        rows.append(dict(setting=setting or "other",
                         label=setting or f"not in a study ({data or 'no data recorded'})",
                         seed=spec.get("seed", ""), kind=kind,
                         order=KINDS.index(kind) if kind in KINDS else len(KINDS),
                         run=done.parent.name, epochs=spec.get("epochs", ""),
                         training=record.get("seconds")))
    return rows


def _order(setting: str) -> int:
    return SETTINGS.index(setting) if setting in SETTINGS else len(SETTINGS)


def time_table(results: list[dict], runs: list[dict], notebooks: dict[str, Any]):
    """Seconds per step (training, masking, extraction, notebooks) and setting, a data frame;
    a folder's masking counts once however many engines read its games."""
    import pandas as pd

    rows = [("training", r["setting"], r["training"]) for r in runs]
    masked = {}
    for r in results:
        masked.setdefault(r["folder"], (r["setting"], r["masking"]))
        rows.append(("extraction", r["setting"], r["extraction"]))
    rows += [("masking", setting, seconds) for setting, seconds in masked.values()]
    rows += [("notebooks", "notebooks", seconds) for seconds in notebooks.values()]
    frame = pd.DataFrame(rows, columns=["step", "setting", "seconds"])
    frame = frame[frame["seconds"].map(lambda s: isinstance(s, (int, float)))]
    frame = frame.astype({"seconds": float}).groupby(["step", "setting"], as_index=False).sum()
    return frame.sort_values(["step", "setting"], key=lambda c: c.map(
        lambda v: STEPS.index(v) if v in STEPS else _order(v))).reset_index(drop=True)


def time_chart(table):
    """Where the time went: one bar per step, stacked by setting (``time_table``)."""
    import altair as alt

    total = table["seconds"].sum()
    unit, scale = ("minutes", 60.0) if total >= 120 else ("seconds", 1.0)
    data = table.assign(time=table["seconds"] / scale,
                        order=table["setting"].map(_order))
    settings = [s for s in SETTINGS if s in set(data["setting"])] + sorted(
        set(data["setting"]) - set(SETTINGS))
    return alt.Chart(data, title=alt.Title(
        "Where the time went", subtitle=f"{total / scale:.1f} {unit} in all, by step and "
        "setting (the notebooks read the results; they compute nothing)")).mark_bar().encode(
        y=alt.Y("step:N", sort=list(STEPS), title=None),
        x=alt.X("time:Q", stack=True, title=unit),
        color=alt.Color("setting:N", sort=settings, title="setting"),
        order=alt.Order("order:Q"),
        tooltip=["step", "setting", alt.Tooltip("time:Q", format=".1f", title=unit)],
    ).properties(height=160)


def save_chart(chart, path: Path) -> Path:
    """The chart as a PNG in the book's theme (vl-convert: offline, no browser)."""
    import altair as alt

    from whypretrain.report import charts

    with alt.theme.enable(charts.THEME):
        return charts.save(chart, path)


def wall(seconds: Any) -> str:
    """Seconds in words: "12.5 s", "2 min 5 s", or "not recorded"."""
    if not isinstance(seconds, (int, float)):
        return "not recorded"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _results_lines(results: list[dict]) -> list[str]:
    lines = ["| computation | seed | games | masking | engine | extraction | results |",
             "|---|---|---|---|---|---|---|"]
    seen = set()
    for r in sorted(results, key=lambda r: (_order(r["setting"]), r["label"], str(r["seed"]),
                                            r["folder"], r["engine"])):
        masking = wall(r["masking"]) if r["folder"] not in seen else "same games"
        lines.append(f"| {r['label']} | {r['seed']} | {r['games']} | {masking} | "
                     f"{r['engine']} | {wall(r['extraction'])} | `{r['folder'][:12]}` |")
        seen.add(r["folder"])
    return lines


def _run_lines(runs: list[dict]) -> list[str]:
    lines = ["| setting | seed | kind | epochs | training | run |", "|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (_order(r["setting"]), r["label"], str(r["seed"]),
                                         r["order"], r["run"])):
        lines.append(f"| {r['label']} | {r['seed']} | {r['kind']} | {r['epochs']} | "
                     f"{wall(r['training'])} | `{r['run'][:12]}` |")
    return lines


def section(workdirs: list[Path], notebooks: dict[str, Any], image: str
            ) -> tuple[list[str], Any]:
    """The status page's section on the computations of ``workdirs`` (Markdown lines) and its
    chart (None when nothing recorded a time); ``image``: the chart's path from the page."""
    results, runs = [], []
    for workdir in workdirs:
        index = study_index(workdir)
        results += results_rows(workdir, index)
        runs += run_rows(workdir, index)
    if not results and not runs:
        return [], None
    table = time_table(results, runs, notebooks)
    steps = {step: table.loc[table["step"] == step, "seconds"].sum() for step in STEPS}
    lines = ["## Computations", "",
             "Where the time went, as recorded by the command that made each result (a result "
             "reused by a later build keeps the time it took when it was made): the training "
             "runs, the time to evaluate the models on the masked samples (masking) and the "
             "engine's time to extract the interactions of those games (extraction), per seed "
             "of each computation, and the notebooks' own time. Each computation is named by "
             "the transfer setting (near, disjoint, far) or the point of the sensitivity grid "
             "it was computed for, as the study results of its workdir record them.", "",
             "Total: " + ", ".join(f"{step} {wall(seconds)}" for step, seconds in steps.items())
             + ".", ""]
    chart = time_chart(table) if len(table) else None
    if chart is not None:
        lines += [f"![Where the time went: training, masking, extraction and the notebooks, "
                  f"by setting]({image})", ""]
    if results:
        lines += ["### Games and interactions", ""] + _results_lines(results) + [""]
    if runs:
        lines += ["### Training runs", ""] + _run_lines(runs) + [""]
    return lines, chart
