"""Estimates and intervals against numpy and scipy, and the summary over seeds."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from whypretrain.measures import stats
from whypretrain.measures.stats import Estimate


# --- aggregate ------------------------------------------------------------------------------

def random_table(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for measure in ("a", "b"):
        for order in (-1, 0, 1):
            k = rng.integers(3, 12)
            v = rng.normal(size=k)
            v[rng.random(k) < 0.3] = np.nan
            rows += [dict(sample=i, model="m", epoch=-1, measure=measure, order=order, value=x)
                     for i, x in enumerate(v)]
    # a group with a single defined value, and one with none
    rows += [dict(sample=0, model="m", epoch=-1, measure="c", order=-1, value=2.5),
             dict(sample=1, model="m", epoch=-1, measure="c", order=-1, value=np.nan),
             dict(sample=0, model="m", epoch=-1, measure="d", order=-1, value=np.nan),
             dict(sample=1, model="m", epoch=-1, measure="d", order=-1, value=np.nan)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregate_matches_numpy_and_scipy(seed):
    table = random_table(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agg = stats.aggregate(table)
    assert list(agg.columns) == ["model", "epoch", "measure", "order", "mean", "std", "ci_low",
                                 "ci_high", "n", "n_undefined"]
    assert len(agg) == table.groupby(["measure", "order"]).ngroups
    for _, row in agg.iterrows():
        v = table[(table.measure == row.measure) & (table.order == row.order)]["value"].to_numpy()
        ok = v[~np.isnan(v)]
        assert row.n == len(ok) and row.n_undefined == np.isnan(v).sum()
        if len(ok) >= 2:
            mean, std = ok.mean(), ok.std(ddof=1)
            half = scipy_stats.t.ppf(0.975, len(ok) - 1) * std / math.sqrt(len(ok))
            assert row["mean"] == pytest.approx(mean)
            assert row["std"] == pytest.approx(std)
            assert row.ci_low == pytest.approx(mean - half)
            assert row.ci_high == pytest.approx(mean + half)
            lo, hi = scipy_stats.t.interval(0.95, len(ok) - 1, loc=mean, scale=scipy_stats.sem(ok))
            assert (row.ci_low, row.ci_high) == (pytest.approx(lo), pytest.approx(hi))
        elif len(ok) == 1:
            assert row["mean"] == ok[0]
            assert np.isnan(row["std"]) and np.isnan(row.ci_low) and np.isnan(row.ci_high)
        else:
            assert np.isnan(row["mean"]) and np.isnan(row.ci_low)
    c = agg[agg.measure == "c"].iloc[0]
    assert (c.n, c.n_undefined) == (1, 1)
    d = agg[agg.measure == "d"].iloc[0]
    assert (d.n, d.n_undefined) == (0, 2)


def test_aggregate_by_and_over_seeds():
    tables = []
    for seed in range(3):
        t = random_table(seed)
        t["seed"] = seed
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    per_seed = stats.aggregate(table, by=["seed", "measure"])
    assert len(per_seed) == 3 * 4
    over_seeds = stats.aggregate(per_seed, by=["measure"], value="mean")
    a = over_seeds.set_index("measure").loc["a"]
    seed_means = [np.nanmean(t.loc[t.measure == "a", "value"]) for t in tables]
    assert a["mean"] == pytest.approx(np.mean(seed_means))
    assert a["std"] == pytest.approx(np.std(seed_means, ddof=1))
    assert a.n == 3
    # a narrower confidence gives a narrower interval around the same mean
    narrow = stats.aggregate(table, by=["measure"], confidence=0.5).set_index("measure").loc["a"]
    wide = stats.aggregate(table, by=["measure"]).set_index("measure").loc["a"]
    assert narrow.ci_high - narrow.ci_low < wide.ci_high - wide.ci_low


def test_estimate_is_mean_sd_and_t_interval_over_seeds():
    v = [0.2, 0.5, 0.6]
    e = Estimate.of(pd.Series(v))
    half = scipy_stats.t.ppf(0.975, 2) * np.std(v, ddof=1) / np.sqrt(3)
    assert e.mean == pytest.approx(np.mean(v)) and e.sd == pytest.approx(np.std(v, ddof=1))
    assert (e.low, e.high) == pytest.approx((np.mean(v) - half, np.mean(v) + half))
    assert Estimate.of(pd.Series([0.5])).text(pct=True) == "50.0%"  # one seed: no sd, no interval


def test_summarize_is_the_mean_over_samples_then_over_seeds():
    rows = [dict(seed=s, sample=i, model="m", epoch=1, measure="x", order=-1, value=v)
            for s, values in enumerate([[1.0, 3.0], [2.0, np.nan], [4.0, 6.0]])
            for i, v in enumerate(values)]
    out = stats.summarize(pd.DataFrame(rows)).iloc[0]
    assert out["mean"] == pytest.approx(np.mean([2.0, 2.0, 5.0]))
    assert out["n_seeds"] == 3 and out["n_samples"] == 5
    assert stats.interval_text(out).startswith("3.00 ± 1.73 [")
