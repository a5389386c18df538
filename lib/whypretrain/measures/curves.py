"""Measures on curves over epochs: how fast a run reaches its final test accuracy, and how
directly its knowledge converges (book/method.md, section 5).

Functions of tables (``study`` stores them in the study result): the training metrics
(``seed, model, epoch, ..., test_acc``) and the knowledge table's convergence rows
(``jaccard_weighted*``). Nothing here reads files.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from whypretrain.provenance import Sources, attach, sources_of
from whypretrain.measures.stats import over_seeds

ACCURACY_FRACTION = 0.95  # "epochs to reach 95% of the final test accuracy"
REACH_LEVEL = 0.5         # weighted Jaccard to the final fine-tuned model that counts as reached


def training_summary(metrics: pd.DataFrame, values: tuple[str, ...] = ("test_acc", "train_loss")
                     ) -> pd.DataFrame:
    """Per metric in ``values``, model and epoch: mean, sd and 95% interval over seeds of the
    training metrics (``seed, model, epoch, <metric>``)."""
    frames = [over_seeds(metrics.rename(columns={v: "value"})[["seed", "model", "epoch", "value"]],
                         by=["model", "epoch"]).assign(metric=v) for v in values]
    return pd.concat(frames, ignore_index=True)


def first_epoch_reaching(curve: pd.Series, level: float, never: float) -> float:
    """First epoch (index of ``curve``) whose value reaches ``level``; ``never`` if none does."""
    hit = curve.to_numpy() >= level - 1e-12
    return float(curve.index[np.argmax(hit)]) if hit.any() else never


def final_accuracy(m: pd.DataFrame) -> pd.DataFrame:
    last = m[m["epoch"] == m.groupby(["seed", "model"])["epoch"].transform("max")]
    return last.pivot(index="seed", columns="model", values="test_acc")


def accuracy_epochs(m: pd.DataFrame, fraction: float = ACCURACY_FRACTION) -> pd.DataFrame:
    """Per seed and model: the first epoch (>= 1) whose test accuracy reaches ``fraction`` of
    the final one."""
    rows = []
    for (seed, model), g in m[m["epoch"] >= 1].groupby(["seed", "model"]):
        curve = g.set_index("epoch")["test_acc"].sort_index()
        rows.append(dict(seed=seed, model=model,
                         value=first_epoch_reaching(curve, fraction * curve.iloc[-1],
                                                    curve.index[-1])))
    return pd.DataFrame(rows).pivot(index="seed", columns="model", values="value")


def accuracy_summary(metrics: pd.DataFrame, fraction: float = ACCURACY_FRACTION
                     ) -> pd.DataFrame:
    """Final test accuracy and the epoch first reaching ``fraction`` of it, per model: mean,
    sd and 95% interval over seeds."""
    last = metrics[metrics["epoch"] == metrics.groupby(["seed", "model"])["epoch"]
                   .transform("max")]
    final = last[["seed", "model", "test_acc"]].rename(columns={"test_acc": "value"})
    final.insert(2, "measure", "final test accuracy")
    epochs = accuracy_epochs(metrics, fraction).stack().rename("value").reset_index()
    epochs.insert(2, "measure", f"epoch reaching {fraction:.0%} of final accuracy")
    per_seed = attach(pd.concat([final, epochs], ignore_index=True),
                      sources_of(metrics) if "sources" in metrics.attrs else Sources())
    return over_seeds(per_seed, by=["model", "measure"])


def _every_epoch(curve: pd.Series, last: int) -> pd.Series:
    """``curve`` (indexed by the analysed epochs) at every epoch 0..last: an epoch between two
    analysed checkpoints (``checkpoints = k``) takes the straight line between them, one after
    the last analysed epoch keeps its value; with every epoch analysed the curve is returned as
    it is."""
    return curve.reindex(range(last + 1)).interpolate(method="index")


def convergence_measures(t: pd.DataFrame, level: float = REACH_LEVEL) -> pd.DataFrame:
    """Per seed and run (finetune, scratch), two measures that do not rest on a run's
    similarity to itself:

    - ``area``: the mean over epochs 0..T-1 of the weighted Jaccard to the run's own final
      interactions (the area under its curve without the final epoch, where it is 1 by
      construction; an epoch between two analysed checkpoints takes the straight line between
      them); higher = closer to its final knowledge all along;
    - ``reach``: the first epoch before the last whose weighted Jaccard to the final
      *fine-tuned* model (the reference common to both runs) reaches ``level``, between
      analysed checkpoints on the straight line joining them; ``T + 1`` when none does. The
      last epoch is left out for both runs, and no line is drawn towards it: the fine-tuned
      run's is the reference itself (similarity 1), so counting it made a fine-tuned run that
      never came near its final knowledge "reach" it at T, one epoch ahead of a scratch run's
      T + 1.
    """
    rows = []
    for (seed, model), g in t[t["measure"].str.startswith("jaccard_weighted")].groupby(
            ["seed", "model"]):
        own = g[g["measure"] == "jaccard_weighted"].groupby("epoch")["value"].mean().sort_index()
        ref = g[g["measure"] == "jaccard_weighted_vs_finetune"].groupby("epoch")["value"] \
            .mean().sort_index()
        last = int(own.index.max())
        every = _every_epoch(own, last)
        rows += [dict(seed=seed, model=model, measure="area",
                      value=float(every[every.index < last].mean())),
                 dict(seed=seed, model=model, measure="reach",
                      value=first_epoch_reaching(_every_epoch(ref[ref.index < last], last - 1),
                                                 level, last + 1))]
    out = pd.DataFrame(rows, columns=["seed", "model", "measure", "value"])
    return attach(out, sources_of(t)) if "sources" in t.attrs else out




def crossed_measures(crossed: pd.DataFrame, level: float = REACH_LEVEL) -> pd.DataFrame:
    """Per seed s, partner s' and run (finetune, scratch): ``area`` and ``reach`` as in
    ``convergence_measures``, of the run's curve against the final fine-tuned model of s'
    (``nulls.crossed_table``, mean over samples per epoch), a model neither run of s descends
    from: the area is the mean over epochs 0..T-1, the reach the first epoch before the last
    at ``level`` (``T + 1`` if none). Columns ``seed, partner, model, measure, value``."""
    rows = []
    for (seed, partner, model), g in crossed.groupby(["seed", "partner", "model"]):
        curve = g.groupby("epoch")["value"].mean().sort_index()
        last = int(curve.index.max())
        every = _every_epoch(curve, last)
        before = _every_epoch(curve[curve.index < last], last - 1)
        rows += [dict(seed=seed, partner=partner, model=model, measure="area",
                      value=float(every[every.index < last].mean())),
                 dict(seed=seed, partner=partner, model=model, measure="reach",
                      value=first_epoch_reaching(before, level, last + 1))]
    return pd.DataFrame(rows, columns=["seed", "partner", "model", "measure", "value"])
