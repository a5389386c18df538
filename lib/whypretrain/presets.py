"""Presets as small data: every parameter of the study with its default, type and range.

A preset is a named dict of overrides on top of the defaults in ``PARAMS``. ``resolve`` turns a
preset name plus ``key=value`` overrides into one validated ``dict``; every entry point (the CLI,
the notebooks' first cell, the library's ``*_preset`` helpers) goes through it, so a bad name,
type or value is reported the same way everywhere, before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Param:
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    open_interval: bool = False  # (low, high) instead of [low, high]

    @property
    def type(self) -> type:
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
    "seeds": Param((0, 1, 2), "seeds of the study; each seed is a full set of runs"),
    "device": Param("auto", "torch device: auto, cpu, cuda, cuda:1, ..."),
    "threads": Param(1, "torch CPU threads while training (CPU results are bit-identical for "
                        "the same count; small batches run no faster on more); 0 = torch's choice",
                     low=0, high=1024),
    # --- masking (book/method.md, section 1) --------------------------------------------------------
    "n": Param(10, "players (patches) per sample", low=1, high=16),
    "patch": Param(4, "side of a square player patch, in pixels", low=1, high=256),
    "player_choice": Param("foreground", "how players are chosen",
                           choices=("foreground", "random")),
    "player_seed_offset": Param(0, "added to the training seed to draw the players; 0 = players "
                                   "follow the training seed", low=0, high=10**6),
    "baseline": Param("zero", "value a masked player takes",
                      choices=("zero", "mean", "blur")),
    "subtract_empty": Param(False, "use v(x_T) - v(x_empty) as the game"),
    "checkpoints": Param(0, "0 = every epoch of fine-tuning and of scratch training analysed "
                         "for convergence (the default); k > 0 = about k, spaced "
                         "geometrically (epoch 0 and the last always)", low=0, high=10000),
    "mask_batch": Param(1024, "masked inputs per forward pass", low=1, high=1 << 20),
    # --- interactions (book/method.md, section 2) ---------------------------------------------
    "mode": Param("and-or", "interaction type", choices=("and-or", "and")),
    "optimizer": Param("exact", "sparsification optimiser: exact = the certified optimum of the "
                       "LP; sgd = the literature's reference; adam = scaled Adam",
                       choices=("exact", "sgd", "adam")),
    "tol": Param(1e-4, "exact optimiser: relative duality gap at which a game is solved",
                 low=0.0, high=1.0, open_interval=True),
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
}

# Each preset lists only what differs from PARAMS' defaults. Wall times on a 2-core CPU are in
# README.md. Paper-scale presets expect local data and weights (see README.md).
PRESETS: dict[str, dict[str, Any]] = {
    "ci": dict(pretrain_epochs=1, epochs=3, seeds=(0,), n=6, iterations=300,
               samples_per_class=1),
    "classroom": dict(pretrain_epochs=2, epochs=10, seeds=(0, 1), n=8, iterations=2000),
    "default": dict(),
    # The far transfer: ImageNet's EfficientNet-Lite0 (packaged weights, no pre-training step)
    # to the UCI digits, resized to `resolution` inside the model (benchmarks/imagenet.md).
    # 6 checkpoints, not every epoch: each analysed epoch costs about 1 ms per masked input
    # through Lite0 on this CPU, 20x the small CNN.
    "imagenet-uci": dict(source="imagenet", arch="efficientnet_lite0", resolution=48,
                         checkpoints=6, mask_batch=64),
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


def _parse(name: str, raw: Any) -> Any:
    """Turn a raw value (a string from the command line, or a Python value) into the param's type."""
    spec = PARAMS[name]
    kind = spec.type
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
        except ValueError:
            raise ValueError(f"parameter {name!r}: cannot read {raw!r} as {kind.__name__}"
                             f" ({spec.help}; default {spec.default!r})") from None
    if kind is tuple and isinstance(raw, (list, tuple)):
        raw = tuple(raw)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ValueError(f"parameter {name!r} must be {kind.__name__}, got {raw!r}"
                         f" ({type(raw).__name__})")
    return raw


def _check(name: str, value: Any) -> None:
    spec = PARAMS[name]
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"parameter {name!r} = {value!r} is not one of {list(spec.choices)}")
    if spec.type is tuple:
        if not value or not all(isinstance(v, int) and v >= 0 for v in value):
            raise ValueError(f"parameter {name!r} must be a non-empty list of seeds >= 0,"
                             f" e.g. 0,1,2; got {value!r}")
        return
    if spec.low is not None or spec.high is not None:
        lo, hi = spec.low, spec.high
        bad = ((lo is not None and (value <= lo if spec.open_interval else value < lo))
               or (hi is not None and (value >= hi if spec.open_interval else value > hi)))
        if bad:
            brackets = "()" if spec.open_interval else "[]"
            raise ValueError(f"parameter {name!r} = {value!r} is outside its range "
                             f"{brackets[0]}{lo}, {hi}{brackets[1]}")


def parse_sets(sets: Iterable[str] | None) -> dict[str, str]:
    """Parse ``["key=value", ...]`` (the CLI's ``--set``) into a dict of raw strings."""
    out: dict[str, str] = {}
    for item in sets or ():
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def resolve(preset: str = "default", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full, validated parameter dict of ``preset`` with ``overrides`` applied.

    Raises ``ValueError`` naming the bad preset / key / value and the valid alternatives.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
    params = {name: spec.default for name, spec in PARAMS.items()}
    params.update(PRESETS[preset])
    for key, raw in (overrides or {}).items():
        if key not in PARAMS:
            raise ValueError(f"unknown parameter {key!r}; valid parameters: {sorted(PARAMS)}")
        params[key] = _parse(key, raw)
    for key, value in params.items():
        _check(key, _parse(key, value))
    params["preset"] = preset
    return params


def describe() -> str:
    """A plain-text table of every parameter, its default and its range (for --help)."""
    lines = []
    for name, spec in PARAMS.items():
        rng = (f" one of {list(spec.choices)}" if spec.choices else
               f" in [{spec.low}, {spec.high}]" if spec.low is not None else "")
        lines.append(f"  {name:<18} {spec.default!r:<14} {spec.help}{rng}")
    return "\n".join(lines)
