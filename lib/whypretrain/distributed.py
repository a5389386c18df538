"""Who does what when several processes run one command (``torchrun ... -m whypretrain``).

torchrun starts one process per device and tells each its ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` in the environment. Without them (one process, the usual
case) every function here is trivial: rank 0 of a world of 1, no process group, nothing waits.
With them, ``init`` joins the process group (nccl when the study runs on CUDA, gloo on the CPU)
and the pipeline divides its work with:

- ``shard(count)``: the contiguous block of ``count`` work units that this rank does;
- ``barrier()``: waits for every rank, however long, and raises as soon as another rank has
  failed (``fail``). It waits on the launcher's key-value store, not on a collective, so the
  slowest rank's training run never trips a collective's timeout, and a rank never waits
  forever on a dead one (on one node torchrun also stops the others when one fails; across
  nodes this is what stops them);
- ``agree(value)``: rank 0's value on every rank, for decisions read from disk (is this file
  there?) that every rank must take the same way;
- ``gather(obj)``: every rank's object on rank 0 (None elsewhere), tensors moved to the CPU.

Everything else travels through the workdir (runs, games, interactions), so with several nodes
it must be one shared folder. ``say(text)`` prints on rank 0 only. torch is imported by the
functions that use it, so the modules that print without torch (the book's runner, its build,
its assets) can print through ``say``.
"""
from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

# Collectives run only right after a ``barrier`` (every rank is there), so they are short: a
# timeout of minutes ends a rank stuck in one (its peer died between the two) instead of the
# default 10-30 minutes.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)
_FAILED = "whypretrain/failed"
_barriers = 0
BOOK_ENV = "WHYPRETRAIN_BOOK"  # set by the book's runner (execute) for the kernels it starts


def in_book() -> bool:
    """True inside a kernel the runner started for the book (no progress bars there, the
    book's chart renderer)."""
    return os.environ.get(BOOK_ENV, "") not in ("", "0")


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def rank() -> int:
    return _env("RANK", 0)


def world() -> int:
    return _env("WORLD_SIZE", 1)


def local_rank() -> int:
    return _env("LOCAL_RANK", 0)


def local_world() -> int:
    """Processes on this node (they share its CPU cores)."""
    return _env("LOCAL_WORLD_SIZE", 1)


def is_main() -> bool:
    """Rank 0: the one that writes shared files, prints and draws progress bars."""
    return rank() == 0


def say(text: str) -> None:
    """Print ``text`` on rank 0, flushed (so it comes before what a child process prints)."""
    if is_main():
        print(text, flush=True)


def device(resolved: str) -> str:
    """This rank's device for a study whose device resolves to ``resolved``: ``cuda:LOCAL_RANK``
    for ``cuda`` under torchrun (an explicit ``cuda:K`` stays as given)."""
    if resolved == "cuda" and world() > 1:
        return f"cuda:{local_rank()}"
    return resolved


def init(resolved_device: str | None = None) -> None:
    """Join the process group when torchrun started several processes (idempotent; nothing to
    do for one process). ``resolved_device``: the study's device (``training.device_of``);
    CUDA picks nccl, anything else gloo."""
    import torch
    import torch.distributed as dist

    if world() == 1 or dist.is_initialized():
        return
    if resolved_device is None:
        resolved_device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = resolved_device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device(resolved_device)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)


def finish() -> None:
    """Leave the process group (the end of a command)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _store():
    import torch.distributed as dist

    init()
    return dist.distributed_c10d._get_default_store()


def shard(count: int, rank_: int | None = None, world_: int | None = None) -> range:
    """The contiguous block of ``range(count)`` that ``rank_`` (this rank) does: the blocks of
    ranks 0..world-1 follow each other, differ in size by at most one (the first ones are the
    larger), and cover every unit once. A rank beyond the units gets an empty block."""
    r = rank() if rank_ is None else rank_
    w = world() if world_ is None else world_
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is not in a world of {w}")
    size, extra = divmod(count, w)
    start = r * size + min(r, extra)
    return range(start, start + size + (r < extra))


def fail(message: str) -> None:
    """Tell the other ranks that this one failed (they raise at their next ``barrier``)."""
    import torch.distributed as dist

    if world() == 1 or not dist.is_initialized():
        return
    try:
        store = _store()
        if not store.check([_FAILED]):  # the first failure is the one to report
            store.set(_FAILED, f"rank {rank()}: {message}")
    except Exception:  # noqa: BLE001 -- the store may be gone already; the launcher stops us
        pass


def barrier(poll: float = 0.05, max_poll: float = 2.0) -> None:
    """Wait until every rank has reached this barrier (the n-th call on each rank meets the
    n-th call on the others); raise RuntimeError when a rank has failed meanwhile."""
    global _barriers
    if world() == 1:
        return
    store = _store()
    _barriers += 1
    key = f"whypretrain/barrier/{_barriers}"
    store.add(key, 1)
    while store.add(key, 0) < world():
        if store.check([_FAILED]):
            raise RuntimeError(f"stopped: {store.get(_FAILED).decode()}")
        time.sleep(poll)
        poll = min(2 * poll, max_poll)


def agree(value: Any) -> Any:
    """Rank 0's ``value``, on every rank."""
    if world() == 1:
        return value
    import torch.distributed as dist

    barrier()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _to_cpu(obj: Any) -> Any:
    import torch

    if torch.is_tensor(obj):
        return obj.cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def gather(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (tensors moved to the CPU), in rank order, on rank 0; None on the
    others."""
    obj = _to_cpu(obj)
    if world() == 1:
        return [obj]
    import torch.distributed as dist

    barrier()
    out: list[Any] | None = [None] * world() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out
