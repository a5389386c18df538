"""Presets as small data: every parameter of the study with its default, type and range.

A preset is a named dict of overrides on top of the defaults in ``PARAMS``. ``resolve`` turns a
preset name plus ``key=value`` overrides into one validated ``dict``; every entry point (the CLI,
the notebooks' first cell, the library's ``*_preset`` helpers) goes through it, so a bad name,
type or value is reported the same way everywhere, before anything is read, trained or written.

``resolve`` checks each value (type, range, finite) and then what the parameters must satisfy
together (``_check_together``): the players ``n`` against the patches the target's images offer,
the images against the architecture, the data sets against each other, the weights against the
arch. Every failure is one ``errors.ParameterError`` naming the parameters, their values and
what is allowed. The facts about data and networks those checks need are kept here as small
tables (``DATASETS``, ``ARCH_SIDES``); tests/test_data.py and tests/test_models.py check them
against the real data and networks.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from whypretrain.errors import ParameterError


@dataclass(frozen=True)
class Param:
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    open_interval: bool = False  # (low, high) instead of [low, high]
    # words the parameter takes besides an int in [low, high] (its default may be one of them)
    words: tuple[str, ...] = ()

    @property
    def type(self) -> type:
        """The type of its values (of its numbers, for a parameter that also takes words)."""
        if self.words:
            return int
        return tuple if isinstance(self.default, tuple) else type(self.default)


PARAMS: dict[str, Param] = {
    # --- data -------------------------------------------------------------------------------
    "source": Param("mnist", "pre-training (source) dataset; mnist-0-4 = digits 0..4 only; "
                    "imagenet = no pre-training here, the network's ImageNet weights are the "
                    "pre-trained model (packaged for efficientnet_lite0, else weights=PATH)",
                    choices=("mnist", "mnist-0-4", "mnist-5-9", "cifar10", "folder", "imagenet")),
    "target": Param("uci", "downstream (target) dataset; uci-5-9 = digits 5..9 only",
                    choices=("uci", "uci-5-9", "uci-0-4", "mnist", "cifar10", "folder")),
    "source_folder": Param("", "ImageFolder root of the source set, for source=folder"),
    "target_folder": Param("", "ImageFolder root of the target set, for target=folder"),
    "target_per_class": Param(5, "labelled target training images per class", low=1, high=100000),
    "data_root": Param("data", "dataset root for paper-scale data"),
    "workdir": Param(".", "folder that holds runs/ and results/"),
    "download": Param(False, "allow torchvision to download a missing dataset"),
    "image_size": Param(28, "side of the (square) input images, in pixels", low=8, high=512),
    # --- model --------------------------------------------------------------------------------
    "arch": Param("smallcnn", "network architecture",
                  choices=("smallcnn", "resnet18", "resnet50", "vgg16", "vit_b_16",
                           "efficientnet_lite0")),
    "weights": Param("", "pre-trained weights file for paper-scale archs (skips pre-training)"),
    "resolution": Param(48, "side to which efficientnet_lite0 resizes its input inside the model "
                            "(players stay patches of the image_size image)", low=16, high=512),
    # --- training -----------------------------------------------------------------------------
    "pretrain_epochs": Param(3, "epochs of pre-training on the source set", low=0, high=1000),
    "epochs": Param(20, "epochs of fine-tuning / scratch training / linear probe", low=1, high=1000),
    "probe_epochs": Param(0, "epochs of the linear probe; 0 = same schedule as fine-tuning",
                          low=0, high=1000),
    "batch_size": Param(16, "training batch size", low=1, high=4096),
    "lr": Param(1e-3, "learning rate (Adam)", low=0.0, high=10.0, open_interval=True),
    # five seeds, the fewest for a study meant to decide (book/method.md, section 7); by the
    # power analysis the near shares need more samples rather than more seeds, which the 40
    # minutes of `make study` do not allow (benchmarks/power.md)
    "seeds": Param((0, 1, 2, 3, 4), "seeds of the study; each seed is a full set of runs",
                   low=0, high=10**9),  # the range of each seed
    # the convergence claims read every analysed checkpoint, 17 models a seed against 3 for the
    # knowledge claims; three seeds of curves keep `make study` within its 40 minutes
    "curve_seeds": Param(3, "the first k seeds whose every analysed checkpoint is read (the "
                            "convergence curves); the others' final models only, all the "
                            "knowledge claims need; 0 = every seed", low=0, high=10**6),
    "device": Param("auto", "torch device: auto, cpu, cuda, cuda:1, ..."),
    "threads": Param(1, "torch CPU threads while training (CPU results are bit-identical for "
                        "the same count; small batches run no faster on more); 0 = torch's choice",
                     low=0, high=1024),
    # --- masking (book/method.md, section 1) --------------------------------------------------------
    "n": Param(10, "players (patches) per sample", low=1, high=16),
    "patch": Param(4, "side of a square player patch, in pixels", low=1, high=256),
    "player_choice": Param("foreground", "how players are chosen",
                           choices=("foreground", "random")),
    "player_seed": Param(0, "seed that draws each sample's players; the same for every training "
                            "seed and model, so every model is read on the same games",
                         low=0, high=10**6),
    "baseline": Param("zero", "value a masked player takes",
                      choices=("zero", "mean", "blur")),
    "subtract_empty": Param(False, "use v(x_T) - v(x_empty) as the game"),
    "checkpoints": Param(8, "the epochs of fine-tuning and of scratch training analysed "
                         "for convergence: all = every epoch; k = about k of them, spaced "
                         "evenly (epoch 0 and the last always)",
                         low=2, high=10000, words=("all",)),
    "mask_batch": Param(1024, "masked inputs per forward pass", low=1, high=1 << 20),
    # --- interactions (book/method.md, section 2) ---------------------------------------------
    "mode": Param("and-or", "interaction type", choices=("and-or", "and")),
    "optimizer": Param("exact", "sparsification optimiser: exact = the certified optimum of the "
                       "LP; sgd = the literature's reference; adam = scaled Adam",
                       choices=("exact", "sgd", "adam")),
    # below about 1e-12 a relative gap is rounding noise of double precision: a solve could
    # never certify it (found by tests/test_presets.py's search: tol=1e-300)
    "tol": Param(1e-4, "exact optimiser: relative duality gap at which a game is solved",
                 low=1e-12, high=1.0, open_interval=True),
    "rule": Param("canonical", "exact optimiser: which point of the optimal face is returned: "
                  "canonical = lower orders first; reverse = higher orders first; hash = a fixed "
                  "hash order only (book/method.md, section 2)",
                  choices=("canonical", "reverse", "hash")),
    "extraction": Param("independent", "exact optimiser: every model's game alone "
                        "(independent), or the probe, fine-tuned and scratch models of a sample "
                        "together with a shared split (joint, Chen et al. 2024)",
                        choices=("independent", "joint")),
    "iterations": Param(10000, "sparsification steps of sgd / adam", low=0, high=10**7),
    # The reference lr (1e-5) makes SGD climb on most of our n = 10 games (their L1 gradient
    # grows like 2**n); 1e-7 descends on all of them (benchmarks/README.md, "learning rate").
    "sparsify_lr": Param(1e-7, "sgd / adam learning rate (the reference's is 1e-5)",
                         low=0.0, high=10.0, open_interval=True),
    "q_bound": Param(0.04, "bound on |q| relative to |v(N) - v(empty)|", low=0.0, high=1.0),
    "or_merge": Param("and", "OR terms of order <= 1 after extraction: moved into AND (and) or "
                             "kept as OR (keep)", choices=("and", "keep")),
    # --- knowledge (book/method.md, section 3) --------------------------------------------------
    "tau": Param(0.05, "salience threshold relative to the largest |I| of a sample",
                 low=0.0, high=1.0, open_interval=True),
    "empty_set": Param("exclude", "the order-0 term v(x_empty): neither an item nor in the max "
                                  "tau scales (exclude), or a term like any other (include)",
                       choices=("exclude", "include")),
    "samples_per_class": Param(2, "target test samples per class that are explained",
                               low=1, high=1000),
    "only_correct": Param(True, "explain only samples all three final models classify correctly"),
    "sample_filter": Param("all", "samples the knowledge tables read: all, or lab = those on "
                           "which every final model of every seed meets the lab's conditions "
                           "(mean output rising with coalition size, v(N) - v(empty) >= 1; "
                           "book/method.md, section 3)", choices=("all", "lab")),
}

# Each preset lists only what differs from PARAMS' defaults. Wall times on a 2-core CPU are in
# README.md. Paper-scale presets expect local data and weights (see README.md).
PRESETS: dict[str, dict[str, Any]] = {
    # Two seeds, so that the nulls (models of two seeds on the same games) exist at ci size;
    # after 3 epochs scratch training is at chance, so the explained digits are chosen whether
    # or not the six final models get them right.
    "ci": dict(pretrain_epochs=1, epochs=3, seeds=(0, 1), n=6, iterations=300,
               samples_per_class=1, only_correct=False),
    # a teaching preset, which does not decide (book/classroom.md): three seeds, the fewest whose
    # nulls can be recomputed without one of them; its shares would need 33-101 seeds
    # (benchmarks/power.md), and it must run in a lesson's 6 minutes
    "classroom": dict(pretrain_epochs=2, epochs=10, seeds=(0, 1, 2), n=8, iterations=2000),
    "default": dict(),
    # The far transfer: ImageNet's EfficientNet-Lite0 (packaged weights, no pre-training step)
    # to the UCI digits, resized to `resolution` inside the model (benchmarks/imagenet.md).
    # 4 checkpoints and one digit per class: each analysed model costs about 1 ms per masked
    # input through Lite0 on this CPU, 20x the small CNN (benchmarks/imagenet.md); the default
    # study computes this setting beside its own (study.transfer_settings)
    # Its digits are chosen whether or not the models get them right: Lite0 trained from
    # scratch on 5 images per class reaches 22%-51% (5 seeds), and the digits every final
    # model of 5 seeds gets right were 2 of 10 (9 of 10 with 3 seeds; fresh clone, 2026-12-04)
    "imagenet-uci": dict(source="imagenet", arch="efficientnet_lite0", resolution=48,
                         checkpoints=4, samples_per_class=1, mask_batch=64,
                         only_correct=False),
    # the far setting of `classroom`: 32 px (half the cost of 48 px per input), and the digits
    # chosen whether or not the scratch model (at 32 px, close to chance) gets them right
    "imagenet-uci-classroom": dict(source="imagenet", arch="efficientnet_lite0", resolution=32,
                                   epochs=10, seeds=(0, 1, 2), n=8, iterations=2000,
                                   checkpoints=4, samples_per_class=1, mask_batch=64,
                                   only_correct=False),
    # A smoke test: after 3 epochs scratch training is at chance, so no test digit is
    # classified correctly by all three models and the explained ones are chosen regardless.
    "imagenet-uci-ci": dict(source="imagenet", arch="efficientnet_lite0", resolution=32,
                            epochs=3, seeds=(0,), n=6, iterations=300, samples_per_class=1,
                            mask_batch=64, only_correct=False),
    "imagenet-mnist": dict(source="imagenet", target="mnist", arch="efficientnet_lite0",
                           resolution=48, checkpoints=6, mask_batch=64),
    "cifar10-resnet18": dict(source="cifar10", target="cifar10", arch="resnet18",
                             weights="data/weights/resnet18-f37072fd.pth",
                             image_size=224, patch=32, epochs=10, batch_size=64,
                             target_per_class=500, seeds=(0, 1, 2)),
}


# --- what the data and the networks allow (tests/test_data.py and tests/test_models.py check
# these tables against the real data and networks) ---------------------------------------------
@dataclass(frozen=True)
class Offer:
    """What a data set gives the model: colour channels, the side of its square images (None:
    ``image_size``, to which the loader resizes them) and its training images per class (None:
    known only once the folder is read)."""
    channels: int
    side: int | None
    train_per_class: tuple[int, ...] | None


DATASETS: dict[str, Offer] = {
    # the embedded digits are 28x28 whatever image_size says (data.py); per digit 0..9, the
    # training images the fixed split leaves
    "uci": Offer(1, 28, (89, 91, 89, 91, 91, 91, 91, 89, 87, 90)),
    "mnist": Offer(1, 28, (400,) * 10),
    "cifar10": Offer(3, None, (5000,) * 10),
    "folder": Offer(3, None, None),  # ImageFolder reads every image as RGB
}
# torchvision's networks (models.py): colour (3-channel) images only
TORCHVISION = ("resnet18", "resnet50", "vgg16", "vit_b_16")
# the image sides a network takes, (smallest, largest); the others take any side
ARCH_SIDES: dict[str, tuple[int, int | None]] = {"vgg16": (32, None), "vit_b_16": (224, 224)}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def _family(name: str) -> str:
    return name.split("-")[0]


def _classes(name: str) -> slice:
    """The classes a set name keeps: ``uci-5-9`` -> digits 5..9, ``uci`` -> all."""
    parts = name.split("-")
    return slice(int(parts[1]), int(parts[2]) + 1) if len(parts) == 3 else slice(None)


def image_side(params: Mapping[str, Any], role: str = "target") -> int:
    """The side, in pixels, of the images of the ``role`` set (the target's: the players'
    patches are cut from them)."""
    side = DATASETS[_family(params[role])].side
    return params["image_size"] if side is None else side


def trained_on(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The sets whose images the model sees in training: the target always, the source unless
    the pre-trained model is a weights file (``source=imagenet``, or ``weights`` set)."""
    pretrained = params["source"] == "imagenet" or bool(params["weights"])
    return ("target",) if pretrained else ("source", "target")


# --- parsing and checking ---------------------------------------------------------------------
def _parse(name: str, raw: Any) -> Any:
    """Turn a raw value (a string from the command line, or a Python value) into the param's type."""
    spec = PARAMS[name]
    kind = spec.type
    if isinstance(raw, str) and raw.strip() in spec.words:
        return raw.strip()
    if isinstance(raw, str) and kind is not str:
        text = raw.strip()
        try:
            if kind is bool:
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return low in ("true", "1", "yes")
            if kind is tuple:
                return tuple(int(t) for t in text.strip("()[] ").split(",") if t.strip())
            return kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except (ValueError, OverflowError):
            raise ParameterError(f"parameter {name!r}: cannot read {raw!r} as {_kind(spec)}"
                                 f" ({spec.help}; default {spec.default!r})") from None
    if kind is tuple and isinstance(raw, (list, tuple)):
        raw = tuple(raw)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        try:
            raw = float(raw)
        except OverflowError:
            raise ParameterError(f"parameter {name!r} = {raw!r} is too large for a float"
                                 f"{_range(spec)}") from None
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ParameterError(f"parameter {name!r} must be {_kind(spec)}, got {raw!r}"
                             f" ({type(raw).__name__})")
    return raw


def _kind(spec: Param) -> str:
    """The values a parameter takes, as a message names them: ``int``, ``'all' or int``."""
    return " or ".join([*map(repr, spec.words), spec.type.__name__])


def _range(spec: Param) -> str:
    if spec.low is None and spec.high is None:
        return ""
    brackets = "()" if spec.open_interval else "[]"
    words = "".join(f"{word!r} or " for word in spec.words)
    return f"; allowed: {words}{brackets[0]}{spec.low}, {spec.high}{brackets[1]}"


def _check(name: str, value: Any) -> None:
    spec = PARAMS[name]
    if value in spec.words:
        return
    if name == "checkpoints" and value == 0:  # what every epoch was called before "all"
        raise ParameterError(f"parameter 'checkpoints' = 0: to analyse every epoch set "
                             f"checkpoints=all (0 meant that before){_range(spec)}")
    if spec.choices is not None and value not in spec.choices:
        raise ParameterError(f"parameter {name!r} = {value!r} is not one of {list(spec.choices)}")
    if spec.type is str and "\x00" in value:
        raise ParameterError(f"parameter {name!r} = {value!r} holds a NUL character")
    if spec.type is tuple:
        if (not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                 and spec.low <= v <= spec.high for v in value)
                or len(set(value)) != len(value)):
            raise ParameterError(f"parameter {name!r} must be a non-empty list of distinct seeds"
                                 f" in [{spec.low}, {spec.high}], e.g. 0,1,2; got {value!r}")
        return
    if spec.type is float and not math.isfinite(value):
        raise ParameterError(f"parameter {name!r} = {value!r} is not a finite number"
                             f"{_range(spec)}")
    if spec.low is not None or spec.high is not None:
        lo, hi = spec.low, spec.high
        bad = ((lo is not None and (value <= lo if spec.open_interval else value < lo))
               or (hi is not None and (value >= hi if spec.open_interval else value > hi)))
        if bad:
            raise ParameterError(f"parameter {name!r} = {value!r} is outside its range"
                                 f"{_range(spec)}")


def _check_images(p: Mapping[str, Any], seen) -> None:
    """The images suit the arch (``ARCH_SIDES``), and the patch and ``n`` players fit the
    target's images; ``ParameterError`` otherwise."""
    arch, target = p["arch"], p["target"]
    low, high = ARCH_SIDES.get(arch, (1, None))
    for role in seen:
        side = image_side(p, role)
        if side < low or (high is not None and side > high):
            allowed = f"{low}x{low}" if low == high else f"at least {low}x{low}"
            raise ParameterError(f"arch={arch} takes images of {allowed} pixels but the {role} "
                                 f"images ({p[role]}) are {side}x{side} (image_size="
                                 f"{p['image_size']})")
    side, patch, n = image_side(p), p["patch"], p["n"]
    images = f"the target's {side}x{side} images"
    if DATASETS[_family(target)].side is not None:
        images += f" ({target}: {side}x{side} whatever image_size says)"
    if patch > side:
        raise ParameterError(f"patch={patch} is larger than {images}: allowed 1..{side}")
    patches = (side // patch) ** 2
    if n > patches:
        raise ParameterError(f"n={n} players but {images} have only {patches} patches of "
                             f"{patch}x{patch} pixels (patch={patch}): choose n <= {patches} or patch <= "
                             f"{side // math.ceil(math.sqrt(n))}")


def _check_together(p: Mapping[str, Any]) -> None:
    """What the parameters must satisfy together, in the order the study would otherwise find
    it out (data, weights, model, players); raises ``ParameterError`` at the first failure."""
    arch, target = p["arch"], p["target"]
    if p["extraction"] == "joint" and p["mode"] == "and-or" and p["optimizer"] != "exact":
        raise ParameterError(f"extraction=joint is solved by the exact optimiser only; got "
                             f"optimizer={p['optimizer']!r}: set optimizer=exact or "
                             f"extraction=independent")
    for role in ("source", "target"):
        if p[role] == "folder" and not p[f"{role}_folder"]:
            raise ParameterError(f"{role}=folder needs {role}_folder: --set {role}_folder=PATH, "
                                 f"a folder with one sub-folder of images per class")
    if p["weights"] and arch == "smallcnn":
        raise ParameterError(f"weights={p['weights']!r} is a pre-trained network for one of "
                             f"{[*TORCHVISION, 'efficientnet_lite0']}; arch='smallcnn' is "
                             f"pre-trained here on the source set: choose that arch or leave "
                             f"weights empty")
    if p["source"] == "imagenet" and not p["weights"] and arch == "smallcnn":
        raise ParameterError("source=imagenet needs a network pre-trained on ImageNet: "
                             "--set arch=efficientnet_lite0 (weights packaged), or a "
                             "paper-scale arch with --set weights=PATH")
    if p["source"] == "imagenet" and not p["weights"] and arch in TORCHVISION:
        raise ParameterError(f"source=imagenet with arch={arch} needs its ImageNet weights: "
                             f"--set weights=PATH (only efficientnet_lite0's are packaged)")
    seen = trained_on(p)
    channels = {role: DATASETS[_family(p[role])].channels for role in ("source", "target")
                if p[role] != "imagenet"}
    for role in seen:
        if arch in TORCHVISION and channels[role] == 1:
            raise ParameterError(f"arch={arch} takes colour (3-channel) images but {role}="
                                 f"{p[role]} is 1-channel digits: use arch=smallcnn or "
                                 f"efficientnet_lite0, or a cifar10 / folder set")
    # smallcnn's first layer and efficientnet_lite0's input adapter take their channels from
    # both sets (data.channels), whether or not a weights file replaces pre-training
    if arch not in TORCHVISION and len(set(channels.values())) > 1:
        raise ParameterError(
            f"source={p['source']} ({channels['source']}-channel images) and target={target} "
            f"({channels['target']}-channel) differ in colour channels, which arch={arch} "
            f"cannot take: choose both among mnist/uci or both among cifar10/folder"
            + (", or source=imagenet" if arch == "efficientnet_lite0" else ""))
    _check_images(p, seen)
    counts = DATASETS[_family(target)].train_per_class
    if counts is not None and p["target_per_class"] > min(counts[_classes(target)]):
        fewest = min(counts[_classes(target)])
        raise ParameterError(f"target_per_class={p['target_per_class']} but {target} has only "
                             f"{fewest} training images in its smallest class: allowed "
                             f"1..{fewest}")
    _check_device(p["device"])
    if os.path.exists(p["workdir"]) and not os.path.isdir(p["workdir"]):
        raise ParameterError(f"workdir={p['workdir']!r} is a file: it must be a folder (new or "
                             f"not) to hold runs/ and results/")


def _check_device(device: str) -> None:
    if not _DEVICE.fullmatch(device):
        raise ParameterError(f"parameter 'device' = {device!r} is not one of auto, cpu, cuda, "
                             f"cuda:K, mps")
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ParameterError("device='mps' but this machine has no MPS device: use auto "
                                 "or cpu")
        return
    count, index = torch.cuda.device_count(), int(device[5:] or 0)
    if index >= count:
        raise ParameterError(f"device={device!r} but this machine has {count} CUDA device(s)"
                             f": use auto or cpu" + (f", or cuda:0..{count - 1}" if count else ""))


def parse_sets(sets: Iterable[str] | None) -> dict[str, str]:
    """Parse ``["key=value", ...]`` (the CLI's ``--set``) into a dict of raw strings."""
    out: dict[str, str] = {}
    for item in sets or ():
        if "=" not in item:
            raise ParameterError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def resolve(preset: str = "default", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full, validated parameter dict of ``preset`` with ``overrides`` applied.

    Raises ``errors.ParameterError`` (a ``ValueError``) naming the bad preset / key / value and
    what is allowed: each value on its own, then the parameters together (``_check_together``).
    Reads, trains and writes nothing.
    """
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ParameterError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
    params = {name: spec.default for name, spec in PARAMS.items()}
    params.update(PRESETS[preset])
    for key, raw in (overrides or {}).items():
        if key not in PARAMS:
            raise ParameterError(f"unknown parameter {key!r}; valid parameters: "
                                 f"{sorted(PARAMS)}")
        params[key] = _parse(key, raw)
    for key, value in params.items():
        _check(key, _parse(key, value))
    _check_together(params)
    params["preset"] = preset
    return params


def describe() -> str:
    """A plain-text table of every parameter, its default and its range (for --help)."""
    lines = []
    for name, spec in PARAMS.items():
        words = "".join(f" {word!r} or" for word in spec.words)
        rng = (f" one of {list(spec.choices)}" if spec.choices else
               f"{words} in [{spec.low}, {spec.high}]" if spec.low is not None else "")
        lines.append(f"  {name:<18} {spec.default!r:<14} {spec.help}{rng}")
    return "\n".join(lines)
