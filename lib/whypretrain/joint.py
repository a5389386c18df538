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

One LP per sample, every subset and model at once (columns ``v_and_i``, ``v_or_i``, ``p``, the
``+``/``-`` parts of every ``I_i``, ``t``; rows: the two transforms per model, the ``q`` box and the
``p_i`` box per model, the epigraph). Each transform is held as its ``n`` butterfly passes, one
column and one row of 3 non-zeros per changed entry (``_butterfly_rows``), not as its ``3**n``-entry
matrix: at ``n = 10`` with 3 models 58,368 columns, 49,152 rows and 151k non-zeros against
21,504, 18,432 and 400k, and HiGHS's interior point, presolve off, took 30 s against 73 s on one
sample (presolve folds the passes back: 57 s). Like the single-game extraction the solution is
a defined point of the optimal face: every interaction's weight is raised by
``tol / 4 * tie_break(n, rule)``. The certificate is HiGHS's dual objective of that program
divided by the largest weight (a lower bound of the plain loss's optimum), and the loss is
measured by the engine's own transforms on the returned split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .exact import RULES, _new_model, _require_highspy, tie_break
from .interactions import and_or, relative_gap

ALPHA = 0.1  # weight of the sum over models in the loss (Chen et al. 2024; alpha there)
P_BOUND = 0.5  # |p_i| <= P_BOUND |v_i(N) - v_i(empty)| (Chen et al.'s code: 0.5 of the mean span)
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

    @property
    def gap(self) -> Tensor:
        return relative_gap(self.loss, self.loss_bound)

    def summary(self) -> dict[str, float]:
        return dict(gap=float(self.gap.max()) if self.loss.numel() else 0.0)


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
          alpha: float = ALPHA, rule: str = "canonical", solver: str = "ipm",
          chain: bool = True) -> JointSolution:
    """The joint extraction of the games ``v`` ``[M, G, 2**n]`` (``M`` models of ``G`` samples):
    one LP per sample, solved to optimality by HiGHS (``solver``: ``ipm``, interior point with
    crossover to an optimal vertex, 2.7x faster than ``simplex``, its dual simplex, on n = 8
    games). ``b``, ``c``: ``[M, G]`` bounds on ``|q_i|`` and
    ``|p_i|`` (``c`` defaults to ``P_BOUND |v_i(N) - v_i(empty)|``). ``rule``: the tie-break that
    picks one point of the optimal face (``exact.tie_break``). Raises RuntimeError for a sample
    whose relative gap ``(loss - loss_bound) / loss`` exceeds ``tol``."""
    _check(v, tol, alpha, rule)
    models, games, size = v.shape
    n = size.bit_length() - 1
    if c is None:
        c = P_BOUND * (v[..., -1] - v[..., 0]).abs()
    weight = 1.0 + tol / 4 * tie_break(n, rule)
    matrix, cost, lower, upper, extra = _lp(n, models, alpha, weight, chain)
    v_np, b_np, c_np = (x.detach().cpu().double().numpy() for x in (v, b, c))
    a_and = np.zeros((models, games, size))
    a_or = np.zeros((models, games, size))
    shared = np.zeros((games, size))
    dual = np.zeros(games)
    for g in range(games):
        lo, hi = (np.concatenate([x, np.zeros(extra)])
                  for x in _row_bounds(v_np[:, g], b_np[:, g], c_np[:, g]))
        h = _solve_sample(_highs_lp(matrix, cost, lower, upper, lo, hi), solver, g)
        x = np.asarray(h.getSolution().col_value)
        a_and[:, g] = x[:models * size].reshape(models, size)
        a_or[:, g] = x[models * size:2 * models * size].reshape(models, size)
        shared[g] = x[2 * models * size:2 * models * size + size]
        dual[g] = _dual_objective(h)
    to = lambda x: torch.from_numpy(x).to(v.device, v.dtype)  # noqa: E731
    out = _solution(v, b, to(a_and), to(a_or), to(shared), alpha,
                    (to(dual) / float(weight.max())).clamp_min(0.0))
    late = (out.gap > tol).nonzero()[:, 0].tolist()
    if late:
        raise RuntimeError(f"joint extraction could not certify {len(late)} sample(s) (first: "
                           f"sample {late[0]}, gap {float(out.gap[late[0]]):.2e} > tol {tol:g})")
    return out


def _check(v: Tensor, tol: float, alpha: float, rule: str) -> None:
    """Check ``solve``'s games and settings."""
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


def _solution(v: Tensor, b: Tensor, v_and: Tensor, v_or: Tensor, p_shared: Tensor,
              alpha: float, loss_bound: Tensor) -> JointSolution:
    """The split of the LP's ``v_and``, ``v_or`` (``q`` clamped into its box against rounding)
    with the joint loss the engine's transforms measure on it."""
    bound = b[..., None]
    q = torch.maximum(torch.minimum(v_and + v_or - v, bound), -bound)
    p = (v_and - v_or) / 2
    i_and, i_or = and_or(v, p, q)
    return JointSolution(p, q, p_shared, joint_loss(i_and, i_or, alpha), loss_bound)


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
