"""The games of one seed: which target test samples it explains and with which players, and
every model's outputs on all ``2**n`` masked versions of each (book/method.md, section 1).

The games are ``[model, sample, 2**n]``: the rows are the linear probe, then fine-tuning's
analysed epochs, then scratch training's (each run's last epoch last). Under torchrun the ranks
split the forward batches (``game_units``) and rank 0 gathers them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from whypretrain import distributed
from whypretrain.engine import masking
from whypretrain.train import data, loops

MODELS = ("probe", "finetune", "scratch")  # rows of the games, in this order
EVERY_EPOCH = "all"  # the value of ``checkpoints`` that analyses every epoch (the default is 8)

def choose_samples(dataset, finals: list[torch.nn.Module], per_class: int, only_correct: bool,
                   batch: int = 256) -> tuple[list[int], int, int]:
    """Target test samples to explain: the first ``per_class`` of each class (in the test set's
    fixed order) that every model of ``finals`` classifies correctly (when ``only_correct``).
    ``finals`` are the final models of every seed, so that every seed explains the same
    samples (book/method.md, section 4: the nulls compare models across seeds on one set of
    games). Reads the test set one batch at a time. Returns the indices, how many samples
    were looked at, and how many of them every model gets right (all, without
    ``only_correct``)."""
    ys, oks = [], []
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False):
        ok = torch.ones(len(y), dtype=torch.bool)
        if only_correct:
            for model in finals:
                model.eval()
                device = next(model.parameters()).device
                ok &= model(x.to(device)).argmax(-1).cpu() == y
        ys.append(y)
        oks.append(ok)
    y, ok = torch.cat(ys), torch.cat(oks)
    chosen = []
    for c in sorted(set(y.tolist())):
        chosen += [i for i in (y == c).nonzero()[:, 0].tolist() if ok[i]][:per_class]
    return sorted(chosen), len(y), int(ok.sum())


def player_seed(sample_id: int, seed: int = 0) -> int:
    """The seed that draws a sample's players: the study's ``player_seed`` and the sample, not
    the training seed nor the model, so every model of every seed is read on the same
    players."""
    return seed * 1_000_003 + sample_id


def analysed_epochs(epochs: list[int], count: int | str) -> list[int]:
    """The checkpoints a run contributes: all of them (``count = EVERY_EPOCH``, "all"), or
    ``count`` spaced evenly from the first epoch to the last (both always in). Evenly, not
    geometrically: the convergence reach happens late in training (epochs 7-9 of 10 on the
    classroom preset), where geometric spacing has no checkpoint (book/method.md, section 5)."""
    if count == EVERY_EPOCH or count >= len(epochs):
        return list(epochs)
    picked = np.unique(np.round(np.linspace(0, len(epochs) - 1, count)).astype(int))
    return [epochs[i] for i in picked]


def game_units(models: int, samples: int, n: int, mask_batch: int
               ) -> list[tuple[int, int, int]]:
    """The forward batches of the games, as ``(model row, first sample, end sample)``: per
    model, the samples ``masking.evaluate`` puts in one forward pass (``mask_batch // 2**n``,
    at least 1). Ranks split these units, never a batch: a CPU convolution is not guaranteed
    to give the same numbers for an image in a batch of another size."""
    per_batch = max(1, mask_batch // (1 << n))
    return [(m, i, min(i + per_batch, samples))
            for m in range(models) for i in range(0, samples, per_batch)]


def evaluate_games(params, seed, runs, ds, device, progress, finals_only) -> dict[str, Any] | None:
    """The games of one seed (under torchrun: on rank 0; None on the others, which evaluate
    their block of ``game_units``)."""
    finals = {k: runs[k].load_model(device=device) for k in MODELS}
    ids, candidates, eligible = shared_samples(params, ds, device, progress)
    x = torch.stack([ds.target_test[i][0] for i in ids])
    y = torch.as_tensor([ds.target_test[i][1] for i in ids])
    players = torch.stack([masking.choose_players(x[j], params["n"], params["patch"],
                                                  player_seed(i, params["player_seed"]),
                                                  params["player_choice"])
                           for j, i in enumerate(ids)])
    labels: list[tuple[str, int]] = [("probe", runs["probe"].epochs()[-1])]
    for kind in ("finetune", "scratch"):
        epochs = runs[kind].epochs()
        chosen = epochs[-1:] if finals_only else analysed_epochs(epochs, params["checkpoints"])
        labels += [(kind, epoch) for epoch in chosen]

    def model_of(row: int) -> torch.nn.Module:
        kind, epoch = labels[row]
        return finals["probe"] if kind == "probe" else runs[kind].load_model(epoch, device=device)

    size = 1 << params["n"]
    units = game_units(len(labels), len(ids), params["n"], params["mask_batch"])
    block = distributed.shard(len(units))
    # the baseline of every sample, made once as evaluate makes it (on the device, all samples)
    base = masking.make_baseline(x.to(device, torch.float32), params["baseline"])
    from tqdm.auto import tqdm
    parts, model, loaded = [], None, None
    for row, i, j in tqdm([units[k] for k in block], desc=f"games (seed {seed})", unit="batch",
                          disable=not progress):
        if row != loaded:
            model, loaded = model_of(row), row
        parts.append(masking.evaluate(model, x[i:j], y[i:j], players[i:j], base[i:j],
                                      params["mask_batch"], params["patch"],
                                      params["subtract_empty"]).cpu())
    gathered = distributed.gather(parts)
    if gathered is None:
        return None
    values = torch.empty(len(labels), len(ids), size, dtype=torch.float64)
    for (row, i, j), part in zip(units, (p for rank_parts in gathered for p in rank_parts)):
        values[row, i:j] = part
    return dict(sample_ids=torch.as_tensor(ids), x=x, y=y, players=players, values=values,
                labels=[list(label) for label in labels], candidates=candidates,
                eligible=eligible, final_epoch=max(runs["finetune"].epochs()))


def shared_samples(params: dict, ds: data.Datasets, device: str, progress: bool = False
                   ) -> tuple[list[int], int, int]:
    """``choose_samples`` with the three final models of every seed of the study (trains the
    runs that are missing): the samples every seed explains. Under torchrun every rank
    chooses, and rank 0's choice is the one kept."""
    every = loops.train_study(params, progress, ds)
    finals = [every[s][k].load_model(device=device) for s in params["seeds"] for k in MODELS]
    ids, candidates, eligible = distributed.agree(choose_samples(
        ds.target_test, finals, params["samples_per_class"], params["only_correct"]))
    if not ids:
        raise RuntimeError(f"no target test sample is classified correctly by the final models "
                           f"of every seed ({len(finals)} models); train longer or set "
                           f"only_correct=false")
    return ids, candidates, eligible
