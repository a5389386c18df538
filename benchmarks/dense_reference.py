"""The dense-matrix baseline: AND / AND-OR interactions as the interaction literature computes them.

The literature's research code builds a ``2**n x 2**n`` matrix for each transform and multiplies
the games by it; sparsification differentiates that product with autograd and steps with SGD.
This file does the same maths (book/method.md, section 2) so that ``benchmarks/engine.py`` can time it
against ``whypretrain.engine.interactions`` on the same games:

- ``and_matrix(n)``: ``M[S, T] = (-1)^{|S|-|T|}`` for ``T`` a subset of ``S``, else 0, so that
  ``I_and = v_and @ M.T``.
- ``or_matrix(n)``: row ``S`` (non-empty) holds ``-(-1)^{|S|-|T|}`` at column ``N \\ T`` for every
  ``T`` subset of ``S`` (built from complements); row ``empty`` picks ``v_or(empty)``. So
  ``I_or = v_or @ M_or.T``.
- ``sparsify``: ``p, q`` learnt with ``torch.optim.SGD(momentum=0.9)``, the learning rate decayed
  log-linearly from ``lr`` to ``lr/10`` (``np.logspace``), ``q`` clamped to
  ``|q| <= q_bound |v(N) - v(empty)|`` before each step, loss ``sum |I_and| + |I_or|`` over all
  games, gradients by autograd through the two matrix products; at the end the OR terms of order
  0 and 1 are moved into AND.

The literature fills the matrices row by row in Python loops (``*_loop`` below, kept to time it);
the benchmark builds them vectorised, which gives the same matrices faster, and reports the build
time apart from the transform and sparsification times. Not part of the library: a test oracle and
a baseline only. At ``n = 14`` one float64 matrix is 2 GiB; at ``n = 16`` it would be 32 GiB.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _popcount(masks: Tensor) -> Tensor:
    bits = torch.zeros_like(masks)
    rest = masks.clone()
    while bool((rest > 0).any()):
        bits += rest & 1
        rest >>= 1
    return bits


def and_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``M[S, T] = (-1)^{|S|-|T|}`` if ``T`` is a subset of ``S``, else 0 (vectorised build)."""
    masks = torch.arange(1 << n, dtype=torch.int32)
    pop = _popcount(masks)
    subset = (masks[:, None] & masks[None, :]) == masks[None, :]          # T subset of S
    sign = 1 - 2 * ((pop[:, None] - pop[None, :]) & 1)                   # (-1)^{|S|-|T|}
    return torch.where(subset, sign, 0).to(dtype)


def or_matrix(n: int, dtype: torch.dtype = torch.float64, and_m: Tensor | None = None) -> Tensor:
    """Rows ``S != empty``: ``-(-1)^{|S|-|T|}`` at column ``N \\ T`` (``T`` subset of ``S``);
    row ``empty``: 1 at column ``empty``."""
    m = and_matrix(n, dtype) if and_m is None else and_m
    # column N \ T of the complement-indexed matrix is column T of M, read backwards
    out = -m.flip(1)
    out[0] = 0
    out[0, 0] = 1
    return out


def and_matrix_loop(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The same matrix filled the literature's way: one Python iteration per row ``S``."""
    size = 1 << n
    all_masks = torch.tensor([[(t >> i) & 1 for i in range(n)] for t in range(size)],
                             dtype=torch.bool)
    mat = torch.zeros(size, size, dtype=dtype)
    for s in range(size):
        mask_s = all_masks[s]
        inside = ~(all_masks & ~mask_s).any(dim=1)                         # T subset of S
        order_diff = mask_s.sum() - all_masks[inside].sum(dim=1)
        mat[s, inside] = torch.pow(-1.0, order_diff).to(dtype)
    return mat


def harsanyi(values: Tensor, and_m: Tensor) -> Tensor:
    return values @ and_m.T


def and_or(values: Tensor, p: Tensor, q: Tensor, and_m: Tensor, or_m: Tensor
           ) -> tuple[Tensor, Tensor]:
    half = 0.5 * (values + q)
    return (half + p) @ and_m.T, (half - p) @ or_m.T


def sparsify(values: Tensor, and_m: Tensor, or_m: Tensor, iterations: int = 10000,
             lr: float = 1e-5, q_bound: float = 0.04, momentum: float = 0.9) -> dict:
    """The reference sparsification on ``values [B, 2**n]``; returns I_and, I_or, p, q and the
    per-game objective ``loss`` (before moving low-order OR terms, as ``sparsify.sparsify``)."""
    v = values.detach().to(and_m.dtype)
    bound = q_bound * (v[:, -1:] - v[:, :1]).abs()
    p = torch.zeros_like(v, requires_grad=True)
    q = torch.zeros_like(v, requires_grad=True)
    opt = torch.optim.SGD([p, q], lr=lr, momentum=momentum)
    schedule = np.logspace(np.log10(lr), np.log10(lr) - 1, iterations) if iterations > 1 \
        else [lr] * iterations
    for step_lr in schedule:
        with torch.no_grad():
            q.data = torch.clamp(q.data, -bound, bound)
        for group in opt.param_groups:
            group["lr"] = float(step_lr)
        i_and, i_or = and_or(v, p, q, and_m, or_m)
        loss = i_and.abs().sum() + i_or.abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        q.data = torch.clamp(q.data, -bound, bound)
        i_and, i_or = and_or(v, p, q, and_m, or_m)
        per_game = i_and.abs().sum(-1) + i_or.abs().sum(-1)
        n = v.shape[-1].bit_length() - 1
        low = torch.zeros(1 << n, dtype=torch.bool)
        low[0] = True
        low[[1 << i for i in range(n)]] = True
        i_and, i_or = i_and + i_or * low, i_or * ~low
    return dict(I_and=i_and, I_or=i_or, p=p.detach(), q=q.detach(), loss=per_game)
