"""The four loops on a tiny study: they learn, the probe freezes, runs resume bit-identically."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from whypretrain import cli, presets
from whypretrain.train import data, runs, loops

# Five classes each side keep it small: 2,000 MNIST digits 0-4 -> 50 UCI digits 5-9.
TINY = dict(source="mnist-0-4", target="uci-5-9", pretrain_epochs=1, epochs=4, batch_size=16,
            lr=3e-3, target_per_class=10, seeds=(0,))


@pytest.fixture(scope="module")
def tiny_data():
    return data.load_datasets(presets.resolve("default", TINY))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_data):
    workdir = tmp_path_factory.mktemp("study")
    params = presets.resolve("default", {**TINY, "workdir": str(workdir)})
    return params, loops.ensure_runs(params, 0, progress=False, datasets=tiny_data)


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_four_runs_are_done_with_their_checkpoints(tiny_study):
    params, study = tiny_study
    assert set(study) == {"pretrain", "probe", "finetune", "scratch"}
    assert all(r.done and r.kind == k for k, r in study.items())
    assert study["finetune"].epochs() == study["scratch"].epochs() == [0, 1, 2, 3, 4]
    assert study["pretrain"].epochs() == [1] and study["probe"].epochs() == [4]
    assert study["finetune"].params["parent"] == study["pretrain"].path.name
    assert study["probe"].params["parent"] == study["pretrain"].path.name
    for run in study.values():
        assert run.path.parent == runs.Path(params["workdir"]) / "runs"
        assert run.params["version"] and run.params["seed"] == 0
        assert list(run.metrics.columns) == list(runs.METRICS)


@pytest.mark.parametrize("kind", ["pretrain", "probe", "finetune", "scratch"])
def test_each_loop_learns(tiny_study, kind):
    m = tiny_study[1][kind].metrics
    chance = 1 / 5
    assert m.train_loss.iloc[-1] < m.train_loss.iloc[0] - 0.1
    assert m.test_loss.iloc[-1] < m.test_loss.iloc[0]
    assert m.test_acc.iloc[-1] > chance + 0.15


def test_fine_tuning_starts_from_the_pretrained_backbone(tiny_study):
    study = tiny_study[1]
    pre = study["pretrain"].load_state()
    start = study["finetune"].load_state(0)
    assert all(torch.equal(start[k], pre[k]) for k in start if k.startswith("backbone."))
    assert start["head.weight"].shape == (5, 128)
    scratch0 = study["scratch"].load_state(0)
    assert not torch.equal(scratch0["backbone.0.weight"], pre["backbone.0.weight"])


def test_linear_probe_leaves_backbone_bit_identical(tiny_study):
    study = tiny_study[1]
    pre, probe = study["pretrain"].load_state(), study["probe"].load_state()
    backbone = [k for k in pre if k.startswith("backbone.")]
    assert backbone and all(torch.equal(pre[k], probe[k]) for k in backbone)
    assert not torch.equal(probe["head.weight"], study["finetune"].load_state(0)["head.weight"])


def test_load_model_gives_the_target_classifier_in_eval_mode(tiny_study, tiny_data):
    run = tiny_study[1]["finetune"]
    model = run.load_model()
    assert not model.training and model.head.out_features == 5
    x, y = tiny_data.target_test.images[:256], tiny_data.target_test.labels[:256]
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.4
    assert _states_equal(run.load_model(epoch=2).state_dict(), run.load_state(2))


def test_finished_runs_are_reused(tiny_study, tiny_data, monkeypatch, tmp_path):
    params, study = tiny_study
    shutil.copytree(params["workdir"], tmp_path / "w")  # its own copy of the module's runs
    monkeypatch.setattr(loops, "fit", lambda *a, **k: pytest.fail("retrained a done run"))
    again = loops.ensure_runs({**params, "workdir": str(tmp_path / "w")}, 0, progress=False,
                              datasets=tiny_data)
    assert {k: r.path for k, r in again.items()} == {
        k: tmp_path / "w" / "runs" / r.path.name for k, r in study.items()}


def test_a_changed_parameter_makes_new_runs(tiny_study, tiny_data):
    params = tiny_study[0]
    a = loops.run_specs(params, 0, tiny_data)
    b = loops.run_specs({**params, "epochs": 5}, 0, tiny_data)
    c = loops.run_specs(params, 1, tiny_data)
    assert runs.run_hash(a["pretrain"]) == runs.run_hash(b["pretrain"])  # epochs: target only
    assert runs.run_hash(a["finetune"]) != runs.run_hash(b["finetune"])
    assert all(runs.run_hash(a[k]) != runs.run_hash(c[k]) for k in a)  # the seed: every run


class Crash(Exception):
    pass


def test_resume_after_a_crash_is_bit_identical(tiny_study, tiny_data, tmp_path, monkeypatch):
    """Crash while epoch 3 of fine-tuning is being written (half a file on disk), run again."""
    params = {**tiny_study[0], "workdir": str(tmp_path)}
    real_write = runs.atomic_write

    def crashing_write(path, payload):
        if path.name == "epoch-003.safetensors" and "finetune" in path.parent.joinpath(
                "params.json").read_text():
            path.with_name(f".{path.name}.tmp").write_bytes(payload[: len(payload) // 2])
            raise Crash
        real_write(path, payload)

    monkeypatch.setattr(runs, "atomic_write", crashing_write)
    with pytest.raises(Crash):
        loops.ensure_runs(params, 0, progress=False, datasets=tiny_data)
    monkeypatch.setattr(runs, "atomic_write", real_write)
    partial = runs.Run(tmp_path / "runs" / tiny_study[1]["finetune"].path.name)
    assert not partial.done and partial.epochs() == [0, 1, 2]
    assert partial.metrics.epoch.tolist() == [0, 1, 2]
    before = partial.load_resume()["seconds"]  # the first session's training time

    seen = []
    monkeypatch.setattr(loops, "_checkpointed", lambda run, epoch: seen.append(
        (run.kind, epoch)))
    resumed = loops.ensure_runs(params, 0, progress=False, datasets=tiny_data)
    assert seen[:2] == [("finetune", 3), ("finetune", 4)]  # epochs 1-2 were not redone
    assert resumed["finetune"].seconds > before > 0  # both sessions' time
    reference = tiny_study[1]
    for kind in ("pretrain", "probe", "finetune", "scratch"):
        assert resumed[kind].path.name == reference[kind].path.name
        assert resumed[kind].epochs() == reference[kind].epochs()
        for epoch in reference[kind].epochs():
            assert _states_equal(resumed[kind].load_state(epoch),
                                 reference[kind].load_state(epoch)), (kind, epoch)
        assert resumed[kind].metrics.equals(reference[kind].metrics)


def test_pretrain_resumes_from_its_last_epoch(tiny_data, tmp_path, monkeypatch):
    params = presets.resolve("default", {**TINY, "pretrain_epochs": 2, "epochs": 1,
                                         "workdir": str(tmp_path / "a")})

    def crash(run, epoch):
        if run.kind == "pretrain" and epoch == 1:
            raise Crash

    monkeypatch.setattr(loops, "_checkpointed", crash)
    with pytest.raises(Crash):
        loops.ensure_runs(params, 0, progress=False, datasets=tiny_data)
    monkeypatch.setattr(loops, "_checkpointed", lambda run, epoch: None)
    resumed = loops.ensure_runs(params, 0, progress=False, datasets=tiny_data)
    fresh = loops.ensure_runs({**params, "workdir": str(tmp_path / "b")}, 0,
                                 progress=False, datasets=tiny_data)
    assert resumed["pretrain"].epochs() == [2]
    assert _states_equal(resumed["pretrain"].load_state(), fresh["pretrain"].load_state())


@pytest.mark.slow
def test_train_study_via_the_cli_trains_every_seed(tmp_path):
    rc = cli.main(["train", "--preset", "ci", "--set", f"workdir={tmp_path}",
                   "--set", "seeds=0,1", "--set", "epochs=1", "--set", "pretrain_epochs=0"])
    assert rc == 0
    found = [runs.Run(p) for p in (tmp_path / "runs").iterdir()]
    assert sorted((r.params["seed"], r.kind) for r in found) == sorted(
        (s, k) for s in (0, 1) for k in runs.KINDS)
    assert all(r.done for r in found)


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown preset"),
    (["--set", "colour=red"], "unknown parameter 'colour'"),
    (["--set", "epochs=many"], "cannot read 'many' as int"),
    (["--set", "lr=0"], "outside its range"),
    (["--set", "source=folder"], "needs source_folder"),
    (["--set", "arch=resnet18", "--set", "weights=missing.pth", "--set", "source=folder",
      "--set", "target=folder", "--set", "target_per_class=2"], "does not exist"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, args, message):
    workdir = tmp_path / "work"
    argv = ["train", "--preset", "ci", "--set", f"workdir={workdir}", *args]
    if "source=folder" in args:
        for role in ("source", "target"):
            folder = tmp_path / role
            for c in ("a", "b"):
                (folder / c).mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / c / f"{i}.png")
        argv += ["--set", f"target_folder={tmp_path / 'target'}"]
        if "target=folder" in args:
            argv += ["--set", f"source_folder={tmp_path / 'source'}"]
    assert cli.main(argv) == 2  # an exception raised here is a crash: the test fails
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("whypretrain train: "), lines
    assert message in lines[0]
    assert not workdir.exists()


def test_weights_of_another_network_stop_before_any_run_is_written(tmp_path, capsys):
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "vgg.pth")
    argv = ["train", "--preset", "ci", "--set", "arch=efficientnet_lite0",
            "--set", f"weights={tmp_path / 'vgg.pth'}", "--set", f"workdir={tmp_path / 'work'}"]
    assert cli.main(argv) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_the_weights_file_is_the_pretrain_run(tmp_path):
    """Paper-scale path on a tiny image folder: resnet18 with weights a test saved itself."""
    import torchvision

    for role in ("src", "tgt"):
        for c in ("a", "b"):
            (tmp_path / role / c).mkdir(parents=True)
            for i in range(6):
                pixels = np.random.default_rng(i).integers(0, 255, (16, 16, 3)) // (1 + (c == "a"))
                Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / role / c / f"{i}.png")
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, tmp_path / "r18.pth")
    params = presets.resolve("default", dict(
        arch="resnet18", weights=str(tmp_path / "r18.pth"), source="folder", target="folder",
        source_folder=str(tmp_path / "src"), target_folder=str(tmp_path / "tgt"),
        image_size=16, target_per_class=3, epochs=1, batch_size=4, workdir=str(tmp_path / "w")))
    study = loops.ensure_runs(params, 0, progress=False)
    assert study["pretrain"].done and study["pretrain"].epochs() == []
    assert study["pretrain"].params["weights_sha256"]
    start = study["finetune"].load_state(0)
    assert torch.equal(start["backbone.conv1.weight"], reference["conv1.weight"])
    assert torch.equal(study["probe"].load_state()["backbone.layer4.1.bn2.running_var"],
                       reference["layer4.1.bn2.running_var"])
    assert not torch.equal(study["scratch"].load_state(0)["backbone.conv1.weight"],
                           reference["conv1.weight"])
    pre = study["pretrain"].load_model()
    assert torch.equal(pre.backbone.conv1.weight, reference["conv1.weight"])


@pytest.mark.slow
def test_imagenet_preset_trains_one_epoch_from_the_packaged_weights(tmp_path):
    """imagenet-uci-ci, one epoch on 2 labelled digits per class and a 40-image test split."""
    from whypretrain.train import models

    params = presets.resolve("imagenet-uci-ci", dict(epochs=1, target_per_class=2,
                                                      workdir=str(tmp_path)))
    ds = data.load_datasets(params)
    assert len(ds.source_train) == 0 and ds.num_source_classes == 1000
    ds.target_test = data.TensorImages(ds.target_test.images[:40], ds.target_test.labels[:40])
    study = loops.ensure_runs(params, 0, progress=False, datasets=ds)
    assert all(r.done for r in study.values())
    pre = study["pretrain"]
    assert pre.epochs() == [] and pre.params["source"] == "imagenet"
    assert pre.params["weights_sha256"] == loops._sha256(
        models.packaged_weights("efficientnet_lite0"))
    imagenet = models.pretrained("efficientnet_lite0").backbone.state_dict()
    start, probe = study["finetune"].load_state(0), study["probe"].load_state()
    for key, value in imagenet.items():
        assert torch.equal(start[f"backbone.{key}"], value), key
        assert torch.equal(probe[f"backbone.{key}"], value), key  # frozen, BN statistics too
    assert not torch.equal(study["scratch"].load_state(0)["backbone.conv_stem.weight"],
                           imagenet["conv_stem.weight"])
    assert not torch.equal(study["finetune"].load_state(1)["backbone.conv_stem.weight"],
                           imagenet["conv_stem.weight"])
    # the adapter undoes the target's normalisation: it is saved with the run, not recomputed
    mean, std = ds.target_stats
    model = study["finetune"].load_model()
    assert torch.allclose(model.front.scale.flatten(), torch.tensor(std) / (128 / 255))
    assert model.front.resolution == params["resolution"]
    with torch.no_grad():
        assert model(ds.target_test.images[:3]).shape == (3, 10)
    assert {k: len(r.metrics) for k, r in study.items()} == {
        "pretrain": 0, "probe": 2, "finetune": 2, "scratch": 2}
