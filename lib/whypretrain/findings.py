"""The study's findings: accuracies, knowledge summaries and each claim of the paper beside our
number, over seeds. Reads runs (``training``) and results (``analysis``); computes nothing new.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import analysis, knowledge, training

TARGET_RUNS = {"probe": "pretrain", "finetune": "finetune", "scratch": "scratch"}


def training_table(params: dict) -> pd.DataFrame:
    """Per-epoch metrics of the three target runs of every seed: columns ``seed, model, epoch,
    train_loss, train_acc, test_loss, test_acc`` (model ``pretrain`` is the linear probe)."""
    frames = []
    for seed, runs in training.train_study(params, progress=False).items():
        for kind, model in TARGET_RUNS.items():
            m = runs[kind].metrics.copy()
            m.insert(0, "model", model)
            m.insert(0, "seed", seed)
            frames.append(m)
    return pd.concat(frames, ignore_index=True)


def first_epoch_reaching(curve: pd.Series, fraction: float) -> int:
    """First epoch (index of ``curve``) whose value reaches ``fraction`` of the final value."""
    target = fraction * curve.iloc[-1]
    return int(curve.index[np.argmax(curve.to_numpy() >= target - 1e-12)])


def accuracy_summary(metrics: pd.DataFrame, fraction: float = 0.95) -> pd.DataFrame:
    """Final test accuracy and the epoch first reaching ``fraction`` of it, per model: mean,
    sd and 95% interval over seeds."""
    rows = []
    for (seed, model), g in metrics[metrics["epoch"] >= 1].groupby(["seed", "model"]):
        curve = g.set_index("epoch")["test_acc"].sort_index()
        rows += [dict(seed=seed, model=model, measure="final test accuracy",
                      value=curve.iloc[-1]),
                 dict(seed=seed, model=model, measure=f"epoch reaching {fraction:.0%} of final",
                      value=first_epoch_reaching(curve, fraction))]
    per_seed = pd.DataFrame(rows)
    out = knowledge.aggregate(per_seed.rename(columns={"seed": "sample"}), by=["model", "measure"])
    return out.rename(columns={"n": "n_seeds"}).drop(columns="n_undefined")


def knowledge_summary(params: dict, tau: float | None = None) -> pd.DataFrame:
    """``analysis.summarize`` of every seed's table: the numbers behind Figures 2-4."""
    return analysis.summarize(analysis.study_table(params, tau))


def convergence_speed(table: pd.DataFrame, fraction: float = 0.9,
                      measure: str = "jaccard_weighted") -> pd.DataFrame:
    """Per seed and run: the first epoch whose mean (over samples) similarity to the run's final
    interactions reaches ``fraction`` of the final similarity, and the mean similarity over
    epochs 1..T (area under the curve, 1 = there from the start)."""
    rows = []
    curves = table[(table["measure"] == measure) & (table["epoch"] >= 0)]
    for (seed, model), g in curves.groupby(["seed", "model"]):
        curve = g.groupby("epoch")["value"].mean().sort_index()
        rows += [dict(seed=seed, model=model, measure=f"epoch reaching {fraction:g} of final",
                      value=first_epoch_reaching(curve, fraction)),
                 dict(seed=seed, model=model, measure="mean similarity over epochs",
                      value=float(curve[curve.index >= 1].mean()))]
    return pd.DataFrame(rows)


def _mean_order(summary: pd.DataFrame, measure: str) -> float:
    by_order = summary[(summary["measure"] == measure) & (summary["order"] >= 0)]
    weights = by_order["mean"].to_numpy()
    return float((by_order["order"].to_numpy() * weights).sum() / max(weights.sum(), 1e-12))


def _both(first: bool, second: bool, only_second: str, only_first: str) -> bool | str:
    """A two-part claim: yes when both parts hold, 'partly (...)' when one does."""
    if first and second:
        return True
    if first or second:
        return f"partly ({only_first if first else only_second})"
    return False


def _fmt(mean: float, sd: float, low: float | None = None, high: float | None = None,
         pct: bool = False) -> str:
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.2f}")
    text = f"{f(mean)} ± {f(sd) if np.isfinite(sd) else 'n/a'}"
    if low is not None and np.isfinite(low):
        text += f" [{f(low)}, {f(high)}]"
    return text


def findings(params: dict, tau: float | None = None) -> pd.DataFrame:
    """One row per claim of the paper: what the paper says, our number (mean ± sd over seeds
    [95% interval]) and whether it reproduces on our runs."""
    metrics = training_table(params)
    table = analysis.study_table(params, tau)
    summary = analysis.summarize(table)
    seeds = sorted(table["seed"].unique())
    rows = []

    def add(claim, paper, ours, holds, note=""):
        rows.append(dict(claim=claim, paper=paper, ours=ours,
                         reproduces="yes" if holds is True else "no" if holds is False else holds,
                         note=note))

    final = metrics[metrics["epoch"] == metrics["epoch"].max()].pivot(
        index="seed", columns="model", values="test_acc")
    gap = final["finetune"] - final["scratch"]
    add("Fine-tuned beats scratch on the target task", "yes (the paper's premise)",
        f"accuracy gap {_fmt(gap.mean(), gap.std())} over {len(gap)} seeds",
        bool((gap > 0).all() and gap.mean() > (gap.std() if len(gap) > 1 else 0)),
        f"fine-tuned {final['finetune'].mean():.3f}, scratch {final['scratch'].mean():.3f}, "
        f"probe {final['pretrain'].mean():.3f}")
    acc = accuracy_summary(metrics).set_index(["model", "measure"])["mean"]
    e_ft = acc[("finetune", "epoch reaching 95% of final")]
    e_sc = acc[("scratch", "epoch reaching 95% of final")]
    add("Fine-tuned converges in fewer epochs", "yes",
        f"epochs to 95% of final accuracy: fine-tuned {e_ft:.1f}, scratch {e_sc:.1f}",
        bool(e_ft < e_sc))

    total = summary[summary["order"] == -1].set_index("measure")
    disc = total.loc["share_discarded"]
    add("Most pre-trained knowledge is discarded by fine-tuning", "yes ('only a small amount "
        "is preserved')", "share of K_pretrain discarded " + _fmt(
            disc["mean"], disc["std"], disc["ci_low"], disc["ci_high"], pct=True),
        bool(disc["mean"] > 0.5))
    new = total.loc["share_new"]
    add("Fine-tuning learns much new knowledge", "yes (Figure 2)", "share of K_finetune that "
        "is new " + _fmt(new["mean"], new["std"], new["ci_low"], new["ci_high"], pct=True),
        bool(new["mean"] > 0.5))
    r = total.loc["ratio_learnable"]
    lo, hi = 0.13, 0.45
    overlaps = r["ci_low"] <= hi and r["ci_high"] >= lo
    verdict = (True if lo <= r["mean"] <= hi else
               f"partly (mean {'below' if r['mean'] < lo else 'above'} the paper's range, "
               f"95% interval overlaps it)" if overlaps else False)
    add("Preserved knowledge is hard to learn from scratch", "13%-45% of it is learnable",
        "learnable share " + _fmt(r["mean"], r["std"], r["ci_low"], r["ci_high"], pct=True),
        verdict, f"{int(r['n_samples'])} samples with preserved knowledge over "
                 f"{len(seeds)} seeds")
    o_disc, o_pres = _mean_order(summary, "count_discard"), _mean_order(summary, "count_preserve")
    add("Discarded knowledge is mostly high-order", "yes",
        f"mean order: discarded {o_disc:.2f}, preserved {o_pres:.2f}", bool(o_disc > o_pres))
    per_seed = convergence_speed(table)
    speed = per_seed[per_seed["measure"].str.startswith("epoch")].pivot(
        index="seed", columns="model", values="value")
    auc = per_seed[per_seed["measure"] == "mean similarity over epochs"].pivot(
        index="seed", columns="model", values="value")
    add("Fine-tuning reaches its final knowledge faster and more directly", "yes (Figure 4)",
        f"epochs to 0.9 of final weighted Jaccard: fine-tuned {speed['finetune'].mean():.1f}, "
        f"scratch {speed['scratch'].mean():.1f}; mean Jaccard over epochs: fine-tuned "
        f"{auc['finetune'].mean():.2f}, scratch {auc['scratch'].mean():.2f}",
        _both(speed["finetune"].mean() < speed["scratch"].mean(),
              auc["finetune"].mean() > auc["scratch"].mean(),
              "closer to its final knowledge on average, not sooner at 0.9",
              "sooner at 0.9, but not closer on average"))
    return pd.DataFrame(rows)


def as_markdown(table: pd.DataFrame, params: dict) -> str:
    """The findings table as Markdown, led by a plain sentence on what reproduces."""
    held = (table["reproduces"] == "yes").sum()
    lines = [f"On preset **{params['preset']}** (seeds {', '.join(map(str, params['seeds']))}, "
             f"n = {params['n']} players, tau = {params['tau']}), **{held} of {len(table)}** "
             f"claims reproduce.", ""]
    missed = table[table["reproduces"] != "yes"]
    if len(missed):
        lines += ["Not (fully) reproduced: " + "; ".join(
            f"*{c}* ({r})" for c, r in zip(missed["claim"], missed["reproduces"])) + ".", ""]
    lines += ["| claim | paper | ours | reproduces | note |", "|---|---|---|---|---|"]
    lines += [f"| {r.claim} | {r.paper} | {r.ours} | **{r.reproduces}** | {r.note} |"
              for r in table.itertuples()]
    return "\n".join(lines)
