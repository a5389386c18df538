"""The interaction engine: AND (Harsanyi) and AND-OR interactions of games, exactly.

A *game* is the tensor of the ``2**n`` outputs ``v(x_T)`` of one model on one sample, indexed by
the integer mask ``T`` (bit ``i`` set = player ``i`` present); many games stack along leading
dimensions. Every transform here is the fast subset (Moebius) transform: ``n`` butterfly passes
over the last dimension, ``O(n 2**n)`` time and no ``2**n x 2**n`` matrix anywhere, gradients
included (the transpose of a butterfly is a butterfly). Definitions: book/method.md,
section 2.

Public API: ``harsanyi``, ``and_or``, ``reconstruct``, ``sparsify``, ``and_only``, ``salient``,
``Interactions`` (the one result type every later step consumes).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

MAX_PLAYERS = 20
AND, OR = 0, 1  # index of the kind axis in stacked interactions [..., 2, 2**n]


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def players_of(values: Tensor) -> int:
    """Number of players ``n`` of games whose last dimension is ``2**n``; ValueError otherwise."""
    if not isinstance(values, Tensor):
        raise ValueError(f"games must be a torch.Tensor, got {type(values).__name__}")
    if values.dim() == 0:
        raise ValueError("games must have a last dimension of size 2**n, got a scalar")
    size = values.shape[-1]
    n = size.bit_length() - 1
    if size < 2 or (1 << n) != size:
        raise ValueError(f"the last dimension of games must be 2**n with n >= 1, got {size}")
    if n > MAX_PLAYERS:
        raise ValueError(f"n = {n} players is more than the engine allows ({MAX_PLAYERS})")
    if not values.is_floating_point():
        raise ValueError(f"games must be a floating-point tensor, got {values.dtype}")
    if torch.isnan(values).any():
        bad = torch.isnan(values).nonzero()[0].tolist()
        raise ValueError(f"games contain NaN (first at index {bad}); the model's outputs are broken")
    return n


# --------------------------------------------------------------------------------------------
# butterflies: the four subset transforms of a contiguous [..., 2**n] tensor
# --------------------------------------------------------------------------------------------
# Each transform is a Kronecker product of n 2x2 matrices. The lowest LOW_BITS bits are done by
# one small GEMM with the Kronecker product of their factors (a 2**LOW_BITS square matrix, never
# 2**n): butterfly passes over the lowest bits touch every element through strides of 1, 2, 4
# and are the slowest; the higher bits are in-place butterfly passes over long contiguous runs.
# Time stays O(n 2**n) (with a constant 2**LOW_BITS / LOW_BITS for the low part).
LOW_BITS = 5
_BASE = {"moebius": ((1, 0), (-1, 1)), "zeta": ((1, 0), (1, 1)),
         "moebius_t": ((1, -1), (0, 1)), "zeta_t": ((1, 1), (0, 1))}


@functools.lru_cache(maxsize=64)
def _factor(op: str, bits: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``K^T`` for the transform ``op`` of the lowest ``bits`` bits, so that ``y = x @ K^T``."""
    base = torch.tensor(_BASE[op], dtype=dtype)
    k = torch.ones(1, 1, dtype=dtype)
    for _ in range(bits):
        k = torch.kron(base, k)
    return k.T.contiguous().to(device)


def _passes(x: Tensor, n: int, op: str, bits: range, inner: int = 1) -> Tensor:
    """In-place butterfly passes over ``bits`` of a contiguous ``[R, 2**n, inner]`` tensor."""
    flat = x.view(-1, (1 << n) * inner)
    for i in bits:
        pairs = flat.view(flat.shape[0], 1 << (n - 1 - i), 2, (1 << i) * inner)
        lo, hi = pairs[:, :, 0, :], pairs[:, :, 1, :]
        if op == "moebius":
            hi.sub_(lo)
        elif op == "zeta":
            hi.add_(lo)
        elif op == "moebius_t":
            lo.sub_(hi)
        else:  # zeta_t
            lo.add_(hi)
    return x


def _butterfly(x: Tensor, n: int, op: str, out: Tensor | None = None) -> Tensor:
    """Apply one of the four subset transforms to ``x`` (left unchanged); return the result,
    written into ``out`` (contiguous, ``x``'s shape) when given.

    ``moebius``: y(S) = sum_{T subset S} (-1)^{|S|-|T|} x(T)     (Harsanyi / AND)
    ``zeta``:    y(S) = sum_{T subset S} x(T)                    (its inverse)
    ``moebius_t`` and ``zeta_t``: their transposes (sums over supersets), used for gradients.
    """
    low = min(n, LOW_BITS)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    torch.matmul(x.reshape(-1, 1 << low), _factor(op, low, x.dtype, x.device),
                 out=out.view(-1, 1 << low))
    return _passes(out, n, op, range(low, n))


_TRANSPOSE = {"moebius": "moebius_t", "zeta": "zeta_t", "moebius_t": "moebius", "zeta_t": "zeta"}


class _SubsetTransform(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, n: int, op: str) -> Tensor:  # type: ignore[override]
        ctx.n, ctx.op = n, op
        return _butterfly(x.contiguous(), n, op)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _butterfly(grad.contiguous(), ctx.n, _TRANSPOSE[ctx.op]), None, None


# Sparsification calls l1_gradient thousands of times on tensors of one shape. Fresh multi-MB
# temporaries each step cost page faults (the allocator hands big blocks back to the OS) that
# took longer than the arithmetic, so inside ``sparsify`` the temporaries are reused.
class _Workspace(threading.local):
    def __init__(self) -> None:
        self.active = False
        self.buffers: dict[tuple, Tensor] = {}


_WORK = _Workspace()


def _buffer(name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not _WORK.active:
        return torch.empty(shape, dtype=dtype, device=device)
    key = (name, tuple(shape), dtype, device)
    if key not in _WORK.buffers:
        _WORK.buffers[key] = torch.empty(shape, dtype=dtype, device=device)
    return _WORK.buffers[key]


@contextlib.contextmanager
def _reused_buffers():
    """Within: l1_gradient's temporaries and results live in buffers reused call after call
    (a result is overwritten by the next call). Freed on exit."""
    outer = _WORK.active
    _WORK.active = True
    try:
        yield
    finally:
        _WORK.active = outer
        if not outer:
            _WORK.buffers = {}


def _transform(x: Tensor, op: str, n: int | None = None) -> Tensor:
    n = players_of(x) if n is None else n
    return _SubsetTransform.apply(x, n, op)


# --------------------------------------------------------------------------------------------
# the transforms of book/method.md, section 2
# --------------------------------------------------------------------------------------------
def harsanyi(values: Tensor) -> Tensor:
    """Harsanyi (AND) interactions ``I(S) = sum_{T subset S} (-1)^{|S|-|T|} v(T)``; same shape."""
    return _transform(values, "moebius")


def and_or(values: Tensor, p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """AND and OR interactions of the split ``v_and = (v+q)/2 + p``, ``v_or = (v+q)/2 - p``.

    ``I_or(S) = -sum_{T subset S} (-1)^{|S|-|T|} v_or(N \\ T)`` for non-empty ``S`` and
    ``I_or(empty) = v_or(empty)``. ``N \\ T`` is the bitwise complement of the mask, which is the
    last dimension read backwards.
    """
    n = players_of(values)
    if p.shape != values.shape or q.shape != values.shape:
        raise ValueError(f"p and q must have the games' shape {tuple(values.shape)}, "
                         f"got {tuple(p.shape)} and {tuple(q.shape)}")
    half = 0.5 * (values + q)
    v_and, v_or = half + p, half - p
    i_and = _transform(v_and, "moebius", n)
    # sum_{T subset S} (-1)^{|S|-|T|} v(N \ T) is the superset transform of v read at N \ S
    i_or = _transform(v_or, "moebius_t", n).flip(-1).neg()
    return i_and, torch.cat([v_or[..., :1], i_or[..., 1:]], dim=-1)


def reconstruct(I_and: Tensor, I_or: Tensor) -> Tensor:
    """The outputs that interactions explain (universal matching, Theorem 3.1):

    ``v(S) = sum_{T subset S} I_and(T) + I_or(empty) + sum_{T non-empty, T cap S non-empty} I_or(T)``.
    Exact inverse of ``harsanyi`` (with ``I_or = 0``) and of ``and_or`` when ``q = 0``.
    """
    n = players_of(I_and)
    if I_or.shape != I_and.shape:
        raise ValueError(f"I_and and I_or must have one shape, got {tuple(I_and.shape)} "
                         f"and {tuple(I_or.shape)}")
    or_rest = torch.cat([torch.zeros_like(I_or[..., :1]), I_or[..., 1:]], dim=-1)
    # sum over T meeting S = all non-empty T minus those inside the complement of S
    missed = _transform(or_rest, "zeta", n).flip(-1)
    return (_transform(I_and, "zeta", n) + I_or[..., :1]
            + or_rest.sum(-1, keepdim=True) - missed)


# --------------------------------------------------------------------------------------------
# the result type
# --------------------------------------------------------------------------------------------
@dataclass
class Interactions:
    """Interactions of a stack of games: the one result that knowledge and charts consume.

    ``I_and``, ``I_or``, ``values``, ``p``, ``q``: ``[..., 2**n]``; ``loss``, ``loss_start``:
    ``[...]``, the L1 objective ``sum_S |I_and(S)| + |I_or(S)|`` reached by sparsification and
    the one of the plain split ``p = q = 0`` (both before OR terms of order <= 1 are moved into
    AND); ``loss_bound``: a certified lower bound of the optimum of that objective (the exact
    optimiser's dual bound; 0 where nothing is certified). In AND-only mode ``I_or``, ``p`` and
    ``q`` are zero.
    """

    I_and: Tensor
    I_or: Tensor
    values: Tensor
    p: Tensor
    q: Tensor
    loss: Tensor
    loss_start: Tensor
    mode: str
    params: dict[str, Any] = field(default_factory=dict)
    loss_bound: Tensor | None = None

    def __post_init__(self) -> None:
        if self.loss_bound is None:  # results saved before certificates existed
            self.loss_bound = torch.zeros_like(self.loss)

    @property
    def gap(self) -> Tensor:
        """Relative gap ``(loss - loss_bound) / loss`` per game: how far from the optimum the
        extraction is proved to be (1 where nothing is certified)."""
        return relative_gap(self.loss, self.loss_bound)

    @property
    def n(self) -> int:
        return self.I_and.shape[-1].bit_length() - 1

    def stacked(self) -> Tensor:
        """``[..., 2, 2**n]`` with kind index 0 = AND, 1 = OR (the layout of knowledge)."""
        return torch.stack([self.I_and, self.I_or], dim=-2)

    def reconstruct(self) -> Tensor:
        return reconstruct(self.I_and, self.I_or)

    def cpu(self) -> "Interactions":
        """The same result with every tensor on the CPU (for saving)."""
        state = self.state_dict()
        return Interactions.from_state_dict(
            {k: v.cpu() if torch.is_tensor(v) else v for k, v in state.items()})

    def state_dict(self) -> dict[str, Any]:
        tensors = {k: getattr(self, k) for k in
                   ("I_and", "I_or", "values", "p", "q", "loss", "loss_start", "loss_bound")}
        return {**tensors, "mode": self.mode, "params": dict(self.params)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Interactions":
        return cls(**state)


def concatenate(parts: list[Interactions]) -> Interactions:
    """The results of disjoint blocks of games (``[G_i, ...]`` each) as one ``[sum G_i, ...]``
    result, as if solved together (every game is solved on its own): tensors concatenated,
    ``params`` combined: the largest ``gap`` and ``iterations_used``, per-game ``*_mean``
    weighted by games, ``games_kept_at_start`` summed, the longest ``seconds``; any other
    parameter must be the same in every part."""
    if not parts:
        raise ValueError("nothing to concatenate")
    if len({p.mode for p in parts}) > 1:
        raise ValueError(f"parts of different modes: {[p.mode for p in parts]}")
    states = [p.state_dict() for p in parts]
    tensors = {k: torch.cat([s[k] for s in states]) for k, v in states[0].items()
               if torch.is_tensor(v)}
    counts = [p.loss.numel() for p in parts]
    params: dict[str, Any] = {}
    for key in parts[0].params:
        values = [p.params.get(key) for p in parts]
        if key in ("gap", "iterations_used", "seconds"):
            params[key] = max(values)
        elif key.endswith("_mean"):
            params[key] = sum(v * c for v, c in zip(values, counts)) / max(1, sum(counts))
        elif key == "games_kept_at_start":
            params[key] = sum(values)
        elif any(v != values[0] for v in values):
            raise ValueError(f"parts differ in {key}: {values}")
        else:
            params[key] = values[0]
    return Interactions(**tensors, mode=parts[0].mode, params=params)


def relative_gap(loss: Tensor, bound: Tensor) -> Tensor:
    """``(loss - bound) / loss``; 0 where both are 0 (a game with no interactions at all)."""
    return torch.where(loss > 0, (loss - bound) / loss.clamp_min(1e-300), torch.zeros_like(loss))


def _move_low_orders(i_and: Tensor, i_or: Tensor) -> tuple[Tensor, Tensor]:
    """OR terms of the empty set and singletons are AND terms in disguise: move them over."""
    n = players_of(i_and)
    low = torch.zeros(1 << n, dtype=torch.bool, device=i_and.device)
    low[0] = True
    low[[1 << i for i in range(n)]] = True
    return i_and + i_or * low, i_or * ~low


def and_only(values: Tensor, params: dict[str, Any] | None = None) -> Interactions:
    """AND-only mode: plain Harsanyi interactions, no optimisation."""
    players_of(values)
    zero = torch.zeros_like(values)
    i_and = harsanyi(values)
    l1 = i_and.abs().sum(-1)
    return Interactions(i_and, zero.clone(), values, zero.clone(), zero.clone(), l1, l1.clone(),
                        "and", dict(params or {}), loss_bound=l1.clone())


def _lr_schedule(lr: float, iterations: int) -> list[float]:
    """Log-linear decay from ``lr`` to ``lr / 10`` over ``iterations`` steps (the reference)."""
    if iterations <= 1:
        return [lr] * iterations
    return [lr * 10 ** (-t / (iterations - 1)) for t in range(iterations)]


def l1_gradient(values: Tensor, p: Tensor, q: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Gradient of ``sum |I_and| + |I_or|`` with respect to ``p`` and ``q``, by hand.

    Four butterflies and no autograd graph: ``dL/dv_and = M^T sign(I_and)`` and the mirror
    image for the OR part, where ``M^T`` (a sum over supersets) is again a butterfly. Matches
    autograd through ``and_or`` exactly (``sign(0) = 0`` in both). With ``J = M^T v_or`` (so
    ``I_or(S) = -J(N \\ S)``, S non-empty) and ``e = sign(J)`` without ``e(N)``, the OR part of
    the gradient is ``M e``: no flips. The two sign transforms hold integers below ``2**21``,
    exact in float32, which halves their memory traffic.

    Games ``[B, 2**n]`` stored games-innermost (the transpose of a contiguous ``[2**n, B]``, as
    ``sparsify`` keeps them) are transformed in that layout: every butterfly pass then runs over
    contiguous stretches of at least ``B`` numbers, where the usual layout has stride-1 and
    stride-2 passes. The gradients come back in the layout of ``values``.
    """
    size = 1 << n
    inner = values.dim() == 2 and values.shape[0] > 1 and not values.is_contiguous() \
        and values.mT.is_contiguous()
    if inner:  # [R=1, 2**n, C=B]
        games = values.shape[0]
        as3 = lambda t: t.mT.contiguous().view(1, size, games)  # noqa: E731 (no copy if inner)
        rows, cols = 1, games
    else:      # [R=B, 2**n, C=1]
        as3 = lambda t: t.reshape(-1, size, 1)  # noqa: E731
        rows, cols = values.numel() // size, 1
    v3, p3, q3 = as3(values), as3(p), as3(q)
    dtype, device = values.dtype, values.device
    signs = torch.float32 if dtype in (torch.float64, torch.float32) else dtype
    shape = (2, rows, size, cols)
    x = _buffer("x", shape, dtype, device)
    torch.add(v3, q3, out=x[1]).mul_(0.5)                # half = (v + q) / 2
    torch.add(x[1], p3, out=x[0])                        # v_and
    x[1].sub_(p3)                                        # v_or
    or_empty = x[1][:, :1].sign()                        # I_or(empty) = v_or(empty)
    s = _buffer("s", shape, signs, device)
    if cols == 1:  # low bits by a small GEMM into a second buffer, then passes in place
        y = _buffer("y", shape, dtype, device)
        _butterfly(x[0], n, "moebius", out=y[0])         # I_and
        _butterfly(x[1], n, "moebius_t", out=y[1])       # J
        s.copy_(y)
    else:          # passes in place over long contiguous runs
        _passes(x[0], n, "moebius", range(n), cols)
        _passes(x[1], n, "moebius_t", range(n), cols)
        s.copy_(x)
    s.sign_()
    s[1][:, -1] = 0                                      # J(N) is v_or(empty)'s, not an I_or
    if cols == 1:
        g = _buffer("g", shape, signs, device)
        g_and = _butterfly(s[0], n, "moebius_t", out=g[0])
        g_or = _butterfly(s[1], n, "moebius", out=g[1])
    else:
        g_and = _passes(s[0], n, "moebius_t", range(n), cols)
        g_or = _passes(s[1], n, "moebius", range(n), cols)
    g_or[:, :1] += or_empty
    grad = _buffer("grad", shape, dtype, device)
    torch.sub(g_and, g_or, out=grad[0])
    torch.add(g_and, g_or, out=grad[1]).mul_(0.5)
    if inner:
        return grad[0].view(size, cols).mT, grad[1].view(size, cols).mT
    return grad[0].view(values.shape), grad[1].view(values.shape)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run the step loop on one CPU thread. Its operations are small and memory-bound; with
    several OpenMP threads each one is a barrier, and on a shared CPU a barrier waits for a
    descheduled thread: on a loaded 2-core machine 2 threads made a step 30-65x slower
    (benchmarks/README.md). Restores the thread count on exit (it is process-wide meanwhile)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


OPTIMIZERS = ("exact", "sgd", "adam")
EXTRACTIONS = ("independent", "joint")


def sparsify(values: Tensor, optimizer: str = "exact", tol: float = 1e-4, q_bound: float = 0.04,
             iterations: int = 10000, lr: float = 1e-5, momentum: float = 0.9,
             dtype: torch.dtype = torch.float64, merge_low_or: bool = True,
             progress: bool = False, workers: int = 1, rule: str = "canonical",
             support: Tensor | None = None, extraction: str = "independent") -> Interactions:
    """Extract sparse AND-OR interactions: the split ``p, q`` of each game that minimises
    ``sum_S |I_and(S)| + |I_or(S)|`` with ``|q| <= q_bound |v(N) - v(empty)|`` (book/method.md,
    section 2). Games are solved together but independently.

    ``optimizer="exact"`` (default): the certified optimum of this linear program (``exact.py``):
    every game stops at a relative gap ``(loss - loss_bound) / loss <= tol``, ``loss_bound`` being a
    lower bound of the optimum proved by a dual-feasible point. The solution is canonical: the one
    optimum of the objective with a fixed tie-break that prefers lower orders (``exact.tie_break``),
    whatever the solver's path. ``params`` records the largest gap reached and the LP rounds used.
    ``rule`` picks that point of the optimal face (``exact.RULES``: ``canonical``, lower orders
    first; ``reverse``, higher orders first; ``hash``, a fixed hash order only); ``support``
    (``[..., 2, 2**n]`` booleans, e.g. another rule's non-zero interactions) starts each game's
    column generation from those interactions; neither changes the optimal objective.
    ``extraction="joint"`` (exact only): the games ``[M, ..., 2**n]`` of ``M`` models are
    decomposed together along the first dimension, sample by sample, with a shared split and the
    joint loss (``joint.py``); ``loss``, ``loss_start`` and ``loss_bound`` are then each sample's
    joint loss (of the optimum, of the plain split, its certified bound), the same for its ``M``
    models. ``independent`` (default): every game alone.
    ``optimizer="sgd"``: the literature's reference (SGD, momentum 0.9, ``lr`` decayed
    log-linearly to ``lr/10`` over ``iterations`` steps, ``q`` clamped before each step).
    ``optimizer="adam"``: Adam on each game divided by its spread over masks, same schedule.
    The descent optimisers certify nothing: ``loss_bound`` is 0 for them.

    ``merge_low_or``: move the OR terms of the empty set and of singletons into AND after
    extraction (they are AND terms in disguise; the default). ``loss`` and ``loss_start`` (the
    plain split ``p = q = 0``) are measured before that move. Runs in ``dtype`` (float64) on the
    games' device; deterministic on the CPU.
    """
    n = players_of(values)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not q_bound >= 0:
        raise ValueError(f"q_bound must be >= 0, got {q_bound}")
    if optimizer == "exact" and not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}: it is the relative duality gap "
                         f"at which a game counts as solved")
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    if extraction == "joint" and (optimizer != "exact" or values.dim() < 2):
        raise ValueError("extraction='joint' needs optimizer='exact' and games [models, ..., 2**n]")
    v = values.detach().to(dtype)
    span = (v[..., -1] - v[..., 0]).abs()
    zero = torch.zeros_like(v)
    i_and, i_or = and_or(v, zero, zero)
    loss_start = i_and.abs().sum(-1) + i_or.abs().sum(-1)
    if extraction == "joint":
        from . import joint
        models, size = v.shape[0], v.shape[-1]
        flat = v.reshape(models, -1, size)
        with _one_cpu_thread(v.device):
            sol = joint.solve(flat, (q_bound * span).reshape(models, -1), tol=tol, rule=rule)
        p, q = sol.p.reshape(v.shape), sol.q.reshape(v.shape)
        loss = sol.loss.reshape(span.shape[1:]).expand(span.shape).clone()
        loss_bound = sol.loss_bound.reshape(span.shape[1:]).expand(span.shape).clone()
        loss_start = joint.joint_loss(i_and, i_or).expand(span.shape).clone()
        params = dict(tol=tol, rule=rule, extraction="joint", alpha=joint.ALPHA,
                      p_bound=joint.P_BOUND, **sol.summary())
    elif optimizer == "exact":
        from . import exact
        flat = v.reshape(-1, v.shape[-1])
        start = None if support is None else support.reshape(-1, 2, v.shape[-1])
        with _one_cpu_thread(v.device):
            sol = exact.solve(flat, (q_bound * span).reshape(-1), tol=tol, progress=progress,
                              workers=workers, rule=rule, support=start)
        p, q = sol.p.reshape(v.shape), sol.q.reshape(v.shape)
        loss, loss_bound = sol.loss.reshape(span.shape), sol.loss_bound.reshape(span.shape)
        params = dict(tol=tol, rule=rule, **sol.summary())
    else:
        p, q, loss, params = _sparsify_descent(v, iterations, lr, q_bound, optimizer, momentum,
                                               dtype, progress)
        loss_bound = torch.zeros_like(loss)
    i_and, i_or = and_or(v, p, q)
    if merge_low_or:
        i_and, i_or = _move_low_orders(i_and, i_or)
    params = dict(optimizer=optimizer, q_bound=q_bound, dtype=str(dtype),
                  merge_low_or=merge_low_or, **params)
    return Interactions(i_and, i_or, v, p, q, loss, loss_start, "and-or", params,
                        loss_bound=loss_bound)


def _sparsify_descent(values: Tensor, iterations: int, lr: float, q_bound: float,
                      optimizer: str, momentum: float, dtype: torch.dtype, progress: bool):
    """The descent optimisers (SGD, the reference, and scaled Adam), unchanged from the
    literature's recipe. Returns ``p, q, loss, params``.

    A game whose objective ends above the plain split's (``p = q = 0``) keeps the plain split:
    ``loss <= loss_start`` always, and ``params["games_kept_at_start"]`` counts such games.
    """
    n = players_of(values)
    if not (iterations >= 0 and lr > 0):
        raise ValueError(f"need iterations >= 0 and lr > 0; got {iterations}, {lr}")
    v = values.detach().to(dtype)
    span = (v[..., -1:] - v[..., :1]).abs()
    # Adam's step is in units of each game's spread; the L1 objective is homogeneous, so the
    # scaled problem has the scaled solution.
    scale = v.std(-1, keepdim=True).clamp_min(1e-12) if optimizer == "adam" \
        else torch.ones_like(span)
    v_scaled = v / scale
    bound = q_bound * span / scale
    p, q = torch.zeros_like(v), torch.zeros_like(v)
    # the optimisation runs on games stored games-innermost (see l1_gradient); the same numbers
    many = v.dim() >= 2 and v[..., 0].numel() > 1
    flat = (lambda t: t.reshape(-1, t.shape[-1]).mT.contiguous().mT) if many \
        else (lambda t: t)  # noqa: E731
    v_run, bound_run = flat(v_scaled), bound.reshape(-1, 1) if many else bound
    p_run, q_run = flat(p), flat(q)
    opt: torch.optim.Optimizer = (torch.optim.SGD([p_run, q_run], lr=lr, momentum=momentum)
                                  if optimizer == "sgd" else torch.optim.Adam([p_run, q_run], lr=lr))

    def objective() -> Tensor:
        i_and, i_or = and_or(v_scaled, p, q)
        return (i_and.abs().sum(-1) + i_or.abs().sum(-1)) * scale[..., 0]

    loss_start = objective()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=iterations, desc=f"sparsify {tuple(v.shape[:-1])} games, n={n}",
                   leave=False)
    low = -bound_run
    with _reused_buffers(), _one_cpu_thread(v.device):
        for step_lr in _lr_schedule(lr, iterations):
            torch.clamp(q_run, low, bound_run, out=q_run)
            for group in opt.param_groups:
                group["lr"] = step_lr
            p_run.grad, q_run.grad = l1_gradient(v_run, p_run, q_run, n)
            opt.step()
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    p_run.grad = q_run.grad = None
    torch.clamp(q_run, low, bound_run, out=q_run)
    p, q = p_run.reshape(v.shape).contiguous(), q_run.reshape(v.shape).contiguous()
    loss = objective()
    # A step size too large for a game's scale makes SGD climb instead of descend (the
    # reference lr does so on many of our n >= 10 games: benchmarks/README.md). Such a game
    # keeps the plain split p = q = 0, which is also exact; the count is reported.
    worse = loss > loss_start
    if worse.any():
        keep = (~worse)[..., None].to(dtype)
        p, q, loss = p * keep, q * keep, torch.where(worse, loss_start, loss)
    params = dict(iterations=iterations, lr=lr, momentum=momentum if optimizer == "sgd" else None,
                  games_kept_at_start=int(worse.sum()))
    return p * scale, q * scale, loss, params


def salient(I_and: Tensor, I_or: Tensor, tau: float = 0.05) -> Tensor:
    """Knowledge items: a signed int8 tensor ``[..., 2, 2**n]`` (kind 0 = AND, 1 = OR).

    ``+1`` / ``-1``: the term is salient with that sign, i.e. ``|I| >= tau * max |I|`` over all
    (kind, S) of its sample (ties count as salient); ``0``: not salient. A sample whose largest
    ``|I|`` is 0 has no items. Two models share an item only where their entries are equal and
    non-zero.
    """
    if not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    both = torch.stack([I_and, I_or], dim=-2)
    players_of(both)
    strength = both.abs()
    top = strength.flatten(-2).amax(-1)[..., None, None]
    keep = (strength >= tau * top) & (top > 0)
    return (torch.sign(both) * keep).to(torch.int8)


def item_list(items: Tensor) -> list[tuple[str, tuple[int, ...], int]]:
    """The items of one sample (``[2, 2**n]`` signed) as ``(kind, players, sign)`` tuples."""
    if items.dim() != 2 or items.shape[0] != 2:
        raise ValueError(f"item_list takes one sample's items [2, 2**n], got {tuple(items.shape)}")
    n = players_of(items.float())
    out = []
    for kind, mask in items.nonzero().tolist():
        out.append((("AND", "OR")[kind], tuple(i for i in range(n) if mask >> i & 1),
                    int(items[kind, mask])))
    return out


def popcount(n: int, device: torch.device | str | None = None) -> Tensor:
    """``|S|`` for every mask ``S`` in ``[0, 2**n)``."""
    masks = torch.arange(1 << n, device=device)
    return ((masks[:, None] >> torch.arange(n, device=device)) & 1).sum(-1)

