"""The range of every interaction over the whole optimal face of the sparsification LP
(book/method.md, section 2, "The range of an interaction over the optimal face").

The LP (``exact.py``) has many optima; the extraction returns one of them (a tie-break rule). For
one game, the *range* of the raw ``I_and(S)`` or ``I_or(S)`` (before the OR terms of order <= 1
are merged into AND) is the lowest and the highest value it takes over the face

    F = { (u, w) : v - b <= R(u, w) <= v + b,  ||u||_1 + ||w||_1 <= B },  B = loss (1 + rel),

where ``loss`` is the optimum (measured on the solution found, certified by a dual bound) and
``rel`` (``REL``, 1e-9) the relative slack that stands for "optimal" in floating point.

How it is computed, per game:

1. The full LP (every mask a row, every interaction a column) is solved by HiGHS: its optimum
   ``x*`` and its row duals ``y*``, the certified lower bound ``L`` of the optimum from ``y*``
   (``exact.lower_bound``, weak duality).
2. *Free bounds.* For any feasible ``x``, ``||x||_1 >= y*.R x + sum_j d_j |x_j| >= L +
   sum_j d_j |x_j|`` with ``d_j = 1 - |(R^T y*)_j|`` (``y*`` scaled into dual feasibility), so on
   ``F``: ``|x_j| <= (B - L) / d_j``. Every interaction whose dual constraint is slack gets this
   certified range at once; when it is below ``SMALL`` of the game's scale, no LP is solved for it.
3. *Bounding LPs.* Every other candidate term gets two LPs over ``F`` (the row
   ``||x||_1 <= B`` added once), ``min x_j`` and ``max x_j``, each warm-started by the primal
   simplex from the last basis (only the costs change, so the basis stays primal feasible).
   Each bound is certified by weak duality from the LP's row duals ``y``: for ``f = +-e_j``,
   ``min_F f.x >= y.v - b ||y||_1 - lambda B`` with ``lambda = max_k |f_k - (R^T y)_k|``, for
   *any* ``y`` (``R^T y`` by the engine's transforms, so the certificate does not rest on HiGHS).

``low`` and ``high`` are these certified outer bounds: every optimal solution's interactions lie
inside them (an item judged identified from them is identified). ``low_reached`` and
``high_reached`` are the values that the LPs' solutions reach (inner bounds); their distance to
the outer bounds is the certificate's gap.

The constant (``I_and(empty) + I_or(empty)``) is one column of the LP; at an optimum its two parts
share its sign, so ``I_and(empty)`` and ``I_or(empty)`` each range over
``[min(0, c_low), max(0, c_high)]``, ``[c_low, c_high]`` being the constant's range.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from whypretrain.engine.exact import dual_prices, lower_bound, split_of, _new_model
from whypretrain.engine.interactions import and_or, players_of

REL = 1e-9  # the face: objective within this relative slack of the optimum
SMALL = 1e-7  # a term whose free bound (step 2) is below this times the game's largest |v|
# gets no LP: its range is that certified bound, a width no reading of salience can use
TOLERANCE = 1e-10  # HiGHS's primal and dual feasibility tolerances


@dataclass
class Ranges:
    """The ranges of the games' interactions over their optimal faces, each ``[..., 2, 2**n]``
    (kind 0 = AND, 1 = OR; raw terms, before low-order OR terms are merged).

    ``low``, ``high``: certified outer bounds (NaN for the terms not bounded: not candidates);
    ``low_reached``, ``high_reached``: values that optimal solutions reach (NaN likewise; for a
    term bounded without LP, 0); ``lps``: bounding LPs solved per game (``[...]``); ``loss``,
    ``loss_bound``: each game's optimum and its certified lower bound."""

    low: Tensor
    high: Tensor
    low_reached: Tensor
    high_reached: Tensor
    lps: Tensor
    loss: Tensor
    loss_bound: Tensor

    @property
    def width(self) -> Tensor:
        return self.high - self.low

    def gap(self) -> float:
        """The largest distance between a certified bound and the value reached (0: exact)."""
        gaps = torch.cat([(self.low_reached - self.low).flatten(),
                          (self.high - self.high_reached).flatten()])
        gaps = gaps[torch.isfinite(gaps)]
        return float(gaps.max()) if gaps.numel() else 0.0


def item_ranges(values: Tensor, q_bound: float = 0.04, candidates: Tensor | None = None,
                rel: float = REL, workers: int = 1) -> Ranges:
    """The range of every raw ``I_and(S)`` and ``I_or(S)`` of the games ``values``
    (``[..., 2**n]``) over the optimal face of their sparsification LP (module docstring).

    ``candidates``: booleans ``[..., 2, 2**n]``, the terms to bound (all by default); the others
    get NaN in every output. ``rel``: the face's relative slack on the objective. ``workers``:
    threads for the games' LPs (the result does not depend on it)."""
    n = players_of(values)
    size = 1 << n
    v = values.detach().to(torch.float64).cpu().reshape(-1, size)
    if candidates is None:
        cand = torch.ones(v.shape[0], 2, size, dtype=torch.bool)
    else:
        shape = tuple(values.shape[:-1]) + (2, size)
        if tuple(candidates.shape) != shape:
            raise ValueError(f"candidates must have the shape {shape}, "
                             f"got {tuple(candidates.shape)}")
        cand = candidates.detach().cpu().bool().reshape(-1, 2, size)
    if not q_bound >= 0:
        raise ValueError(f"q_bound must be >= 0, got {q_bound}")
    if not 0 <= rel < 1:
        raise ValueError(f"rel must lie in [0, 1), got {rel}")
    b = q_bound * (v[:, -1] - v[:, 0]).abs()
    with _pool(workers) as pool:
        games = list(range(v.shape[0]))
        run = lambda g: _game_ranges(v[g], float(b[g]), n, cand[g], rel)  # noqa: E731
        out = list(pool.map(run, games)) if pool else [run(g) for g in games]
    lead = tuple(values.shape[:-1])
    stack = lambda i: torch.stack([o[i] for o in out]).reshape(lead + (2, size))  # noqa: E731
    scalar = lambda i: torch.tensor([o[i] for o in out],  # noqa: E731
                                    dtype=torch.float64).reshape(lead)
    return Ranges(stack(0), stack(1), stack(2), stack(3), scalar(4), scalar(5), scalar(6))


@contextlib.contextmanager
def _pool(workers: int):
    if workers <= 1:
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        yield pool


@functools.lru_cache(maxsize=4)
def _structure(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full LP's columns (CSC: starts, row index, values). Row 0 defines ``t = sum_U w(U)``;
    row ``1 + S`` is mask ``S``. Column 0 is ``t`` (free; +1 in every mask row, -1 in row 0);
    then a +/- pair per term of ``_terms(n)``: the constant and ``u(S)`` (+1 in the rows of the
    masks ``T`` that contain ``S``), ``w(U)`` (-1 in the rows of the masks inside ``N \\ U``,
    +1 in row 0): the OR part of ``R`` written as ``t - sum_{U subset N \\ S} w(U)``, sparse as
    in ``exact.py``."""
    size = 1 << n
    masks = np.arange(size)
    cols = [(np.concatenate([[0], 1 + masks]), np.concatenate([[-1.0], np.ones(size)]))]
    for kind, s in _terms(n):
        if kind == 0:
            rows = 1 + masks[(masks & s) == s]
            vals = np.ones(len(rows))
        else:
            rows = np.concatenate([[0], 1 + masks[(masks & s) == 0]])
            vals = np.concatenate([[1.0], -np.ones(len(rows) - 1)])
        cols += [(rows, vals), (rows, -vals)]
    lengths = np.array([len(r) for r, _ in cols])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    index = np.concatenate([r for r, _ in cols]).astype(np.int32)
    return starts, index, np.concatenate([x for _, x in cols])


@functools.lru_cache(maxsize=4)
def _terms(n: int) -> list[tuple[int, int]]:
    """The LP's terms in column order: the constant ``(0, 0)``, ``u(S)``, then ``w(U)``."""
    size = 1 << n
    return [(0, s) for s in range(size)] + [(1, s) for s in range(1, size)]


def _build(v: np.ndarray, b: float, n: int):
    """A HiGHS model of one game's full LP (plain objective: every term costs 1)."""
    import highspy

    size = 1 << n
    inf = highspy.kHighsInf
    h = _new_model()
    for name, value in (("threads", 1), ("random_seed", 0), ("presolve", "off"),
                        ("dual_feasibility_tolerance", TOLERANCE),
                        ("primal_feasibility_tolerance", TOLERANCE)):
        h.setOptionValue(name, value)
    empty = np.array([], dtype=np.int32)
    lower = np.concatenate([[0.0], v - b])
    upper = np.concatenate([[0.0], v + b])
    h.addRows(size + 1, lower, upper, 0, empty, empty, np.array([]))
    starts, index, values = _structure(n)
    k = len(starts)
    cost = np.concatenate([[0.0], np.ones(k - 1)])
    col_lower = np.concatenate([[-inf], np.zeros(k - 1)])
    col_upper = np.full(k, inf)
    h.addCols(k, cost, col_lower, col_upper, len(index), starts, index, values)
    return h


def _run(h, strategy: int) -> None:
    """Solve; a run that ends without optimality is re-solved from scratch (as ``exact.py``)."""
    import highspy

    optimal = highspy.HighsModelStatus.kOptimal
    h.setOptionValue("simplex_strategy", strategy)
    h.run()
    if h.getModelStatus() != optimal:
        h.clearSolver()
        h.run()
    if h.getModelStatus() != optimal:
        raise RuntimeError("item_ranges: HiGHS ended a bounding LP with status "
                           f"{h.modelStatusToString(h.getModelStatus())}")


def _terms_of(x: np.ndarray, n: int) -> np.ndarray:
    """``[2, 2**n]`` signed terms of an LP solution ``x`` (the constant in AND's slot 0)."""
    size = 1 << n
    signed = x[1::2] - x[2::2]
    out = np.zeros((2, size))
    out[0] = signed[:size]
    out[1, 1:] = signed[size:]
    return out


def _game_ranges(v: Tensor, b: float, n: int, cand: Tensor, rel: float):
    """One game's ``low, high, low_reached, high_reached, lps, loss, loss_bound``."""
    size = 1 << n
    h = _build(v.numpy(), b, n)
    _run(h, 1)  # dual simplex from the slack basis (dual feasible: costs >= 0)
    sol = h.getSolution()
    x = np.asarray(sol.col_value, dtype=np.float64)
    star = _terms_of(x, n)
    y = torch.from_numpy(np.asarray(sol.row_dual, dtype=np.float64)[1:size + 1])
    loss, bound = _measured(v, b, star, y, n)
    budget = max(loss, float(np.abs(star).sum())) * (1 + rel)
    free = _free_bounds(y, v, b, n, budget)
    nan = torch.full((2, size), float("nan"), dtype=torch.float64)
    low, high, low_r, high_r = nan.clone(), nan.clone(), nan.clone(), nan.clone()
    wanted = cand.clone()
    wanted[0, 0] = wanted[1, 0] = bool(cand[0, 0] or cand[1, 0])  # the constant: one column
    wanted[1, 0] = False
    scale = float(v.abs().max())
    easy = wanted & (free <= SMALL * max(scale, 1e-300))
    low[easy], high[easy], low_r[easy], high_r[easy] = -free[easy], free[easy], 0.0, 0.0
    todo = [(int(k), int(s)) for k, s in zip(*np.nonzero((wanted & ~easy).numpy()))]
    if todo:
        _add_budget_row(h, n, budget)
        for kind, s in todo:
            lo, hi = _bound_term(h, v, b, n, kind, s, budget)
            low[kind, s], low_r[kind, s] = lo
            high[kind, s], high_r[kind, s] = hi
    if cand[0, 0] or cand[1, 0]:
        _split_constant(low, high, low_r, high_r, cand)
    return low, high, low_r, high_r, 2 * len(todo), loss, bound


def _measured(v: Tensor, b: float, star: np.ndarray, y: Tensor, n: int) -> tuple[float, float]:
    """The loss of the LP's optimum as the engine measures it (on its split ``p, q``) and the
    certified lower bound of the optimum from the duals ``y``."""
    u, w = torch.from_numpy(star[0])[None], torch.from_numpy(star[1])[None]
    bb = torch.tensor([b], dtype=torch.float64)
    p, q = split_of(u, w, v[None], bb)
    i_and, i_or = and_or(v[None], p, q)
    loss = float(i_and.abs().sum() + i_or.abs().sum())
    return loss, float(lower_bound(y[None], v[None], bb, n)[0])


def _free_bounds(y: Tensor, v: Tensor, b: float, n: int, budget: float) -> Tensor:
    """``[2, 2**n]``: ``(B - L) / d_j`` for every term (inf where the dual constraint is tight),
    from the optimal duals ``y`` scaled into dual feasibility (step 2 of the module
    docstring)."""
    and_part, or_part = dual_prices(y[None], n)
    prices = torch.stack([and_part[0], or_part[0]]).abs()
    prices[1, 0] = prices[0, 0]
    scale = max(float(prices.max()), 1.0)
    scaled = y / scale  # |R^T y| <= 1: the dual objective bounds the optimum (not clamped)
    low = float((scaled * v).sum() - b * scaled.abs().sum())
    slack = 1.0 - prices / scale
    room = max(budget - low, 0.0)
    return torch.where(slack > 0, room / slack.clamp_min(1e-300),
                       torch.full_like(slack, float("inf")))


def _add_budget_row(h, n: int, budget: float) -> None:
    """The row ``sum of every term's + and - parts <= budget``; every cost set to 0."""
    import highspy

    k = 1 + 2 * len(_terms(n))
    cols = np.arange(1, k, dtype=np.int32)
    h.addRows(1, np.array([-highspy.kHighsInf]), np.array([budget]), len(cols),
              np.zeros(1, dtype=np.int32), cols, np.ones(len(cols)))
    h.changeColsCost(k, np.arange(k, dtype=np.int32), np.zeros(k))


def _bound_term(h, v: Tensor, b: float, n: int, kind: int, s: int, budget: float):
    """``((low, low_reached), (high, high_reached))`` of one term over the face, by two LPs
    warm-started from the model's basis, each certified from its row duals."""
    size = 1 << n
    j = s if kind == 0 else size + s - 1  # the term's index in ``_terms(n)``
    cols = np.array([1 + 2 * j, 2 + 2 * j], dtype=np.int32)
    out = []
    for sign in (1.0, -1.0):  # min x_j, then min -x_j
        h.changeColsCost(2, cols, np.array([sign, -sign]))
        _run(h, 4)  # primal simplex: only the costs changed, the basis stays primal feasible
        sol = h.getSolution()
        reached = sign * _terms_of(np.asarray(sol.col_value, dtype=np.float64), n)[kind, s]
        y = torch.from_numpy(np.asarray(sol.row_dual, dtype=np.float64)[1:size + 1])
        certified = _certified_min(y, v, b, n, kind, s, sign, budget)
        out.append((sign * min(certified, reached), sign * reached))
    h.changeColsCost(2, cols, np.zeros(2))
    return out[0], out[1]


def _certified_min(y: Tensor, v: Tensor, b: float, n: int, kind: int, s: int, sign: float,
                   budget: float) -> float:
    """A lower bound of ``min sign * x_(kind, s)`` over the face, from any row multipliers
    ``y``: ``y.v - b ||y||_1 - lambda B`` with ``lambda = max_k |f_k - (R^T y)_k|``."""
    and_part, or_part = dual_prices(y[None], n)
    g = -torch.stack([and_part[0], or_part[0]])
    g[1, 0] = 0.0  # OR of the empty set is the constant's column, counted in AND's slot
    g[kind, s] += sign
    lam = float(g.abs().max())
    return float((y * v).sum() - b * y.abs().sum()) - lam * budget


def _split_constant(low: Tensor, high: Tensor, low_r: Tensor, high_r: Tensor,
                    cand: Tensor) -> None:
    """The constant's range ``[c_low, c_high]`` (in AND's slot 0) becomes the range of each of
    ``I_and(empty)`` and ``I_or(empty)``: ``[min(0, c_low), max(0, c_high)]`` (module docstring);
    reached values likewise."""
    c_lo, c_hi, r_lo, r_hi = (float(t[0, 0]) for t in (low, high, low_r, high_r))
    for kind in (0, 1):
        if cand[kind, 0]:
            low[kind, 0], high[kind, 0] = min(0.0, c_lo), max(0.0, c_hi)
            low_r[kind, 0], high_r[kind, 0] = min(0.0, r_lo), max(0.0, r_hi)
        else:
            low[kind, 0] = high[kind, 0] = low_r[kind, 0] = high_r[kind, 0] = float("nan")
