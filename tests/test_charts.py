"""The figures draw the tables they are given: every row reaches the chart's data, nothing is
aggregated on the way (the study result holds the numbers), and the encodings name the
columns the study result's parts have."""
from __future__ import annotations

import altair as alt
import pandas as pd
import pytest

from whypretrain.report import charts, findings


@pytest.fixture(autouse=True)
def plain_data():
    with alt.data_transformers.enable("default"):
        yield


def rows_of(chart) -> list[dict]:
    datasets = chart.to_dict()["datasets"]
    return [row for rows in datasets.values() for row in rows]


def test_strength_by_rank_draws_every_rank_it_is_given():
    ranks = pd.DataFrame({"method": ["AND only (Harsanyi)"] * 3 + ["AND-OR (sparsified)"] * 2,
                          "rank": [1, 2, 3, 1, 2], "strength": [0.9, 0.3, 0.1, 0.8, 0.05]})
    chart = charts.strength_by_rank(ranks)
    assert sorted(r["strength"] for r in rows_of(chart)) == sorted(ranks["strength"])
    spec = chart.to_dict()
    assert spec["encoding"]["x"]["scale"]["type"] == "log"


def test_sensitivity_chart_draws_the_means_over_seeds_as_given():
    table = pd.DataFrame({"parameter": ["tau", "tau", "n"], "value": ["0.05", "0.1", "8"],
                          "model": ["probe+finetune"] * 3, "measure": ["share_discarded"] * 3,
                          "mean": [0.6, 0.7, 0.65], "std": [0.1, 0.05, 0.0],
                          "n_seeds": [3, 3, 3]})
    chart = charts.sensitivity_chart(table, ["share_discarded", "share_new"])
    drawn = sorted((r["parameter"], r["value"], r["mean"]) for r in rows_of(chart))
    assert drawn == [("n", "8", 0.65), ("tau", "0.05", 0.6), ("tau", "0.1", 0.7)]


def test_specification_curve_draws_effects_with_the_sesoi_band_and_the_joint_test():
    rows = []
    for i, (spec, kind) in enumerate([("preset", "specification"), ("tau=0.1", "specification"),
                                      ("player_seed=1", "resampling")]):
        for claim in ("share_discarded", "learnable"):
            low, high = findings.PAPER_LINES[claim]
            rows.append(dict(spec=spec, parameter=spec.split("=")[0], value=spec[4:], kind=kind,
                             claim=claim, mean=0.5 + 0.1 * i, null=0.45, effect="+0.05",
                             effect_mean=0.3 - 0.1 * i, effect_low=0.1, effect_high=0.4,
                             sesoi=0.05, verdict=findings.INCONCLUSIVE, paper_low=low,
                             paper_high=high))
    joint = pd.DataFrame({"text": ["median effect +10.0 pts", "median effect +5.0 pts"]},
                         index=["share_discarded", "learnable"])
    chart = charts.specification_curve(pd.DataFrame(rows), joint)
    drawn = rows_of(chart)
    assert len(drawn) == 6
    # ranks sort each claim's specifications by effect (not by value): 3, 2, 1
    for claim in ("share_discarded", "learnable"):
        ranks = [r["rank"] for r in drawn if r["claim"] == claim]
        assert ranks == [3, 2, 1]
    assert {(r["sesoi_low"], r["sesoi_high"]) for r in drawn} == {(-0.05, 0.05)}
    spec = chart.to_dict()
    assert any("joint test, share discarded: median effect +10.0 pts" in line
               for line in spec["title"]["subtitle"])
