"""The interaction engine: AND (Harsanyi) and AND-OR interactions of games, exactly.

A *game* is the tensor of the ``2**n`` outputs ``v(x_T)`` of one model on one sample, indexed by
the integer mask ``T`` (bit ``i`` set = player ``i`` present); many games stack along leading
dimensions. Every transform here is the fast subset (Moebius) transform: ``n`` butterfly passes
over the last dimension, ``O(n 2**n)`` time and no ``2**n x 2**n`` matrix anywhere, gradients
included (the transpose of a butterfly is a butterfly). Definitions: book/method.md,
section 2.

Public API: ``harsanyi``, ``and_or``, ``reconstruct``, ``and_only``, ``l1_gradient``,
``Interactions`` (the one result type every later step consumes). The extraction of sparse
AND-OR interactions (``sparsify``) sits above this module and ``exact``; salience (which
interactions are knowledge) is ``knowledge``'s.
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


def butterfly(x: Tensor, n: int, op: str, out: Tensor | None = None) -> Tensor:
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
        return butterfly(x.contiguous(), n, op)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return butterfly(grad.contiguous(), ctx.n, _TRANSPOSE[ctx.op]), None, None


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
def reused_buffers():
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


def move_low_orders(i_and: Tensor, i_or: Tensor) -> tuple[Tensor, Tensor]:
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
        butterfly(x[0], n, "moebius", out=y[0])         # I_and
        butterfly(x[1], n, "moebius_t", out=y[1])       # J
        s.copy_(y)
    else:          # passes in place over long contiguous runs
        _passes(x[0], n, "moebius", range(n), cols)
        _passes(x[1], n, "moebius_t", range(n), cols)
        s.copy_(x)
    s.sign_()
    s[1][:, -1] = 0                                      # J(N) is v_or(empty)'s, not an I_or
    if cols == 1:
        g = _buffer("g", shape, signs, device)
        g_and = butterfly(s[0], n, "moebius_t", out=g[0])
        g_or = butterfly(s[1], n, "moebius", out=g[1])
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

