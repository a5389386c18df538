"""Brute-force oracles, written straight from the definitions in method.md (O(3**n) loops).

Slow on purpose: they are the ground truth the fast engine is tested against.
"""
from __future__ import annotations

import torch


def subsets(mask: int):
    """Every subset of ``mask`` (as a mask), by the standard sub-mask walk."""
    sub = mask
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & mask


def harsanyi(v: torch.Tensor) -> torch.Tensor:
    """I(S) = sum_{T subset S} (-1)^{|S|-|T|} v(T), for one game [2**n]."""
    out = torch.zeros_like(v)
    for s in range(v.shape[-1]):
        out[s] = sum((-1) ** (bin(s).count("1") - bin(t).count("1")) * v[t] for t in subsets(s))
    return out


def and_or(v: torch.Tensor, p: torch.Tensor, q: torch.Tensor):
    size = v.shape[-1]
    full = size - 1
    v_and = 0.5 * (v + q) + p
    v_or = 0.5 * (v + q) - p
    i_and = harsanyi(v_and)
    i_or = torch.zeros_like(v)
    for s in range(size):
        if s == 0:
            i_or[s] = v_or[0]
            continue
        i_or[s] = -sum((-1) ** (bin(s).count("1") - bin(t).count("1")) * v_or[full ^ t]
                       for t in subsets(s))
    return i_and, i_or


def reconstruct(i_and: torch.Tensor, i_or: torch.Tensor) -> torch.Tensor:
    """v(S) = sum_{T subset S} I_and(T) + I_or(empty) + sum_{T != empty, T cap S != empty} I_or(T)."""
    size = i_and.shape[-1]
    out = torch.zeros_like(i_and)
    for s in range(size):
        total = sum(i_and[t] for t in subsets(s)) + i_or[0]
        total = total + sum(i_or[t] for t in range(1, size) if t & s)
        out[s] = total
    return out
