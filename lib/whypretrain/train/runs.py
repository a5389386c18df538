"""Runs are files: one training run lives in ``<workdir>/runs/<hash>/``.

The hash covers every parameter that changes the run's result (its kind, seed, data, model,
schedule and its parent run's hash), so a finished run is found again and reused, and a change
of any of them makes a new run. A run folder holds:

- ``params.json``: the run's parameters, seed, parent, library version and git commit;
- ``metrics.csv``: one row per epoch: epoch, train_loss, train_acc, test_loss, test_acc;
- ``epoch-NNN.safetensors``: the model's state dict after epoch NNN (epoch 0 = before training);
- ``resume.pt``: optimizer and RNG state after the last checkpointed epoch (for resuming);
- ``done``: the completion marker, with the epochs and the seconds training took (summed over
  the sessions of a resumed run; absent for a run that did not train, as a weights file);
- ``manifest.json``: the size and sha256 of each of these files (``integrity``), checked when
  a file is read; a run with a damaged file is not done, and is trained again from its start
  (the same numbers: training is deterministic). Runs written before records existed have
  ``checksums.json`` (the checkpoints' sha256), still honoured.

Every file is written by ``integrity.write`` (``atomic_write``): to a temporary name, recorded,
then renamed (``os.replace``), so a crash leaves either the old file or the new one, never a
half-written file under the real name.

Several processes on one workdir (two commands started at once, a notebook next to a command)
share the work through ``locked(folder)``: the process that holds a run's or a results folder's
lock computes it, the others wait and then find it done. The lock file is ``<folder>/.lock``;
the lock is the operating system's (``flock``), so a process that dies, killed or not, releases
it and leaves no stale lock behind.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch

from whypretrain import __version__, integrity
from whypretrain.provenance import git_commit

KINDS = ("pretrain", "probe", "finetune", "scratch")
_CHECKPOINT = re.compile(r"epoch-\d{3}\.safetensors")
METRICS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
# Bump when training code changes in a way that changes results: old runs are then not reused.
RUN_FORMAT = 2  # 2: normalisation statistics independent of the thread count


def run_hash(spec: dict[str, Any]) -> str:
    text = json.dumps({**spec, "run_format": RUN_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically and record it in the folder's manifest
    (``integrity.write``)."""
    integrity.write(path, payload)


def atomic_save(path: Path, obj: Any) -> None:
    """``torch.save(obj, path)``, written with ``atomic_write``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def load_checked(path: Path, command: str | None = None) -> Any:
    """``torch.load`` of a file written by ``atomic_save``, checked against its record first;
    ``integrity.Damaged`` (naming ``command``) when it differs or does not load."""
    payload = integrity.read_bytes(path, command)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- a file written before records existed
        raise integrity.Damaged(path, f"it does not load: {err}", command) from None


@contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (waiting, with a line on stderr, while another
    process holds it). What the block computes must be checked again inside it: the process
    that held the lock before may have computed it meanwhile."""
    from filelock import FileLock, Timeout
    from tqdm.auto import tqdm

    lock = FileLock(str(Path(folder) / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        # through tqdm, so that the line does not land inside a progress bar
        tqdm.write(f"waiting for another process that computes {folder}", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class Run:
    """One training run on disk. Create with ``Run.create(workdir, spec)`` or open an existing
    folder with ``Run(path)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        params_file = self.path / "params.json"
        if not params_file.is_file():
            raise FileNotFoundError(f"{self.path} is not a run: it has no params.json")
        try:
            self.params: dict[str, Any] = json.loads(integrity.read_bytes(params_file))
        except json.JSONDecodeError as err:
            raise integrity.Damaged(params_file, f"not JSON: {err}") from None
        self.kind: str = self.params["kind"]

    @classmethod
    def create(cls, workdir: str | Path, spec: dict[str, Any]) -> "Run":
        """The run of ``spec`` (a dict with at least ``kind``, ``seed``, ``num_classes``): the
        existing folder when there is one, else a new folder with its params.json."""
        if spec["kind"] not in KINDS:
            raise ValueError(f"run kind {spec['kind']!r} is not one of {KINDS}")
        path = Path(workdir) / "runs" / run_hash(spec)
        if not integrity.intact(path / "params.json"):  # new, or damaged: written again
            path.mkdir(parents=True, exist_ok=True)
            record = {**spec, "hash": path.name, "version": __version__, "git": git_commit()}
            atomic_write(path / "params.json",
                         json.dumps(record, indent=2, sort_keys=True, default=str).encode())
        return cls(path)

    def __repr__(self) -> str:
        return f"Run({self.kind}, seed={self.params.get('seed')}, {self.path})"

    # --- state ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Finished, and every file as recorded (a damaged run is trained again)."""
        return (self.path / "done").is_file() and self.intact()

    def intact(self) -> bool:  # every file as recorded
        return not integrity.problems(self.path)

    def reset(self) -> None:
        """Remove what training wrote (not an intact params.json): train from the start."""
        integrity.clear(self.path, keep=("params.json",))

    def mark_done(self, seconds: float | None = None) -> None:
        record = {"epochs": self.epochs(), **({} if seconds is None else {"seconds": seconds})}
        atomic_write(self.path / "done", json.dumps(record).encode())

    @property
    def seconds(self) -> float | None:
        """Seconds the run's training took (None: not done, or not recorded)."""
        if not self.done:
            return None
        return json.loads(integrity.read_bytes(self.path / "done")).get("seconds")

    @property
    def metrics(self) -> pd.DataFrame:
        f = self.path / "metrics.csv"
        if not f.is_file():
            return pd.DataFrame(columns=list(METRICS))
        return pd.read_csv(io.BytesIO(integrity.read_bytes(f)))

    def write_metrics(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        pd.DataFrame(rows, columns=list(METRICS)).to_csv(buf, index=False)
        atomic_write(self.path / "metrics.csv", buf.getvalue().encode())

    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / f"epoch-{epoch:03d}.safetensors"

    def _checksums(self) -> dict[str, str]:
        """Each checkpoint's sha256 (a run written before records: its checksums.json)."""
        recs = integrity.records(self.path)
        if recs is not None:
            return {n: r["sha256"] for n, r in recs.items() if _CHECKPOINT.fullmatch(n)}
        f = self.path / "checksums.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def epochs(self) -> list[int]:
        """Epochs that have a checkpoint (recorded and present on disk)."""
        names = self._checksums()
        return sorted(int(n[6:9]) for n in names if (self.path / n).is_file())

    # --- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, epoch: int, model: torch.nn.Module, resume: dict | None = None,
                        keep_previous: bool = True) -> None:
        """Write the model after ``epoch`` (and the state needed to resume from it)."""
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        payload = save(state, metadata={"epoch": str(epoch), "kind": self.kind})
        path = self.checkpoint_path(epoch)
        # Order matters for a crash at any point: the checkpoint (with its record), then the
        # resume state that points at it, and only then the removal of older checkpoints.
        atomic_write(path, payload)
        if resume is not None:
            atomic_save(self.path / "resume.pt", {**resume, "epoch": epoch})
        if not keep_previous:
            for old in self.path.glob("epoch-*.safetensors"):
                if old.name != path.name:
                    integrity.remove(old)

    def load_state(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """The state dict of ``epoch`` (the last when None), checked against its sha256."""
        from safetensors.torch import load

        epochs = self.epochs()
        if not epochs:
            raise FileNotFoundError(f"run {self.path} has no checkpoint")
        epoch = epochs[-1] if epoch is None else epoch
        path = self.checkpoint_path(epoch)
        if epoch not in epochs:
            raise FileNotFoundError(f"no checkpoint {path}; this run has epochs {epochs}")
        payload = integrity.read_bytes(path)
        if hashlib.sha256(payload).hexdigest() != self._checksums()[path.name]:  # checksums.json
            raise integrity.Damaged(path, "its sha256 differs from the recorded one")
        try:
            return load(payload)
        except Exception as err:  # noqa: BLE001
            raise integrity.Damaged(path, f"it does not load: {err}") from None

    def load_resume(self) -> dict | None:
        f = self.path / "resume.pt"
        if not f.is_file():
            return None
        return load_checked(f)

    def load_model(self, epoch: int | None = None, device: str = "cpu") -> torch.nn.Module:
        """The run's model after ``epoch`` (the final one when None), in eval mode, with this
        run's head (the target classes for probe, finetune and scratch)."""
        from whypretrain.train import models

        params = self.params
        weights = models.weights_file(params) if self.kind == "pretrain" else None
        if weights is not None:  # the weights file is the run
            model = models.build({**params, "weights": ""}, params["num_classes"])
            models.load_backbone_weights(model, weights)
        else:
            model = models.build({**params, "weights": ""}, params["num_classes"])
            state = self.load_state(epoch)
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise RuntimeError(f"checkpoint {self.checkpoint_path(epoch or self.epochs()[-1])}"
                                   f" does not fit the {params['arch']} model of this run: "
                                   f"{err}") from None
        return model.to(device).eval()
