"""Runs on disk: atomic files, checksummed checkpoints, corrupt or mismatched ones refused."""
import json

import pytest
import torch
from safetensors.torch import save

from whypretrain import models, presets, runs

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
    sums = json.loads((run.path / "checksums.json").read_text())
    sums[path.name] = runs.hashlib.sha256(payload).hexdigest()
    (run.path / "checksums.json").write_text(json.dumps(sums))
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

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(OSError):
        runs.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        runs.Run.create(tmp_path, {**SPEC, "kind": "distill"})
    assert not (tmp_path / "runs").exists()
