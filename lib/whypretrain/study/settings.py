"""Specifications: the settings a study computes besides the preset itself.

- the sensitivity grid (``sensitivity_grid``): one analysis choice varied at a time around the
  preset's values (tau, n, baseline, optimiser, empty_set, or_merge, players, samples, the
  rule that picks the optimum, AND-only, the lab's sample filter); ``sensitivity_settings`` turns it into full
  parameter sets, each one *specification* (book/method.md, section 6);
- the transfer settings (``transfer_settings``): near (the preset), disjoint (the source's and
  the target's classes apart) and far (an ImageNet-pre-trained network);
- which seeds are read at every analysed checkpoint and which at their final models only
  (``finals_only_seeds``);
- how many games all of them cost (``game_counts``).

Parameters in, parameters out: nothing here reads or writes results.
"""
from __future__ import annotations

from typing import Any, Iterator

import pandas as pd

from whypretrain.train import data
from whypretrain.engine import masking
from whypretrain import presets
from whypretrain.study import extraction, games, seed_results
from whypretrain.provenance import command

TRANSFER_SETTINGS = ("near", "disjoint", "far")
DISJOINT = dict(source="mnist-0-4", target="uci-5-9")  # no class of the target pre-trained
FAR_PRESET = "imagenet-uci"  # ImageNet EfficientNet-Lite0 -> UCI digits (models.py)
# smaller presets whose far setting is a preset of their size (both explain digits whether or
# not their scratch models get them right: at 32 px, Lite0 trained from scratch is near chance)
FAR_PRESETS = {"ci": "imagenet-uci-ci", "classroom": "imagenet-uci-classroom"}
# parameters of a study's scale and reading that the far setting takes over from the preset
# being run when they differ from the `default` preset (so `ci` gets a ci-sized far setting)
FAR_CARRY = ("seeds", "curve_seeds", "epochs", "pretrain_epochs", "n", "iterations",
             "samples_per_class", "tau", "empty_set", "or_merge", "optimizer", "player_seed",
             "checkpoints", "workdir", "device", "threads", "sample_filter")



# the largest n whose sensitivity grid holds the joint extraction: every seed's final models
# in one program per sample costs 4.0-6.6x the three per-seed programs at n = 10 (about 23 min
# for the default preset's 20 samples, against 4.6 min); 31 s in all at n = 8 (classroom)
JOINT_MAX_N = 8


def finals_only_seeds(params: dict) -> list[tuple[int, bool]]:
    """``(seed, finals_only)`` for every seed of ``params``: the first ``curve_seeds`` are read
    at every analysed checkpoint (the convergence claims), the others at their final models
    only (what the knowledge claims read); every seed in full with ``curve_seeds = 0`` and
    under the joint extraction, whose one program pools every seed."""
    seeds, k = list(params["seeds"]), params.get("curve_seeds", 0)
    if k == 0 or params["extraction"] == "joint":
        k = len(seeds)
    return [(seed, i >= k) for i, seed in enumerate(seeds)]


# --- the sensitivity grid ---------------------------------------------------------------------

# what the sensitivity study varies; tau and empty_set only re-read the study's interactions
TABLE_ONLY = ("tau", "empty_set", "sample_filter")


def sensitivity_grid(params: dict) -> dict[str, list]:
    """What the sensitivity study varies, around the preset's values, one at a time."""
    tau, n, per_class = params["tau"], params["n"], params["samples_per_class"]
    optimizers = [o for o in ("exact", "sgd") if o in presets.PARAMS["optimizer"].choices]
    if params["optimizer"] not in optimizers:
        optimizers.insert(0, params["optimizer"])
    return {
        "tau": sorted({round(tau / 2, 4), tau, round(min(0.5, tau * 2), 4)}),
        "n": sorted({max(4, n - 4), max(4, n - 2), n}),
        "baseline": list(masking.BASELINES),
        "optimizer": optimizers,
        "empty_set": list(presets.PARAMS["empty_set"].choices),
        "or_merge": list(presets.PARAMS["or_merge"].choices),
        # players drawn with the study's player seed and with another one
        "player_seed": sorted({params["player_seed"], params["player_seed"] + 1}),
        "samples_per_class": sorted({max(1, per_class // 2), per_class, per_class * 2}),
        # the point of the exact optimum's face (book/method.md, section 2), and the AND-only
        # (Harsanyi) interactions, the one reference with no choice of optimum
        "rule": list(presets.PARAMS["rule"].choices) if params["optimizer"] == "exact"
        else [params["rule"]],
        "mode": list(presets.PARAMS["mode"].choices),
        # every seed's final models extracted together, one program per sample (joint.py,
        # seed_results._compute_joint), up to JOINT_MAX_N players
        # the lab's sample filter: only the samples that meet its conditions (sparsity.py)
        "sample_filter": list(presets.PARAMS["sample_filter"].choices),
        "extraction": ["independent", "joint"]
        if params["optimizer"] == "exact" and params["n"] <= JOINT_MAX_N
        else [params["extraction"]],
    }


def sensitivity_settings(params: dict, grid: dict[str, list] | None = None
                         ) -> Iterator[tuple[str, Any, dict, bool]]:
    """``(parameter, value, setting, finals_only)`` for every point of the grid. The preset's
    own values and the table-only parameters read the main results; any other value needs new
    games (or interactions) of the final models only, all the knowledge measures need."""
    grid = grid or sensitivity_grid(params)
    unknown = set(grid) - set(presets.PARAMS)
    if unknown:
        raise ValueError(f"sensitivity varies parameters of the study; not {sorted(unknown)}")
    for key, values in grid.items():
        for value in values:
            setting = presets.resolve(params["preset"], {
                **{k: params[k] for k in presets.PARAMS}, key: value})
            finals_only = key not in TABLE_ONLY and value != params[key]
            yield key, value, setting, finals_only


# --- the transfer settings -------------------------------------------------------------------

def transfer_settings(params: dict) -> dict[str, dict | None]:
    """near: ``params`` itself; disjoint: the same with the source's and the target's classes
    apart (``DISJOINT``), for the digit data only (None otherwise); far: preset ``FAR_PRESET``
    at the scale of ``params``, or None when this version has no such preset
    (``unavailable`` says why)."""
    base = {k: params[k] for k in presets.PARAMS}
    digits = params["source"].startswith("mnist") and params["target"].startswith(("uci",
                                                                                   "mnist"))
    out: dict[str, dict | None] = {
        "near": params,
        "disjoint": presets.resolve(params["preset"], {**base, **DISJOINT}) if digits else None,
    }
    far = FAR_PRESETS.get(params.get("preset", "default"), FAR_PRESET)
    if far in presets.PRESETS:
        default = presets.resolve("default")
        carry = {k: params[k] for k in FAR_CARRY if k in params and params[k] != default[k]}
        out["far"] = presets.resolve(far, carry)
    else:
        out["far"] = None
    return out


def unavailable(name: str, params: dict) -> str:
    """Why ``transfer_settings(params)[name]`` is None."""
    if name == "disjoint":
        return (f"defined for the digit data only (source mnist, target uci; this preset: "
                f"{params['source']} -> {params['target']})")
    return far_command(params)


def far_command(params: dict) -> str:
    """The command that makes the far setting's results (what the findings read)."""
    setting = transfer_settings(params)["far"]
    if setting is None:
        return f"whypretrain analyze --preset {FAR_PRESET} (needs a version with that preset)"
    return command("analyze", setting)


def results_key(setting: dict) -> tuple:
    """What tells two points of the grid's results apart (their games and their extraction;
    not ``TABLE_ONLY``): points with the same key read the same results folders."""
    return tuple(sorted((k, str(setting[k])) for k in seed_results.GAME_KEYS + extraction.ENGINE_KEYS
                        + ("rule", "extraction") if k in setting))


def game_counts(params: dict) -> pd.DataFrame:
    """How many games (``2**n`` outputs each) ``compute_all`` evaluates and sparsifies, by
    part, at most (``only_correct`` can keep fewer samples): one row per results folder kind.
    Counts only; reads nothing but the dataset sizes."""
    def models(p, finals_only):
        per_run = 1 if finals_only else len(games.analysed_epochs(
            list(range(p["epochs"] + 1)), p["checkpoints"]))
        return 1 + 2 * per_run

    def row(part, p, finals_only):
        classes = len(data.digits(p["target"])) if p["target"].startswith(("uci", "mnist")) \
            else data.load_datasets(p).num_target_classes
        samples = classes * p["samples_per_class"]
        # models per seed: a seed beyond curve_seeds is read at its final models only
        per_seed = [models(p, finals_only or only) for _, only in finals_only_seeds(p)]
        m = max(per_seed)
        return dict(part=part, seeds=len(p["seeds"]), models=m, samples=samples, n=p["n"],
                    games=sum(per_seed) * samples,
                    outputs=sum(per_seed) * samples * (1 << p["n"]))
    rows = [row("main", params, False)]
    seen = set()
    for key, value, setting, finals_only in sensitivity_settings(params):
        spec = results_key(setting)
        if finals_only and spec not in seen:
            seen.add(spec)
            rows.append(row(f"sensitivity {key}={value}", setting, True))
    for name, setting in transfer_settings(params).items():
        if name != "near" and setting is not None:
            rows.append(row(f"transfer {name}", setting, False))
    return pd.DataFrame(rows)


