"""From trained runs to knowledge tables: the study's analysis step (method.md, section 3).

For one seed: pick the explained target test samples and their players, evaluate every model
on every masked sample (the linear probe, and every per-epoch checkpoint of fine-tuning and of
scratch training), send all games through the engine together, and measure knowledge.

On disk, ``<workdir>/results/<hash>/`` (the hash covers everything that changes the games:
runs, samples, players, masking parameters, seed):
- ``params.json``: those parameters, the seed, the run hashes, library version;
- ``games.pt``: samples, labels, players and the games ``[model, sample, 2**n]``;
- ``engine-<tag>.json``: the engine's parameters, named by their hash ``<tag>``;
- ``interactions-<tag>.pt``: the engine's result for all games (``Interactions.state_dict``);
- ``table-<tag>-tau<tau>.csv``: the tidy knowledge + convergence table for one ``tau``.
Games do not depend on the engine's parameters, so changing those re-uses them.
Each file is written atomically and is reused when present, so an interrupted analysis resumes
at the stage it reached. ``tau`` only changes tables, which are cheap to rebuild.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import __version__, data, interactions, knowledge, masking, training
from .runs import Run, atomic_write, git_commit, run_hash

# the parameters that change the games, and those that change their interactions
# (tau, workdir, device change neither)
GAME_KEYS = ("n", "patch", "player_choice", "baseline", "subtract_empty", "samples_per_class",
             "only_correct", "checkpoints", "threads")
ENGINE_KEYS = ("mode", "optimizer", "iterations", "sparsify_lr", "q_bound")
RESULTS_FORMAT = 2


@dataclass
class Analysis:
    """The analysis of one seed: what a notebook needs to draw any sample without recomputing.

    ``labels``: the model of each row of the games, e.g. ``("pretrain", -1)`` for the linear
    probe, ``("finetune", 3)`` for fine-tuning's epoch-3 checkpoint; ``final_epoch``: the last
    epoch of fine-tuning and scratch training.
    """

    path: Path
    engine_tag: str
    params: dict[str, Any]
    seed: int
    sample_ids: list[int]
    x: torch.Tensor              # [S, C, H, W]
    y: torch.Tensor              # [S]
    players: torch.Tensor        # [S, n] patch indices
    labels: list[tuple[str, int]]
    result: interactions.Interactions  # games and interactions [M, S, 2**n]
    final_epoch: int
    candidates: int              # samples looked at before keeping the correct ones

    def interactions_of(self, model: str, epoch: int | None = None) -> torch.Tensor:
        """``[S, 2, 2**n]`` interactions of one model (final epoch when ``epoch`` is None)."""
        if model == "pretrain":
            epoch = -1
        elif epoch is None:
            epoch = self.final_epoch
        row = self.labels.index((model, epoch))
        return self.result.stacked()[row]

    def items_of(self, model: str, tau: float, epoch: int | None = None) -> torch.Tensor:
        return knowledge.salient_items(self.interactions_of(model, epoch), tau)

    def table(self, tau: float) -> pd.DataFrame:
        """Tidy knowledge and convergence table for ``tau`` (cached on disk)."""
        path = self.path / f"table-{self.engine_tag}-tau{tau:g}.csv"
        if path.is_file():
            return pd.read_csv(path)
        ids = self.sample_ids
        pre, ft, sc = (self.interactions_of(m) for m in ("pretrain", "finetune", "scratch"))
        parts = [knowledge.knowledge_table(pre, ft, sc, tau, ids)]
        checkpoints = any(epoch != self.final_epoch for model, epoch in self.labels
                          if model == "finetune")
        for run in ("finetune", "scratch") if checkpoints else ():
            by_epoch = {e: self.interactions_of(run, e) for m, e in self.labels if m == run}
            own = self.interactions_of(run)
            parts.append(knowledge.convergence_table(by_epoch, own, tau, ids, model=run))
            parts.append(knowledge.convergence_table(by_epoch, ft, tau, ids, model=run,
                                                     reference="finetune"))
        table = pd.concat(parts, ignore_index=True)
        table.insert(0, "seed", self.seed)
        table.insert(1, "tau", tau)
        buf = io.StringIO()
        table.to_csv(buf, index=False)
        atomic_write(path, buf.getvalue().encode())
        return table


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------
@torch.inference_mode()
def choose_samples(dataset, finals: list[torch.nn.Module], per_class: int, only_correct: bool,
                   batch: int = 256) -> tuple[list[int], int]:
    """Target test samples to explain: the first ``per_class`` of each class (in the test set's
    fixed order) that every final model classifies correctly (when ``only_correct``). Reads the
    test set one batch at a time. Returns the indices and how many samples were looked at."""
    ys, oks = [], []
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False):
        ok = torch.ones(len(y), dtype=torch.bool)
        if only_correct:
            for model in finals:
                model.eval()
                device = next(model.parameters()).device
                ok &= model(x.to(device)).argmax(-1).cpu() == y
        ys.append(y)
        oks.append(ok)
    y, ok = torch.cat(ys), torch.cat(oks)
    chosen = []
    for c in sorted(set(y.tolist())):
        chosen += [i for i in (y == c).nonzero()[:, 0].tolist() if ok[i]][:per_class]
    return sorted(chosen), len(y)


def player_seed(seed: int, sample_id: int) -> int:
    """Players of a sample depend on the study's seed and the sample only (not the model)."""
    return seed * 1_000_003 + sample_id


def results_spec(params: dict, seed: int, runs: dict[str, Run], finals_only: bool = False
                 ) -> dict[str, Any]:
    spec = {k: params[k] for k in GAME_KEYS}
    spec.update(seed=seed, runs={k: r.path.name for k, r in runs.items()},
                finals_only=finals_only, results_format=RESULTS_FORMAT)
    return spec


def analysed_epochs(epochs: list[int], count: int) -> list[int]:
    """The checkpoints a run contributes: all of them (``count = 0``), or about ``count``
    spaced geometrically, since knowledge moves most in the first epochs; epoch 0 and the last
    are always in."""
    if count == 0 or count >= len(epochs):
        return list(epochs)
    last = epochs[-1]
    if count <= 2:
        return [epochs[0], last]
    picked = np.unique(np.round(np.geomspace(1, last, count - 1))).astype(int)
    return sorted({epochs[0], last} | {int(e) for e in picked if e in epochs})


def analyze(params: dict, seed: int, progress: bool = True,
            datasets: data.Datasets | None = None, finals_only: bool = False) -> Analysis:
    """The analysis of one seed: trains what is missing, reuses what is on disk.

    ``finals_only``: only the three final models (no convergence measures), which is all the
    knowledge measures need (the sensitivity study uses it).
    """
    with training.num_threads(params["threads"]):
        return _analyze(params, seed, progress, datasets, finals_only)


def _analyze(params, seed, progress, datasets, finals_only) -> Analysis:
    ds = datasets or data.load_datasets(params)
    runs = training.ensure_runs(params, seed, progress, datasets=ds)
    spec = results_spec(params, seed, runs, finals_only)
    path = Path(params["workdir"]) / "results" / run_hash(spec)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "params.json").is_file():
        record = {**spec, "hash": path.name, "version": __version__,
                  "git": git_commit(), "preset": params.get("preset")}
        atomic_write(path / "params.json", json.dumps(record, indent=2, default=str).encode())
    device = training.device_of(params)

    games_file = path / "games.pt"
    if games_file.is_file():
        games = torch.load(games_file, weights_only=True)
    else:
        games = _games(params, seed, runs, ds, device, progress, finals_only)
        _save(games_file, games)

    engine = {k: params[k] for k in ENGINE_KEYS}
    tag = run_hash(engine)
    if not (path / f"engine-{tag}.json").is_file():
        atomic_write(path / f"engine-{tag}.json", json.dumps(engine, indent=2).encode())
    result_file = path / f"interactions-{tag}.pt"
    if result_file.is_file():
        result = interactions.Interactions.from_state_dict(
            torch.load(result_file, weights_only=True))
    else:
        start = time.perf_counter()
        values = games["values"]
        if params["mode"] == "and":
            result = interactions.and_only(values)
        else:
            result = interactions.sparsify(
                values.to(device), iterations=params["iterations"], lr=params["sparsify_lr"],
                q_bound=params["q_bound"], optimizer=params["optimizer"], progress=progress
            ).cpu()
        result.params["seconds"] = time.perf_counter() - start
        _save(result_file, result.state_dict())
    labels = [tuple(label) for label in games["labels"]]
    return Analysis(path, tag, params, seed, games["sample_ids"].tolist(), games["x"], games["y"],
                    games["players"], [(str(m), int(e)) for m, e in labels], result,
                    int(games["final_epoch"]), int(games["candidates"]))


def _games(params, seed, runs, ds, device, progress, finals_only) -> dict[str, Any]:
    finals = [runs[k].load_model(device=device) for k in ("probe", "finetune", "scratch")]
    ids, candidates = choose_samples(ds.target_test, finals, params["samples_per_class"],
                                     params["only_correct"])
    if not ids:
        raise RuntimeError("no target test sample is classified correctly by all three final "
                           "models; train longer or set only_correct=false")
    x = torch.stack([ds.target_test[i][0] for i in ids])
    y = torch.as_tensor([ds.target_test[i][1] for i in ids])
    players = torch.stack([masking.choose_players(x[j], params["n"], params["patch"],
                                                  player_seed(seed, i), params["player_choice"])
                           for j, i in enumerate(ids)])
    labels: list[tuple[str, int]] = [("pretrain", -1)]
    models_ = [finals[0]]
    for kind in ("finetune", "scratch"):
        epochs = runs[kind].epochs()
        chosen = epochs[-1:] if finals_only else analysed_epochs(epochs, params["checkpoints"])
        for epoch in chosen:
            labels.append((kind, epoch))
            models_.append(runs[kind].load_model(epoch, device=device))
    from tqdm.auto import tqdm
    values = torch.stack([
        masking.evaluate(m, x, y, players, params["baseline"], params["mask_batch"],
                         params["patch"], params["subtract_empty"]).cpu()
        for m in tqdm(models_, desc=f"games (seed {seed})", unit="model", disable=not progress)])
    return dict(sample_ids=torch.as_tensor(ids), x=x, y=y, players=players, values=values,
                labels=[list(label) for label in labels], candidates=candidates,
                final_epoch=max(runs["finetune"].epochs()))


def _save(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------
def analyze_study(params: dict, progress: bool = True) -> dict[int, Analysis]:
    """``analyze`` for every seed of the preset, and each seed's table at the preset's tau."""
    ds = data.load_datasets(params)
    out = {}
    for seed in params["seeds"]:
        out[seed] = analyze(params, seed, progress, datasets=ds)
        out[seed].table(params["tau"])
    return out


def study_table(params: dict, tau: float | None = None, progress: bool = False,
                finals_only: bool = False, datasets: data.Datasets | None = None
                ) -> pd.DataFrame:
    """Every seed's tidy table at ``tau`` (the preset's by default), one table."""
    tau = params["tau"] if tau is None else tau
    ds = datasets or data.load_datasets(params)
    return pd.concat([analyze(params, seed, progress, ds, finals_only).table(tau)
                      for seed in params["seeds"]], ignore_index=True)


def summarize(table: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Mean over samples per seed, then mean, spread and 95% interval over seeds.

    ``n_seeds`` is the number of seeds with a defined value; ``n_samples`` the samples with a
    defined value, summed over seeds.
    """
    by = by or ["model", "epoch", "measure", "order"]
    per_seed = knowledge.aggregate(table, by=["seed", *by])
    over = knowledge.aggregate(per_seed, by=by, value="mean")
    counts = per_seed.groupby(by, dropna=False)["n"].sum().rename("n_samples").reset_index()
    over = over.rename(columns={"n": "n_seeds", "n_undefined": "n_seeds_undefined"})
    return over.merge(counts, on=by, how="left")


def sensitivity_grid(params: dict) -> dict[str, list]:
    """What the sensitivity study varies, around the preset's values, one at a time."""
    tau, n = params["tau"], params["n"]
    return {
        "tau": sorted({round(tau / 2, 4), tau, round(min(0.5, tau * 2), 4)}),
        "n": sorted({max(4, n - 4), max(4, n - 2), n}),
        "baseline": list(masking.BASELINES),
    }


def sensitivity(params: dict, grid: dict[str, list] | None = None, progress: bool = True
                ) -> pd.DataFrame:
    """The headline measures as ``tau``, ``n`` and the baseline vary one at a time (and over the
    preset's seeds). One row per (varied parameter, value, seed, measure): the mean over samples.
    """
    from . import presets
    grid = grid or sensitivity_grid(params)
    unknown = set(grid) - {"tau", "n", "baseline"}
    if unknown:
        raise ValueError(f"sensitivity varies tau, n and baseline; not {sorted(unknown)}")
    ds = data.load_datasets(params)  # tau, n and the baseline leave the data as they are
    rows = []
    for key, values in grid.items():
        for value in values:
            setting = dict(params)
            setting[key] = value
            setting = presets.resolve(params["preset"], {k: setting[k] for k in presets.PARAMS})
            # tau only re-reads the study's interactions; n and the baseline need new games,
            # of the final models only (the knowledge measures need nothing else)
            # the preset's own value is the main analysis, already on disk
            table = study_table(setting, progress=progress, datasets=ds,
                                finals_only=key != "tau" and value != params[key])
            table = table[table["order"] == knowledge.ALL_ORDERS]
            means = table.groupby(["seed", "model", "epoch", "measure"])["value"].mean()
            for (seed, model, epoch, measure), mean in means.items():
                rows.append(dict(parameter=key, value=str(value), seed=seed, model=model,
                                 epoch=epoch, measure=measure, mean=mean))
    return pd.DataFrame(rows)
