"""Estimates and intervals: every mean and 95% interval of the study is formed here.

A number of the study is a mean over samples per seed, then the mean over seeds with its
standard deviation and 95% Student-t interval (book/method.md, section 3). ``aggregate`` does
one such step on a tidy table, ``summarize`` both steps, ``over_seeds`` the second one for a
table that already holds one value per seed; ``Estimate`` is the same for one claim's values
per seed, and ``interval_text`` writes any of them as ``mean ± sd [low, high]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from whypretrain.provenance import attach, sources_of

CONFIDENCE = 0.95


def aggregate(table: pd.DataFrame, by: Sequence[str] | None = None, value: str = "value",
              confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean, std (ddof=1), Student-t confidence interval and counts of ``value`` per group.

    ``by`` defaults to every column but ``sample`` and ``value`` (i.e. over samples). NaN
    values (undefined ratios) are left out: ``n`` counts the values used, ``n_undefined`` the
    NaN ones. The interval is ``mean +/- t_{(1+confidence)/2, n-1} * std / sqrt(n)``; it is NaN
    when ``n < 2`` (as is ``std``), and ``mean`` is NaN when ``n == 0``. To aggregate over
    seeds, aggregate per seed first and then aggregate the ``mean`` column again
    (``summarize``).
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if by is None:
        by = [c for c in table.columns if c not in ("sample", value)]
    by = list(by)
    if not by:
        raise ValueError("aggregate needs at least one column to group by")
    grouped = table.groupby(by, dropna=False, sort=True)[value]
    out = grouped.agg(mean="mean", std="std", n="count", size="size").reset_index()
    n = out["n"].to_numpy(dtype=np.int64)
    std = out["std"].to_numpy(dtype=float)
    ok = n >= 2
    t = np.full(len(out), np.nan)
    t[ok] = stats.t.ppf(0.5 + confidence / 2.0, n[ok] - 1)
    half = np.full(len(out), np.nan)
    half[ok] = t[ok] * std[ok] / np.sqrt(n[ok])
    out["std"] = np.where(ok, std, np.nan)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out["n_undefined"] = out.pop("size") - out["n"]
    return out[by + ["mean", "std", "ci_low", "ci_high", "n", "n_undefined"]]


def summarize(table: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Mean over samples per seed, then mean, spread and 95% interval over seeds (keeps the
    table's sources).

    ``n_seeds`` is the number of seeds with a defined value; ``n_samples`` the samples with a
    defined value, summed over seeds.
    """
    by = by or ["model", "epoch", "measure", "order"]
    per_seed = aggregate(table, by=["seed", *by])
    over = aggregate(per_seed, by=by, value="mean")
    counts = per_seed.groupby(by, dropna=False)["n"].sum().rename("n_samples").reset_index()
    over = over.rename(columns={"n": "n_seeds", "n_undefined": "n_seeds_undefined"})
    out = over.merge(counts, on=by, how="left")
    if "sources" in table.attrs:
        attach(out, sources_of(table))
    return out


def over_seeds(per_seed: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    """Mean, sd and 95% interval over seeds of a table with one ``value`` per seed and group."""
    out = aggregate(per_seed.rename(columns={"seed": "sample"}), by=by, value=value)
    out = out.rename(columns={"n": "n_seeds"}).drop(columns="n_undefined")
    if "sources" in per_seed.attrs:
        attach(out, sources_of(per_seed))
    return out


def interval_text(row: Any, pct: bool = False) -> str:
    """``mean ± sd [low, high]`` of a row with ``mean, std, ci_low, ci_high`` (a summary row);
    sd and interval left out where undefined (one seed), "n/a" without a mean."""
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.2f}")
    mean, sd = float(row["mean"]), float(row["std"])
    if not np.isfinite(mean):
        return "n/a"
    text = f(mean)
    if np.isfinite(sd):
        text += f" ± {f(sd)}"
    if np.isfinite(float(row["ci_low"])):
        text += f" [{f(float(row['ci_low']))}, {f(float(row['ci_high']))}]"
    return text


def with_text(table: pd.DataFrame, pct: Any = False) -> pd.DataFrame:
    """``table`` (rows with ``mean, std, ci_low, ci_high``) with a column ``text``:
    ``interval_text`` of each row, as a percentage where ``pct`` (a bool, or a function of
    the row) says so."""
    out = table.copy()
    out["text"] = [interval_text(r, pct(r) if callable(pct) else pct) for _, r in out.iterrows()]
    if "sources" in table.attrs:
        attach(out, sources_of(table))
    return out


@dataclass(frozen=True)
class Estimate:
    """One measure over seeds: mean, sd and 95% interval (NaN with fewer than 2 seeds)."""
    mean: float
    sd: float
    low: float
    high: float
    n_seeds: int

    @classmethod
    def of(cls, per_seed: pd.Series) -> "Estimate":
        """From one value per seed (NaN values left out)."""
        if per_seed.dropna().empty:
            return cls(np.nan, np.nan, np.nan, np.nan, 0)
        frame = pd.DataFrame({"sample": range(len(per_seed)), "g": 0,
                              "value": per_seed.to_numpy(dtype=float)})
        row = aggregate(frame, by=["g"]).iloc[0]
        return cls(float(row["mean"]), float(row["std"]), float(row["ci_low"]),
                   float(row["ci_high"]), int(row["n"]))

    @property
    def has_interval(self) -> bool:
        return self.n_seeds >= 2 and np.isfinite(self.low)

    def text(self, pct: bool = False) -> str:
        """``mean ± sd [low, high]`` (``interval_text``)."""
        return interval_text(dict(mean=self.mean, std=self.sd, ci_low=self.low,
                                  ci_high=self.high), pct)
