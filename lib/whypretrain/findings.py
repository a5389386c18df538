"""The paper's claims as data, judged on our results.

Each claim is one ``Claim`` record: the paper's statement, our measure (a number per seed), the
rule that turns its mean and 95% interval over seeds into a verdict, and the paper's range when
it gives one. ``judge(params)`` reads one setting's results and returns one row per claim
(value with interval, verdict); ``transfer_table(params)`` does it for the near, disjoint and
far transfer settings side by side. Reads only (``study``): computes nothing new.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from . import data, knowledge, study
from .errors import MissingResults, UserError
from .provenance import attach, combine, command, sources_of

LEARNABLE_RANGE = (0.13, 0.45)  # the paper's range of the learnable share (Figure 3)
ACCURACY_FRACTION = study.ACCURACY_FRACTION
REACH_LEVEL = study.REACH_LEVEL
NOT_RUN = "not run"
VERDICTS = ("yes", "partly", "no", NOT_RUN)


@dataclass(frozen=True)
class Estimate:
    """A measure over seeds: mean, sd and 95% interval (NaN with fewer than 2 seeds)."""
    mean: float
    sd: float
    low: float
    high: float
    n_seeds: int

    @classmethod
    def of(cls, per_seed: pd.Series) -> "Estimate":
        frame = pd.DataFrame({"sample": range(len(per_seed)), "g": 0,
                              "value": per_seed.to_numpy(dtype=float)})
        row = knowledge.aggregate(frame, by=["g"]).iloc[0]
        return cls(float(row["mean"]), float(row["std"]), float(row["ci_low"]),
                   float(row["ci_high"]), int(row["n"]))

    @property
    def has_interval(self) -> bool:
        return self.n_seeds >= 2 and np.isfinite(self.low)


# --- rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    text: str
    judge: Callable[[Estimate], str]


def above(threshold: float, pct: bool = False) -> Rule:
    """yes: the 95% interval lies above ``threshold``; no: it lies at or below; partly: it
    contains it. With one seed (no interval) the mean decides."""
    t = f"{threshold:.0%}" if pct else f"{threshold:g}"

    def judge(e: Estimate) -> str:
        if not np.isfinite(e.mean):
            return "no"
        if not e.has_interval:
            return "yes" if e.mean > threshold else "no"
        if e.low > threshold:
            return "yes"
        if e.high <= threshold:
            return "no"
        return "partly"
    return Rule(f"yes when the 95% interval over seeds lies above {t}, no when it lies at or "
                f"below {t}, partly when it contains {t} (one seed: the mean decides)", judge)


def inside(low: float, high: float) -> Rule:
    """yes: the mean lies in [low, high]; partly: only the 95% interval overlaps it; no: not."""
    def judge(e: Estimate) -> str:
        if not np.isfinite(e.mean):
            return "no"
        if low <= e.mean <= high:
            return "yes"
        if e.has_interval and e.low <= high and e.high >= low:
            return "partly"
        return "no"
    return Rule(f"yes when the mean lies in {low:.0%}-{high:.0%}, partly when only its 95% "
                f"interval overlaps that range, no otherwise", judge)


# --- the measures (one number per seed) ------------------------------------------------------

@dataclass
class Inputs:
    """What the claims of one setting read: training metrics and the knowledge table."""
    metrics: pd.DataFrame
    table: pd.DataFrame


def accuracy_gap(x: Inputs) -> pd.Series:
    final = study.final_accuracy(x.metrics)
    return final["finetune"] - final["scratch"]


def accuracy_speed(x: Inputs) -> pd.Series:
    e = study.accuracy_epochs(x.metrics)
    return e["scratch"] - e["finetune"]


def _final_measure(t: pd.DataFrame, measure: str) -> pd.Series:
    rows = t[(t["measure"] == measure) & (t["order"] == knowledge.ALL_ORDERS)]
    return rows.groupby("seed")["value"].mean()  # NaN ratios (undefined) are left out


def mean_order(t: pd.DataFrame, measure: str) -> pd.Series:
    """Per seed: the mean order |S| of the items of ``measure`` (count_*), items pooled."""
    rows = t[(t["measure"] == measure) & (t["order"] >= 0)]
    counts = rows.groupby(["seed", "order"])["value"].sum().reset_index()
    weighted = (counts["order"] * counts["value"]).groupby(counts["seed"]).sum()
    total = counts.groupby("seed")["value"].sum()
    return (weighted / total.where(total > 0)).astype(float)


def order_gap(x: Inputs) -> pd.Series:
    return mean_order(x.table, "count_discard") - mean_order(x.table, "count_preserve")


def _convergence(x: Inputs, measure: str) -> pd.DataFrame:
    c = study.convergence_measures(x.table, REACH_LEVEL)
    if c.empty:
        raise MissingResults("convergence measures (results of every epoch; set checkpoints=0)",
                             "whypretrain analyze --preset ... --set checkpoints=0")
    return c[c["measure"] == measure].pivot(index="seed", columns="model", values="value")


def area_gap(x: Inputs) -> pd.Series:
    a = _convergence(x, "area")
    return a["finetune"] - a["scratch"]


def reach_gap(x: Inputs) -> pd.Series:
    r = _convergence(x, "reach")
    return r["scratch"] - r["finetune"]


# --- the claims ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    key: str
    paper: str            # the paper's statement
    measure: str          # our measure, one number per seed
    value: Callable[[Inputs], pd.Series]
    rule: Rule
    pct: bool = False     # shown as a percentage


FIGURE4 = "Fine-tuning reaches its final knowledge faster and more directly (Figure 4)"
CLAIMS: tuple[Claim, ...] = (
    Claim("accuracy_gap", "Fine-tuned models beat models trained from scratch on the target "
          "task (the paper's premise)", "final test accuracy, fine-tuned minus scratch",
          accuracy_gap, above(0.0)),
    Claim("accuracy_speed", "Fine-tuning converges in fewer epochs",
          f"epochs to {ACCURACY_FRACTION:.0%} of the final test accuracy, scratch minus "
          "fine-tuned", accuracy_speed, above(0.0)),
    Claim("share_discarded", "Most pre-trained knowledge is discarded by fine-tuning (only a "
          "small amount is preserved)", "share of K_probe (the paper's K_pretrain) discarded",
          lambda x: _final_measure(x.table, "share_discarded"), above(0.5, pct=True), pct=True),
    Claim("share_new", "Fine-tuning learns much new knowledge (Figure 2)",
          "share of K_finetune that is new", lambda x: _final_measure(x.table, "share_new"),
          above(0.5, pct=True), pct=True),
    Claim("learnable", f"Only {LEARNABLE_RANGE[0]:.0%}-{LEARNABLE_RANGE[1]:.0%} of the "
          "preserved knowledge is learnable from scratch (Figure 3)",
          "share of K_preserve the scratch model also has",
          lambda x: _final_measure(x.table, "ratio_learnable"), inside(*LEARNABLE_RANGE),
          pct=True),
    Claim("discard_order", "Discarded knowledge is mostly high-order",
          "mean order |S| of discarded minus preserved items", order_gap, above(0.0)),
    Claim("convergence_area", FIGURE4,
          "area under the weighted-Jaccard curve to the run's own final model (epochs before "
          "the last), fine-tuned minus scratch", area_gap, above(0.0)),
    Claim("convergence_reach", FIGURE4,
          f"first epoch at weighted Jaccard >= {REACH_LEVEL:g} to the final fine-tuned model "
          "(T + 1 if never), scratch minus fine-tuned", reach_gap, above(0.0)),
)
CLAIM_KEYS = tuple(c.key for c in CLAIMS)


def fmt(e: Estimate, pct: bool = False) -> str:
    """``mean ± sd [low, high]`` (sd and interval left out when undefined)."""
    return study.describe(dict(mean=e.mean, std=e.sd, ci_low=e.low, ci_high=e.high), pct)


def judge_inputs(x: Inputs, setting: str = "near") -> pd.DataFrame:
    """One row per claim: setting, claim, paper, measure, rule, mean, sd, ci_low, ci_high,
    n_seeds, ours (formatted), verdict."""
    rows = []
    for c in CLAIMS:
        e = Estimate.of(c.value(x))
        rows.append(dict(setting=setting, claim=c.key, paper=c.paper, measure=c.measure,
                         rule=c.rule.text, mean=e.mean, sd=e.sd, ci_low=e.low, ci_high=e.high,
                         n_seeds=e.n_seeds, ours=fmt(e, c.pct), verdict=c.rule.judge(e)))
    return pd.DataFrame(rows)


def judge(params: dict, setting: str = "near", datasets: data.Datasets | None = None
          ) -> pd.DataFrame:
    """``judge_inputs`` on the stored results of ``params`` (reads only)."""
    ds = datasets or data.load_datasets(params)
    x = Inputs(study.training_table(params, ds), study.table(params, datasets=ds))
    out = judge_inputs(x, setting)
    return attach(out, sources_of(x.metrics) + sources_of(x.table))


def not_run(setting: str, command: str) -> pd.DataFrame:
    return pd.DataFrame([dict(setting=setting, claim=c.key, paper=c.paper, measure=c.measure,
                              rule=c.rule.text, mean=np.nan, sd=np.nan, ci_low=np.nan,
                              ci_high=np.nan, n_seeds=0, ours=f"not run: `{command}`",
                              verdict=NOT_RUN) for c in CLAIMS])


def transfer_table(params: dict) -> pd.DataFrame:
    """``judge`` of the near, disjoint and far settings (``study.transfer_settings``), stacked.
    near and disjoint must be on disk (``MissingResults`` otherwise); a far setting that is not
    (or has no preset in this version) gets verdict "not run" and the command that runs it."""
    frames, sources = [], []
    for name, setting in study.transfer_settings(params).items():
        if setting is None:
            frames.append(not_run(name, study.far_command(params)))
            continue
        try:
            frame = judge(setting, name)
        except (UserError, OSError, ValueError, RuntimeError):
            # far: a missing model, weights file or result is "not run", never a failure
            if name != "far":
                raise
            frames.append(not_run(name, study.far_command(params)))
            continue
        frames.append(frame)
        sources.append(sources_of(frame))
    # `whypretrain study` (compute_all) computes near and disjoint; far: its own command
    return attach(pd.concat(frames, ignore_index=True),
                  combine(sources).rebuilt_by(command("study", params)))


def as_markdown(table: pd.DataFrame) -> str:
    """The claims (rows) by setting (columns): our value and verdict, then each claim's measure
    and rule."""
    settings = list(dict.fromkeys(table["setting"]))
    wide = {s: table[table["setting"] == s].set_index("claim") for s in settings}
    lines = ["| claim (paper) | " + " | ".join(settings) + " |",
             "|---" * (len(settings) + 1) + "|"]
    for c in CLAIMS:
        cells = []
        for s in settings:
            r = wide[s].loc[c.key]
            cells.append(f"{r['ours']}<br>**{r['verdict']}**" if r["verdict"] != NOT_RUN
                         else r["ours"])
        lines.append(f"| {c.paper} | " + " | ".join(cells) + " |")
    lines += ["", "| claim | our measure (per seed) | verdict rule |", "|---|---|---|"]
    lines += [f"| {c.key} | {c.measure} | {c.rule.text} |" for c in CLAIMS]
    return "\n".join(lines)


def verdict_counts(table: pd.DataFrame) -> dict[str, str]:
    """Per setting: "k of m claims reproduce" (or "not run")."""
    out = {}
    for s, g in table.groupby("setting", sort=False):
        out[s] = NOT_RUN if (g["verdict"] == NOT_RUN).all() else \
            f"{(g['verdict'] == 'yes').sum()} of {len(g)}"
    return out


def movement(table: pd.DataFrame) -> dict[str, str]:
    """Per claim, one sentence on how our value moves from the near setting to the others:
    higher / lower when the other setting's mean lies outside the near setting's 95% interval
    (outside its value, with one seed), about the same otherwise."""
    out = {}
    by = table.set_index(["setting", "claim"])
    for c in CLAIMS:
        near = by.loc[("near", c.key)]
        parts = []
        for other in [s for s in dict.fromkeys(table["setting"]) if s != "near"]:
            r = by.loc[(other, c.key)]
            if r["verdict"] == NOT_RUN:
                parts.append(f"{other}: not run")
                continue
            low, high = (near["ci_low"], near["ci_high"]) if np.isfinite(near["ci_low"]) \
                else (near["mean"], near["mean"])
            word = ("higher" if r["mean"] > high else "lower" if r["mean"] < low
                    else "about the same")
            parts.append(f"{other}: {word} ({r['ours']}, verdict {r['verdict']})")
        out[c.key] = f"near {near['ours']} (verdict {near['verdict']}); " + "; ".join(parts)
    return out


def narrative(table: pd.DataFrame) -> dict[str, str]:
    """The texts the findings page glues into its prose, by key: ``<setting>-<claim>`` (our
    value), ``<setting>-<claim>-verdict``, ``count-<setting>`` (claims that reproduce),
    ``move-<claim>`` (``movement``), ``disjoint-setting`` and ``far-setting`` (what they are)."""
    out = {}
    for r in table.itertuples():
        out[f"{r.setting}-{r.claim}"] = r.ours
        out[f"{r.setting}-{r.claim}-verdict"] = r.verdict
    for setting, text in verdict_counts(table).items():
        out[f"count-{setting}"] = text
    for claim, text in movement(table).items():
        out[f"move-{claim}"] = text
    out["disjoint-setting"] = " → ".join(f"`{study.DISJOINT[k]}`" for k in ("source", "target"))
    out["far-setting"] = f"`{study.FAR_PRESET}`"
    return out
