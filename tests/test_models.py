"""Models: the classifier shape, the paper-scale builders and their weights files."""
import time

import pytest
import torch
from safetensors.torch import save_file

from whypretrain import models, presets


def test_smallcnn_has_backbone_and_linear_head():
    model = models.build(presets.resolve("default"), 7)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7
    x = torch.randn(5, 1, 28, 28)
    feats = model.backbone(x)
    assert feats.shape == (5, model.head.in_features)
    assert torch.allclose(model(x), model.head(feats))


def test_smallcnn_forward_of_1024_inputs_is_fast():
    model = models.build(presets.resolve("default"), 10).eval()
    x = torch.randn(1024, 1, 28, 28)
    with torch.no_grad():
        model(x)
        best = min(_timed(model, x) for _ in range(3))
    # ~0.3 s alone on 2 cores (benchmarks/training.md); the bound leaves room for a shared CPU
    assert best < 2.5, f"one forward of 1,024 inputs took {best:.2f} s"


def _timed(model, x):
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def test_same_seed_same_init():
    p = presets.resolve("default")
    torch.manual_seed(3)
    a = models.build(p, 10).state_dict()
    torch.manual_seed(3)
    b = models.build(p, 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


RESNET = dict(arch="resnet18", source="folder", target="folder", image_size=32)


def test_resnet18_loads_torchvision_weights_into_the_backbone(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = models.build({**presets.resolve("default", RESNET), "weights": str(path)}, 4)
    assert model.head.out_features == 4 and model.head.in_features == 512
    ref = reference.state_dict()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, ref[key]), key
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_weights_in_safetensors_with_project_keys(tmp_path):
    params = presets.resolve("default", RESNET)
    torch.manual_seed(1)
    source = models.build(params, 3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = models.build({**params, "weights": str(path)}, 9)
    assert torch.equal(model.backbone.conv1.weight, source.backbone.conv1.weight)


@pytest.mark.parametrize("arch, dim", [("vgg16", 4096), ("vit_b_16", 768), ("resnet50", 2048)])
def test_other_paper_archs_build(arch, dim):
    model = models.build(presets.resolve("default", {"arch": arch, "source": "folder"}), 5)
    assert model.head.in_features == dim and model.head.out_features == 5


def test_missing_weights_file_is_a_clear_error(tmp_path):
    params = presets.resolve("default", {**RESNET, "weights": str(tmp_path / "nope.pth")})
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        models.build(params, 3)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="bad.pth.*corrupt"):
        models.build(presets.resolve("default", {**RESNET, "weights": str(path)}), 3)


def test_weights_of_another_arch_are_refused(tmp_path):
    import torchvision

    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="vgg.pth.*does not fit"):
        models.build(presets.resolve("default", {**RESNET, "weights": str(path)}), 3)
    del torchvision
