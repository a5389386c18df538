"""The exact sparsification: the L1 objective of AND-OR extraction solved as a linear program,
to a certified optimum (book/method.md, section 2).

The problem, per game ``v`` (``2**n`` outputs) with ``b = q_bound |v(N) - v(empty)|``:

    minimise  sum_S |I_and(S)| + |I_or(S)|   over the split p, q with |q| <= b.

In the interactions themselves (``u = I_and``, ``w = I_or``) it reads
``min ||u||_1 + ||w||_1`` subject to ``v - b <= R(u, w) <= v + b``, where ``R`` is universal
matching (``interactions.reconstruct``): the outputs that the interactions explain. Its dual is
``max y.v - b ||y||_1`` subject to ``|R^T y| <= 1``, and ``R^T`` is two subset transforms, so
*any* ``y`` scaled by ``max(1, |R^T y|_inf)`` gives a certified lower bound of the optimum.

The solver is column generation: a restricted LP holds the few interactions that can be
non-zero (the optimum is usually sparse: that is the point of the extraction), HiGHS solves it
(primal simplex, warm-started), the engine's transforms price every other interaction of every
game at once (batched, on the games' device) from the LP's row duals, the most violated ones
join, and a game stops when its relative gap ``(loss - loss_bound) / loss <= tol`` and no
interaction is left to price in (``tie_break``: one defined point of the optimal face, chosen by
``rule``: ``canonical``, lower orders first; ``reverse``, higher orders first; ``hash``, a fixed
hash order only; ``support`` starts a solve from another point's interactions). A dense game
(``spread``: a network early in training, whose optimum holds hundreds of interactions) gets
every interaction at once instead, solved by HiGHS's interior point with crossover to an optimal
vertex. ``loss`` is measured by the engine on the returned ``p, q`` (never taken from the LP
solver) and ``loss_bound`` from the dual point by the same transforms, so the certificate does
not rest on HiGHS.

Restricted LP of one game (rows: the ``2**n`` masks ``S`` with bounds ``[v_S - b, v_S + b]``,
or from ``n = ROWS_GENERATED_FROM`` on only those the solution has broken so far; and one row
defining ``t``):
- ``u(S)``, S non-empty, split ``u+ - u-``: +1 in rows ``T ⊇ S`` (``zeta`` of a delta);
- ``w(U)``, U non-empty, split: the OR part of ``R`` is ``w(empty) + sum_{U cap S != empty} w(U)
  = w(empty) + t - sum_{U subset N \\ S} w(U)`` with ``t = sum_U w(U)``, so ``w(U)`` is -1 in
  rows ``S subset N \\ U`` and +1 in the row of ``t``: sparse columns for high orders;
- the constant (``u(empty) + w(empty)``, one column), and ``t`` (free);
- a slack pair per row with cost ``2**n + 1``, more than any dual ``|y_S|`` can be
  (``|y_S| <= 2**(n-|S|)``), so the penalty is exact: the restricted LP is always feasible and
  the slacks vanish at its optimum once the columns can explain ``v``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from whypretrain.engine.interactions import butterfly, and_or, reconstruct, relative_gap

AND_COL, OR_COL = 0, 1
SIMPLEX = {"primal": 4, "dual": 1}  # HiGHS's simplex_strategy codes
DUAL_TOLERANCE = 1e-10  # HiGHS's primal and dual feasibility tolerances
PRICE_TOLERANCE = 1e-9  # an interaction joins when its reduced price exceeds this
FEASIBILITY_TOLERANCE = 1e-9  # a mask joins when its bound is broken by this (relative to |v|)
ROWS_GENERATED_FROM = 14  # n from which rows = "auto" generates the LP's rows
LIVE_SIZE = 1 << 17  # at most LIVE_SIZE / 2**n games' LPs are held at once (at least workers)
ROW_GROWTH = 4  # a round adds at most this many times the rows already in
COLUMN_GROWTH = 0.25  # a round adds at most this share of the interactions already in (at least
# 2n): fewer interactions the optimum does not need, cheaper re-solves than with doubling
# (1.12-1.31x on one thread on n = 10 games; benchmarks/README.md, "Column growth")
DENSE_SPREAD = 64.0  # columns = "auto": a game whose spread (``spread``) passes this gets every
# interaction in its LP from the start (benchmarks/README.md, "Dense games")
DENSE_SOLVER = "ipm"  # HiGHS's solver for an LP that holds every interaction: interior point with
# crossover to an optimal vertex (1.3-2.2x faster than the dual simplex on the study's dense games;
# "simplex": the dual simplex from the slack basis). A failed run falls back to the simplex.


def _splitmix64(k: np.ndarray) -> np.ndarray:
    """A fixed 64-bit hash (SplitMix64's finaliser) of each integer, as a float in ``[0, 1)``."""
    z = k.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


RULES = ("canonical", "reverse", "hash")  # the points of the optimal face (``tie_break``)


def tie_break(n: int, rule: str = "canonical") -> np.ndarray:
    """``r[kind, S]`` in ``[0, 1)``: a rule's tie-break cost of each interaction (kind 0 = AND,
    1 = OR), with ``h`` a fixed hash of the interaction's index ``kind * 2**n + S`` (SplitMix64):

    - ``canonical``: ``(|S| + h) / (n + 1)``: lower orders cost less, so among optimal solutions
      the extraction prefers the one that explains the game with lower-order interactions;
    - ``reverse``: ``(n - |S| + h) / (n + 1)``: higher orders cost less (the opposite preference);
    - ``hash``: ``h``: no preference by order, only the fixed hash order.

    The hash makes the costs generic (no linear relation among them, unlike an arithmetic
    sequence), so the perturbed objective has one optimum: any tie left after the order is broken
    by a fixed rule, not by the solver's path. Each rule is deterministic."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    size = 1 << n
    masks = np.arange(size)
    order = np.array([bin(m).count("1") for m in masks], dtype=np.float64)
    h = _splitmix64(np.arange(2 * size)).reshape(2, size)
    if rule == "hash":
        return h
    return ((order if rule == "canonical" else n - order)[None, :] + h) / (n + 1)


def _require_highspy():
    try:
        import highspy
    except ImportError as err:  # pragma: no cover - the package is a dependency
        raise ImportError("the exact sparsification needs HiGHS: pip install highspy "
                          "(it is in pyproject.toml; `make setup` installs it)") from err
    return highspy


def _new_model():
    """A silent HiGHS model. The core class skips the Python wrapper's callback set-up and its
    start-up banner on stdout; the wrapper is the fallback should a release rename the core."""
    highspy = _require_highspy()
    core = getattr(getattr(highspy, "_core", None), "_Highs", None)
    h = core() if core is not None else highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def lp_model(tolerance: float = DUAL_TOLERANCE):
    """A silent HiGHS model for an LP solved warm across rounds: one thread, a fixed random
    seed, no presolve (it would undo the warm start), and ``tolerance`` as the primal and
    dual feasibility tolerances."""
    h = _new_model()
    for key, value in (("threads", 1), ("random_seed", 0), ("presolve", "off")):
        h.setOptionValue(key, value)
    _set_tolerance(h, tolerance)
    return h


def _set_tolerance(h, tolerance: float) -> None:
    h.setOptionValue("dual_feasibility_tolerance", tolerance)
    h.setOptionValue("primal_feasibility_tolerance", tolerance)


def add_free_sums(h, count: int, coefficient: float) -> None:
    """``count`` rows fixed at 0, each with one free column of cost 0 (``coefficient`` in its
    own row): the sums ``t`` that the OR columns are written against."""
    inf = _require_highspy().kHighsInf
    empty = np.array([], dtype=np.int32)
    rows = np.arange(count, dtype=np.int32)
    h.addRows(count, np.zeros(count), np.zeros(count), 0, empty, empty, np.array([]))
    h.addCols(count, np.zeros(count), np.full(count, -inf), np.full(count, inf), count, rows,
              rows, np.full(count, coefficient))


def run_to_optimum(h, strategy: int, what: str, retry: tuple[float | None, ...] = (None,),
                   tolerance: float = DUAL_TOLERANCE) -> None:
    """Run HiGHS from its last basis with the simplex ``strategy``. When it ends without
    optimality (numerical trouble, "Unknown"), re-solve from scratch once per entry of
    ``retry``: ``None`` as it is, a number by the simplex at that tolerance; then restore
    ``tolerance``. ``RuntimeError`` naming ``what`` if it never reaches the optimum."""
    h.setOptionValue("simplex_strategy", strategy)
    h.run()
    optimal = _require_highspy().HighsModelStatus.kOptimal
    for tol in retry:
        if h.getModelStatus() == optimal:
            break
        if tol is not None:
            h.setOptionValue("solver", "simplex")
            _set_tolerance(h, tol)
        h.clearSolver()
        h.run()
    if any(tol is not None for tol in retry):
        _set_tolerance(h, tolerance)
    status = h.getModelStatus()
    if status != optimal:
        raise RuntimeError(f"{what}: HiGHS ended a restricted LP with status "
                           f"{h.modelStatusToString(status)}")


@dataclass
class _GameLP:
    """The restricted LP of one game, kept warm across rounds.

    ``all_rows``: every mask is a row from the start; otherwise rows join when the current
    solution violates them (``add_rows``), so a large game's LP holds only the masks whose
    bounds can bind. Columns: ``t`` (index 0), then interaction pairs (+/-) and slack pairs in
    the order they joined.
    """

    v: np.ndarray
    b: float
    n: int
    simplex: str = "primal"
    cost: np.ndarray | None = None  # [2, 2**n] column costs (1 + the tie-break; None: all 1)
    all_rows: bool = True
    full: bool = False  # every interaction is a column from the start (needs all_rows)
    after_rows: bool = False  # the last change was rows joining (or every column joined at once)
    model: object = None
    columns: list[tuple[int, int]] = field(default_factory=list)  # (kind, mask) per +/- pair
    have: set[tuple[int, int]] = field(default_factory=set)
    rounds: int = 0

    def __post_init__(self) -> None:
        size = 1 << self.n
        self.masks = np.arange(size)
        # tight tolerances: the tie-break's cost differences (about tol / 4 / (n + 1) per unit)
        # must be resolved by the simplex, or it could stop at any vertex of the optimal face
        h = lp_model(DUAL_TOLERANCE)
        add_free_sums(h, 1, -1.0)  # row 0 defines t = sum of the OR terms; t is column 0
        self.model = h
        self.row_of = np.full(size, -1, dtype=np.int64)  # LP row of each mask (-1: not in)
        self.row_masks: list[int] = []
        self.pair_start: list[int] = []  # LP column of each interaction's + part
        self.column_count = 1
        first = self.masks if self.all_rows else np.array(
            sorted({0, size - 1} | {1 << i for i in range(self.n)}
                   | {(size - 1) ^ (1 << i) for i in range(self.n)}))
        self.add_rows(first)
        self.add([(AND_COL, 0)])  # the constant: AND and OR of the empty set are one column
        if self.full:  # one LP: interior point, or the dual simplex from the slack basis (dual
            # feasible: every cost is >= 0)
            self.add([(kind, m) for kind in (AND_COL, OR_COL) for m in range(1, size)])
            self.after_rows = True
            if DENSE_SOLVER != "simplex":  # crossover ends at a vertex, as the simplex does
                h.setOptionValue("solver", DENSE_SOLVER)
                h.setOptionValue("run_crossover", "on")

    def _coefficients(self, masks: np.ndarray) -> np.ndarray:
        """``[len(masks), columns]`` coefficients of the + parts of the LP's interaction
        columns in the mask rows ``masks``."""
        kinds = np.array([k for k, _ in self.columns], dtype=np.int64)
        cols = np.array([m for _, m in self.columns], dtype=np.int64)
        s = masks[:, None]
        return np.where(kinds == AND_COL, ((cols & s) == cols) * 1.0, ((cols & s) == 0) * -1.0)

    def add_rows(self, masks) -> None:
        """The mask rows ``masks`` join (with their slack pair), with the coefficients of the
        columns already in."""
        masks = np.array([m for m in np.asarray(masks).tolist() if self.row_of[m] < 0],
                         dtype=np.int64)
        if not len(masks):
            return
        h = self.model
        start_row = 1 + len(self.row_masks)
        coef = self._coefficients(masks) if self.columns else np.zeros((len(masks), 0))
        starts, index, value = [], [], []
        count = 0
        plus = np.array(self.pair_start, dtype=np.int64)
        for r in range(len(masks)):
            nz = np.nonzero(coef[r])[0]
            idx = np.concatenate([[0], plus[nz], plus[nz] + 1])
            val = np.concatenate([[1.0], coef[r, nz], -coef[r, nz]])
            starts.append(count)
            index.append(idx)
            value.append(val)
            count += len(idx)
        h.addRows(len(masks), self.v[masks] - self.b, self.v[masks] + self.b, count,
                  np.array(starts, dtype=np.int32), np.concatenate(index).astype(np.int32),
                  np.concatenate(value))
        rows = start_row + np.arange(len(masks))
        self.row_of[masks] = rows
        self.row_masks += masks.tolist()
        # slacks: +1 / -1 in each new row, exact-penalty cost
        big = float((1 << self.n) + 1)
        k = 2 * len(masks)
        h.addCols(k, np.full(k, big), np.zeros(k), np.full(k, _require_highspy().kHighsInf), k,
                  np.arange(k, dtype=np.int32), np.repeat(rows, 2).astype(np.int32),
                  np.tile([1.0, -1.0], len(masks)))
        self.column_count += k

    def rows_of(self, kind: int, mask: int) -> tuple[np.ndarray, np.ndarray]:
        """LP rows and coefficients of the ``+`` column of one interaction."""
        present = self.row_of >= 0
        if kind == AND_COL:
            masks = self.masks[present & ((self.masks & mask) == mask)]
            return self.row_of[masks], np.ones(len(masks))
        masks = self.masks[present & ((self.masks & mask) == 0)]
        return (np.concatenate([self.row_of[masks], [0]]),
                np.concatenate([-np.ones(len(masks)), [1.0]]))

    def add(self, new: list[tuple[int, int]]) -> None:
        new = [c for c in new if c not in self.have]
        if not new:
            return
        starts, rows, vals = [], [], []
        count = 0
        for kind, mask in new:
            r, c = self.rows_of(kind, mask)
            for sign in (1.0, -1.0):
                starts.append(count)
                rows.append(r)
                vals.append(sign * c)
                count += len(r)
            self.columns.append((kind, mask))
            self.have.add((kind, mask))
            self.pair_start.append(self.column_count)
            self.column_count += 2
        k = 2 * len(new)
        cost = np.ones(k) if self.cost is None else \
            np.repeat([self.cost[kind, mask] for kind, mask in new], 2)
        self.model.addCols(k, cost, np.zeros(k), np.full(k, _require_highspy().kHighsInf),
                           count, np.array(starts, dtype=np.int32),
                           np.concatenate(rows).astype(np.int32), np.concatenate(vals))

    def add_broken_rows(self, outside: np.ndarray) -> bool:
        """The masks not yet in whose bounds the solution breaks (``outside > 0``) join, worst
        first (at most ``ROW_GROWTH`` times the rows already in, at least ``4n``); whether any
        did."""
        broken = np.nonzero(outside > 0)[0]
        broken = broken[self.row_of[broken] < 0]
        if len(broken):
            worst = broken[np.argsort(-outside[broken], kind="stable")]
            self.add_rows(worst[: max(4 * self.n, ROW_GROWTH * len(self.row_masks))])
        return bool(len(broken))

    def priced_in(self, viol: np.ndarray) -> list[tuple[int, int]]:
        """The interactions not yet in whose reduced price ``viol`` (``[2, 2**n]``) exceeds
        ``PRICE_TOLERANCE``, most violated first."""
        kinds, masks = np.nonzero(viol > PRICE_TOLERANCE)
        order = np.argsort(-viol[kinds, masks], kind="stable")
        return [(int(kinds[i]), int(masks[i])) for i in order
                if (int(kinds[i]), int(masks[i])) not in self.have]

    def grow(self, new: list[tuple[int, int]]) -> None:
        """The first of ``new`` join: at most ``COLUMN_GROWTH`` of the interactions already in
        (at least ``2n``)."""
        self.add(new[: max(2 * self.n, int(COLUMN_GROWTH * len(self.have)))])



def solve_game_lp(lp: _GameLP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``lp`` from its last basis; return the row duals of the mask rows (0 for masks not
    in the LP), and ``u``, ``w`` as dense arrays. Columns that joined leave the last basis
    primal feasible: the primal simplex re-solves from it (2x faster than the dual simplex on
    n = 10 games, benchmarks/README.md); rows that joined leave it dual feasible. Numerical
    trouble: from scratch by the simplex, then at HiGHS's default tolerances."""
    h = lp.model
    run_to_optimum(h, SIMPLEX["dual" if lp.after_rows else lp.simplex], "exact extraction",
                   retry=(DUAL_TOLERANCE, 1e-7))
    lp.rounds += 1
    sol = h.getSolution()
    size = 1 << lp.n
    y = np.zeros(size)
    duals = np.asarray(sol.row_dual, dtype=np.float64)
    y[lp.row_masks] = duals[1:1 + len(lp.row_masks)]
    x = np.asarray(sol.col_value, dtype=np.float64)
    plus = np.array(lp.pair_start, dtype=np.int64)
    signed = x[plus] - x[plus + 1]
    u, w = np.zeros(size), np.zeros(size)
    for (kind, mask), value in zip(lp.columns, signed):
        (u if kind == AND_COL else w)[mask] += value
    return y, u, w


def _transform(x: Tensor, n: int, op: str) -> Tensor:
    return butterfly(x.contiguous(), n, op)


def dual_prices(y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``R^T y`` split into its AND part ``zeta^T y`` and its OR part, for every mask at once:
    the reduced price of interaction ``S`` is ``|.| - 1`` (positive = it should join)."""
    total = y.sum(-1, keepdim=True)
    and_part = _transform(y, n, "zeta_t")
    or_part = total - _transform(y, n, "zeta").flip(-1)
    or_part[..., 0] = total[..., 0]
    return and_part, or_part


def lower_bound(y: Tensor, v: Tensor, b: Tensor, n: int) -> Tensor:
    """Certified lower bound of the optimum from any dual point ``y`` (weak duality): ``y`` scaled
    into ``|R^T y| <= 1`` has the dual objective ``y.v - b ||y||_1``."""
    return _bound(y, v, b, *dual_prices(y, n))


def _bound(y: Tensor, v: Tensor, b: Tensor, and_part: Tensor, or_part: Tensor) -> Tensor:
    # OR of the empty set and AND of the empty set are one column (the constant): and_part covers it
    scale = torch.maximum(and_part.abs().amax(-1), or_part[..., 1:].abs().amax(-1)).clamp_min(1.0)
    return ((y * v).sum(-1) - b * y.abs().sum(-1)).div(scale).clamp_min(0.0)


def extreme_splits(v: Tensor) -> tuple[Tensor, Tensor]:
    """The AND interactions of the all-AND split (``p = v/2``) and the OR interactions of the
    all-OR split (``p = -v/2``), ``q = 0``."""
    zero = torch.zeros_like(v)
    return and_or(v, v / 2, zero)[0], and_or(v, -v / 2, zero)[1]


def _starting_columns(i_and: Tensor, i_or: Tensor, n: int, count: int) -> tuple[Tensor, Tensor]:
    """The strongest terms of the two extreme splits: a cheap first guess of the support, so
    that most games need two or three rounds."""
    k = min(count, (1 << n) - 1)
    top_and = i_and[..., 1:].abs().topk(k, dim=-1).indices + 1
    top_or = i_or[..., 1:].abs().topk(k, dim=-1).indices + 1
    return top_and, top_or


def spread(v: Tensor, splits: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """How dense a game is: the L1 mass of its sparser extreme split's interactions (all AND or
    all OR, order 0 left out; ``splits``: ``extreme_splits(v)`` where already computed) in units
    of its span ``|v(N) - v(empty)|`` (``inf`` for a game with no span). A network early in
    training has games with a spread in the hundreds or thousands, whose optimum holds hundreds
    of interactions (up to about half of the ``2**(n+1) - 1``); a trained one about 2-30
    (benchmarks/README.md, "Dense games")."""
    i_and, i_or = extreme_splits(v) if splits is None else splits
    mass = torch.minimum(i_and[..., 1:].abs().sum(-1), i_or[..., 1:].abs().sum(-1))
    span = (v[..., -1] - v[..., 0]).abs()
    return torch.where(span > 0, mass / span.clamp_min(torch.finfo(v.dtype).tiny),
                       torch.full_like(mass, float("inf")))


def split_of(u: Tensor, w: Tensor, v: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The split ``p, q`` whose AND-OR interactions are ``u, w``: ``v_and = zeta(u)``,
    ``v_or = R(0, w)``, ``q = v_and + v_or - v`` (clamped into its box against rounding),
    ``p = (v_and - v_or) / 2``."""
    n = v.shape[-1].bit_length() - 1
    v_and = _transform(u, n, "zeta")
    v_or = reconstruct(torch.zeros_like(w), w)
    bound = b[..., None]
    q = torch.maximum(torch.minimum(v_and + v_or - v, bound), -bound)
    return (v_and - v_or) / 2, q


@dataclass
class ExactSolution:
    """``p, q``: the split; ``loss``: its objective as the engine measures it; ``loss_bound``: the
    certified lower bound; ``rounds``, ``columns``: LP rounds and interactions priced in, per game."""

    p: Tensor
    q: Tensor
    loss: Tensor
    loss_bound: Tensor
    rounds: Tensor
    columns: Tensor

    @property
    def gap(self) -> Tensor:
        return relative_gap(self.loss, self.loss_bound)

    def summary(self) -> dict[str, float | int]:
        """What ``Interactions.params`` records: the largest gap, the most LP rounds a game used
        (``iterations_used``), and the mean rounds and interactions priced in per game."""
        if not self.loss.numel():
            return dict(gap=0.0, iterations_used=0, rounds_mean=0.0, columns_mean=0.0)
        return dict(gap=float(self.gap.max()), iterations_used=int(self.rounds.max()),
                    rounds_mean=float(self.rounds.double().mean()),
                    columns_mean=float(self.columns.double().mean()))


def solve(v: Tensor, b: Tensor, tol: float = 1e-4, max_rounds: int = 200,
          progress: bool = False, workers: int = 1, simplex: str = "primal",
          start_columns: int = 3, canonical: bool = True, rows: str = "auto",
          columns: str = "auto", rule: str = "canonical",
          support: Tensor | None = None) -> ExactSolution:
    """Solve the sparsification LP of every game of ``v`` (``[G, 2**n]``) to relative gap ``tol``.

    ``b``: the q bound of each game (``[G]``). Pricing and certificates run batched on ``v``'s
    device; the restricted LPs on the CPU (``workers`` threads; the result does not depend on it).
    ``simplex`` (``primal`` / ``dual``) and ``start_columns`` (times ``n`` strongest terms of each
    extreme split in the first LP) are speed settings, compared in benchmarks/engine.py.
    ``canonical`` (default): the solution does not depend on the solver's path: each game is
    solved to the exact optimum of the objective with every interaction's cost raised by
    ``tol / 4 * tie_break(n)`` (lower orders first, then a fixed order), which is unique, and
    within ``tol`` of the plain objective's optimum (the certificate is of the plain objective).
    Without it, a game stops at the first vertex of the optimal face within ``tol``.
    ``rule``: which point of the optimal face (``tie_break``: ``canonical``, lower orders first;
    ``reverse``, higher orders first; ``hash``, the hash order only); needs ``canonical``.
    ``support``: ``[G, 2, 2**n]`` booleans, the interactions each game's first LP holds instead of
    the extreme splits' strongest terms (a warm start: e.g. another rule's optimum, which lies on
    the same optimal face); ignored for the games that get every interaction at once. The same
    optimum either way.
    ``rows``: ``all`` masks are LP rows from the start, or they are ``generated`` (a mask joins
    when the current solution violates its bounds); ``auto``: generated from ``n`` =
    ``ROWS_GENERATED_FROM`` on. Both reach the same optimum.
    ``columns``: interactions join the LP when they price in (``generated``), or ``all`` are in
    from the start (one LP, ``DENSE_SOLVER``, no pricing rounds; needs every row);
    ``auto``: ``all`` for the dense games, whose ``spread`` exceeds ``DENSE_SPREAD`` (networks
    early in training), where growing the LP round by round costs 1.3-9x more. Same optimum.
    Raises RuntimeError naming the games that could not be certified (never returns them silently).
    """
    n = v.shape[-1].bit_length() - 1
    cost_np, all_rows = _settings(v, n, tol, simplex, canonical, rule, support, rows, columns)
    run = _ColumnGeneration(v, b, n, tol, simplex, cost_np, canonical, all_rows, support,
                            start_columns, columns, workers)
    active = run.enter()
    desc = f"exact sparsification, {v.shape[0]} games, n={n}"
    with _progress_bar(progress, v.shape[0], desc) as bar, _thread_pool(workers) as pool:
        while active:
            still, done = run.round(active, pool)
            if bar is not None:
                bar.update(len(done))
            late = [g for g in still if run.lps[g].rounds >= max_rounds]
            if late:
                raise RuntimeError(
                    f"exact sparsification: {len(late)} game(s) not certified after {max_rounds} "
                    f"rounds (gap {relative_gap(run.loss, run.bound)[late].max():.2e})")
            active = still + run.enter()
    p, q = split_of(run.u, run.w, v, b)
    return ExactSolution(p, q, run.loss, run.bound, run.rounds, run.columns)


def _settings(v: Tensor, n: int, tol: float, simplex: str, canonical: bool, rule: str,
              support: Tensor | None, rows: str, columns: str) -> tuple[np.ndarray, bool]:
    """Check ``solve``'s settings; return the interactions' costs ``[2, 2**n]`` (1 + the
    tie-break, or 1 without ``canonical``) and whether every mask is a row from the start."""
    games, size = v.shape[0], v.shape[-1]
    if simplex not in SIMPLEX:
        raise ValueError(f"simplex must be one of {sorted(SIMPLEX)}, got {simplex!r}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    cost_np = 1.0 + tol / 4 * tie_break(n, rule) if canonical else np.ones((2, size))
    if support is not None and tuple(support.shape) != (games, 2, size):
        raise ValueError(f"support must have the shape {(games, 2, size)}, "
                         f"got {tuple(support.shape)}")
    if rows not in ("auto", "all", "generated"):
        raise ValueError(f"rows must be 'auto', 'all' or 'generated', got {rows!r}")
    all_rows = rows == "all" or (rows == "auto" and n < ROWS_GENERATED_FROM)
    if columns not in ("auto", "all", "generated"):
        raise ValueError(f"columns must be 'auto', 'all' or 'generated', got {columns!r}")
    if columns == "all" and not all_rows:
        raise ValueError("columns='all' needs every row: use rows='all' (or 'auto' below "
                         f"n = {ROWS_GENERATED_FROM})")
    return cost_np, all_rows


@contextlib.contextmanager
def _progress_bar(progress: bool, total: int, desc: str):
    """A progress bar over ``total`` games or samples (None without ``progress``), closed on
    exit."""
    if not progress:
        yield None
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc=desc, leave=False)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def _thread_pool(workers: int):
    """``workers`` threads for the restricted LPs (None for one), shut down on exit."""
    if workers <= 1:
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(workers)
    try:
        yield pool
    finally:
        pool.shutdown()


class _ColumnGeneration:
    """The state of one ``solve``: the games' restricted LPs, and per game its interactions
    ``u, w`` (the last LP solution), ``loss`` and certified ``bound``, ``rounds`` and ``columns``.

    At most ``live`` LPs exist at once (HiGHS holds about 12 MB per n = 10 game): a game's LP is
    built when it enters and freed when it is solved, so memory does not grow with games."""

    def __init__(self, v: Tensor, b: Tensor, n: int, tol: float, simplex: str,
                 cost_np: np.ndarray, canonical: bool, all_rows: bool, support: Tensor | None,
                 start_columns: int, columns: str, workers: int) -> None:
        games = v.shape[0]
        self.v, self.b, self.n, self.tol = v, b, n, tol
        self.v_np = v.detach().cpu().double().numpy()
        self.b_np = b.detach().cpu().double().numpy()
        self.simplex, self.canonical, self.all_rows, self.support = (simplex, canonical,
                                                                     all_rows, support)
        self.cost_np = cost_np
        self.cost = torch.from_numpy(cost_np).to(v.device, v.dtype)
        splits = extreme_splits(v)
        self.top_and, self.top_or = _starting_columns(*splits, n, max(1, start_columns * n))
        self.every = [columns == "all" or (columns == "auto" and all_rows and s > DENSE_SPREAD)
                      for s in spread(v, splits).tolist()]
        self.live = max(workers, LIVE_SIZE >> n, 1)
        self.lps: dict[int, _GameLP] = {}
        self.waiting = iter(range(games))
        self.rounds = torch.zeros(games, dtype=torch.long)
        self.columns = torch.zeros(games, dtype=torch.long)
        self.u, self.w = torch.zeros_like(v), torch.zeros_like(v)
        self.loss = torch.full((games,), float("inf"), dtype=v.dtype, device=v.device)
        self.bound = torch.zeros(games, dtype=v.dtype, device=v.device)

    def enter(self) -> list[int]:
        """Build the LPs of the next waiting games while fewer than ``live`` are held: every
        interaction (a dense game), the ``support`` given, or the extreme splits' strongest
        terms. Returns the games that entered."""
        new = []
        while len(self.lps) < self.live:
            g = next(self.waiting, None)
            if g is None:
                break
            every = self.every[g]
            lp = _GameLP(self.v_np[g], float(self.b_np[g]), self.n, self.simplex,
                         self.cost_np if self.canonical else None, self.all_rows, every)
            if not every and self.support is not None:
                kinds, masks = np.nonzero(self.support[g].cpu().numpy())
                lp.add([(int(k), int(m)) for k, m in zip(kinds, masks) if m])
            elif not every:
                lp.add([(AND_COL, int(m)) for m in self.top_and[g].tolist()]
                       + [(OR_COL, int(m)) for m in self.top_or[g].tolist()])
            self.lps[g] = lp
            new.append(g)
        return new

    def round(self, active: list[int], pool) -> tuple[list[int], list[int]]:
        """One round of the active games: re-solve, certify, price in. Returns the games that go
        on and those done (their LPs freed); raises RuntimeError for a game that is neither."""
        idx, y = self.resolve(active, pool)
        within, certified, viol, outside = self.certify(idx, y)
        still, done = self.extend(active, within, certified, viol, outside)
        stuck = [g for g in active if g not in done and g not in still]
        if stuck:
            gaps = relative_gap(self.loss, self.bound)[stuck].tolist()
            raise RuntimeError(
                f"exact sparsification could not certify {len(stuck)} game(s) "
                f"(first: game {stuck[0]}, gap {gaps[0]:.2e} > tol {self.tol:g}) although no "
                f"interaction is left to price in; try a larger tol")
        for g in done:
            lp = self.lps.pop(g)
            self.rounds[g], self.columns[g] = lp.rounds, len(lp.have)
        return still, done

    def resolve(self, active: list[int], pool) -> tuple[Tensor, Tensor]:
        """Solve the active games' LPs (on ``pool``'s threads, if any); their solutions become
        ``u, w``. Returns the games' index and the LPs' row duals ``y`` (``[A, 2**n]``)."""
        lps = self.lps
        solved = list(pool.map(lambda g: solve_game_lp(lps[g]), active)) if pool \
            else [solve_game_lp(lps[g]) for g in active]
        device, dtype = self.v.device, self.v.dtype
        idx = torch.tensor(active, device=device)
        y = torch.from_numpy(np.stack([s[0] for s in solved])).to(device, dtype)
        self.u[idx] = torch.from_numpy(np.stack([s[1] for s in solved])).to(device, dtype)
        self.w[idx] = torch.from_numpy(np.stack([s[2] for s in solved])).to(device, dtype)
        return idx, y

    def certify(self, idx: Tensor, y: Tensor):
        """Measure the games ``idx``: the loss of their split, their certified bound from ``y``.
        Returns per game whether the gap is within ``tol``, whether it is certified (and, with
        the tie-break, no interaction is left to price in), the reduced prices ``[A, 2, 2**n]``
        and the masks' bound violations ``[A, 2**n]`` (None when every mask is a row)."""
        vb, bb = self.v[idx], self.b[idx]
        p, q = split_of(self.u[idx], self.w[idx], vb, bb)
        i_and, i_or = and_or(vb, p, q)
        self.loss[idx] = i_and.abs().sum(-1) + i_or.abs().sum(-1)
        outside = None  # masks whose bounds the LP's solution breaks (only when rows are generated)
        if not self.all_rows:
            r = reconstruct(self.u[idx], self.w[idx])
            outside = torch.maximum(r - vb - bb[:, None], vb - bb[:, None] - r)
            outside = (outside - FEASIBILITY_TOLERANCE * (1 + vb.abs())).cpu().numpy()
        and_part, or_part = dual_prices(y, self.n)
        self.bound[idx] = torch.maximum(self.bound[idx], _bound(y, vb, bb, and_part, or_part))
        within = (relative_gap(self.loss[idx], self.bound[idx]) <= self.tol).tolist()
        certified = torch.tensor(within, device=self.v.device)
        # violated dual constraints = interactions that would lower the objective
        viol = torch.stack([and_part.abs(), or_part.abs()], dim=1) - self.cost  # [A, 2, size]
        viol[..., 0] = -1.0  # the constant is always in
        if self.canonical:  # the perturbed LP's own optimum: no interaction left to price in
            certified &= viol.amax((-2, -1)) <= PRICE_TOLERANCE
        return within, certified.tolist(), viol.cpu().numpy(), outside

    def extend(self, active: list[int], within: list[bool], certified: list[bool],
               viol: np.ndarray, outside: np.ndarray | None) -> tuple[list[int], list[int]]:
        """Each active game's next LP: the masks its solution breaks join (the dual simplex
        re-solves from the basis), else a certified game is done, else the interactions that
        price in join (the primal simplex re-solves), else it is done if within ``tol`` (the
        perturbed optimum, up to HiGHS's tolerances). Returns the games that go on and those
        done; a game in neither has no column left that can help."""
        still, done = [], []
        for row, g in enumerate(active):
            lp = self.lps[g]
            if outside is not None and lp.add_broken_rows(outside[row]):
                lp.after_rows = True
                still.append(g)
                continue
            if certified[row]:
                done.append(g)
                continue
            lp.after_rows = False
            new = lp.priced_in(viol[row])
            if new:
                lp.grow(new)
                still.append(g)
            elif within[row]:
                done.append(g)
        return still, done
