"""Sparse AND-OR interactions: the dispatch over the optimisers (book/method.md, section 2).

``sparsify`` finds each game's split ``p, q`` that minimises ``sum_S |I_and(S)| + |I_or(S)|``:
exactly with a certificate (``exact``, or ``joint`` for a sample's models together), or by the
literature's descent optimisers (SGD, scaled Adam), and returns one ``interactions.Interactions``.
It sits above the transforms (``interactions``) and the LP solvers, so the engine's layers point
one way: interactions <- exact, joint <- sparsify.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from whypretrain.engine import exact, joint
from whypretrain.engine.interactions import (Interactions, and_or, l1_gradient, move_low_orders, players_of,
                           reused_buffers)


def _lr_schedule(lr: float, iterations: int) -> list[float]:
    """Log-linear decay from ``lr`` to ``lr / 10`` over ``iterations`` steps (the reference)."""
    if iterations <= 1:
        return [lr] * iterations
    return [lr * 10 ** (-t / (iterations - 1)) for t in range(iterations)]


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
    _check(values, optimizer, tol, q_bound, extraction)
    v = values.detach().to(dtype)
    span = (v[..., -1] - v[..., 0]).abs()
    zero = torch.zeros_like(v)
    i_and, i_or = and_or(v, zero, zero)
    loss_start = i_and.abs().sum(-1) + i_or.abs().sum(-1)
    if extraction == "joint":
        p, q, loss, loss_bound, params = _sparsify_joint(v, span, q_bound, tol, rule, workers,
                                                         progress)
        loss_start = joint.joint_loss(i_and, i_or).expand(span.shape).clone()
    elif optimizer == "exact":
        p, q, loss, loss_bound, params = _sparsify_exact(v, span, q_bound, tol, progress,
                                                         workers, rule, support)
    else:
        p, q, loss, params = _sparsify_descent(v, iterations, lr, q_bound, optimizer, momentum,
                                               dtype, progress)
        loss_bound = torch.zeros_like(loss)
    i_and, i_or = and_or(v, p, q)
    if merge_low_or:
        i_and, i_or = move_low_orders(i_and, i_or)
    params = dict(optimizer=optimizer, q_bound=q_bound, dtype=str(dtype),
                  merge_low_or=merge_low_or, **params)
    return Interactions(i_and, i_or, v, p, q, loss, loss_start, "and-or", params,
                        loss_bound=loss_bound)


def _check(values: Tensor, optimizer: str, tol: float, q_bound: float, extraction: str) -> None:
    """Check ``sparsify``'s settings (and that ``values`` are games: ``[..., 2**n]``)."""
    players_of(values)
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


def _sparsify_exact(v: Tensor, span: Tensor, q_bound: float, tol: float, progress: bool,
                    workers: int, rule: str, support: Tensor | None):
    """Every game of ``v`` alone by ``exact.solve``. Returns ``p, q, loss, loss_bound, params``."""
    flat = v.reshape(-1, v.shape[-1])
    start = None if support is None else support.reshape(-1, 2, v.shape[-1])
    with _one_cpu_thread(v.device):
        sol = exact.solve(flat, (q_bound * span).reshape(-1), tol=tol, progress=progress,
                          workers=workers, rule=rule, support=start)
    p, q = sol.p.reshape(v.shape), sol.q.reshape(v.shape)
    loss, loss_bound = sol.loss.reshape(span.shape), sol.loss_bound.reshape(span.shape)
    return p, q, loss, loss_bound, dict(tol=tol, rule=rule, **sol.summary())


def _sparsify_joint(v: Tensor, span: Tensor, q_bound: float, tol: float, rule: str,
                    workers: int = 1, progress: bool = False):
    """The games ``[M, ..., 2**n]`` of ``M`` models by ``joint.solve``, sample by sample.
    Returns ``p, q`` and each sample's joint ``loss`` and ``loss_bound`` (the same for its
    models), and ``params``."""
    models, size = v.shape[0], v.shape[-1]
    flat = v.reshape(models, -1, size)
    with _one_cpu_thread(v.device):
        sol = joint.solve(flat, (q_bound * span).reshape(models, -1), tol=tol, rule=rule,
                          workers=workers, progress=progress)
    p, q = sol.p.reshape(v.shape), sol.q.reshape(v.shape)
    loss = sol.loss.reshape(span.shape[1:]).expand(span.shape).clone()
    loss_bound = sol.loss_bound.reshape(span.shape[1:]).expand(span.shape).clone()
    params = dict(tol=tol, rule=rule, extraction="joint", alpha=joint.ALPHA,
                  p_bound=joint.P_BOUND, **sol.summary())
    return p, q, loss, loss_bound, params


def _descend(opt: torch.optim.Optimizer, v_run: Tensor, p_run: Tensor, q_run: Tensor,
             bound_run: Tensor, n: int, lr: float, iterations: int, desc: str | None) -> None:
    """``iterations`` steps of ``opt`` on the L1 objective of games of ``n`` players, ``q``
    kept in ``[-bound, bound]``, the step size by ``_lr_schedule``; a progress bar titled
    ``desc`` unless it is None."""
    bar = None
    if desc is not None:
        from tqdm.auto import tqdm
        bar = tqdm(total=iterations, desc=desc, leave=False)
    low = -bound_run
    with reused_buffers(), _one_cpu_thread(v_run.device):
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
    desc = f"sparsify {tuple(v.shape[:-1])} games, n={n}" if progress else None
    _descend(opt, v_run, p_run, q_run, bound_run, n, lr, iterations, desc)
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
