"""The interactions of one seed's games: the engine's parameters, the engine run on chunks of
games kept on disk as they are solved (so a killed extraction resumes), and the joint program
over every seed's final models (book/method.md, section 2).

``<results>/partial-<tag>/<start>-<end>.pt`` holds, while the engine runs, the result of each
chunk of games solved so far (games ``start`` to ``end`` of the flattened ``[model * sample]``
games); ``seed_results`` joins them into ``interactions-<tag>.pt``. Every game is solved on its
own, so chunks give the numbers of one piece, bit for bit.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from whypretrain import distributed, integrity
from whypretrain.engine import interactions, sparsify
from whypretrain.measures import knowledge
from whypretrain.provenance import attach
from whypretrain.study.games import MODELS
from whypretrain.train import loops
from whypretrain.train.runs import atomic_save, load_checked

if TYPE_CHECKING:  # compare_with_sgd reads one seed's loaded results
    from whypretrain.study.seed_results import SeedResults

# the parameters that change the interactions of the games (``seed_results.GAME_KEYS``: those
# that change the games)
ENGINE_KEYS = ("mode", "optimizer", "iterations", "sparsify_lr", "q_bound", "tol", "or_merge")


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


def _solve_in_threads(solve, chunks: list[tuple[int, int]], workers: int, games: int,
                      progress: bool) -> None:
    """``solve`` every chunk, ``workers`` at a time, with one bar over the ``games``."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm
    # one torch thread in every chunk's solve (the exact engine runs on one anyway, and the
    # solves must not set the process-wide count under each other's feet)
    with loops.num_threads(1), tqdm(total=games, desc="exact extraction", unit="game",
                                       disable=not progress) as bar:
        pool = ThreadPoolExecutor(workers)
        try:
            for solved in pool.map(solve, chunks):
                bar.update(solved)
        finally:  # on an error or Ctrl-C: the chunks being solved end, no new one starts
            pool.shutdown(cancel_futures=True)


def extract_in_chunks(values: torch.Tensor, params: dict, device: str, progress: bool,
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
    workers = min(engine_workers(), len(chunks))

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
        _solve_in_threads(solve, chunks, workers, todo, progress)
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


def engine_workers() -> int:
    """CPU threads for the exact optimiser's LPs: the cores of this node, shared by the
    processes on it (torchrun), at most 8."""
    return max(1, min((os.cpu_count() or 1) // distributed.local_world(), 8))


def run_engine(values: torch.Tensor, params: dict, device: str = "cpu",
               progress: bool = False, workers: int | None = None) -> interactions.Interactions:
    """The engine on ``values`` with the preset's engine parameters (book/method.md, section 2).
    ``workers``: threads for the exact optimiser's LPs (``engine_workers()`` by default).

    ``or_merge="and"``: OR terms of order <= 1 are moved into AND (the engine's rule);
    ``"keep"``: they stay OR terms, as later code of the same literature keeps them.
    ``extraction="joint"``: the three final models of each sample are decomposed together
    (``joint.py``), every other checkpoint on its own; needs the games ``[model, sample, 2**n]``
    in the row order of ``games.evaluate_games`` (probe, fine-tuning's epochs, scratch's epochs).
    """
    if params["mode"] == "and":
        return interactions.and_only(values)
    # the exact optimiser's LPs run in threads (HiGHS releases the GIL); the result does not
    # depend on how many. Processes on one node (torchrun) share its cores.
    workers = workers or engine_workers()
    if params.get("extraction", "independent") == "joint":
        return joint_engine([values], None, params, device, progress, workers)[0]
    return sparsify.sparsify(
        values.to(device), optimizer=params["optimizer"], tol=params["tol"],
        q_bound=params["q_bound"], iterations=params["iterations"], lr=params["sparsify_lr"],
        merge_low_or=params["or_merge"] == "and", progress=progress,
        workers=workers, rule=params.get("rule", "canonical")).cpu()


def final_rows(models: int) -> list[int]:
    """The rows of the probe's, fine-tuning's and scratch training's final models among the
    ``models`` rows of a seed's games (``games.evaluate_games``: the probe, then as many epochs of fine-tuning
    as of scratch training, each run's last epoch last)."""
    if models < 3 or models % 2 == 0:
        raise ValueError(f"the games of a seed have 1 + 2k model rows, got {models}")
    return [0, (models - 1) // 2, models - 1]


def joint_engine(values: list[torch.Tensor], games: list[dict] | None, params: dict,
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
