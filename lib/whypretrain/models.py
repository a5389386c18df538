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
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import data

TORCHVISION = ("resnet18", "resnet50", "vgg16", "vit_b_16")


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


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


def build(params: dict, num_classes: int) -> Classifier:
    """The ``params["arch"]`` classifier with a ``num_classes`` head, randomly initialised from
    torch's current RNG; with ``params["weights"]`` set, the backbone is loaded from that file."""
    arch = params["arch"]
    if arch == "smallcnn":
        backbone, dim = smallcnn_backbone(data.channels(params))
    elif arch in TORCHVISION:
        backbone, dim = torchvision_backbone(arch)
    else:
        raise ValueError(f"unknown arch {arch!r}; valid: {['smallcnn', *TORCHVISION]}")
    model = Classifier(backbone, dim, num_classes)
    if params.get("weights"):
        load_backbone_weights(model, params["weights"])
    return model


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
