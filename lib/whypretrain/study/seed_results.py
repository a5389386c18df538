"""The per-seed results pipeline: from trained runs to games, interactions and tables on disk
(book/method.md, sections 1-3). This module keeps the folder and its steps; the games are
computed by ``games``, their interactions by ``extraction``.

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
import shutil
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from whypretrain import __version__, distributed, integrity
from whypretrain.train import data, loops
from whypretrain.engine import interactions
from whypretrain.study import extraction, games as games_of
from whypretrain.study.games import MODELS
from whypretrain.measures import knowledge
from whypretrain.errors import MissingResults
from whypretrain.provenance import Sources, attach, command, git_commit
from whypretrain.train.runs import Run, atomic_save, atomic_write, load_checked, locked, run_hash

# the parameters that change the games, and those that change their interactions
# (tau, empty_set, workdir, device change neither)
GAME_KEYS = ("n", "patch", "player_choice", "player_seed", "baseline", "subtract_empty",
             "samples_per_class", "only_correct", "checkpoints", "threads")
# 4: games shared by every seed (the same samples and players; the seeds are in the hash)
# 5: checkpoints = k spaced evenly (they were spaced geometrically)
RESULTS_FORMAT = 5
TABLE_FORMAT = 3  # 2: the weighted_* and chance_* measures (knowledge.KNOWLEDGE_MEASURES);
# 3: weighted measures of L1-normalised interactions, ratio_learnable_new / _finetune


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


def results_spec(params: dict, seed: int, runs: dict[str, str], finals_only: bool = False
                 ) -> dict[str, Any]:
    spec = {k: params[k] for k in GAME_KEYS}
    # the samples are chosen by the final models of every seed of the study
    spec.update(seed=seed, runs=dict(runs), finals_only=finals_only,
                sample_seeds=list(params["seeds"]), results_format=RESULTS_FORMAT)
    return spec


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
    tag = run_hash(extraction.engine_params(params))
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
            games = games_of.evaluate_games(params, seed, runs, ds, device, progress, finals_only)
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
    engine = extraction.engine_params(params)
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
            result = extraction.extract_in_chunks(games["values"], params, device, progress, partial)
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
    engine = extraction.engine_params(params)
    tag = run_hash(engine)
    files = [path / f"interactions-{tag}.pt" for path, _, _ in prepared]
    with _step_lock(prepared[0][0]):
        if not distributed.agree(all(integrity.reusable(f) for f in files)) and main:
            for path, _, _ in prepared:
                atomic_write(path / f"engine-{tag}.json", json.dumps(engine, indent=2).encode())
            start = time.perf_counter()
            parts = extraction.joint_engine([games["values"] for _, _, games in prepared],
                                  [games for _, _, games in prepared], params,
                                  loops.device_of(params), progress, extraction.engine_workers())
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


def _results(path, tag, params, seed, games, result, runs) -> SeedResults:
    labels = [(str(m), int(e)) for m, e in games["labels"]]
    return SeedResults(path, tag, params, seed, games["sample_ids"].tolist(), games["x"],
                       games["y"], games["players"], labels, result, int(games["final_epoch"]),
                       int(games["candidates"]), int(games["eligible"]),
                       {k: r.path.name for k, r in runs.items()})


