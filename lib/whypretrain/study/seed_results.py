"""The per-seed results pipeline: from trained runs to games, interactions and tables on disk
(book/method.md, sections 1-3).

For one seed: pick the explained target test samples and their players, evaluate every model
on every masked sample (the linear probe, and every per-epoch checkpoint of fine-tuning and of
scratch training), send all games through the engine together, and measure knowledge.
``compute`` does that (training what is missing); ``load`` only reads, and raises
``errors.MissingResults`` naming the command that makes what is missing.

On disk, ``<workdir>/results/<hash>/`` (the hash covers everything that changes the games:
runs, samples, players, masking parameters, seed):
- ``params.json``: those parameters, the seed, the run hashes, library version;
- ``games.pt``: samples, labels, players and the games ``[model, sample, 2**n]``;
- ``engine-<tag>.json``: the engine's parameters, named by their hash ``<tag>``;
- ``interactions-<tag>.pt``: the engine's result for all games (``Interactions.state_dict``);
- ``partial-<tag>/<start>-<end>.pt``: while the engine runs, the result of each chunk of games
  solved so far (games ``start`` to ``end`` of the flattened ``[model * sample]`` games); the
  folder goes when ``interactions-<tag>.pt`` is written;
- ``table<format>-<tag>-tau<tau>-<empty_set>.csv``: the tidy knowledge + convergence table;
- ``timings.json``: where the time of the seed went: ``seed``, ``games`` (their count),
  ``masking_s`` (evaluating the games) and ``extraction_s`` (engine tag -> seconds of the
  engine on them), recorded by the run that computed each step (a reused step keeps its time);
- ``manifest.json`` (and one in ``partial-<tag>/``): the size and sha256 of each file
  (``integrity``); a damaged file is computed again when read here.
Games do not depend on the engine's parameters, so changing those re-uses them. Each file is
written atomically and reused when present, so an interrupted computation resumes at the stage
it reached, and inside the extraction at the last chunk of games it finished
(``chunk_games``): the games are solved independently, so chunks give the numbers of one
piece, bit for bit. Another process on the same workdir waits on the folder's lock
(``runs.locked``) while one computes a step, and then reuses its file. ``tau`` and
``empty_set`` only change tables, which are cheap to rebuild.

Under torchrun (``distributed``) the ranks share the work of a seed and rank 0 writes the same
files as one process: the games' forward batches (``game_units``) and then the games still to
solve are split over ranks in contiguous blocks; rank 0 gathers the games, and each rank writes
its own chunks of interactions, which rank 0 joins.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from whypretrain import __version__, distributed, integrity
from whypretrain.train import data, loops
from whypretrain.engine import interactions, masking, sparsify
from whypretrain.measures import knowledge
from whypretrain.errors import MissingResults
from whypretrain.provenance import Sources, attach, command, git_commit
from whypretrain.train.runs import Run, atomic_save, atomic_write, load_checked, locked, run_hash

# the parameters that change the games, and those that change their interactions
# (tau, empty_set, workdir, device change neither)
GAME_KEYS = ("n", "patch", "player_choice", "player_seed", "baseline", "subtract_empty",
             "samples_per_class", "only_correct", "checkpoints", "threads")
ENGINE_KEYS = ("mode", "optimizer", "iterations", "sparsify_lr", "q_bound", "tol", "or_merge")
# 4: games shared by every seed (the same samples and players; the seeds are in the hash)
# 5: checkpoints = k spaced evenly (they were spaced geometrically)
RESULTS_FORMAT = 5
MODELS = ("probe", "finetune", "scratch")  # rows of the games, in this order
TABLE_FORMAT = 2  # 2: the weighted_* and chance_* measures (knowledge.KNOWLEDGE_MEASURES)
EVERY_EPOCH = "all"  # the value of ``checkpoints`` that analyses every epoch (the default)


@dataclass
class SeedResults:
    """The results of one seed: what a notebook needs to draw any sample without recomputing.

    ``labels``: the model of each row of the games, e.g. ``("probe", 20)`` for the linear
    probe's final model, ``("finetune", 3)`` for fine-tuning's epoch-3 checkpoint;
    ``final_epoch``: the last epoch of fine-tuning and scratch training; ``runs``: run kind ->
    run hash (the folders under ``<workdir>/runs/``).
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
    eligible: int                # of those, the ones every final model of every seed gets right
    runs: dict[str, str]

    @property
    def hash(self) -> str:
        return self.path.name

    def sources(self) -> Sources:
        return Sources((self.hash,), tuple(self.runs.values()),
                       (command("analyze", self.params),))

    def row_of(self, model: str, epoch: int | None = None) -> int:
        """The games' row of one model (its final epoch when ``epoch`` is None)."""
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        if epoch is None:
            epoch = max(e for m, e in self.labels if m == model)
        return self.labels.index((model, epoch))

    def interactions_of(self, model: str, epoch: int | None = None) -> torch.Tensor:
        """``[S, 2, 2**n]`` interactions of one model (its final epoch when ``epoch`` is None)."""
        return self.result.stacked()[self.row_of(model, epoch)]

    def items_of(self, model: str, tau: float, epoch: int | None = None,
                 empty_set: str | None = None) -> torch.Tensor:
        return knowledge.salient_items(self.interactions_of(model, epoch), tau,
                                       empty_set or self.params["empty_set"])

    def extraction(self) -> pd.DataFrame:
        """Per game (model, epoch, sample): the objective the engine reached, the certified lower
        bound of its optimum and the relative gap between them (book/method.md, section 2)."""
        res = self.result
        rows = [dict(model=m, epoch=e, sample=sid, loss=float(res.loss[i, j]),
                     loss_bound=float(res.loss_bound[i, j]), gap=float(res.gap[i, j]))
                for i, (m, e) in enumerate(self.labels) for j, sid in enumerate(self.sample_ids)]
        return attach(pd.DataFrame(rows), self.sources())

    def _table_path(self, tau: float, empty_set: str) -> Path:
        return self.path / f"table{TABLE_FORMAT}-{self.engine_tag}-tau{tau:g}-{empty_set}.csv"

    def table(self, tau: float | None = None, empty_set: str | None = None) -> pd.DataFrame:
        """Tidy knowledge and convergence table (the stored one; computed in memory, not
        written, when this ``tau`` / ``empty_set`` has none: reading never writes)."""
        tau = self.params["tau"] if tau is None else tau
        empty_set = empty_set or self.params["empty_set"]
        path = self._table_path(tau, empty_set)
        if integrity.reusable(path):
            return pd.read_csv(io.BytesIO(integrity.read_bytes(path)))
        return self._build_table(tau, empty_set)

    def write_table(self, tau: float | None = None, empty_set: str | None = None) -> Path:
        """Stores the table (under torchrun, rank 0 does; the others only return the path)."""
        tau = self.params["tau"] if tau is None else tau
        empty_set = empty_set or self.params["empty_set"]
        path = self._table_path(tau, empty_set)
        if distributed.is_main() and not integrity.reusable(path):
            buf = io.StringIO()
            self._build_table(tau, empty_set).to_csv(buf, index=False)
            atomic_write(path, buf.getvalue().encode())
        return path

    def _build_table(self, tau: float, empty_set: str) -> pd.DataFrame:
        ids = self.sample_ids
        probe, ft, sc = (self.interactions_of(m) for m in MODELS)
        parts = [knowledge.knowledge_table(probe, ft, sc, tau, ids, epoch=self.final_epoch,
                                           empty_set=empty_set)]
        checkpoints = any(epoch != self.final_epoch for model, epoch in self.labels
                          if model == "finetune")
        for run in ("finetune", "scratch") if checkpoints else ():
            by_epoch = {e: self.interactions_of(run, e) for m, e in self.labels if m == run}
            own = self.interactions_of(run)
            parts.append(knowledge.convergence_table(by_epoch, own, tau, ids, model=run,
                                                     empty_set=empty_set))
            parts.append(knowledge.convergence_table(by_epoch, ft, tau, ids, model=run,
                                                     reference="finetune", empty_set=empty_set))
        table = pd.concat(parts, ignore_index=True)
        table.insert(0, "seed", self.seed)
        table.insert(1, "tau", tau)
        return table


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------
@torch.inference_mode()
def choose_samples(dataset, finals: list[torch.nn.Module], per_class: int, only_correct: bool,
                   batch: int = 256) -> tuple[list[int], int, int]:
    """Target test samples to explain: the first ``per_class`` of each class (in the test set's
    fixed order) that every model of ``finals`` classifies correctly (when ``only_correct``).
    ``finals`` are the final models of every seed, so that every seed explains the same
    samples (book/method.md, section 4: the nulls compare models across seeds on one set of
    games). Reads the test set one batch at a time. Returns the indices, how many samples
    were looked at, and how many of them every model gets right (all, without
    ``only_correct``)."""
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
    return sorted(chosen), len(y), int(ok.sum())


def player_seed(sample_id: int, seed: int = 0) -> int:
    """The seed that draws a sample's players: the study's ``player_seed`` and the sample, not
    the training seed nor the model, so every model of every seed is read on the same
    players."""
    return seed * 1_000_003 + sample_id


def results_spec(params: dict, seed: int, runs: dict[str, str], finals_only: bool = False
                 ) -> dict[str, Any]:
    spec = {k: params[k] for k in GAME_KEYS}
    # the samples are chosen by the final models of every seed of the study
    spec.update(seed=seed, runs=dict(runs), finals_only=finals_only,
                sample_seeds=list(params["seeds"]), results_format=RESULTS_FORMAT)
    return spec


# what each optimiser does not read, so that changing it does not recompute the interactions
UNUSED_BY = {"exact": ("iterations", "sparsify_lr"), "sgd": ("tol",), "adam": ("tol",)}


def engine_params(params: dict) -> dict[str, Any]:
    unused = UNUSED_BY[params["optimizer"]] if params["mode"] == "and-or" else ENGINE_KEYS[2:]
    out = {k: params[k] for k in ENGINE_KEYS if k not in unused}
    if params["mode"] == "and-or" and params["optimizer"] == "exact":
        # the tie-broken optimum (exact.tie_break); the defaults keep the tags of stored results
        out["solution"] = params.get("rule", "canonical")
        if params.get("extraction", "independent") != "independent":
            out["extraction"] = params["extraction"]
            # joint: one program over the final models of all these seeds (_compute_joint)
            out["joint_seeds"] = sorted(int(s) for s in params["seeds"])
    return out


def analysed_epochs(epochs: list[int], count: int | str) -> list[int]:
    """The checkpoints a run contributes: all of them (``count = EVERY_EPOCH``, "all"), or
    ``count`` spaced evenly from the first epoch to the last (both always in). Evenly, not
    geometrically: the convergence reach happens late in training (epochs 7-9 of 10 on the
    classroom preset), where geometric spacing has no checkpoint (book/method.md, section 5)."""
    if count == EVERY_EPOCH or count >= len(epochs):
        return list(epochs)
    picked = np.unique(np.round(np.linspace(0, len(epochs) - 1, count)).astype(int))
    return [epochs[i] for i in picked]


def find_runs(params: dict, seed: int, ds: data.Datasets) -> dict[str, Run]:
    """The four finished runs of ``seed``, read only: ``MissingResults`` when one is not done."""
    out = {}
    for kind, spec in loops.run_specs(params, seed, ds).items():
        path = Path(params["workdir"]) / "runs" / run_hash(spec)
        if not (path / "done").is_file():
            raise MissingResults(f"the {kind} run of seed {seed} ({path})",
                                 command("train", params))
        out[kind] = Run(path)
    return out


def results_path(params: dict, seed: int, runs: dict[str, Run], finals_only: bool = False
                 ) -> Path:
    spec = results_spec(params, seed, {k: r.path.name for k, r in runs.items()}, finals_only)
    return Path(params["workdir"]) / "results" / run_hash(spec)


def load(params: dict, seed: int, datasets: data.Datasets | None = None,
         finals_only: bool = False) -> SeedResults:
    """The stored results of one seed; computes nothing and writes nothing.

    Raises ``errors.MissingResults`` (naming ``whypretrain train`` or ``analyze``) when the runs,
    the games or the interactions of these parameters are not on disk.
    """
    ds = datasets or data.load_datasets(params)
    runs = find_runs(params, seed, ds)
    path = results_path(params, seed, runs, finals_only)
    tag = run_hash(engine_params(params))
    games_file, result_file = path / "games.pt", path / f"interactions-{tag}.pt"
    if not (games_file.is_file() and result_file.is_file()):
        what = "the interactions" if games_file.is_file() else "the games"
        raise MissingResults(f"{what} of seed {seed} ({path})", command("analyze", params))
    games = load_checked(games_file, command("analyze", params))
    result = interactions.Interactions.from_state_dict(
        load_checked(result_file, command("analyze", params)))
    return _results(path, tag, params, seed, games, result, runs)


def compute(params: dict, seed: int, progress: bool = True,
            datasets: data.Datasets | None = None, finals_only: bool = False) -> SeedResults:
    """The results of one seed: trains what is missing, reuses what is on disk, and stores the
    table at the preset's ``tau`` and ``empty_set``.

    ``finals_only``: only the three final models (no convergence measures), which is all the
    knowledge measures need (the sensitivity study uses it).
    ``extraction="joint"``: every seed of ``params`` is computed, since one program pools their
    final models (``_compute_joint``); this seed's share is returned.

    Under torchrun every rank calls it with the same arguments and gets the same results.
    """
    progress = progress and distributed.is_main()
    if _is_joint(params):  # one program over every seed's final models
        return _compute_joint(params, progress, datasets, finals_only)[
            list(params["seeds"]).index(seed)]
    _wait_ahead()
    with loops.num_threads(params["threads"]):
        out = _extract(params, seed, progress,
                       *_prepare(params, seed, progress, datasets, finals_only))
        out.write_table()
        return out


def compute_seeds(params: dict, seeds: list[int], progress: bool = True,
                  datasets: data.Datasets | None = None, finals_only: bool = False
                  ) -> list[SeedResults]:
    """``compute`` of each seed, in order. In one process with ``threads = 1`` (the default)
    both cores work: while the engine extracts one seed's interactions, a second thread trains
    the next seed's runs and evaluates its games (each thread's numbers do not depend on the
    other's: torch runs on one thread either way, and nothing here draws from a shared random
    generator but training). Under torchrun, or with another thread count (the engine would
    change the count under training's feet), the seeds run one after the other."""
    if _is_joint(params):
        every = _compute_joint(params, progress and distributed.is_main(), datasets, finals_only)
        return [every[list(params["seeds"]).index(seed)] for seed in seeds]
    if distributed.world() > 1 or params["threads"] != 1 or len(seeds) < 2:
        return [compute(params, seed, progress, datasets, finals_only) for seed in seeds]
    ds = datasets or data.load_datasets(params)
    out = []
    _wait_ahead()
    with loops.num_threads(params["threads"]):
        ahead = _Ahead(_prepare, params, seeds[0], progress, ds, finals_only)
        for k, seed in enumerate(seeds):
            prepared = ahead.result()
            if k + 1 < len(seeds):  # no progress bars from the second thread
                ahead = _Ahead(_prepare, params, seeds[k + 1], False, ds, finals_only)
            out.append(_extract(params, seed, progress, *prepared))
            out[-1].write_table()
    return out


class _Ahead(threading.Thread):
    """``fn(*args)`` in a daemon thread: an error or Ctrl-C in the main thread does not wait
    for it (every file it writes is atomic, so a process that ends stops it safely anywhere);
    in a process that goes on (a notebook's kernel), the next ``compute`` waits for it
    (``_wait_ahead``) rather than work on the same files."""

    running: list["_Ahead"] = []

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.value, self.error = fn, args, None, None
        _Ahead.running.append(self)
        self.start()

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as err:  # noqa: BLE001 -- raised again in the main thread
            self.error = err

    def result(self):
        self.join()
        _Ahead.running.remove(self)
        if self.error is not None:
            raise self.error
        return self.value


def _wait_ahead() -> None:
    """Wait for a second thread that an interrupted ``compute_seeds`` left running."""
    while _Ahead.running:
        _Ahead.running.pop().join()


def _prepare(params, seed, progress, datasets, finals_only):
    """The runs of one seed (trained when missing), its results folder and its games."""
    ds = datasets or data.load_datasets(params)
    # every seed's runs: the explained samples are chosen by all of them (shared_samples)
    runs = loops.train_study(params, progress, ds)[seed]
    path = results_path(params, seed, runs, finals_only)
    path.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()
    if main and not integrity.reusable(path / "params.json"):
        spec = results_spec(params, seed, {k: r.path.name for k, r in runs.items()}, finals_only)
        record = {**spec, "hash": path.name, "version": __version__,
                  "git": git_commit(), "preset": params.get("preset")}
        atomic_write(path / "params.json", json.dumps(record, indent=2, default=str).encode())
    device = loops.device_of(params)

    # Each step: rank 0 says whether its file is there (so every rank takes the same branch),
    # the ranks compute their shares, rank 0 writes the file, the others read it. Rank 0 holds
    # the folder's lock for the step, so another process on this workdir waits and reuses it.
    games_file = path / "games.pt"
    with _step_lock(path):
        games = _reusable(games_file) if main else None  # a damaged file is computed again
        if distributed.agree(games is not None):
            games = games if main else load_checked(games_file)
        else:
            start = time.perf_counter()
            games = _games(params, seed, runs, ds, device, progress, finals_only)
            if main:
                atomic_save(games_file, games)
                _record_time(path, seed, games["values"], masking_s=time.perf_counter() - start)
            distributed.barrier()
            if not main:
                games = load_checked(games_file)
    return path, runs, games


def _extract(params, seed, progress, path, runs, games) -> SeedResults:
    """The interactions of one seed's games (extracted when missing)."""
    main = distributed.is_main()
    device = loops.device_of(params)
    engine = engine_params(params)
    tag = run_hash(engine)
    if main and not integrity.reusable(path / f"engine-{tag}.json"):
        atomic_write(path / f"engine-{tag}.json", json.dumps(engine, indent=2).encode())
    # the interactions file is the mark of complete results: written last, once, atomically
    result_file = path / f"interactions-{tag}.pt"
    partial = path / f"partial-{tag}"
    with _step_lock(path):
        state = _reusable(result_file) if main else None  # a damaged file is computed again
        if distributed.agree(state is not None):
            result = interactions.Interactions.from_state_dict(
                state if main else load_checked(result_file))
        else:
            result = _chunked_engine(games["values"], params, device, progress, partial)
            if main:
                atomic_save(result_file, result.state_dict())
                _record_time(path, seed, games["values"],
                             extraction_s={tag: result.params["seconds"]})
            distributed.barrier()
            if not main:
                result = interactions.Interactions.from_state_dict(load_checked(result_file))
    if main:  # the chunks are in the interactions file now (also after a kill right here)
        shutil.rmtree(partial, ignore_errors=True)
    return _results(path, tag, params, seed, games, result, runs)


def _is_joint(params: dict) -> bool:
    return params.get("extraction", "independent") == "joint" and params["mode"] == "and-or"


def _compute_joint(params: dict, progress: bool, datasets: data.Datasets | None,
                   finals_only: bool) -> list[SeedResults]:
    """The results of every seed of ``params`` under joint extraction: the final models of all
    the seeds (probe, fine-tuned and scratch of each) decomposed together, sample by sample, in
    one program (``_joint_engine``), every other checkpoint on its own. So the claims (models
    of one seed) and their nulls (models of two seeds) read one shared split (book/method.md,
    section 2, "Joint extraction"). Each seed's folder gets its share as
    ``interactions-<tag>.pt``; the first seed's folder lock guards the step, and the files are
    reused when all are there (a crash between two writes solves again)."""
    ds = datasets or data.load_datasets(params)
    seeds = list(params["seeds"])
    with loops.num_threads(params["threads"]):
        prepared = [_prepare(params, seed, progress, ds, finals_only) for seed in seeds]
    main = distributed.is_main()
    engine = engine_params(params)
    tag = run_hash(engine)
    files = [path / f"interactions-{tag}.pt" for path, _, _ in prepared]
    with _step_lock(prepared[0][0]):
        if not distributed.agree(all(integrity.reusable(f) for f in files)) and main:
            for path, _, _ in prepared:
                atomic_write(path / f"engine-{tag}.json", json.dumps(engine, indent=2).encode())
            start = time.perf_counter()
            parts = _joint_engine([games["values"] for _, _, games in prepared],
                                  [games for _, _, games in prepared], params,
                                  loops.device_of(params), progress, _engine_workers())
            share = (time.perf_counter() - start) / len(seeds)
            for seed, file, part, (path, _, games) in zip(seeds, files, parts, prepared):
                part.params["seconds"] = share
                atomic_save(file, part.state_dict())
                # the program's time, shared evenly: timings summed over folders stay true
                _record_time(path, seed, games["values"], extraction_s={tag: share})
        distributed.barrier()
    out = []
    for seed, file, (path, runs, games) in zip(seeds, files, prepared):
        result = interactions.Interactions.from_state_dict(load_checked(file))
        out.append(_results(path, tag, params, seed, games, result, runs))
        if main:
            out[-1].write_table()
    return out


def _reusable(file: Path) -> dict | None:
    """The stored ``torch.save`` object of ``file``; None when it is missing or damaged."""
    if not integrity.reusable(file):
        return None
    try:
        return load_checked(file)
    except integrity.Damaged as err:  # written before records: it may not load
        print(f"whypretrain: {err.path} is damaged ({err.why}): computing it again",
              file=sys.stderr, flush=True)
        return None


def _step_lock(path: Path):
    """The results folder's lock on rank 0; the other ranks wait for rank 0 at the step's first
    ``agree`` (a barrier on the launcher's store: no timeout to trip while rank 0 waits)."""
    return locked(path) if distributed.is_main() else nullcontext()


def _record_time(path: Path, seed: int, values: torch.Tensor, **seconds: Any) -> None:
    """Add the seconds of a step that was just computed to ``timings.json`` (rank 0)."""
    file = path / "timings.json"
    # a damaged record is started again: the times of the steps it held are lost
    record = json.loads(integrity.read_bytes(file)) if integrity.reusable(file) else {}
    record.update(seed=seed, games=int(values[..., 0].numel()))
    for key, value in seconds.items():
        record[key] = {**record.get(key, {}), **value} if isinstance(value, dict) else value
    atomic_write(file, json.dumps(record, indent=2).encode())


# A chunk of the exact engine holds games of about this many outputs in all (2**n each): at
# n = 10, 32 games, 20-40 s on one core for the default preset's first games (trained
# networks; the dense games of early epochs take longer) on the shared 2-core machine
CHUNK_OUTPUTS = 1 << 15


def chunk_games(params: dict) -> int | None:
    """Games per chunk of the extraction (None: all of a rank's games in one piece). Only the
    exact engine is chunked: it solves every game on its own, whatever the batch. The descent
    optimisers run every game's step in one batch whose layout (a single game takes another
    path) changes the rounding, so they stay in one piece, as they always were."""
    if params["mode"] == "and-or" and params["optimizer"] == "exact":
        return max(1, CHUNK_OUTPUTS >> params["n"])
    return None


_CHUNK = re.compile(r"(\d+)-(\d+)\.pt")


def _kept_chunks(partial: Path, games: int) -> list[tuple[int, int]]:
    """The chunks of games in ``partial`` that do not overlap, as ``(start, end)`` pairs in
    order: taken by their start, at each start the longest; a chunk that overlaps one taken
    (left by runs that split the games otherwise) is not used."""
    ends: dict[int, int] = {}
    for file in partial.glob("*.pt") if partial.is_dir() else ():
        match = _CHUNK.fullmatch(file.name)
        if match and integrity.reusable(file):  # a damaged chunk is solved again
            start, end = int(match[1]), int(match[2])
            if 0 <= start < end <= games:
                ends[start] = max(end, ends.get(start, end))
    kept, at = [], 0
    for start in sorted(ends):
        if start >= at:
            kept.append((start, ends[start]))
            at = ends[start]
    return kept


def _chunk_name(start: int, end: int) -> str:
    return f"{start:09d}-{end:09d}.pt"


def _to_solve(kept: list[tuple[int, int]], games: int, share: range, size: int | None
              ) -> list[tuple[int, int]]:
    """The chunks to solve: the games not in ``kept``, numbered in order, of which this rank
    takes ``share``, cut into pieces of at most ``size`` games (no piece spans a kept chunk)."""
    gaps, at = [], 0
    for start, end in kept + [(games, games)]:
        if start > at:
            gaps.append((at, start))
        at = max(at, end)
    out, seen = [], 0
    for start, end in gaps:
        lo, hi = max(start, start + share.start - seen), min(end, start + share.stop - seen)
        seen += end - start
        step = size or max(1, hi - lo)
        out += [(i, min(i + step, hi)) for i in range(lo, hi, step)]
    return out


def _chunked_engine(values: torch.Tensor, params: dict, device: str, progress: bool,
                    partial: Path) -> interactions.Interactions | None:
    """``run_engine`` on all games, kept as it goes: each chunk of games (``chunk_games``) is
    written to ``partial`` once solved, and the chunks already there are not solved again.
    Under torchrun each rank solves a contiguous block of the games still to solve. Rank 0
    joins the chunks into the whole result (the others get None): every game is solved on its
    own, so the numbers are those of one piece. ``params["seconds"]`` of the result: this
    run's seconds for the step, plus the solve seconds recorded in the chunks kept from an
    earlier run (an upper bound of the time they took: they were solved side by side).

    With several chunks, each CPU worker solves a chunk on its own (one thread each, the
    chunks taken in order): a single solve's threads wait at every round for its slowest game
    and while it prices, and several chunks at once keep the cores busy (1.14-1.16x on the
    default preset's first 128 games, 2 cores). The numbers do not depend on it."""
    start_time = time.perf_counter()
    flat = values.flatten(0, -2)
    if distributed.is_main():
        partial.mkdir(exist_ok=True)
    kept = distributed.agree(_kept_chunks(partial, len(flat)))
    todo = len(flat) - sum(end - start for start, end in kept)
    chunks = _to_solve(kept, len(flat), distributed.shard(todo), chunk_games(params))
    workers = min(_engine_workers(), len(chunks))

    def solve(chunk: tuple[int, int]) -> int:
        start, end = chunk
        t = time.perf_counter()
        part = run_engine(flat[start:end], params, device, progress and workers == 1,
                          workers=None if workers == 1 else 1)
        part.params["seconds"] = time.perf_counter() - t
        atomic_save(partial / _chunk_name(start, end), part.state_dict())
        return end - start

    if workers <= 1:
        for chunk in chunks:
            solve(chunk)
    else:
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm
        # one torch thread in every chunk's solve (the exact engine runs on one anyway, and
        # the solves must not set the process-wide count under each other's feet)
        with loops.num_threads(1), tqdm(total=todo, desc="exact extraction", unit="game",
                                           disable=not progress) as bar:
            pool = ThreadPoolExecutor(workers)
            try:
                for solved in pool.map(solve, chunks):
                    bar.update(solved)
            finally:  # on an error or Ctrl-C: the chunks being solved end, no new one starts
                pool.shutdown(cancel_futures=True)
    distributed.barrier()
    if not distributed.is_main():
        return None
    chunks = _kept_chunks(partial, len(flat))
    if sum(end - start for start, end in chunks) != len(flat):
        raise RuntimeError(f"the chunks in {partial} do not cover the {len(flat)} games")
    parts = [interactions.Interactions.from_state_dict(
        load_checked(partial / _chunk_name(*chunk))) for chunk in chunks]
    earlier = sum(p.params.get("seconds", 0.0) for p, c in zip(parts, chunks) if c in kept)
    state = interactions.concatenate(parts).state_dict()
    result = interactions.Interactions.from_state_dict(
        {k: v.reshape(*values.shape[:-1], *v.shape[1:]) if torch.is_tensor(v) else v
         for k, v in state.items()})
    result.params["seconds"] = earlier + time.perf_counter() - start_time
    return result


def _engine_workers() -> int:
    """CPU threads for the exact optimiser's LPs: the cores of this node, shared by the
    processes on it (torchrun), at most 8."""
    return max(1, min((os.cpu_count() or 1) // distributed.local_world(), 8))


def run_engine(values: torch.Tensor, params: dict, device: str = "cpu",
               progress: bool = False, workers: int | None = None) -> interactions.Interactions:
    """The engine on ``values`` with the preset's engine parameters (book/method.md, section 2).
    ``workers``: threads for the exact optimiser's LPs (``_engine_workers()`` by default).

    ``or_merge="and"``: OR terms of order <= 1 are moved into AND (the engine's rule);
    ``"keep"``: they stay OR terms, as later code of the same literature keeps them.
    ``extraction="joint"``: the three final models of each sample are decomposed together
    (``joint.py``), every other checkpoint on its own; needs the games ``[model, sample, 2**n]``
    in the row order of ``_games`` (probe, fine-tuning's epochs, scratch's epochs).
    """
    if params["mode"] == "and":
        return interactions.and_only(values)
    # the exact optimiser's LPs run in threads (HiGHS releases the GIL); the result does not
    # depend on how many. Processes on one node (torchrun) share its cores.
    workers = workers or _engine_workers()
    if params.get("extraction", "independent") == "joint":
        return _joint_engine([values], None, params, device, progress, workers)[0]
    return sparsify.sparsify(
        values.to(device), optimizer=params["optimizer"], tol=params["tol"],
        q_bound=params["q_bound"], iterations=params["iterations"], lr=params["sparsify_lr"],
        merge_low_or=params["or_merge"] == "and", progress=progress,
        workers=workers, rule=params.get("rule", "canonical")).cpu()


def final_rows(models: int) -> list[int]:
    """The rows of the probe's, fine-tuning's and scratch training's final models among the
    ``models`` rows of a seed's games (``_games``: the probe, then as many epochs of fine-tuning
    as of scratch training, each run's last epoch last)."""
    if models < 3 or models % 2 == 0:
        raise ValueError(f"the games of a seed have 1 + 2k model rows, got {models}")
    return [0, (models - 1) // 2, models - 1]


def _joint_engine(values: list[torch.Tensor], games: list[dict] | None, params: dict,
                  device: str, progress: bool, workers: int) -> list[interactions.Interactions]:
    """The joint extraction of the final models of every seed's games in ``values`` (each
    ``[model, sample, 2**n]``), sample by sample in one program; every other checkpoint alone.
    ``games``: the seeds' games records, to check that they explain the same samples with the
    same players (a pooled program needs one sample per LP)."""
    if params["optimizer"] != "exact":
        raise ValueError("extraction=joint is solved by the exact optimiser only; "
                         f"got optimizer={params['optimizer']}")
    if any(v.dim() != 3 for v in values):
        raise ValueError("extraction=joint needs every model of a seed in one process "
                         f"(games [model, sample, 2**n]), got {[tuple(v.shape) for v in values]}")
    for g in (games or [])[1:]:
        if not (torch.equal(g["sample_ids"], games[0]["sample_ids"])
                and torch.equal(g["players"], games[0]["players"])):
            raise ValueError("extraction=joint pools the seeds' final models sample by sample: "
                             "every seed must explain the same samples with the same players")
    common = dict(optimizer="exact", tol=params["tol"], q_bound=params["q_bound"],
                  merge_low_or=params["or_merge"] == "and", progress=progress,
                  rule=params.get("rule", "canonical"))
    finals = [final_rows(v.shape[0]) for v in values]
    together = sparsify.sparsify(torch.cat([v[f] for v, f in zip(values, finals)]).to(device),
                                 extraction="joint", workers=workers, **common).cpu()
    state = together.state_dict()
    out = []
    for k, (v, f) in enumerate(zip(values, finals)):
        others = [r for r in range(v.shape[0]) if r not in f]
        alone = sparsify.sparsify(v[others].to(device), workers=workers,
                                  **common).cpu() if others else None
        parts = {}
        for key, tensor in state.items():
            if not torch.is_tensor(tensor):
                continue
            full = torch.empty(v.shape[:1] + tensor.shape[1:], dtype=tensor.dtype)
            full[f] = tensor[3 * k:3 * k + 3]
            if alone is not None:
                full[others] = getattr(alone, key)
            parts[key] = full
        p = dict(together.params, joint_models=3 * len(values))
        if alone is not None:  # the largest gap of either part; the LP rounds are the checkpoints'
            p = {**alone.params, **p, "gap": max(alone.params["gap"], p["gap"])}
        out.append(interactions.Interactions(**parts, mode="and-or", params=p))
    return out


def compare_with_sgd(r: SeedResults, iterations: int | None = None,
                     lr: float | None = None) -> pd.DataFrame:
    """Runs the SGD reference (``iterations`` steps at ``lr``; the preset's by default) on the
    final models' games of ``r`` and compares it with the stored extraction, per game: the ratio
    of the objectives, and the Jaccard of the two salient sets. Computes (about 10-30 s for
    the default preset's 60 games on one CPU core); stores nothing."""
    params = r.params
    rows = [r.row_of(m) for m in MODELS]
    values = r.result.values[rows]
    sgd = sparsify.sparsify(values, optimizer="sgd", q_bound=params["q_bound"],
                                iterations=iterations or params["iterations"],
                                lr=lr or params["sparsify_lr"],
                                merge_low_or=params["or_merge"] == "and")
    ours = r.result.stacked()[rows]
    k_ours = knowledge.salient_items(ours, params["tau"], params["empty_set"])
    k_sgd = knowledge.salient_items(sgd.stacked(), params["tau"], params["empty_set"])
    jaccard = knowledge.set_jaccard(k_ours, k_sgd)
    out = [dict(model=m, sample=sid, exact=float(r.result.loss[row, j]),
                sgd=float(sgd.loss[i, j]), ratio=float(sgd.loss[i, j] / r.result.loss[row, j]),
                jaccard=float(jaccard[i, j]))
           for i, (m, row) in enumerate(zip(MODELS, rows)) for j, sid in enumerate(r.sample_ids)]
    return attach(pd.DataFrame(out), r.sources())


def _results(path, tag, params, seed, games, result, runs) -> SeedResults:
    labels = [(str(m), int(e)) for m, e in games["labels"]]
    return SeedResults(path, tag, params, seed, games["sample_ids"].tolist(), games["x"],
                       games["y"], games["players"], labels, result, int(games["final_epoch"]),
                       int(games["candidates"]), int(games["eligible"]),
                       {k: r.path.name for k, r in runs.items()})


def game_units(models: int, samples: int, n: int, mask_batch: int
               ) -> list[tuple[int, int, int]]:
    """The forward batches of the games, as ``(model row, first sample, end sample)``: per
    model, the samples ``masking.evaluate`` puts in one forward pass (``mask_batch // 2**n``,
    at least 1). Ranks split these units, never a batch: a CPU convolution is not guaranteed
    to give the same numbers for an image in a batch of another size."""
    per_batch = max(1, mask_batch // (1 << n))
    return [(m, i, min(i + per_batch, samples))
            for m in range(models) for i in range(0, samples, per_batch)]


def _games(params, seed, runs, ds, device, progress, finals_only) -> dict[str, Any] | None:
    """The games of one seed (under torchrun: on rank 0; None on the others, which evaluate
    their block of ``game_units``)."""
    finals = {k: runs[k].load_model(device=device) for k in MODELS}
    ids, candidates, eligible = shared_samples(params, ds, device, progress)
    x = torch.stack([ds.target_test[i][0] for i in ids])
    y = torch.as_tensor([ds.target_test[i][1] for i in ids])
    players = torch.stack([masking.choose_players(x[j], params["n"], params["patch"],
                                                  player_seed(i, params["player_seed"]),
                                                  params["player_choice"])
                           for j, i in enumerate(ids)])
    labels: list[tuple[str, int]] = [("probe", runs["probe"].epochs()[-1])]
    for kind in ("finetune", "scratch"):
        epochs = runs[kind].epochs()
        chosen = epochs[-1:] if finals_only else analysed_epochs(epochs, params["checkpoints"])
        labels += [(kind, epoch) for epoch in chosen]

    def model_of(row: int) -> torch.nn.Module:
        kind, epoch = labels[row]
        return finals["probe"] if kind == "probe" else runs[kind].load_model(epoch, device=device)

    size = 1 << params["n"]
    units = game_units(len(labels), len(ids), params["n"], params["mask_batch"])
    block = distributed.shard(len(units))
    # the baseline of every sample, made once as evaluate makes it (on the device, all samples)
    base = masking.make_baseline(x.to(device, torch.float32), params["baseline"])
    from tqdm.auto import tqdm
    parts, model, loaded = [], None, None
    for row, i, j in tqdm([units[k] for k in block], desc=f"games (seed {seed})", unit="batch",
                          disable=not progress):
        if row != loaded:
            model, loaded = model_of(row), row
        parts.append(masking.evaluate(model, x[i:j], y[i:j], players[i:j], base[i:j],
                                      params["mask_batch"], params["patch"],
                                      params["subtract_empty"]).cpu())
    gathered = distributed.gather(parts)
    if gathered is None:
        return None
    values = torch.empty(len(labels), len(ids), size, dtype=torch.float64)
    for (row, i, j), part in zip(units, (p for rank_parts in gathered for p in rank_parts)):
        values[row, i:j] = part
    return dict(sample_ids=torch.as_tensor(ids), x=x, y=y, players=players, values=values,
                labels=[list(label) for label in labels], candidates=candidates,
                eligible=eligible, final_epoch=max(runs["finetune"].epochs()))


def shared_samples(params: dict, ds: data.Datasets, device: str, progress: bool = False
                   ) -> tuple[list[int], int, int]:
    """``choose_samples`` with the three final models of every seed of the study (trains the
    runs that are missing): the samples every seed explains. Under torchrun every rank
    chooses, and rank 0's choice is the one kept."""
    every = loops.train_study(params, progress, ds)
    finals = [every[s][k].load_model(device=device) for s in params["seeds"] for k in MODELS]
    ids, candidates, eligible = distributed.agree(choose_samples(
        ds.target_test, finals, params["samples_per_class"], params["only_correct"]))
    if not ids:
        raise RuntimeError(f"no target test sample is classified correctly by the final models "
                           f"of every seed ({len(finals)} models); train longer or set "
                           f"only_correct=false")
    return ids, candidates, eligible
