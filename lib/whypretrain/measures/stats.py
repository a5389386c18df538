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


# --- inference on a whole statistic: crossed jackknife, tests, Holm, power, sign flips -------
# (book/method.md, section 7)

def _satterthwaite(v_seed, v_sample, n_seeds, n_samples):
    """Degrees of freedom of a sum of two variance parts with n - 1 degrees of freedom each
    (Welch-Satterthwaite); n_seeds - 1 where both parts are 0. Arrays broadcast."""
    v_seed, v_sample = np.asarray(v_seed, float), np.asarray(v_sample, float)
    df_seed = np.maximum(np.asarray(n_seeds, float) - 1, 1)
    df_sample = np.maximum(np.asarray(n_samples, float) - 1, 1)
    num = (v_seed + v_sample) ** 2
    den = v_seed ** 2 / df_seed + v_sample ** 2 / df_sample
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), df_seed)


def jackknife_variance(folds) -> np.ndarray:
    """Delete-one jackknife variance ``(g - 1) / g * sum (theta_j - mean theta)^2`` over the
    last axis of ``folds``, g the number of defined (finite) folds: a fold whose statistic is
    undefined (a left-out sample that held every defined ratio) is left out. NaN with fewer
    than 2 defined folds."""
    folds = np.asarray(folds, float)
    ok = np.isfinite(folds)
    g = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, folds, 0.0).sum(axis=-1, keepdims=True) / np.maximum(g, 1)[..., None]
        dev2 = np.where(ok, (folds - mean) ** 2, 0.0).sum(axis=-1)
        return np.where(g >= 2, (g - 1) / np.maximum(g, 1) * dev2, np.nan)


def crossed_interval(estimate, seed_folds, sample_folds, confidence: float = CONFIDENCE):
    """Vectorised ``Inference``: ``estimate`` (...), ``seed_folds`` (..., seeds) and
    ``sample_folds`` (..., samples) give ``(low, high, se, df)``: the seed and the sample
    parts of the jackknife variance summed, a Student-t interval at their Satterthwaite
    degrees of freedom."""
    from scipy import stats
    seed_folds, sample_folds = np.asarray(seed_folds, float), np.asarray(sample_folds, float)
    v_seed = jackknife_variance(seed_folds)
    v_sample = jackknife_variance(sample_folds) if sample_folds.shape[-1] >= 2 else 0.0
    v_sample = np.where(np.isfinite(v_sample), v_sample, 0.0)
    se = np.sqrt(v_seed + v_sample)
    df = _satterthwaite(v_seed, v_sample, seed_folds.shape[-1], sample_folds.shape[-1])
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return estimate - half, estimate + half, se, df


@dataclass(frozen=True)
class Inference:
    """A whole statistic with its crossed-jackknife standard error: ``estimate`` on all the
    data, the seed part and the sample part of its variance (leave one seed out, the nulls
    recomputed without it; leave one sample out), their sum ``se**2`` and its
    Welch-Satterthwaite degrees of freedom ``df``. ``low``/``high``: the 95% interval, cut
    to ``bounds`` (a share's range)."""
    estimate: float
    v_seed: float
    v_sample: float
    n_seeds: int
    n_samples: int
    bounds: tuple[float, float] = (-np.inf, np.inf)
    method: str = "crossed jackknife"

    @classmethod
    def of(cls, estimate: float, seed_folds, sample_folds=(), bounds=(-np.inf, np.inf),
           method: str = "crossed jackknife") -> "Inference":
        """From the statistic on all data and on each leave-one-seed-out and
        leave-one-sample-out fold (the sample part is 0 with fewer than 2 samples)."""
        seed_folds, sample_folds = np.asarray(seed_folds, float), np.asarray(sample_folds, float)
        v_sample = float(jackknife_variance(sample_folds)) if len(sample_folds) >= 2 else 0.0
        return cls(float(estimate), float(jackknife_variance(seed_folds)),
                   0.0 if not np.isfinite(v_sample) else v_sample, len(seed_folds),
                   len(sample_folds), bounds, method)

    @property
    def se(self) -> float:
        return float(np.sqrt(self.v_seed + self.v_sample))

    @property
    def df(self) -> float:
        return float(_satterthwaite(self.v_seed, self.v_sample, self.n_seeds, self.n_samples))

    @property
    def defined(self) -> bool:
        """An estimate with a standard error (at least 2 seeds)."""
        return bool(np.isfinite(self.estimate) and np.isfinite(self.se) and self.n_seeds >= 2)

    @property
    def zero_width(self) -> bool:
        """No spread at all: an interval of width 0 decides nothing."""
        return self.defined and self.se <= 1e-12 * max(1.0, abs(self.estimate))

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """``estimate +/- t_df * se``, cut to ``bounds``; NaN where undefined."""
        from scipy import stats
        if not self.defined:
            return np.nan, np.nan
        half = stats.t.ppf(0.5 + confidence / 2, self.df) * self.se
        lo, hi = self.bounds
        return (float(np.clip(self.estimate - half, lo, hi)),
                float(np.clip(self.estimate + half, lo, hi)))

    @property
    def low(self) -> float:
        return self.interval()[0]

    @property
    def high(self) -> float:
        return self.interval()[1]

    def tests(self, sesoi: float) -> dict[str, float]:
        """p-values: ``differs`` (two-sided, effect = 0), ``equivalent`` (the larger of the
        two one-sided tests of effect <= -sesoi and effect >= +sesoi: TOST) and
        ``exceeds_sesoi`` (one-sided, effect <= sesoi). NaN where undefined or zero-width."""
        if not self.defined or self.zero_width:
            return dict(differs=np.nan, equivalent=np.nan, exceeds_sesoi=np.nan)
        return tests(self.estimate, self.se, self.df, sesoi)


def tests(estimate, se, df, sesoi) -> dict[str, Any]:
    """``Inference.tests`` on arrays (vectorised): t statistics against 0, +-sesoi."""
    from scipy import stats
    t0 = estimate / se
    return dict(differs=2 * stats.t.sf(np.abs(t0), df),
                equivalent=np.maximum(stats.t.sf((estimate + sesoi) / se, df),
                                      stats.t.sf((sesoi - estimate) / se, df)),
                exceeds_sesoi=stats.t.sf((estimate - sesoi) / se, df))


def holm(pvalues: Sequence[float], alpha: float = 1 - CONFIDENCE) -> np.ndarray:
    """Holm's step-down: which hypotheses are rejected at family-wise level ``alpha``. The
    p-values sorted ascending are compared with alpha / m, alpha / (m - 1), ...; the first that
    fails stops the rejections. NaN p-values are never rejected and do not count in m."""
    p = np.asarray(pvalues, float)
    reject = np.zeros(len(p), bool)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    for step, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        if p[i] > alpha / (m - step):
            break
        reject[i] = True
    return reject


POWER = 0.8          # the power a planned study should have
SD_BOUND = 0.8       # the one-sided confidence level of the sd's upper bound used to plan


def sd_upper(sd: float, df: float, level: float = SD_BOUND) -> float:
    """The one-sided ``level`` upper confidence bound of a standard deviation estimated with
    ``df`` degrees of freedom: sd * sqrt(df / chi2_{1 - level}(df))."""
    from scipy import stats
    return float(sd * np.sqrt(df / stats.chi2.ppf(1 - level, df)))


def power(sesoi: float, sd_seed: float, n_seeds, sd_sample: float = 0.0, n_samples: int = 1,
          alpha: float = 1 - CONFIDENCE) -> dict[str, np.ndarray]:
    """Power with ``n_seeds`` seeds (array) when one seed's effect has sd ``sd_seed`` and the
    samples add a variance ``sd_sample**2`` that more seeds do not shrink: ``differs``, the
    chance that a true effect of ``sesoi`` gives an interval above 0 (two-sided level alpha);
    ``equivalent``, the chance that a true effect of 0 gives a 1 - 2 alpha interval inside
    +-sesoi (TOST). Shifted-t approximation at the Satterthwaite degrees of freedom."""
    from scipy import stats
    n = np.asarray(n_seeds, float)
    v_seed, v_sample = sd_seed ** 2 / n, np.full_like(n, sd_sample ** 2)
    se = np.sqrt(v_seed + v_sample)
    df = _satterthwaite(v_seed, v_sample, n, n_samples)
    with np.errstate(divide="ignore"):
        differs = stats.t.sf(stats.t.ppf(1 - alpha / 2, df) - sesoi / se, df)
        margin = sesoi / se - stats.t.ppf(1 - alpha, df)
    equivalent = np.clip(2 * stats.t.cdf(margin, df) - 1, 0, 1)
    return dict(differs=differs, equivalent=equivalent)


def seeds_for_power(sesoi: float, sd_seed: float, sd_sample: float = 0.0, n_samples: int = 1,
                    alpha: float = 1 - CONFIDENCE, target: float = POWER,
                    max_seeds: int = 100, tests: tuple[str, ...] = ("differs", "equivalent")
                    ) -> float:
    """The fewest seeds (>= 2) at which every test of ``power`` named in ``tests`` reaches
    ``target``: by default both, a true effect of the SESOI found to exceed 0 and a true
    effect of 0 found equivalent. NaN without an sd; ``max_seeds + 1`` when no count up to
    ``max_seeds`` does (the sample part alone may be too wide: then more samples, not seeds,
    are needed)."""
    if not (np.isfinite(sd_seed) and np.isfinite(sd_sample) and sesoi > 0):
        return np.nan
    n = np.arange(2, max_seeds + 1)
    p = power(sesoi, sd_seed, n, sd_sample, n_samples, alpha)
    ok = np.flatnonzero(np.all([p[t] >= target for t in tests], axis=0))
    return float(n[ok[0]]) if len(ok) else float(max_seeds + 1)


def sign_flip_test(effects: np.ndarray, alpha: float = 1 - CONFIDENCE, draws: int = 4096,
                   seed: int = 0) -> dict[str, float]:
    """A joint test over every specification at once (``effects``: specifications x seeds,
    each seed's effect under each specification). Under the null every seed's effects are
    symmetric about 0, so one sign per seed, the same for every specification, gives another
    study as likely as ours: every one of the 2^seeds sign patterns (``draws`` random ones
    beyond 2^12). Reported: the median effect over specifications and the share of
    specifications whose one-sample t-test over seeds rejects 0 (two-sided ``alpha``), each
    with its p-value, the share of sign patterns at least as extreme (ours among them)."""
    from scipy import stats
    e = np.asarray(effects, float)
    e = e[np.isfinite(e).all(axis=1)]
    k = e.shape[1] if e.ndim == 2 else 0
    if len(e) == 0 or k < 2:
        return dict(specifications=len(e), seeds=k, median=np.nan, share=np.nan,
                    p_median=np.nan, p_share=np.nan, patterns=0)
    if k <= 12:
        flips = 1 - 2 * ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1)
    else:
        flips = np.vstack([np.ones(k), np.random.default_rng(seed).choice([-1, 1], (draws, k))])
    flipped = e[None, :, :] * flips[:, None, :]          # pattern x spec x seed
    mean = flipped.mean(axis=2)
    sd = flipped.std(axis=2, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / np.sqrt(k)), 0.0)
    decide = np.abs(t) > stats.t.ppf(1 - alpha / 2, k - 1)
    median, share = np.median(mean, axis=1), decide.mean(axis=1)
    observed = np.all(flips == 1, axis=1)
    m0, s0 = median[observed][0], share[observed][0]
    return dict(specifications=len(e), seeds=k, median=float(m0), share=float(s0),
                p_median=float(np.mean(np.abs(median) >= abs(m0) - 1e-12)),
                p_share=float(np.mean(share >= s0 - 1e-12)), patterns=len(flips))
