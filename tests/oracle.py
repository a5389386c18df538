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
    from scipy.optimize import linprog

    values = v.double().numpy()
    size = values.shape[0]
    equal, box, bound = _lp_matrices(values, q_bound)
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


def joint_lp(v: torch.Tensor, q_bound: float = 0.04, p_bound: float = 0.5, alpha: float = 0.1):
    """The optimum of the joint extraction's loss for the games ``v`` ``[M, 2**n]`` of one sample
    (book/method.md, section 2, "Joint extraction"), by a general LP solver.

    Variables, straight from the definitions: the shared ``p``, each model's own ``p_i`` and
    ``q_i`` (boxes ``p_bound`` and ``q_bound`` times ``|v_i(N) - v_i(empty)|``), the ``+``/``-``
    parts of every ``I_i(kind, S)`` and ``t(kind, S)``. ``I_and_i(S)`` and ``I_or_i(S)`` are written
    entry by entry in ``p, p_i, q_i`` from ``v_and_i = (v_i + q_i) / 2 + p + p_i`` and
    ``v_or_i = (v_i + q_i) / 2 - p - p_i``. Returns the optimum and, per model, ``I_and, I_or``
    and ``q``.
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.optimize import linprog

    values = v.double().numpy()
    models, size = values.shape
    full = size - 1
    # columns: p [size], p_i [M, size], q_i [M, size], Ip [M, 2, size], In [M, 2, size], t [2, size]
    col_p = lambda s: s  # noqa: E731
    col_pi = lambda i, s: size + i * size + s  # noqa: E731
    col_q = lambda i, s: size + models * size + i * size + s  # noqa: E731
    col_ip = lambda i, k, s: size + 2 * models * size + (i * 2 + k) * size + s  # noqa: E731
    col_in = lambda i, k, s: col_ip(i, k, s) + 2 * models * size  # noqa: E731
    col_t = lambda k, s: size + 6 * models * size + k * size + s  # noqa: E731
    columns = size + 6 * models * size + 2 * size
    rows, cols, vals, rhs = [], [], [], []
    for i in range(models):
        for k in range(2):
            for s in range(size):
                r = len(rhs)
                constant = 0.0
                # I_and(S) = sum_{T subset S} (-1)^{|S|-|T|} v_and(T); I_or(S) = -sum ... v_or(N \ T),
                # I_or(empty) = v_or(empty); v_and = v/2 + q/2 + p + p_i, v_or = v/2 + q/2 - p - p_i
                terms = ([(t, (-1.0) ** (bin(s).count("1") - bin(t).count("1"))) for t in subsets(s)]
                         if k == 0 else
                         ([(0, 1.0)] if s == 0 else
                          [(full ^ t, -(-1.0) ** (bin(s).count("1") - bin(t).count("1")))
                           for t in subsets(s)]))
                for t, sign in terms:
                    side = 1.0 if k == 0 else -1.0
                    rows += [r, r, r]
                    cols += [col_p(t), col_pi(i, t), col_q(i, t)]
                    vals += [sign * side, sign * side, sign * 0.5]
                    constant += sign * 0.5 * values[i, t]
                # sum(...) - I+ + I- = -constant
                rows += [r, r]
                cols += [col_ip(i, k, s), col_in(i, k, s)]
                vals += [-1.0, 1.0]
                rhs.append(-constant)
    equal = sp.csr_matrix((vals, (rows, cols)), shape=(len(rhs), columns))
    # t(k, S) >= I+ + I- for every model
    rows, cols, vals = [], [], []
    for i in range(models):
        for k in range(2):
            for s in range(size):
                r = (i * 2 + k) * size + s
                rows += [r, r, r]
                cols += [col_ip(i, k, s), col_in(i, k, s), col_t(k, s)]
                vals += [1.0, 1.0, -1.0]
    upper = sp.csr_matrix((vals, (rows, cols)), shape=(models * 2 * size, columns))
    cost = np.zeros(columns)
    cost[size + 2 * models * size:size + 6 * models * size] = alpha
    cost[size + 6 * models * size:] = 1 - alpha
    span = np.abs(values[:, -1] - values[:, 0])
    bounds = ([(None, None)] * size
              + [(-p_bound * span[i], p_bound * span[i]) for i in range(models) for _ in range(size)]
              + [(-q_bound * span[i], q_bound * span[i]) for i in range(models) for _ in range(size)]
              + [(0, None)] * (4 * models * size + 2 * size))
    result = linprog(cost, A_ub=upper, b_ub=np.zeros(upper.shape[0]), A_eq=equal,
                     b_eq=np.array(rhs), bounds=bounds, method="highs",
                     options=dict(primal_feasibility_tolerance=1e-10,
                                  dual_feasibility_tolerance=1e-10))
    assert result.status == 0, result.message
    x = result.x
    plus = x[size + 2 * models * size:size + 4 * models * size].reshape(models, 2, size)
    minus = x[size + 4 * models * size:size + 6 * models * size].reshape(models, 2, size)
    inter = torch.from_numpy(plus - minus)
    q = torch.from_numpy(x[size + models * size:size + 2 * models * size].reshape(models, size))
    return float(result.fun), inter[:, 0], inter[:, 1], q


def face_range(v: torch.Tensor, kind: int, s: int, q_bound: float = 0.04, rel: float = 1e-9):
    """The lowest and highest ``I_and(S)`` (``kind`` 0) or ``I_or(S)`` (1) over the optimal face
    of one game's sparsification LP: the same variables as ``sparsification_lp``, with the
    objective bounded by ``(1 + rel)`` times its optimum, and ``+-`` the term minimised. Solved by
    scipy's HiGHS, two LPs per term."""
    import numpy as np
    from scipy.optimize import linprog

    opt = sparsification_lp(v, q_bound)
    values = v.double().numpy()
    size = values.shape[0]
    equal, box, bound = _lp_matrices(values, q_bound)
    budget = np.concatenate([np.zeros(2 * size), np.ones(4 * size)])[None]
    import scipy.sparse as sp
    A_ub = sp.vstack([box, sp.csr_matrix(budget)])
    b_ub = np.concatenate([values + bound, bound - values, [opt * (1 + rel)]])
    out = []
    for sign in (1.0, -1.0):
        cost = np.zeros(6 * size)
        plus = 2 * size + (0 if kind == 0 else 2 * size) + s
        cost[plus], cost[plus + size] = sign, -sign
        result = linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=equal, b_eq=np.zeros(2 * size),
                         bounds=[(None, None)] * (2 * size) + [(0, None)] * (4 * size),
                         method="highs", options=dict(primal_feasibility_tolerance=1e-10,
                                                      dual_feasibility_tolerance=1e-10))
        assert result.status == 0, result.message
        out.append(sign * result.fun)
    return out[0], out[1]


def _lp_matrices(values, q_bound: float):
    """``sparsification_lp``'s constraints: the equalities defining ``I_and, I_or`` from
    ``v_and, v_or`` (entry by entry from the definitions), the box ``|v_and + v_or - v| <= b``
    (as two ``<=`` blocks), and ``b``. Columns: ``v_and, v_or, I_and+, I_and-, I_or+, I_or-``."""
    import scipy.sparse as sp

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
    equal = sp.vstack([sp.hstack([A, zero, -eye, eye, zero, zero]),
                       sp.hstack([zero, B, zero, zero, -eye, eye])])
    box = sp.vstack([sp.hstack([eye, eye, zero, zero, zero, zero]),
                     sp.hstack([-eye, -eye, zero, zero, zero, zero])])
    return equal, box, q_bound * abs(values[-1] - values[0])
