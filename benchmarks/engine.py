"""Benchmark of the interaction engine against the dense-matrix reference, side by side.

    .venv/bin/python benchmarks/engine.py [--quick] [--threads 1]

On the same games, in the same run: transform time (harsanyi + and_or), sparsification time
(reference SGD; ours runs 10,000 steps, the dense reference fewer where it is slow, timed per
step and extrapolated; objectives compared at equal step counts), peak memory, the objective
reached; the masking overhead against plain batched inference of the same model; the scaled-Adam
option against the reference SGD on the same real games. Games are real: the project's small
CNN trained briefly on the source digits, explained on source test digits. Prints tables and
writes them to benchmarks/out/engine.json. See benchmarks/README.md for the measured numbers.

Peak memory: each measured operation also runs in a fresh child process (random games of the same
shape, 5 steps; memory does not depend on the values or the step count) that resets its peak
resident size (``/proc/self/clear_refs``), runs the operation (the dense side including its
matrix build) and reports ``VmHWM`` minus ``VmRSS`` before it; both sides are measured so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dense_reference as dense  # noqa: E402

from whypretrain.engine import interactions as I  # noqa: E402
from whypretrain.engine.sparsify import sparsify  # noqa: E402

OUT = HERE / "out"
FULL_STEPS = 10000
Q_BOUND = 0.04  # sparsify.sparsify's default q bound, in units of |v(N) - v(empty)|
# (n, games): (dense-reference steps, our steps); None: not run (matrices of 32 GiB at n = 16).
# Ours runs the full 10,000 except at n = 14 with 64 games (1,000 steps, extrapolated).
CASES = {(10, 1): (2000, 10000), (10, 64): (500, 10000), (12, 1): (500, 10000),
         (12, 64): (200, 10000), (14, 1): (10, 10000), (14, 64): (2, 1000), (16, 8): (None, 10000)}
QUICK = {(10, 1): (500, 2000), (10, 64): (100, 2000), (12, 1): (100, 2000), (12, 64): (30, 2000)}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def clock(fn, repeat: int = 3):
    """Best-of-``repeat`` wall time (the machine is shared: the minimum is the least noisy)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# ------------------------------------------------------------------------------------------------
# real games
# ------------------------------------------------------------------------------------------------
def real_model(epochs: int):
    """The project's small CNN, trained ``epochs`` Adam epochs on the source digits."""
    from whypretrain.train import data, models
    from whypretrain import presets

    params = presets.resolve("default")
    sets = data.load_datasets(params)
    torch.manual_seed(0)
    model = models.build(params, sets.num_source_classes)
    loader = torch.utils.data.DataLoader(sets.source_train, batch_size=64, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    xs, ys = zip(*(sets.source_test[i] for i in range(64)))
    return model, torch.stack(xs), torch.tensor(ys), params["patch"]


def games_of(model, xs, ys, patch, n, count):
    from whypretrain.engine import masking

    players = torch.stack([masking.choose_players(xs[i], n, patch, seed=i) for i in range(count)])
    return masking.evaluate(model, xs[:count], ys[:count], players, "zero", batch_size=1024,
                            patch=patch)


def masking_overhead(model, xs, ys, patch, n, count, repeat):
    """``masking.evaluate`` on ``count`` samples x 2**n masks against the same model's forward
    pass on as many inputs, in batches of the same size (1,024)."""
    from whypretrain.engine import masking

    players = torch.stack([masking.choose_players(xs[i], n, patch, seed=i) for i in range(count)])
    inputs = xs[torch.arange(1024) % len(xs)].contiguous()
    total = count << n

    @torch.inference_mode()
    def plain():
        for start in range(0, total, 1024):
            model(inputs[: min(1024, total - start)])

    def ours():
        masking.evaluate(model, xs[:count], ys[:count], players, "zero", batch_size=1024,
                         patch=patch)
    t_plain, t_ours = float("inf"), float("inf")
    for _ in range(repeat):  # interleaved, best of each
        t_plain = min(t_plain, clock(plain, 1)[0])
        t_ours = min(t_ours, clock(ours, 1)[0])
    return dict(n=n, samples=count, inputs=total, plain_s=t_plain, evaluate_s=t_ours,
                overhead=t_ours / t_plain - 1, inputs_per_s=total / t_ours, load=load())


# ------------------------------------------------------------------------------------------------
# one (n, games) case
# ------------------------------------------------------------------------------------------------
def peak_memory(side: str, n: int, games: int, threads: int) -> float | None:
    """Peak resident memory (MiB) of one sparsification run (5 steps) in a fresh process."""
    cmd = [sys.executable, __file__, "--child-memory", side, str(n), str(games),
           "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        print(f"  memory child {side} n={n} failed: {err}", file=sys.stderr)
        return None


def child_memory(side: str, n: int, games: int) -> None:
    def status(field: str) -> int:  # KiB
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0
    v = torch.randn(games, 1 << n, dtype=torch.float64)
    if side == "ours":  # warm up imports and lazy initialisation outside the measured window
        sparsify(v[:1, :4], optimizer="sgd", iterations=2)
    else:
        dense.sparsify(v[:1, :4], dense.and_matrix(2), dense.or_matrix(2), iterations=2)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    if side == "ours":
        sparsify(v, optimizer="sgd", iterations=5)
    else:
        a = dense.and_matrix(n)
        dense.sparsify(v, a, dense.or_matrix(n, and_m=a), iterations=5)
    print((status("VmHWM") - before) / 1024)


def transforms_ours(v):
    p = torch.zeros_like(v)
    I.harsanyi(v)
    I.and_or(v, p, p)


def case(n, games, v, ref_steps, full_steps, threads, memory, cached):
    row = dict(n=n, games=games, load_start=load())
    zero = torch.zeros_like(v)
    row["transform_ours_ms"] = clock(lambda: transforms_ours(v), 5)[0] * 1e3
    # ours, full run (reused across cases with the same games)
    key = (n, games, full_steps)
    if key not in cached:
        t, res = clock(lambda: sparsify(v, optimizer="sgd", iterations=full_steps), 1)
        cached[key] = (t, res)
    t, res = cached[key]
    row.update(ours_steps=full_steps, ours_ms_per_step=t / full_steps * 1e3,
               ours_10k_s=t / full_steps * FULL_STEPS,
               ours_objective=float(res.loss.mean()),
               ours_objective_start=float(res.loss_start.mean()))
    if ref_steps is not None:
        t0 = time.perf_counter()
        a = dense.and_matrix(n)
        o = dense.or_matrix(n, and_m=a)
        row["dense_build_s"] = time.perf_counter() - t0
        row["transform_dense_ms"] = clock(
            lambda: (dense.harsanyi(v, a), dense.and_or(v, zero, zero, a, o)), 3)[0] * 1e3
        t, ref = clock(lambda: dense.sparsify(v, a, o, iterations=ref_steps), 1)
        del a, o
        row.update(dense_steps=ref_steps, dense_ms_per_step=t / ref_steps * 1e3,
                   dense_10k_s=t / ref_steps * FULL_STEPS)
        ours_same = res if ref_steps == full_steps else sparsify(v, optimizer="sgd",
                                                                   iterations=ref_steps)
        rel = ((ours_same.loss - ref["loss"]).abs() / ref["loss"]).max()
        row.update(objective_rel_diff_max=float(rel),
                   dense_objective=float(ref["loss"].mean()),
                   ours_objective_same_steps=float(ours_same.loss.mean()),
                   speedup=row["dense_ms_per_step"] / row["ours_ms_per_step"])
    if memory:
        row["peak_mib_ours"] = peak_memory("ours", n, games, threads)
        if ref_steps is not None:
            row["peak_mib_dense"] = peak_memory("dense", n, games, threads)
    row["load_end"] = load()
    return row


def adam_vs_sgd(v, sgd, sgd_steps, steps_list, lr=3e-2):
    out = []
    for steps in steps_list:
        t, adam = clock(lambda: sparsify(v, iterations=steps, lr=lr, optimizer="adam"), 1)
        ratio = adam.loss / sgd[1].loss
        out.append(dict(games=v.shape[0], n=v.shape[-1].bit_length() - 1, adam_lr=lr,
                        adam_steps=steps, adam_s=t, sgd_steps=sgd_steps, sgd_s=sgd[0],
                        faster=sgd[0] / t, ratio_min=float(ratio.min()),
                        ratio_median=float(ratio.median()), ratio_max=float(ratio.max()),
                        games_lower_or_equal=int((ratio <= 1 + 1e-9).sum()), load=load()))
    return out


# ------------------------------------------------------------------------------------------------
# the exact optimiser against SGD and the dense reference
# ------------------------------------------------------------------------------------------------
STUDY_LR = 1e-7  # the study's SGD learning rate (presets.py)
# (n, games): (SGD steps actually run, dense-reference steps or None); SGD times are per 10,000
# steps (extrapolated where fewer ran), objectives are those reached at the steps run.
EXACT_CASES = {(10, 64): (10000, 200), (12, 64): (10000, 20), (14, 16): (10000, None),
               (16, 8): (10000, None)}
EXACT_QUICK = {(10, 64): (2000, 50), (12, 16): (1000, 5)}


def exact_case(n, v, sgd_steps, dense_steps):
    count = v.shape[0]
    row = dict(n=n, games=count, load_start=load())
    t, ex = clock(lambda: sparsify(v, tol=1e-4), 1)
    row.update(exact_s=t, exact_objective=float(ex.loss.mean()), gap_max=float(ex.gap.max()),
               rounds_max=ex.params["iterations_used"], columns_mean=ex.params["columns_mean"])
    t, sgd = clock(lambda: sparsify(v, optimizer="sgd", iterations=sgd_steps, lr=STUDY_LR), 1)
    ratio = sgd.loss / ex.loss
    row.update(sgd_steps=sgd_steps, sgd_10k_s=t / sgd_steps * FULL_STEPS,
               sgd_objective=float(sgd.loss.mean()), sgd_over_exact_median=float(ratio.median()),
               sgd_over_exact_min=float(ratio.min()),
               exact_never_above=bool((ex.loss <= sgd.loss * (1 + 1e-12)).all()),
               speedup_vs_sgd=(t / sgd_steps * FULL_STEPS) / row["exact_s"])
    if dense_steps is not None:
        a = dense.and_matrix(n)
        o = dense.or_matrix(n, and_m=a)
        t, _ = clock(lambda: dense.sparsify(v, a, o, iterations=dense_steps, lr=STUDY_LR), 1)
        del a, o
        row.update(dense_steps=dense_steps, dense_10k_s=t / dense_steps * FULL_STEPS)
    row["load_end"] = load()
    return row, ex, sgd


def study_games(path: Path) -> None:
    """Exact vs SGD on every game of one seed of a study (``games.pt`` of a results folder)."""
    values = torch.load(path, weights_only=True)["values"].double()
    v = values.reshape(-1, values.shape[-1]).contiguous()
    n = v.shape[-1].bit_length() - 1
    print(f"# {v.shape[0]} games of {path} (n = {n}), load {load()}", flush=True)
    row, ex, sgd = exact_case(n, v, FULL_STEPS, None)
    row["source"] = str(path)
    per_game = dict(exact_s=row["exact_s"] / v.shape[0], sgd_s=row["sgd_10k_s"] / v.shape[0])
    row.update(per_game)
    print(table([row], EXACT_COLS), flush=True)
    (OUT / "engine-study.json").write_text(json.dumps(row, indent=1))


def q_bounds(v: torch.Tensor) -> torch.Tensor:
    """Each game's q bound ``b``, as ``sparsify.sparsify`` gives it to ``exact.solve``."""
    return Q_BOUND * (v[..., -1] - v[..., 0]).abs()


def study_sets(path: Path, samples: dict[str, int], also: Path | None) -> dict[str, torch.Tensor]:
    """Named sets of games: each named sample's games under every model of a study seed
    (``games.pt``: ``[models, samples, 2**n]``), and the games of ``also`` as "trained"."""
    values = torch.load(path, weights_only=True)["values"].double()
    sets = {name: values[:, k].contiguous() for name, k in samples.items()}
    if also is not None:
        trained = torch.load(also, weights_only=True).double()
        sets["trained"] = trained.reshape(-1, trained.shape[-1])
    return sets


def dense_games(path: Path, sample: int, also: Path | None) -> list[dict]:
    """The exact optimiser's column routes game by game: ``generated`` (column generation),
    ``all`` (every interaction at once, one LP: ``exact.DENSE_SOLVER``) and ``auto`` (``all``
    for games whose spread passes ``exact.DENSE_SPREAD``), on one sample's game under every
    model of a study seed
    (``games.pt``: all epochs, so networks early in training are included), and on the games of
    ``also`` (the benchmark's trained-model games). Same optimum on every route (checked)."""
    from whypretrain.engine import exact
    sets = study_sets(path, {"study": sample}, also)
    rows = []
    for name, v in sets.items():
        n = v.shape[-1].bit_length() - 1
        spread = exact.spread(v)
        b = q_bounds(v)
        seconds = {c: torch.zeros(v.shape[0], dtype=torch.float64) for c in ("generated", "all")}
        for g in range(v.shape[0]):
            found = []
            for c in seconds:
                t, sol = clock(lambda: exact.solve(v[g:g + 1], b[g:g + 1], columns=c), 1)
                seconds[c][g] = t
                found.append(torch.stack(I.and_or(v[g:g + 1], sol.p, sol.q)))
            assert float((found[0] - found[1]).abs().max()) <= 1e-6 * float(v[g].abs().max())
        dense = spread > exact.DENSE_SPREAD
        auto = torch.where(dense, seconds["all"], seconds["generated"])
        best = torch.minimum(seconds["all"], seconds["generated"])
        rows.append(dict(games=name, n=n, count=v.shape[0], dense=int(dense.sum()),
                         spread_median=float(spread.median()), spread_max=float(spread.max()),
                         generated_s=float(seconds["generated"].sum()),
                         all_s=float(seconds["all"].sum()), auto_s=float(auto.sum()),
                         best_s=float(best.sum()), load=load()))
        print(table(rows[-1:], DENSE_COLS), flush=True)
    return rows


def column_growth(path: Path, samples: list[int], also: Path | None,
                  growths=(1.0, 0.5, 0.25)) -> list[dict]:
    """How many interactions a round of column generation may add (``exact.COLUMN_GROWTH``, a
    share of those already in): one ``exact.solve`` of all the games of each set per setting,
    side by side: every model's game on each of ``samples`` of a study seed's ``games.pt``, and
    the games of ``also``. Same optimum for every setting (checked)."""
    from whypretrain.engine import exact
    sets = study_sets(path, {f"study, sample {k}": k for k in samples}, also)
    shipped = exact.COLUMN_GROWTH
    rows = []
    try:
        for name, v in sets.items():
            b = q_bounds(v)
            first = None
            for growth in growths:
                exact.COLUMN_GROWTH = growth
                t, sol = clock(lambda: exact.solve(v, b), 1)
                found = torch.stack(I.and_or(v, sol.p, sol.q))
                first = found if first is None else first
                diff = float(((found - first).abs().amax((0, -1)) / v.abs().amax(-1)).max())
                rows.append(dict(games=name, count=v.shape[0], growth=growth, seconds=t,
                                 rounds_mean=float(sol.rounds.double().mean()),
                                 columns_mean=float(sol.columns.double().mean()),
                                 gap_max=float(sol.gap.max()), difference=diff, load=load()))
                print(table(rows[-1:], GROWTH_COLS), flush=True)
    finally:
        exact.COLUMN_GROWTH = shipped
    return rows


def exact_settings(v):
    """The exact optimiser's speed settings on the same games: simplex variant and the number of
    starting columns (times n, of each extreme split), with and without the canonical tie-break.
    Objectives agree to the tolerance; ``jaccard_*``: the salient sets (tau 0.05) against those
    of primal simplex with 3n columns and the same tie-break setting (1.0 = the same knowledge)."""
    from whypretrain.engine import exact
    b = q_bounds(v)
    rows = []
    for canonical in (False, True):
        ref = None
        for simplex in ("primal", "dual"):
            for start in (3, 1, 8):
                t, sol = clock(lambda: exact.solve(v, b, simplex=simplex, start_columns=start,
                                                   canonical=canonical), 1)
                sets = _salient_sets(_as_result(v, sol))
                ref = ref or sets
                jac = torch.tensor([_jaccard(a, c) for a, c in zip(sets, ref)])
                rows.append(dict(n=v.shape[-1].bit_length() - 1, games=v.shape[0],
                                 canonical=canonical, simplex=simplex, start_columns=f"{start}n",
                                 seconds=t, rounds_mean=float(sol.rounds.double().mean()),
                                 objective=float(sol.loss.mean()), gap_max=float(sol.gap.max()),
                                 jaccard_mean=float(jac.mean()), jaccard_min=float(jac.min()),
                                 load=load()))
    return rows


def _as_result(v, sol):
    i_and, i_or = I.and_or(v, sol.p, sol.q)
    return I.Interactions(i_and, i_or, v, sol.p, sol.q, sol.loss, sol.loss, "and-or")


def _salient_sets(result, tau=0.05):
    """Per game, the set of (kind, mask, sign) items with |I| >= tau * max |I| over non-empty S
    (the study's default rule: the order-0 term is not an item)."""
    both = result.stacked().clone()
    both[..., 0] = 0
    top = both.abs().flatten(-2).amax(-1)[..., None, None]
    keep = (both.abs() >= tau * top) & (top > 0)
    out = []
    for g in range(both.shape[0]):
        idx = keep[g].nonzero().tolist()
        out.append({(k, m, int(torch.sign(both[g, k, m]))) for k, m in idx})
    return out


def _jaccard(a, b):
    return len(a & b) / len(a | b) if a | b else 1.0


def face_spread(v, draws=5, seed=0):
    """How far apart are different optimal solutions of one game? The full LP (scipy's HiGHS),
    then ``draws`` times: minimise a random linear objective over the optimal face (objective at
    most the optimum * (1 + 1e-9)). Returns per game the Jaccard of salient sets between those
    optima (min and mean over pairs), and of our exact solution against them."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.optimize import linprog

    n = v.shape[-1].bit_length() - 1
    size = 1 << n
    m1 = sp.csr_matrix(np.array([[1.0, 0.0], [-1.0, 1.0]]))
    moebius = sp.csr_matrix(np.ones((1, 1)))
    for _ in range(n):
        moebius = sp.kron(m1, moebius, format="csr")
    flip = sp.csr_matrix((np.ones(size), (np.arange(size), np.arange(size)[::-1])))
    or_m = (-(flip @ moebius.T)).tolil()
    or_m[0, :] = 0
    or_m[0, 0] = 1
    eye, zero = sp.identity(size, format="csr"), sp.csr_matrix((size, size))
    a_eq = sp.vstack([sp.hstack([moebius, zero, -eye, eye, zero, zero]),
                      sp.hstack([zero, or_m.tocsr(), zero, zero, -eye, eye])]).tocsr()
    box = sp.vstack([sp.hstack([eye, eye, zero, zero, zero, zero]),
                     sp.hstack([-eye, -eye, zero, zero, zero, zero])]).tocsr()
    cost = np.concatenate([np.zeros(2 * size), np.ones(4 * size)])
    bounds = [(None, None)] * (2 * size) + [(0, None)] * (4 * size)
    rng = np.random.default_rng(seed)
    ours = _salient_sets(sparsify(v))
    rows = []
    for g in range(v.shape[0]):
        values = v[g].numpy()
        b = Q_BOUND * abs(values[-1] - values[0])
        b_ub = np.concatenate([values + b, b - values])
        best = linprog(cost, A_ub=box, b_ub=b_ub, A_eq=a_eq, b_eq=np.zeros(2 * size),
                       bounds=bounds, method="highs").fun
        face_ub = sp.vstack([box, sp.csr_matrix(cost)]).tocsr()
        sets = []
        for _ in range(draws):
            direction = np.concatenate([np.zeros(2 * size), rng.normal(size=4 * size)])
            x = linprog(direction, A_ub=face_ub, b_ub=np.concatenate([b_ub, [best * (1 + 1e-9)]]),
                        A_eq=a_eq, b_eq=np.zeros(2 * size), bounds=bounds, method="highs").x
            u = torch.from_numpy(x[2 * size:3 * size] - x[3 * size:4 * size])
            w = torch.from_numpy(x[4 * size:5 * size] - x[5 * size:])
            low = I.popcount(n) <= 1
            u, w = u + w * low, w * ~low  # the study's OR merge
            fake = I.Interactions(u[None], w[None], v[g:g + 1], u[None], u[None],
                                  torch.zeros(1), torch.zeros(1), "and-or")
            sets.append(_salient_sets(fake)[0])
        pairs = [_jaccard(sets[i], sets[j]) for i in range(draws) for j in range(i + 1, draws)]
        rows.append(dict(game=g, optimum=float(best), items=float(np.mean([len(x) for x in sets])),
                         jaccard_min=min(pairs), jaccard_mean=float(np.mean(pairs)),
                         ours_vs_others_mean=float(np.mean([_jaccard(ours[g], x) for x in sets]))))
    return rows


# ------------------------------------------------------------------------------------------------
def fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.0f}"
    return str(x)


def table(rows, cols):
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k)) for _, k in cols) + " |")
    return "\n".join(lines)


SPARSIFY_COLS = [("n", "n"), ("games", "games"), ("transform ours ms", "transform_ours_ms"),
                 ("transform dense ms", "transform_dense_ms"), ("dense build s", "dense_build_s"),
                 ("ours ms/step", "ours_ms_per_step"), ("dense ms/step", "dense_ms_per_step"),
                 ("speedup", "speedup"), ("ours 10k s", "ours_10k_s"),
                 ("dense 10k s (extrap.)", "dense_10k_s"), ("dense steps", "dense_steps"),
                 ("obj rel diff (same steps)", "objective_rel_diff_max"),
                 ("ours objective 10k", "ours_objective"), ("peak MiB ours", "peak_mib_ours"),
                 ("peak MiB dense", "peak_mib_dense"), ("load", "load_start")]
ADAM_COLS = [("n", "n"), ("games", "games"), ("adam steps", "adam_steps"), ("adam s", "adam_s"),
             ("sgd steps", "sgd_steps"), ("sgd s", "sgd_s"), ("faster", "faster"), ("adam/sgd min", "ratio_min"),
             ("median", "ratio_median"), ("max", "ratio_max"),
             ("games <= sgd", "games_lower_or_equal")]
EXACT_COLS = [("n", "n"), ("games", "games"), ("exact s", "exact_s"), ("gap max", "gap_max"),
              ("LP rounds max", "rounds_max"), ("columns mean", "columns_mean"),
              ("SGD 10k s", "sgd_10k_s"), ("SGD steps run", "sgd_steps"),
              ("exact faster", "speedup_vs_sgd"), ("SGD/exact objective median", "sgd_over_exact_median"),
              ("min", "sgd_over_exact_min"), ("exact <= SGD", "exact_never_above"),
              ("dense SGD 10k s (extrap.)", "dense_10k_s"), ("dense steps", "dense_steps"),
              ("load", "load_start")]
SETTING_COLS = [("n", "n"), ("games", "games"), ("canonical", "canonical"), ("simplex", "simplex"),
                ("start columns", "start_columns"), ("s", "seconds"), ("rounds mean", "rounds_mean"),
                ("objective mean", "objective"), ("gap max", "gap_max"),
                ("Jaccard mean", "jaccard_mean"), ("Jaccard min", "jaccard_min"), ("load", "load")]
FACE_COLS = [("game", "game"), ("optimum", "optimum"), ("items per optimum", "items"),
             ("Jaccard min", "jaccard_min"), ("Jaccard mean", "jaccard_mean"),
             ("ours vs them", "ours_vs_others_mean")]
DENSE_COLS = [("games", "games"), ("n", "n"), ("count", "count"), ("dense", "dense"),
              ("spread median", "spread_median"), ("spread max", "spread_max"),
              ("generated s", "generated_s"), ("all s", "all_s"), ("auto s", "auto_s"),
              ("best of both s", "best_s"), ("load", "load")]
GROWTH_COLS = [("games", "games"), ("count", "count"), ("growth", "growth"), ("s", "seconds"),
               ("rounds (mean)", "rounds_mean"), ("interactions priced in (mean)", "columns_mean"),
               ("gap max", "gap_max"), ("largest difference", "difference"), ("load", "load")]
MASK_COLS = [("n", "n"), ("samples", "samples"), ("inputs", "inputs"), ("plain s", "plain_s"),
             ("evaluate s", "evaluate_s"), ("overhead", "overhead"),
             ("inputs/s", "inputs_per_s"), ("load", "load")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 10, 12 only, 2,000 steps")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both sides (default 1: on a shared 2-core machine "
                         "2 OpenMP threads wait on each other; see README)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--games", type=Path, default=None,
                    help="read games<n>.pt from this folder (gpu_check.py --save-games writes "
                         "them) instead of masking the model again")
    ap.add_argument("--exact", action="store_true",
                    help="only the exact optimiser's tables (exact vs SGD vs dense; the spread of "
                         "optimal solutions)")
    ap.add_argument("--study-games", type=Path, default=None, metavar="GAMES_PT",
                    help="exact vs SGD (10,000 steps at the study's lr) on every game of one "
                         "seed of a study (a results folder's games.pt); writes engine-study.json")
    ap.add_argument("--settings", action="store_true",
                    help="only the exact optimiser's settings table (n = 10, needs --games)")
    ap.add_argument("--dense", type=Path, default=None, metavar="GAMES_PT",
                    help="the exact optimiser's column routes (generated / all / auto) game by "
                         "game on one sample of a study seed's games.pt (every model and epoch) "
                         "and on --games's games10.pt; writes engine-dense.json")
    ap.add_argument("--sample", type=int, default=3, help="the sample --dense uses")
    ap.add_argument("--growth", type=Path, default=None, metavar="GAMES_PT",
                    help="column growth per round (exact.COLUMN_GROWTH 1, 0.5, 0.25) on samples 3 "
                         "and 11 of a study seed's games.pt and on --games's games10.pt; writes "
                         "engine-growth.json")
    ap.add_argument("--child-memory", nargs=3, metavar=("SIDE", "N", "GAMES"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_memory:
        side, n, games = args.child_memory
        child_memory(side, int(n), int(games))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if args.study_games:
        study_games(args.study_games)
        return
    if args.dense:
        rows = dense_games(args.dense, args.sample,
                           args.games / "games10.pt" if args.games else None)
        print("\n## exact column routes\n" + table(rows, DENSE_COLS))
        (OUT / "engine-dense.json").write_text(json.dumps(rows, indent=1))
        return
    if args.growth:
        rows = column_growth(args.growth, [3, 11],
                             args.games / "games10.pt" if args.games else None)
        print("\n## exact column growth\n" + table(rows, GROWTH_COLS))
        (OUT / "engine-growth.json").write_text(json.dumps(rows, indent=1))
        return
    if args.settings:
        rows = exact_settings(torch.load(args.games / "games10.pt")[:32].double())
        print("\n## exact settings, n = 10\n" + table(rows, SETTING_COLS))
        (OUT / "engine-settings.json").write_text(json.dumps(rows, indent=1))
        return
    cases = QUICK if args.quick else CASES
    full_steps = 2000 if args.quick else FULL_STEPS
    report = dict(machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                               torch=torch.__version__, threads=torch.get_num_threads(),
                               load_start=load(), quick=args.quick))
    print(f"# engine benchmark: {report['machine']}", flush=True)

    t0 = time.perf_counter()
    model, xs, ys, patch = real_model(epochs=1 if args.quick else 2)
    print(f"model trained in {time.perf_counter() - t0:.0f}s, load {load()}", flush=True)
    if not args.exact:
        report["masking"] = [masking_overhead(model, xs, ys, patch, 12 if not args.quick else 10,
                                              8, 2 if args.quick else 3)]
        print(table(report["masking"], MASK_COLS), flush=True)

    real_counts = {10: 64, 12: 64, 14: 16, 16: 8}  # real games per n; tiled up to the case's count
    games = {}
    for n in sorted({n for n, _ in cases}) if not args.exact else []:
        t0 = time.perf_counter()
        games[n] = games_of(model, xs, ys, patch, n, real_counts[n])
        print(f"games n={n}: {real_counts[n]} real in {time.perf_counter() - t0:.0f}s", flush=True)

    exact_cases = EXACT_QUICK if args.quick else EXACT_CASES
    for path in sorted(args.games.glob("games*.pt")) if args.games else []:
        games.setdefault(int(path.stem[5:]), torch.load(path).double())
    for n in sorted(({n for n, _ in exact_cases} | {8}) - set(games)):
        t0 = time.perf_counter()
        games[n] = games_of(model, xs, ys, patch, n, min(real_counts.get(n, 10), len(xs)))
        print(f"games n={n}: {games[n].shape[0]} real in {time.perf_counter() - t0:.0f}s", flush=True)
    report["exact"] = []
    for (n, count), (sgd_steps, dense_steps) in exact_cases.items():
        v = games[n][torch.arange(count) % games[n].shape[0]].contiguous()
        row, _, _ = exact_case(n, v, sgd_steps, dense_steps)
        row["real_games"] = min(count, games[n].shape[0])
        report["exact"].append(row)
        print(table([row], EXACT_COLS), flush=True)
    report["exact_settings"] = exact_settings(games[10][:16].double())
    print(table(report["exact_settings"], SETTING_COLS), flush=True)
    report["face"] = face_spread(games[8][:10].double())
    print(table(report["face"], FACE_COLS), flush=True)
    if args.exact:
        print("\n## exact vs SGD (lr 1e-7) vs dense reference\n" + table(report["exact"], EXACT_COLS))
        print("\n## exact settings, n = 10\n" + table(report["exact_settings"], SETTING_COLS))
        print("\n## optimal solutions of one game: salient sets (tau 0.05), n = 8\n"
              + table(report["face"], FACE_COLS))
        (OUT / "engine-exact.json").write_text(json.dumps(report, indent=1))
        return

    rows, cached = [], {}
    for (n, count), (ref_steps, our_steps) in cases.items():
        real = games[n]
        v = real[torch.arange(count) % real.shape[0]].contiguous()
        rows.append(case(n, count, v, ref_steps, our_steps, args.threads, not args.no_memory,
                         cached))
        rows[-1]["real_games"] = min(count, real.shape[0])
        print(table(rows[-1:], SPARSIFY_COLS), flush=True)
    report["sparsify"] = rows

    n_adam = 12
    v = games[n_adam][:64].contiguous()
    sgd = cached[(n_adam, 64, full_steps)]
    report["adam_vs_sgd"] = adam_vs_sgd(v, sgd, full_steps,
                                        [1000, 2000] if not args.quick else [500, 1000])
    report["machine"]["load_end"] = load()

    print("\n## sparsification (reference SGD, float64)\n" + table(rows, SPARSIFY_COLS))
    print("\n## scaled Adam (lr 3e-2) vs reference SGD, real games\n"
          + table(report["adam_vs_sgd"], ADAM_COLS))
    print("\n## masking overhead\n" + table(report["masking"], MASK_COLS))
    print("\n## exact vs SGD (lr 1e-7) vs dense reference\n" + table(report["exact"], EXACT_COLS))
    print("\n## exact settings, n = 10\n" + table(report["exact_settings"], SETTING_COLS))
    print("\n## optimal solutions of one game: salient sets (tau 0.05), n = 8\n"
          + table(report["face"], FACE_COLS))
    print(f"\nload at start {report['machine']['load_start']}, at end {load()}")
    (OUT / ("engine-quick.json" if args.quick else "engine.json")).write_text(
        json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
