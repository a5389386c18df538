"""The study over seeds: computing it (explicitly), and reading it (summaries over seeds,
training curves, the sensitivity experiment, the transfer settings).

Two kinds of functions, kept apart:
- ``compute*`` train and analyse what is missing (with progress bars) and reuse what is on
  disk: the CLI (``whypretrain analyze`` = ``compute``: the preset's own results), the runner
  (``whypretrain study`` = ``compute_all`` before the notebooks) and the one visible call at
  the top of each notebook;
- every other function only reads runs and results by their hashes, writes nothing, and
  raises ``errors.MissingResults`` naming the ``whypretrain`` command that makes what is
  missing. Each returns its table with the results and runs it read
  (``provenance.sources_of(table)``).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pandas as pd

from . import data, distributed, knowledge, masking, nulls, presets, results
from .stats import interval_text, over_seeds
from .errors import MissingResults, UserError
from .provenance import Sources, attach, combine, command, sources_of

TRANSFER_SETTINGS = ("near", "disjoint", "far")
DISJOINT = dict(source="mnist-0-4", target="uci-5-9")  # no class of the target pre-trained
FAR_PRESET = "imagenet-uci"  # ImageNet EfficientNet-Lite0 -> UCI digits (models.py)
# test-sized presets whose far setting is a test-sized preset of its own (imagenet-uci-ci
# explains digits whether or not its 3-epoch models get them right)
FAR_PRESETS = {"ci": "imagenet-uci-ci"}
# parameters of a study's scale and reading that the far setting takes over from the preset
# being run when they differ from the `default` preset (so `ci` gets a ci-sized far setting)
FAR_CARRY = ("seeds", "epochs", "pretrain_epochs", "n", "iterations", "samples_per_class",
             "tau", "empty_set", "or_merge", "optimizer", "player_seed", "checkpoints",
             "workdir", "device", "threads")


# --------------------------------------------------------------------------------------------
# computing
# --------------------------------------------------------------------------------------------
def _progress(progress: bool | None) -> bool:
    """Progress bars unless asked otherwise; not in the book's kernels (the runner computed
    everything before executing the notebooks, and a bar is no content for a reader), and not
    on a rank other than 0 under torchrun."""
    if progress is None:
        progress = not distributed.in_book()
    return progress and distributed.is_main()


def compute(params: dict, progress: bool | None = None) -> None:
    """Runs and results of every seed of ``params`` (train what is missing, reuse the rest)."""
    progress = _progress(progress)
    ds = data.load_datasets(params)
    results.compute_seeds(params, list(params["seeds"]), progress, datasets=ds)


def compute_sensitivity(params: dict, grid: dict[str, list] | None = None,
                        progress: bool | None = None) -> None:
    """Everything ``sensitivity(params, grid)`` reads (and the main results)."""
    progress = _progress(progress)
    compute(params, progress)
    ds = data.load_datasets(params)
    for _key, _value, setting, finals_only in sensitivity_settings(params, grid):
        for r in results.compute_seeds(setting, list(setting["seeds"]), progress, datasets=ds,
                                       finals_only=finals_only):
            r.write_table(setting["tau"], setting["empty_set"])


def compute_transfer(params: dict, progress: bool | None = None, far: bool = False
                     ) -> dict[str, str]:
    """The near and disjoint settings of ``params`` (``transfer_settings``), and the far one
    when ``far`` (an ImageNet network's games are slow on a CPU, so the far setting is computed
    only when asked: ``whypretrain analyze`` on its preset, or ``far=True``). A far setting
    that cannot run here (no such preset, or its data or weights are missing) is skipped with
    a message; returns setting -> "computed" or why not."""
    progress = _progress(progress)
    out = {}
    for name, setting in transfer_settings(params).items():
        if setting is None:
            out[name] = unavailable(name, params)
            continue
        if name == "far" and not far:
            out[name] = f"computed only when asked: `{far_command(params)}`"
            continue
        try:
            compute(setting, progress)
            out[name] = "computed"
        except (UserError, OSError, ValueError, RuntimeError) as err:
            if name != "far":
                raise
            out[name] = f"not run: {err}"
        if progress and out[name] != "computed":
            print(f"transfer setting {name}: {out[name]}")
    return out


def compute_all(params: dict, progress: bool | None = None) -> None:
    """Everything the book reads for ``params`` (but the far transfer setting): what
    ``whypretrain study`` computes before it executes the notebooks."""
    compute_sensitivity(params, progress=progress)  # includes the main results
    compute_transfer(params, progress)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def load(params: dict, finals_only: bool = False, datasets: data.Datasets | None = None
         ) -> list[results.SeedResults]:
    """The stored results of every seed (``results.load``): reads only."""
    ds = datasets or data.load_datasets(params)
    return [results.load(params, seed, ds, finals_only) for seed in params["seeds"]]


def table(params: dict, tau: float | None = None, empty_set: str | None = None,
          finals_only: bool = False, datasets: data.Datasets | None = None,
          loaded: list[results.SeedResults] | None = None) -> pd.DataFrame:
    """Every seed's tidy table (``knowledge.TABLE_COLUMNS`` + seed, tau) in one table
    (``loaded``: the seeds' results when the caller has read them already)."""
    loaded = loaded or load(params, finals_only, datasets)
    out = pd.concat([r.table(tau, empty_set) for r in loaded], ignore_index=True)
    return attach(out, combine(r.sources() for r in loaded))


def null_tables(params: dict, tau: float | None = None, empty_set: str | None = None,
                datasets: data.Datasets | None = None, finals_only: bool = False,
                loaded: list[results.SeedResults] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cross-seed comparisons (``nulls.comparison_table``) and the final models'
    similarity across seeds (``nulls.replicate_table``) of every ordered pair of seeds, at the
    preset's ``tau`` and ``empty_set`` unless given. Reads only; both are empty with one
    seed."""
    loaded = loaded or load(params, finals_only, datasets)
    tau = params["tau"] if tau is None else tau
    empty_set = empty_set or params["empty_set"]
    sources = combine(r.sources() for r in loaded)
    return (attach(nulls.comparison_table(loaded, tau, empty_set), sources),
            attach(nulls.replicate_table(loaded, tau, empty_set), sources))


def training_table(params: dict, datasets: data.Datasets | None = None) -> pd.DataFrame:
    """Per-epoch metrics of the three target runs of every seed: columns ``seed, model, epoch,
    train_loss, train_acc, test_loss, test_acc`` (model ``probe``: the linear probe). Reads the
    runs; trains nothing."""
    ds = datasets or data.load_datasets(params)
    frames, hashes = [], []
    for seed in params["seeds"]:
        runs = results.find_runs(params, seed, ds)
        for kind in results.MODELS:
            m = runs[kind].metrics.copy()
            m.insert(0, "model", kind)
            m.insert(0, "seed", seed)
            frames.append(m)
        hashes += [r.path.name for r in runs.values()]
    out = pd.concat(frames, ignore_index=True)
    return attach(out, Sources(runs=tuple(hashes), commands=(command("train", params),)))


def headline(summary: pd.DataFrame, measure: str, pct: bool = False) -> str:
    """``stats.interval_text`` of one measure over all orders of the final models in a
    ``stats.summarize`` table."""
    row = summary[(summary["measure"] == measure) & (summary["order"] == knowledge.ALL_ORDERS)]
    if len(row) != 1:
        raise ValueError(f"{measure!r} is not a measure of this summary")
    return interval_text(row.iloc[0], pct)


ACCURACY_FRACTION = 0.95  # "epochs to reach 95% of the final test accuracy"
REACH_LEVEL = 0.5         # weighted Jaccard to the final fine-tuned model that counts as reached


def first_epoch_reaching(curve: pd.Series, level: float, never: float) -> float:
    """First epoch (index of ``curve``) whose value reaches ``level``; ``never`` if none does."""
    hit = curve.to_numpy() >= level - 1e-12
    return float(curve.index[np.argmax(hit)]) if hit.any() else never


def final_accuracy(m: pd.DataFrame) -> pd.DataFrame:
    last = m[m["epoch"] == m.groupby(["seed", "model"])["epoch"].transform("max")]
    return last.pivot(index="seed", columns="model", values="test_acc")


def accuracy_epochs(m: pd.DataFrame, fraction: float = ACCURACY_FRACTION) -> pd.DataFrame:
    """Per seed and model: the first epoch (>= 1) whose test accuracy reaches ``fraction`` of
    the final one."""
    rows = []
    for (seed, model), g in m[m["epoch"] >= 1].groupby(["seed", "model"]):
        curve = g.set_index("epoch")["test_acc"].sort_index()
        rows.append(dict(seed=seed, model=model,
                         value=first_epoch_reaching(curve, fraction * curve.iloc[-1],
                                                    curve.index[-1])))
    return pd.DataFrame(rows).pivot(index="seed", columns="model", values="value")


def accuracy_summary(metrics: pd.DataFrame, fraction: float = ACCURACY_FRACTION
                     ) -> pd.DataFrame:
    """Final test accuracy and the epoch first reaching ``fraction`` of it, per model: mean,
    sd and 95% interval over seeds."""
    last = metrics[metrics["epoch"] == metrics.groupby(["seed", "model"])["epoch"]
                   .transform("max")]
    final = last[["seed", "model", "test_acc"]].rename(columns={"test_acc": "value"})
    final.insert(2, "measure", "final test accuracy")
    epochs = accuracy_epochs(metrics, fraction).stack().rename("value").reset_index()
    epochs.insert(2, "measure", f"epoch reaching {fraction:.0%} of final accuracy")
    per_seed = attach(pd.concat([final, epochs], ignore_index=True),
                      sources_of(metrics) if "sources" in metrics.attrs else Sources())
    return over_seeds(per_seed, by=["model", "measure"])


def convergence_measures(t: pd.DataFrame, level: float = REACH_LEVEL) -> pd.DataFrame:
    """Per seed and run (finetune, scratch), two measures that do not rest on a run's
    similarity to itself:

    - ``area``: the mean over epochs 0..T-1 of the weighted Jaccard to the run's own final
      interactions (the area under its curve without the final epoch, where it is 1 by
      construction); higher = closer to its final knowledge all along;
    - ``reach``: the first epoch whose weighted Jaccard to the final *fine-tuned* model (the
      reference common to both runs) reaches ``level``; ``T + 1`` when no epoch does.
    """
    rows = []
    for (seed, model), g in t[t["measure"].str.startswith("jaccard_weighted")].groupby(
            ["seed", "model"]):
        own = g[g["measure"] == "jaccard_weighted"].groupby("epoch")["value"].mean().sort_index()
        ref = g[g["measure"] == "jaccard_weighted_vs_finetune"].groupby("epoch")["value"] \
            .mean().sort_index()
        last = int(own.index.max())
        rows += [dict(seed=seed, model=model, measure="area",
                      value=float(own[own.index < last].mean())),
                 dict(seed=seed, model=model, measure="reach",
                      value=first_epoch_reaching(ref, level, last + 1))]
    out = pd.DataFrame(rows, columns=["seed", "model", "measure", "value"])
    return attach(out, sources_of(t)) if "sources" in t.attrs else out


# --------------------------------------------------------------------------------------------
# sensitivity
# --------------------------------------------------------------------------------------------
# what the sensitivity study varies; tau and empty_set only re-read the study's interactions
TABLE_ONLY = ("tau", "empty_set")


def sensitivity_grid(params: dict) -> dict[str, list]:
    """What the sensitivity study varies, around the preset's values, one at a time."""
    tau, n, per_class = params["tau"], params["n"], params["samples_per_class"]
    optimizers = [o for o in ("exact", "sgd") if o in presets.PARAMS["optimizer"].choices]
    if params["optimizer"] not in optimizers:
        optimizers.insert(0, params["optimizer"])
    return {
        "tau": sorted({round(tau / 2, 4), tau, round(min(0.5, tau * 2), 4)}),
        "n": sorted({max(4, n - 4), max(4, n - 2), n}),
        "baseline": list(masking.BASELINES),
        "optimizer": optimizers,
        "empty_set": list(presets.PARAMS["empty_set"].choices),
        "or_merge": list(presets.PARAMS["or_merge"].choices),
        # players drawn with the study's player seed and with another one
        "player_seed": sorted({params["player_seed"], params["player_seed"] + 1}),
        "samples_per_class": sorted({max(1, per_class // 2), per_class, per_class * 2}),
        # the point of the exact optimum's face (book/method.md, section 2), and the AND-only
        # (Harsanyi) interactions, the one reference with no choice of optimum; joint
        # extraction is left out (30-50 s per sample at n = 10): `--set extraction=joint`
        "rule": list(presets.PARAMS["rule"].choices) if params["optimizer"] == "exact"
        else [params["rule"]],
        "mode": list(presets.PARAMS["mode"].choices),
    }


def sensitivity_settings(params: dict, grid: dict[str, list] | None = None
                         ) -> Iterator[tuple[str, Any, dict, bool]]:
    """``(parameter, value, setting, finals_only)`` for every point of the grid. The preset's
    own values and the table-only parameters read the main results; any other value needs new
    games (or interactions) of the final models only, all the knowledge measures need."""
    grid = grid or sensitivity_grid(params)
    unknown = set(grid) - set(presets.PARAMS)
    if unknown:
        raise ValueError(f"sensitivity varies parameters of the study; not {sorted(unknown)}")
    for key, values in grid.items():
        for value in values:
            setting = presets.resolve(params["preset"], {
                **{k: params[k] for k in presets.PARAMS}, key: value})
            finals_only = key not in TABLE_ONLY and value != params[key]
            yield key, value, setting, finals_only


def sensitivity(params: dict, grid: dict[str, list] | None = None) -> pd.DataFrame:
    """The headline measures as each parameter of the grid varies on its own (over the preset's
    seeds). One row per (parameter, value, seed, model, measure): the mean over samples of
    the final models' measure over all orders. Reads only."""
    ds = data.load_datasets(params)
    rows, sources = [], []
    for key, value, setting, finals_only in sensitivity_settings(params, grid):
        try:
            t = table(setting, setting["tau"], setting["empty_set"], finals_only, ds)
        except MissingResults as err:  # its finals-only results are made by compute_sensitivity
            raise MissingResults(f"the sensitivity point {key}={value} ({err.what})",
                                 command("study", params)) from None
        sources.append(sources_of(t))
        t = t[(t["order"] == knowledge.ALL_ORDERS) & t["measure"].isin(
            list(knowledge.KNOWLEDGE_MEASURES))]
        means = t.groupby(["seed", "model", "measure"])["value"].mean()
        for (seed, model, measure), mean in means.items():
            rows.append(dict(parameter=key, value=str(value), seed=seed, model=model,
                             measure=measure, mean=mean))
    # `whypretrain study` (compute_all) makes every point of the grid: one command
    return attach(pd.DataFrame(rows), combine(sources).rebuilt_by(command("study", params)))


# --------------------------------------------------------------------------------------------
# transfer settings
# --------------------------------------------------------------------------------------------
def transfer_settings(params: dict) -> dict[str, dict | None]:
    """near: ``params`` itself; disjoint: the same with the source's and the target's classes
    apart (``DISJOINT``), for the digit data only (None otherwise); far: preset ``FAR_PRESET``
    at the scale of ``params``, or None when this version has no such preset
    (``unavailable`` says why)."""
    base = {k: params[k] for k in presets.PARAMS}
    digits = params["source"].startswith("mnist") and params["target"].startswith(("uci",
                                                                                   "mnist"))
    out: dict[str, dict | None] = {
        "near": params,
        "disjoint": presets.resolve(params["preset"], {**base, **DISJOINT}) if digits else None,
    }
    far = FAR_PRESETS.get(params.get("preset", "default"), FAR_PRESET)
    if far in presets.PRESETS:
        default = presets.resolve("default")
        carry = {k: params[k] for k in FAR_CARRY if k in params and params[k] != default[k]}
        out["far"] = presets.resolve(far, carry)
    else:
        out["far"] = None
    return out


def unavailable(name: str, params: dict) -> str:
    """Why ``transfer_settings(params)[name]`` is None."""
    if name == "disjoint":
        return (f"defined for the digit data only (source mnist, target uci; this preset: "
                f"{params['source']} -> {params['target']})")
    return far_command(params)


def far_command(params: dict) -> str:
    """The command that makes the far setting's results (what the findings read)."""
    setting = transfer_settings(params)["far"]
    if setting is None:
        return f"whypretrain analyze --preset {FAR_PRESET} (needs a version with that preset)"
    return command("analyze", setting)


def game_counts(params: dict) -> pd.DataFrame:
    """How many games (``2**n`` outputs each) ``compute_all`` evaluates and sparsifies, by
    part, at most (``only_correct`` can keep fewer samples): one row per results folder kind.
    Counts only; reads nothing but the dataset sizes."""
    def models(p, finals_only):
        per_run = 1 if finals_only else (p["epochs"] + 1 if p["checkpoints"] == results.EVERY_EPOCH
                                         else min(p["checkpoints"], p["epochs"] + 1))
        return 1 + 2 * per_run

    def row(part, p, finals_only):
        classes = len(data._digits(p["target"])) if p["target"].startswith(("uci", "mnist")) \
            else data.load_datasets(p).num_target_classes
        samples = classes * p["samples_per_class"]
        m = models(p, finals_only)
        return dict(part=part, seeds=len(p["seeds"]), models=m, samples=samples, n=p["n"],
                    games=len(p["seeds"]) * m * samples,
                    outputs=len(p["seeds"]) * m * samples * (1 << p["n"]))
    rows = [row("main", params, False)]
    seen = set()
    for key, value, setting, finals_only in sensitivity_settings(params):
        spec = tuple(sorted((k, str(setting[k])) for k in results.GAME_KEYS + results.ENGINE_KEYS
                            if k in setting))
        if finals_only and spec not in seen:
            seen.add(spec)
            rows.append(row(f"sensitivity {key}={value}", setting, True))
    for name, setting in transfer_settings(params).items():
        if name != "near" and setting is not None:
            rows.append(row(f"transfer {name}", setting, False))
    return pd.DataFrame(rows)


__all__ = ["MissingResults", "compute", "compute_all", "compute_sensitivity", "compute_transfer",
           "load", "table", "training_table", "sensitivity_grid",
           "sensitivity_settings", "sensitivity", "transfer_settings", "unavailable", "far_command",
           "game_counts"]
