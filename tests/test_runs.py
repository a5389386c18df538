"""Runs on disk: atomic files, checksummed checkpoints, corrupt or mismatched ones refused;
one workdir shared by several processes (the folder locks)."""
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from whypretrain.train import models, runs
from whypretrain import presets

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "lib")}

SPEC = dict(kind="scratch", seed=0, arch="smallcnn", source="mnist", target="uci",
            num_classes=10, epochs=2)


@pytest.fixture
def saved_run(tmp_path):
    run = runs.Run.create(tmp_path, SPEC)
    torch.manual_seed(0)
    model = models.build(presets.resolve("default"), 10)
    for epoch in (0, 1, 2):
        run.save_checkpoint(epoch, model)
        with torch.no_grad():
            model.head.bias.add_(1.0)
    run.write_metrics([dict(epoch=e, train_loss=1.0, train_acc=0.5, test_loss=1.0,
                            test_acc=0.5) for e in (0, 1, 2)])
    run.mark_done()
    return run, model


def test_run_folder_layout(saved_run):
    run, _ = saved_run
    assert run.path.name == runs.run_hash(SPEC) and run.path.parent.name == "runs"
    params = json.loads((run.path / "params.json").read_text())
    assert params["kind"] == "scratch" and params["hash"] == run.path.name
    assert "version" in params and "git" in params
    assert run.epochs() == [0, 1, 2] and run.done
    assert run.metrics.test_acc.tolist() == [0.5] * 3
    assert not list(run.path.glob(".*tmp*"))  # no temporary file left behind
    assert runs.Run(run.path).params == run.params


def test_load_model_default_is_last_epoch_in_eval_mode(saved_run):
    run, model = saved_run
    loaded = run.load_model()
    assert not loaded.training
    expected = model.head.bias - 1.0  # the bias was bumped after the last save
    assert torch.equal(loaded.head.bias, expected)
    assert torch.allclose(run.load_model(0).head.bias, expected - 2.0, atol=1e-6)


def test_corrupt_checkpoint_is_reported_by_path(saved_run):
    run, _ = saved_run
    path = run.checkpoint_path(1)
    payload = bytearray(path.read_bytes())
    payload[-5] ^= 0xFF  # one flipped bit in the tensor data: still parses, must not load
    path.write_bytes(bytes(payload))
    with pytest.raises(ValueError, match=str(path)):
        run.load_model(1)
    run.load_model(2)  # the others are fine


def test_truncated_checkpoint_is_reported_by_path(saved_run):
    run, _ = saved_run
    path = run.checkpoint_path(2)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=str(path)):
        run.load_model()


def test_mismatched_checkpoint_is_reported_by_path(saved_run):
    run, _ = saved_run
    path = run.checkpoint_path(2)
    payload = save({"head.weight": torch.zeros(3, 3)})
    path.write_bytes(payload)
    recs = json.loads((run.path / "manifest.json").read_text())
    recs[path.name] = {"size": len(payload), "sha256": runs.hashlib.sha256(payload).hexdigest()}
    (run.path / "manifest.json").write_text(json.dumps(recs))
    with pytest.raises(RuntimeError, match=str(path)):
        run.load_model()


def test_missing_epoch_is_an_error(saved_run):
    with pytest.raises(FileNotFoundError, match="epoch-007"):
        saved_run[0].load_model(7)


def test_atomic_write_leaves_old_file_on_crash(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    runs.atomic_write(target, b"old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(runs.integrity.os, "replace", boom)
    with pytest.raises(OSError):
        runs.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        runs.Run.create(tmp_path, {**SPEC, "kind": "distill"})
    assert not (tmp_path / "runs").exists()


def test_a_lock_held_by_a_killed_process_does_not_block(tmp_path):
    """The lock is the operating system's: killing its holder (SIGKILL, no clean-up) frees it."""
    from filelock import FileLock, Timeout

    code = ("import sys, time\nfrom whypretrain.train.runs import locked\n"
            "with locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 300)  # at most 5 min
        assert ready and holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):  # held: another process would wait here
            FileLock(str(tmp_path / ".lock")).acquire(timeout=0)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert holder.returncode == -9
    lock = FileLock(str(tmp_path / ".lock"))
    lock.acquire(timeout=0)  # free at once, although the lock file is still there
    lock.release()
    with runs.locked(tmp_path):
        pass


@pytest.mark.slow
def test_two_processes_on_one_workdir_compute_each_run_and_result_once(tmp_path):
    """Two `whypretrain analyze` on one workdir, both started while the test holds the lock of
    their first run (so both must wait: no race on who starts first); once it is released,
    every training run, the games and the interactions are computed by one of them (its
    progress bar), the other waits for it and reuses them; both finish with the same complete
    results."""
    from whypretrain.train import data, loops

    sets = ["epochs=1", "only_correct=false", "seeds=0", f"workdir={tmp_path}"]
    params = presets.resolve("ci", dict(s.split("=", 1) for s in sets))
    pretrain = runs.Run.create(tmp_path, loops.run_specs(params, 0, data.load_datasets(params))
                               ["pretrain"])
    argv = [sys.executable, "-m", "whypretrain", "analyze", "--preset", "ci",
            *[a for s in sets for a in ("--set", s)]]
    logs = [tmp_path.parent / f"{tmp_path.name}-stderr-{i}" for i in range(2)]
    waiting = f"waiting for another process that computes {pretrain.path}"
    with runs.locked(pretrain.path):
        procs = []
        for log in logs:
            with log.open("w") as err:
                procs.append(subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL,
                                              stderr=err))
        try:  # each says it waits (or one ends: a failure, shown below); at most 15 min
            for _ in range(9000):
                if all(waiting in log.read_text() for log in logs) or \
                        any(proc.poll() is not None for proc in procs):
                    break
                time.sleep(0.1)
            assert all(waiting in log.read_text() for log in logs), \
                [log.read_text()[-2000:] for log in logs]
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
    codes = [proc.wait(timeout=900) for proc in procs]
    errs = [log.read_text() for log in logs]
    assert codes == [0, 0], errs
    for bar in [f"seed 0 {kind}" for kind in runs.KINDS] + ["games (seed 0)",
                                                            "exact sparsification"]:
        assert sum(bar in err for err in errs) == 1, bar  # computed once
    assert len(list((tmp_path / "runs").iterdir())) == 4
    assert all((run / "done").is_file() for run in (tmp_path / "runs").iterdir())
    (folder,) = (tmp_path / "results").iterdir()
    assert len(list(folder.glob("interactions-*.pt"))) == 1
    assert len(list(folder.glob("table*.csv"))) == 1
