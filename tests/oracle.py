"""Brute-force oracles, written straight from the definitions in book/method.md (O(3**n) loops).

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


def sparsification_lp(v: torch.Tensor, q_bound: float = 0.04, cost=None, solution: bool = False):
    """The optimum of the sparsification objective of one game, by a general LP solver.

    ``cost``: ``[2, 2**n]`` weights of ``|I_and(S)|`` and ``|I_or(S)|`` (all 1 by default: the
    plain objective). ``solution``: also return the optimal ``I_and, I_or``.

    Variables ``v_and``, ``v_or`` (free) and the absolute values of ``I_and = A v_and`` and
    ``I_or = B v_or``, with ``|v_and + v_or - v| <= q_bound |v(N) - v(empty)|`` (that is,
    ``q = v_and + v_or - v``). ``A`` and ``B`` are written from the definitions above, entry by
    entry, so nothing is shared with the engine. Solved by scipy's HiGHS.
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.optimize import linprog

    values = v.double().numpy()
    size = values.shape[0]
    full = size - 1
    a_rows, a_cols, a_vals, b_rows, b_cols, b_vals = [], [], [], [], [], []
    for s in range(size):
        for t in subsets(s):
            sign = (-1.0) ** (bin(s).count("1") - bin(t).count("1"))
            a_rows.append(s), a_cols.append(t), a_vals.append(sign)
            if s:
                b_rows.append(s), b_cols.append(full ^ t), b_vals.append(-sign)
    b_rows.append(0), b_cols.append(0), b_vals.append(1.0)
    A = sp.csr_matrix((a_vals, (a_rows, a_cols)), shape=(size, size))
    B = sp.csr_matrix((b_vals, (b_rows, b_cols)), shape=(size, size))
    eye, zero = sp.identity(size, format="csr"), sp.csr_matrix((size, size))
    # columns: v_and, v_or, I_and+, I_and-, I_or+, I_or-
    equal = sp.vstack([sp.hstack([A, zero, -eye, eye, zero, zero]),
                       sp.hstack([zero, B, zero, zero, -eye, eye])])
    box = sp.vstack([sp.hstack([eye, eye, zero, zero, zero, zero]),
                     sp.hstack([-eye, -eye, zero, zero, zero, zero])])
    bound = q_bound * abs(values[-1] - values[0])
    weights = np.ones((2, size)) if cost is None else np.asarray(cost, dtype=np.float64)
    cost = np.concatenate([np.zeros(2 * size), np.repeat(weights, 2, axis=0).reshape(-1)])
    result = linprog(cost, A_ub=box, b_ub=np.concatenate([values + bound, bound - values]),
                     A_eq=equal, b_eq=np.zeros(2 * size),
                     bounds=[(None, None)] * (2 * size) + [(0, None)] * (4 * size), method="highs",
                     options=dict(primal_feasibility_tolerance=1e-10,
                                  dual_feasibility_tolerance=1e-10))
    assert result.status == 0, result.message
    if not solution:
        return float(result.fun)
    x = result.x[2 * size:].reshape(4, size)
    return float(result.fun), torch.from_numpy(x[0] - x[1]), torch.from_numpy(x[2] - x[3])
