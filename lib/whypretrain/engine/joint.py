"""Joint extraction: the models compared on a sample decomposed together, as one linear program
solved exactly by HiGHS (book/method.md, section 2, "Joint extraction").

Following Chen, Lou, Huang, Zhang (ICLR 2024, "Defining and extracting generalizable interaction
primitives from DNNs"), each model ``i`` of ``M`` gets the split of the single-game extraction with
its ``p`` made of a part shared by every model and a bounded part of its own:

    v_and_i(T) = (v_i(T) + q_i(T)) / 2 + p(T) + p_i(T),
    v_or_i(T)  = (v_i(T) + q_i(T)) / 2 - p(T) - p_i(T),
    |q_i(T)| <= q_bound |v_i(N) - v_i(empty)|,   |p_i(T)| <= P_BOUND |v_i(N) - v_i(empty)|,

``p`` free, and the interactions of each model are the usual transforms of its ``v_and_i`` and
``v_or_i``. The loss, over every kind and subset, is

    sum_{kind, S} (1 - alpha) max_i |I_i(kind, S)| + alpha sum_i |I_i(kind, S)|,   alpha = ALPHA,

which is a linear program with an epigraph variable ``t(kind, S) >= |I_i(kind, S)|`` for every
``i``. With one model the bound on ``p_i`` binds nothing (``p`` is free) and the loss is the
single-game L1 loss: the joint extraction of one model is its independent extraction.

One LP per sample, solved in one of two ways that reach the same optimum (tested):

- column and row generation (``_JointLP``, the default for all but dense samples): the program
  written in the interactions themselves, as the single-game solver writes its own. A restricted
  LP holds the few groups (one interaction ``(kind, S)`` of every model) that can be non-zero
  and the masks whose bounds bind; the primal simplex re-solves from the last basis; the
  engine's transforms price every other group from the LP's duals (``dual_prices``,
  ``group_excess``) and check every mask's bounds, and the most violated join. The certificate
  is weak duality on the duals (``lower_bound``), computed by the same transforms, so it does
  not rest on HiGHS. At n = 10 a sample took 1.4-19 s against 7-19 s for the whole LP.
- the whole LP (``_lp``; ``columns="all"``, and ``auto`` for a sample whose games are dense,
  ``DENSE_SPREAD``): columns ``v_and_i``, ``v_or_i``, ``p``, the ``+``/``-`` parts of every
  ``I_i``, ``t``; rows: the two transforms per model, the ``q`` box and the ``p_i`` box per
  model, the epigraph. Each transform is held as its ``n`` butterfly passes, one column and one
  row of 3 non-zeros per changed entry (``_butterfly_rows``), not as its ``3**n``-entry matrix:
  at ``n = 10`` with 3 models 58,368 columns, 49,152 rows and 151k non-zeros against 21,504,
  18,432 and 400k. HiGHS's interior point with crossover, presolve off (it folds the passes
  back into denser rows: 2x slower). Its certificate is HiGHS's dual objective divided by the
  largest weight.

Like the single-game extraction the solution is a defined point of the optimal face: every
interaction's weight is raised by ``tol / 4 * tie_break(n, rule)``. The loss is measured by the
engine's own transforms on the returned split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from whypretrain.engine import exact
from whypretrain.engine.exact import RULES, _new_model, _require_highspy, tie_break
from whypretrain.engine.interactions import and_or, reconstruct, relative_gap

ALPHA = 0.1  # weight of the sum over models in the loss (Chen et al. 2024; alpha there)
P_BOUND = 0.5  # |p_i| <= P_BOUND |v_i(N) - v_i(empty)| (Chen et al.'s code: 0.5 of the mean span)
DENSE_SPREAD = 24.0  # columns = "auto": a sample with a game of a larger spread (exact.spread) is
# solved as the whole LP: at n = 10, spread 20 took 9 s generated against 19 s whole, spread 29
# 19 s against 13 s, spread 99 195 s against 29 s (benchmarks/README.md, "Joint extraction")
FEASIBILITY_TOLERANCE = 1e-9  # the most a slack may hold at the end (relative to |v|)
DUAL_INFEASIBILITY = 1e-9  # the most HiGHS's dual point may break its constraints (0 after
# crossover on the study's samples) for its dual objective to count as the certificate


def _transform_pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``T subset S`` with the Moebius sign ``(-1)**(|S| - |T|)``: the ``3**n``
    non-zeros of the AND transform, built bit by bit."""
    s, t, sign = np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1)
    for i in range(n):
        bit = 1 << i
        s = np.concatenate([s, s | bit, s | bit])
        t = np.concatenate([t, t, t | bit])
        sign = np.concatenate([sign, -sign, sign])
    return s, t, sign


def transforms(n: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``I_and = A v_and`` and ``I_or = B v_or`` as sparse matrices (book/method.md, section 2)."""
    size, full = 1 << n, (1 << n) - 1
    s, t, sign = _transform_pairs(n)
    a = sp.csr_matrix((sign, (s, t)), shape=(size, size))
    keep = s > 0
    rows = np.concatenate([s[keep], [0]])
    cols = np.concatenate([full ^ t[keep], [0]])
    vals = np.concatenate([-sign[keep], [1.0]])
    return a, sp.csr_matrix((vals, (rows, cols)), shape=(size, size))


def joint_loss(i_and: Tensor, i_or: Tensor, alpha: float = ALPHA) -> Tensor:
    """The joint loss of interactions ``[M, ..., 2**n]`` (models first): ``[...]``."""
    both = torch.stack([i_and, i_or], dim=-2).abs()
    return ((1 - alpha) * both.amax(0) + alpha * both.sum(0)).sum((-2, -1))


@dataclass
class JointSolution:
    """``p``, ``q``: each model's whole split ``[M, G, 2**n]`` (``p`` = shared + own);
    ``shared``: the shared part ``[G, 2**n]``; ``loss``: the joint loss the engine measures on the
    split; ``loss_bound``: the certified lower bound of its optimum, per sample ``[G]``."""

    p: Tensor
    q: Tensor
    shared: Tensor
    loss: Tensor
    loss_bound: Tensor
    rounds: Tensor  # LP rounds per sample (0: the whole LP at once)

    @property
    def gap(self) -> Tensor:
        return relative_gap(self.loss, self.loss_bound)

    def summary(self) -> dict[str, float]:
        """The largest gap; the mean LP rounds of the generated samples and how many samples
        were solved as the whole LP."""
        if not self.loss.numel():
            return dict(gap=0.0)
        generated = self.rounds[self.rounds > 0]
        return dict(gap=float(self.gap.max()),
                    rounds_mean=float(generated.double().mean()) if len(generated) else 0.0,
                    samples_whole=int((self.rounds == 0).sum()))


def _lp(n: int, models: int, alpha: float, weight: np.ndarray, chain: bool = True):
    """The constraint matrix, costs and column bounds of one sample's LP (the row bounds depend
    on the games: ``_row_bounds``, then 0 for the ``extra`` rows of the passes). Columns:
    ``v_and_i``, ``v_or_i`` (model-major), ``p``, ``I+_i``, ``I-_i`` (``[M, 2, 2**n]`` each),
    ``t`` (``[2, 2**n]``), then with ``chain`` the ``extra`` values the butterfly passes make.
    Returns the matrix (CSC), costs, column bounds and ``extra``."""
    size = 1 << n
    eye = sp.identity(size, format="csr")
    m_eye = sp.identity(models * size, format="csr")
    k_eye = sp.identity(models * 2 * size, format="csr")
    zeros = lambda r, c: sp.csr_matrix((r, c))  # noqa: E731
    n_v = 2 * models * size
    base = 3 * n_v + 3 * size  # columns before the butterflies' intermediate values
    extra = 0
    if chain:  # I = the last of n butterfly passes, each pass a row of 3 non-zeros per entry
        rows_t, stages = _butterfly_rows(n, models, base)
        extra = stages.shape[0]
    else:  # the transforms' matrices, blockdiag(A, B) per model on (v_and_i, v_or_i): 3**n each
        a, b = transforms(n)
        trans = sp.block_diag([sp.block_diag([a, b]) for _ in range(models)], format="csr")
        order = []  # (v_and_i, v_or_i) per model, in the column layout v_and_all, v_or_all
        for i in range(models):
            order += [np.arange(size) + i * size, models * size + np.arange(size) + i * size]
        perm = np.concatenate(order)
        trans = trans @ sp.csr_matrix((np.ones(len(perm)), (np.arange(len(perm)), perm)),
                                      shape=(len(perm), n_v))
        rows_t = sp.hstack([trans, zeros(n_v, size), -k_eye, k_eye, zeros(n_v, 2 * size)])
    box_q = sp.hstack([m_eye, m_eye, zeros(models * size, size + 2 * n_v + 2 * size)])
    box_p = sp.hstack([m_eye, -m_eye, sp.vstack([-2 * eye] * models),
                       zeros(models * size, 2 * n_v + 2 * size)])
    t_rep = sp.vstack([sp.identity(2 * size)] * models)
    epi = sp.hstack([zeros(n_v, n_v + size), -k_eye, -k_eye, t_rep])
    blocks = [sp.hstack([block, zeros(block.shape[0], extra)]) for block in (box_q, box_p, epi)]
    matrix = sp.vstack([rows_t] + blocks + ([stages] if chain else []), format="csc")
    w = np.tile(weight.reshape(-1), models)
    cost = np.concatenate([np.zeros(n_v + size), alpha * w, alpha * w,
                           (1 - alpha) * weight.reshape(-1), np.zeros(extra)])
    inf = _require_highspy().kHighsInf
    lower = np.concatenate([np.full(n_v + size, -inf), np.zeros(2 * n_v + 2 * size),
                            np.full(extra, -inf)])
    upper = np.full(len(lower), inf)
    return matrix, cost, lower, upper, extra


def _butterfly_rows(n: int, models: int, base: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The transforms as chains of butterfly passes: pass ``k`` gives every mask ``S`` with bit
    ``k`` a new column ``y'(S) = y(S) - y(S - k)`` (one row, 3 non-zeros); the last value of each
    mask is ``I_and(S)`` of ``v_and_i``, or ``-I_or(S)`` of ``v_or_i`` read at complements
    (``I_or(empty) = v_or_i(empty)``). Returns the rows ``I(S) = I+ - I-`` (``[M, 2, 2**n]``
    rows, over the base columns and the new ones) and the passes' rows (``n 2**(n-1)`` per
    transform, on the columns from ``base`` on)."""
    size, full = 1 << n, (1 << n) - 1
    masks = np.arange(size)
    n_v = 2 * models * size
    plus = n_v + size  # first I+ column; I- follow after n_v
    out_r, out_c, out_v = [], [], []
    st_r, st_c, st_v = [], [], []
    new = base
    stage_row = 0
    for i in range(models):
        for kind in (0, 1):
            cur = (i * size + masks if kind == 0
                   else models * size + i * size + (full ^ masks))
            for bit in range(n):
                sel = masks[(masks >> bit) & 1 == 1]
                cols = new + np.arange(len(sel))
                rows = stage_row + np.arange(len(sel))
                st_r += [rows, rows, rows]
                st_c += [cols, cur[sel], cur[sel ^ (1 << bit)]]
                st_v += [np.ones(len(sel)), -np.ones(len(sel)), np.ones(len(sel))]
                cur = cur.copy()
                cur[sel] = cols
                new += len(sel)
                stage_row += len(sel)
            rows = (i * 2 + kind) * size + masks
            value = cur.copy()
            sign = np.ones(size) if kind == 0 else -np.ones(size)
            if kind == 1:  # I_or(empty) = v_or_i(empty), not the transform's value
                value[0], sign[0] = models * size + i * size, 1.0
            index = plus + rows
            out_r += [rows, rows, rows]
            out_c += [value, index, index + n_v]
            out_v += [sign, -np.ones(size), np.ones(size)]
    total = new
    final = sp.csr_matrix((np.concatenate(out_v), (np.concatenate(out_r), np.concatenate(out_c))),
                          shape=(n_v, total))
    stages = sp.csr_matrix((np.concatenate(st_v), (np.concatenate(st_r), np.concatenate(st_c))),
                           shape=(stage_row, total))
    return final, stages


def _row_bounds(v: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Row bounds for the games ``v`` ``[M, 2**n]`` of one sample, q bounds ``b`` and p_i bounds
    ``c`` ``[M]``."""
    inf = _require_highspy().kHighsInf
    models, size = v.shape
    n_v = 2 * models * size
    lo = np.concatenate([np.zeros(n_v), (v - b[:, None]).reshape(-1),
                         np.repeat(-2 * c, size), np.zeros(n_v)])
    hi = np.concatenate([np.zeros(n_v), (v + b[:, None]).reshape(-1),
                         np.repeat(2 * c, size), np.full(n_v, inf)])
    return lo, hi


def solve(v: Tensor, b: Tensor, c: Tensor | None = None, tol: float = 1e-4,
          alpha: float = ALPHA, rule: str = "canonical", columns: str = "auto",
          solver: str = "ipm", chain: bool = True, max_rounds: int = 200, workers: int = 1,
          progress: bool = False) -> JointSolution:
    """The joint extraction of the games ``v`` ``[M, G, 2**n]`` (``M`` models of ``G`` samples):
    one LP per sample, solved to optimality by HiGHS. ``b``, ``c``: ``[M, G]`` bounds on
    ``|q_i|`` and ``|p_i|`` (``c`` defaults to ``P_BOUND |v_i(N) - v_i(empty)|``). ``rule``: the
    tie-break that picks one point of the optimal face (``exact.tie_break``).

    ``columns``: ``generated``, column and row generation (``_JointLP``: the groups of
    interactions that can be non-zero join when they price in, the primal simplex re-solves
    from the last basis, the certificate comes from the duals by the engine's transforms,
    ``lower_bound``); ``all``, the whole LP at once (``_lp``: ``solver`` ``ipm``, interior point
    with crossover, or ``simplex``; ``chain``: each transform as its butterfly passes);
    ``auto``: ``all`` for a sample with a dense game (``exact.spread`` above ``DENSE_SPREAD``),
    else ``generated``. The same optimum either way. Each sample's first restricted LP holds
    the extreme splits' strongest terms (``_start_groups``). ``workers``: threads, one sample
    each (HiGHS releases the GIL; the result does not depend on it). ``progress``: a progress
    bar over the samples. Raises RuntimeError for a sample whose relative gap
    ``(loss - loss_bound) / loss`` exceeds ``tol``."""
    _check(v, tol, alpha, rule, columns)
    models, games, size = v.shape
    n = size.bit_length() - 1
    if c is None:
        c = P_BOUND * (v[..., -1] - v[..., 0]).abs()
    weight = 1.0 + tol / 4 * tie_break(n, rule)
    every = _every(v, columns)
    full = _lp(n, models, alpha, weight, chain) if any(every) else None
    starts = _start_groups(v, n)

    def one(g: int):
        if every[g]:
            out = _full_sample(full, v[:, g], b[:, g], c[:, g], solver, g, weight) + (0,)
        else:
            lp = _JointLP(*(x[:, g].detach().cpu().double().numpy() for x in (v, b, c)), alpha,
                          weight)
            kinds, masks = np.nonzero(starts[g])
            lp.add([(int(k), int(m)) for k, m in zip(kinds, masks)])
            out = _generated_sample(lp, v[:, g], b[:, g], c[:, g], max_rounds) + (lp.rounds,)
        if bar is not None:
            bar.update(1)
        return out

    with exact._progress_bar(progress, games, f"joint extraction, {games} samples, n={n}") \
            as bar, exact._thread_pool(workers) as pool:
        solved = list(pool.map(one, range(games))) if pool else [one(g) for g in range(games)]
    p = torch.stack([s[0] for s in solved], 1)
    q = torch.stack([s[1] for s in solved], 1)
    shared = torch.stack([s[2] for s in solved])
    bound = torch.stack([s[3] for s in solved])
    rounds = torch.tensor([s[4] for s in solved], dtype=torch.long)
    i_and, i_or = and_or(v, p, q)
    out = JointSolution(p, q, shared, joint_loss(i_and, i_or, alpha), bound, rounds)
    late = (out.gap > tol).nonzero()[:, 0].tolist()
    if late:
        raise RuntimeError(f"joint extraction could not certify {len(late)} sample(s) (first: "
                           f"sample {late[0]}, gap {float(out.gap[late[0]]):.2e} > tol {tol:g})")
    return out


def _every(v: Tensor, columns: str) -> list[bool]:
    """Per sample, whether its LP holds every interaction from the start (``solve``'s
    ``columns``)."""
    if columns != "auto":
        return [columns == "all"] * v.shape[1]
    return (exact.spread(v) > DENSE_SPREAD).any(0).tolist()


def _start_groups(v: Tensor, n: int) -> np.ndarray:
    """``[G, 2, 2**n]``: the groups of the first restricted LP of each sample, the union over
    the models of the ``3n`` strongest terms of each extreme split (``exact.extreme_splits``)."""
    top_and, top_or = exact._starting_columns(*exact.extreme_splits(v), n, 3 * n)
    start = torch.zeros(v.shape[1], 2, 1 << n, dtype=torch.bool)
    for kind, top in ((0, top_and), (1, top_or)):
        for i in range(v.shape[0]):
            start[torch.arange(v.shape[1])[:, None], kind, top[i].cpu()] = True
    return start.numpy()


def _full_sample(full, v: Tensor, b: Tensor, c: Tensor, solver: str, g: int,
                 weight: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One sample by the whole LP (``_lp``): ``p``, ``q`` ``[M, 2**n]``, the shared part and
    HiGHS's dual objective divided by the largest weight (the certified bound)."""
    matrix, cost, lower, upper, extra = full
    models, size = v.shape
    lo, hi = (np.concatenate([x, np.zeros(extra)])
              for x in _row_bounds(*(t.detach().cpu().double().numpy() for t in (v, b, c))))
    h = _solve_sample(_highs_lp(matrix, cost, lower, upper, lo, hi), solver, g)
    x = torch.from_numpy(np.asarray(h.getSolution().col_value)).to(v.device, v.dtype)
    v_and = x[:models * size].reshape(models, size)
    v_or = x[models * size:2 * models * size].reshape(models, size)
    bound = b[:, None]
    q = torch.maximum(torch.minimum(v_and + v_or - v, bound), -bound)
    dual = max(_dual_objective(h) / float(weight.max()), 0.0)
    return (v_and - v_or) / 2, q, x[2 * models * size:2 * models * size + size], \
        torch.tensor(dual, dtype=v.dtype, device=v.device)


def _check(v: Tensor, tol: float, alpha: float, rule: str, columns: str) -> None:
    """Check ``solve``'s games and settings."""
    if columns not in ("auto", "all", "generated"):
        raise ValueError(f"columns must be 'auto', 'all' or 'generated', got {columns!r}")
    if v.dim() != 3:
        raise ValueError(f"joint games must be [models, samples, 2**n], got {tuple(v.shape)}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def _highs_lp(matrix: sp.csc_matrix, cost: np.ndarray, lower: np.ndarray, upper: np.ndarray,
              lo: np.ndarray, hi: np.ndarray):
    """One sample's LP as HiGHS's ``HighsLp``: ``_lp``'s matrix, costs and column bounds, and the
    sample's row bounds ``lo``, ``hi``."""
    highspy = _require_highspy()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = matrix.shape[1], matrix.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lower, upper
    lp.row_lower_, lp.row_upper_ = lo, hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr
    lp.a_matrix_.index_ = matrix.indices
    lp.a_matrix_.value_ = matrix.data
    return lp


def _solve_sample(lp, solver: str, g: int):
    """Solve sample ``g``'s LP to optimality (``solver``, then the simplex from its basis should
    the interior point end imprecise); return the HiGHS model. Raises RuntimeError when it is
    not optimal or its dual point is not feasible enough to certify (``DUAL_INFEASIBILITY``)."""
    highspy = _require_highspy()
    h = _new_model()
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("solver", solver)
    h.setOptionValue("presolve", "off")  # it folds the passes back into denser rows: 2x slower
    h.setOptionValue("run_crossover", "on")
    h.setOptionValue("dual_feasibility_tolerance", 1e-10)
    h.setOptionValue("primal_feasibility_tolerance", 1e-10)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:  # an imprecise interior
        h.setOptionValue("solver", "simplex")  # point: the simplex from crossover's basis
        h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"joint extraction: HiGHS ended sample {g} with status "
                           f"{h.modelStatusToString(h.getModelStatus())}")
    if h.getInfo().max_dual_infeasibility > DUAL_INFEASIBILITY and solver != "simplex":
        h.setOptionValue("solver", "simplex")  # crossover's basis, not quite dual feasible:
        h.run()                                # the simplex from it restores feasibility
    if h.getInfo().max_dual_infeasibility > DUAL_INFEASIBILITY:
        raise RuntimeError(f"joint extraction: HiGHS's dual point of sample {g} is "
                           f"infeasible by {h.getInfo().max_dual_infeasibility:.1e}: no "
                           f"certificate")
    return h


def _dual_objective(h) -> float:
    """The dual objective of HiGHS's optimal dual point, computed from the row and column duals:
    a lower bound of the LP's optimum when the point is dual feasible (``_solve_sample`` checks
    HiGHS's measure of that, ``DUAL_INFEASIBILITY``)."""
    sol, lp = h.getSolution(), h.getLp()
    y = np.asarray(sol.row_dual)
    z = np.asarray(sol.col_dual)
    inf = _require_highspy().kHighsInf
    row_lo, row_hi = np.asarray(lp.row_lower_), np.asarray(lp.row_upper_)
    col_lo, col_hi = np.asarray(lp.col_lower_), np.asarray(lp.col_upper_)
    rows = np.where(y > 0, row_lo, row_hi)
    cols = np.where(z > 0, col_lo, col_hi)
    # an infinite bound meets only a dual value HiGHS left at (numerically) zero
    row_part = (y * np.where(np.abs(rows) < inf, rows, 0.0)).sum()
    col_part = (z * np.where(np.abs(cols) < inf, cols, 0.0)).sum()
    return float(row_part + col_part)


# --------------------------------------------------------------------------------------------
# column generation: the joint LP in the interactions themselves, groups priced in
# --------------------------------------------------------------------------------------------
def group_excess(price: Tensor, alpha: float, weight: Tensor | float = 1.0) -> Tensor:
    """How much the dual prices ``price`` ``[M, ..., 2, 2**n]`` of each group (one interaction,
    every model) break the group's dual constraint ``sum_i max(0, |price_i| - alpha w) <=
    (1 - alpha) w``: its left side minus its right side (``> 0``: the group would lower the
    objective)."""
    spare = (price.abs() - alpha * weight).clamp_min(0.0).sum(0)
    return spare - (1 - alpha) * weight


def group_scale(price: Tensor, alpha: float) -> Tensor:
    """The least ``s`` that brings the prices ``price`` ``[M, ..., 2, 2**n]`` of every group into
    its dual constraint (weights 1): ``sum_i max(0, |price_i| / s - alpha) <= 1 - alpha`` holds
    when, for every ``k``, the ``k`` largest ``|price_i|`` sum to at most ``s (1 - alpha + k
    alpha)``. Returns ``[...]``, at least 1."""
    top = price.abs().sort(0, descending=True).values.cumsum(0)
    k = torch.arange(1, price.shape[0] + 1, dtype=price.dtype, device=price.device)
    per_k = top / (1 - alpha + alpha * k).reshape(-1, *([1] * (price.dim() - 1)))
    return per_k.amax(0).flatten(-2).amax(-1).clamp_min(1.0)


def dual_prices(y: Tensor, z: Tensor) -> Tensor:
    """The price of every model's interaction from the duals ``y`` of its outputs' rows and
    ``z`` of its shared-split rows (``[M, ..., 2**n]`` each): ``[M, ..., 2, 2**n]``. The AND
    interaction ``S`` of model ``i`` enters both rows of every ``T >= S`` with +1, the OR
    interaction its outputs' rows as universal matching does and its split rows negated."""
    n = y.shape[-1].bit_length() - 1
    return torch.stack([exact.dual_prices(y + z, n)[0], exact.dual_prices(y - z, n)[1]], -2)


def lower_bound(y: Tensor, z: Tensor, v: Tensor, b: Tensor, c: Tensor,
                alpha: float = ALPHA) -> Tensor:
    """Certified lower bound of the plain joint loss's optimum from any duals ``y``, ``z``
    (``[M, G, 2**n]``; bounds ``b``, ``c`` ``[M, G]``), by weak duality: ``z`` made to sum to 0
    over the models (the shared part ``p`` is free), both scaled by ``group_scale`` into the dual
    constraints; the dual objective ``sum_i y_i.v_i - b_i ||y_i||_1 - 2 c_i ||z_i||_1``.
    ``[G]``."""
    z = z - z.mean(0, keepdim=True)
    scale = group_scale(dual_prices(y, z), alpha)
    value = ((y * v).sum(-1) - b * y.abs().sum(-1) - 2 * c * z.abs().sum(-1)).sum(0)
    return (value / scale).clamp_min(0.0)


@dataclass
class _JointLP:
    """The restricted joint LP of one sample, in the interactions themselves, kept warm across
    rounds (book/method.md, section 2, "Joint extraction"). Both its columns and its rows are
    generated: at the optimum only a few dozen of each model's ``2**n`` output bounds bind, and
    the shared split rarely does.

    Rows, per mask ``T`` that has joined: each model's outputs ``R(u_i, w_i)(T)`` in
    ``[v_i(T) - b_i, v_i(T) + b_i]`` (duals ``y``); and, per mask whose split has joined, each
    model's ``d_i(T) - 2 p(T)`` in ``[-2 c_i, 2 c_i]`` with ``d_i = v_and_i - v_or_i`` and the
    shared ``p(T)`` a free column (duals ``z``). Always: per model ``t_i = sum_{S != empty}
    w_i(S)`` (the OR columns' trick of ``exact``: an OR interaction touches only the rows inside
    its complement), and per group (one interaction of every model, ``(kind, S)``) its epigraph
    rows ``t_g >= |I_i(kind, S)|``. Columns: ``t_i`` (free), a slack pair per output and split
    row at an exact-penalty cost, ``p(T)`` per split mask, and per group ``I_i = I+_i - I-_i``
    (cost ``alpha w``) and ``t_g`` (cost ``(1 - alpha) w``). The groups of the empty set (the
    constant's AND and OR parts) are in from the start."""

    v: np.ndarray  # [M, 2**n]
    b: np.ndarray  # [M]
    c: np.ndarray  # [M]
    alpha: float
    weight: np.ndarray  # [2, 2**n]
    groups: list[tuple[int, int]] = field(default_factory=list)
    rounds: int = 0
    after_rows: bool = False  # the last change was rows joining (the dual simplex re-solves)

    def __post_init__(self) -> None:
        models, size = self.v.shape
        self.models, self.size, self.n = models, size, size.bit_length() - 1
        self.masks = np.arange(size)
        self.have: set[tuple[int, int]] = set()
        self.first_group_col: list[int] = []
        # LP row of model i's output / split bound of each mask (-1: not in); LP column of p(T)
        self.out_row = np.full((models, size), -1, dtype=np.int64)
        self.split_row = np.full((models, size), -1, dtype=np.int64)
        self.slack_cols: list[int] = []
        # the most any dual can be: |y|, |z| <= 1.5 w_max 2**n (book/method.md): exact penalty
        self.big = 2.0 * float(self.weight.max()) * size + 1.0
        h = exact.lp_model(1e-10)
        exact.add_free_sums(h, models, 1.0)  # row i: t_i = sum of model i's OR terms
        self.model = h
        self.row_count, self.col_count = models, models
        full = size - 1
        first = np.array(sorted({0, full} | {1 << i for i in range(self.n)}
                                | {full ^ (1 << i) for i in range(self.n)}))
        self.add_rows(first, split=False)
        self.add_rows(first, split=True)
        self.add([(0, 0), (1, 0)])

    def add_rows(self, masks: np.ndarray, split: bool) -> None:
        """The output (or split) rows of every model for the masks ``masks`` join, with their
        slack pairs (and, for split rows, the column ``p(T)``)."""
        table = self.split_row if split else self.out_row
        masks = np.array([m for m in np.asarray(masks).tolist() if table[0, m] < 0],
                         dtype=np.int64)
        if not len(masks):
            return
        h, models = self.model, self.models
        inf = _require_highspy().kHighsInf
        coef = _coefficients(masks, np.array([k for k, _ in self.groups], dtype=np.int64),
                             np.array([m for _, m in self.groups], dtype=np.int64), split)
        starts, index, value, lo, hi = [], [], [], [], []
        count = 0
        for i in range(models):
            plus = np.array(self.first_group_col, dtype=np.int64) + 2 * i
            for r, m in enumerate(masks.tolist()):
                nz = np.nonzero(coef[r])[0]
                starts.append(count)
                index.append(np.concatenate([[i], plus[nz], plus[nz] + 1]))
                value.append(np.concatenate([[-1.0 if split else 1.0], coef[r, nz],
                                             -coef[r, nz]]))
                count += 1 + 2 * len(nz)
                half = 2 * self.c[i] if split else self.b[i]
                centre = 0.0 if split else self.v[i, m]
                lo.append(centre - half)
                hi.append(centre + half)
        k = models * len(masks)
        h.addRows(k, np.array(lo), np.array(hi), count, np.array(starts, dtype=np.int32),
                  np.concatenate(index).astype(np.int32), np.concatenate(value))
        rows = self.row_count + np.arange(k)
        table[:, masks] = rows.reshape(models, len(masks))
        self.row_count += k
        h.addCols(2 * k, np.full(2 * k, self.big), np.zeros(2 * k), np.full(2 * k, inf), 2 * k,
                  np.arange(2 * k, dtype=np.int32), np.repeat(rows, 2).astype(np.int32),
                  np.tile([1.0, -1.0], k))
        self.slack_cols += list(range(self.col_count, self.col_count + 2 * k))
        self.col_count += 2 * k
        if split:  # p(T): -2 in the split row of every model
            p_rows = table[:, masks].T.reshape(-1)
            h.addCols(len(masks), np.zeros(len(masks)), np.full(len(masks), -inf),
                      np.full(len(masks), inf), len(p_rows),
                      np.arange(0, len(p_rows), models, dtype=np.int32),
                      p_rows.astype(np.int32), np.full(len(p_rows), -2.0))
            self.col_count += len(masks)

    def add(self, new: list[tuple[int, int]]) -> None:
        """The groups ``new`` join: their epigraph rows, then their columns."""
        new = [g for g in new if g not in self.have]
        if not new:
            return
        h, models = self.model, self.models
        inf = _require_highspy().kHighsInf
        k = len(new) * models
        empty = np.array([], dtype=np.int32)
        h.addRows(k, np.zeros(k), np.full(k, inf), 0, empty, empty, np.array([]))
        starts, index, value, cost = [], [], [], []
        count = 0
        for j, (kind, mask) in enumerate(new):
            w = float(self.weight[kind, mask])
            epi = self.row_count + j * models
            for i in range(models):
                r, a = _entries(self, kind, mask, i)
                for sign in (1.0, -1.0):
                    starts.append(count)
                    index.append(np.concatenate([r, [epi + i]]))
                    value.append(np.concatenate([sign * a, [-1.0]]))
                    count += len(r) + 1
                    cost.append(self.alpha * w)
            starts.append(count)
            index.append(epi + np.arange(models))
            value.append(np.ones(models))
            count += models
            cost.append((1 - self.alpha) * w)
            self.first_group_col.append(self.col_count + j * (2 * models + 1))
            self.groups.append((kind, mask))
            self.have.add((kind, mask))
        cols = len(cost)
        h.addCols(cols, np.array(cost), np.zeros(cols), np.full(cols, inf), count,
                  np.array(starts, dtype=np.int32), np.concatenate(index).astype(np.int32),
                  np.concatenate(value))
        self.row_count += k
        self.col_count += cols

    def add_broken_rows(self, outside: np.ndarray, split: bool) -> bool:
        """The masks not yet in whose output (or split) bounds the solution breaks
        (``outside > 0``, ``[2**n]``, the worst over the models) join, worst first (at most
        ``exact.ROW_GROWTH`` times the masks already in, at least ``4n``); whether any did."""
        table = self.split_row if split else self.out_row
        broken = np.nonzero(outside > 0)[0]
        broken = broken[table[0, broken] < 0]
        if len(broken):
            worst = broken[np.argsort(-outside[broken], kind="stable")]
            limit = max(4 * self.n, exact.ROW_GROWTH * int((table[0] >= 0).sum()))
            self.add_rows(worst[:limit], split)
        return bool(len(broken))



def _entries(lp: _JointLP, kind: int, mask: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and coefficients of model ``i``'s ``I+`` column of the group ``(kind, mask)`` in
    the output, split and ``t_i`` rows of ``lp`` that are in."""
    rows, coefs = [], []
    for table, split in ((lp.out_row, False), (lp.split_row, True)):
        present = lp.masks[table[i] >= 0]
        coef = _coefficients(present, np.array([kind]), np.array([mask]), split)[:, 0]
        hit = np.nonzero(coef)[0]
        rows.append(table[i, present[hit]])
        coefs.append(coef[hit])
    if kind == 1 and mask:  # the t_i row
        rows.append([i])
        coefs.append([-1.0])
    return np.concatenate(rows), np.concatenate(coefs)


def priced_in(lp: _JointLP, excess: np.ndarray) -> list[tuple[int, int]]:
    """The groups not yet in ``lp`` whose ``group_excess`` passes ``exact.PRICE_TOLERANCE``,
    most violated first, at most ``exact.COLUMN_GROWTH`` of the groups in (at least ``2n``)."""
    kinds, masks = np.nonzero(excess > exact.PRICE_TOLERANCE)
    order = np.argsort(-excess[kinds, masks], kind="stable")
    new = [(int(kinds[j]), int(masks[j])) for j in order
           if (int(kinds[j]), int(masks[j])) not in lp.have]
    return new[:max(2 * lp.n, int(exact.COLUMN_GROWTH * len(lp.groups)))]


def solve_joint_lp(lp: _JointLP) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run ``lp`` from its last basis (the dual simplex after rows joined, else the primal;
    once more from scratch on numerical trouble). Returns the duals ``y``, ``z`` ``[M, 2**n]``
    (0 for rows not in), the interactions ``[M, 2, 2**n]`` and the slacks' largest value."""
    h = lp.model
    exact.run_to_optimum(h, exact.SIMPLEX["dual" if lp.after_rows else "primal"],
                         "joint extraction", tolerance=1e-10)
    lp.rounds += 1
    sol = h.getSolution()
    duals = np.asarray(sol.row_dual)
    y, z = (np.where(t >= 0, duals[np.maximum(t, 0)], 0.0) for t in (lp.out_row, lp.split_row))
    x = np.asarray(sol.col_value)
    interactions = np.zeros((lp.models, 2, lp.size))
    for (kind, mask), first in zip(lp.groups, lp.first_group_col):
        plus = first + 2 * np.arange(lp.models)
        interactions[:, kind, mask] = x[plus] - x[plus + 1]
    slack = float(np.abs(x[lp.slack_cols]).max())
    return y, z, interactions, slack


def _coefficients(masks: np.ndarray, kinds: np.ndarray, subsets: np.ndarray,
                  split: bool) -> np.ndarray:
    """``[len(masks), len(kinds)]``: the coefficient of the interaction ``(kind, S)``'s ``I+``
    column in the output (or split) row of each mask ``T``, the same for every model. AND:
    1 when ``S <= T``. OR: universal matching's coefficient as ``exact`` writes it, 1 for the
    empty set and -1 when ``S`` misses ``T`` (the rest is carried by ``t_i``); negated in the
    split rows (``d_i = v_and_i - v_or_i``)."""
    t = masks[:, None]
    outside = np.where(subsets == 0, 1.0, -1.0 * ((subsets & t) == 0))
    return np.where(kinds == 0, ((subsets & t) == subsets) * 1.0,
                    -outside if split else outside)


def _violations(found: Tensor, v: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """How far the interactions ``found`` ``[M, 2, 2**n]`` break each mask's output bounds and
    its shared split (no ``p(T)`` within every model's box), beyond ``FEASIBILITY_TOLERANCE``:
    ``[2**n]`` each, the worst over the models (``> 0``: broken)."""
    recon = reconstruct(found[:, 0], found[:, 1])
    scale = FEASIBILITY_TOLERANCE * (1 + v.abs())
    out = (torch.maximum(recon - v - b[:, None], v - b[:, None] - recon) - scale).amax(0)
    lo, hi = _shared_range(exact.split_of(found[:, 0], found[:, 1], v, b)[0], c)
    return out, lo - hi - scale.amax(0)


def _shared_range(p: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Per mask, the range of shared parts ``p(T)`` that keep every model's own part
    ``p_i - p(T)`` within its box, from the models' whole ``p`` ``[M, 2**n]`` (``d_i / 2``):
    ``[max_i p_i - c_i, min_i p_i + c_i]`` (empty when broken)."""
    return (p - c[:, None]).amax(0), (p + c[:, None]).amin(0)


def _generated_sample(lp: _JointLP, v: Tensor, b: Tensor, c: Tensor,
                      max_rounds: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Column and row generation on one sample (games ``v`` ``[M, 2**n]``) until no row is
    broken and no group prices in: the perturbed LP's own optimum. Returns ``p``, ``q``
    ``[M, 2**n]``, the shared part (the middle of its range, ``_shared_range``) and the
    certified bound (the best over the rounds). Raises RuntimeError when it is not certified."""
    weight = torch.from_numpy(lp.weight).to(v.device, v.dtype)
    to = lambda x: torch.from_numpy(x).to(v.device, v.dtype)  # noqa: E731
    best = torch.zeros((), dtype=v.dtype, device=v.device)
    while True:
        if lp.rounds >= max_rounds:
            raise RuntimeError(f"joint extraction: a sample not certified after {max_rounds} "
                               f"rounds")
        y, z, found, slack = solve_joint_lp(lp)
        y, z, found = to(y), to(z), to(found)
        z = z - z.mean(0, keepdim=True)
        best = torch.maximum(best, lower_bound(y[:, None], z[:, None], v[:, None], b[:, None],
                                               c[:, None], lp.alpha)[0])
        out, split = (x.cpu().numpy() for x in _violations(found, v, b, c))
        if lp.add_broken_rows(out, split=False) | lp.add_broken_rows(split, split=True):
            lp.after_rows = True
            continue
        lp.after_rows = False
        new = priced_in(lp, group_excess(dual_prices(y, z), lp.alpha, weight).cpu().numpy())
        if not new:
            break
        lp.add(new)
    if slack > FEASIBILITY_TOLERANCE * (1.0 + float(v.abs().max())):
        raise RuntimeError(f"joint extraction: the restricted LP still needs its slacks "
                           f"({slack:.1e}) when no interaction prices in")
    p, q = exact.split_of(found[:, 0], found[:, 1], v, b)
    lo, hi = _shared_range(p, c)
    return p, q, (lo + hi) / 2, best
