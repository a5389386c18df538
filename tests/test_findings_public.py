"""The findings' texts and floors that the notebooks show (noise_floor, verdict_counts,
by_verdict, movement, narrative), each on a small table whose every value is worked out by
hand here."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from whypretrain.provenance import Sources, attach, sources_of
from whypretrain.report import findings

T_ONE_DF = np.tan(np.pi * (0.975 - 0.5))  # Student t's 97.5% quantile at 1 degree of freedom


def _rows(seed, measure, values, comparison=None):
    return [dict(seed=seed, tau=0.05, sample=sample, model="x", epoch=3, measure=measure,
                 order=-1, value=v, **({} if comparison is None else
                                       dict(comparison=comparison, partner=1 - seed)))
            for sample, v in enumerate(values)]


def floor_inputs():
    """Two seeds, two samples: the claim's share, its chance level, and the replication and
    unrelated comparisons (an `other` comparison that noise_floor must not read)."""
    table, comparisons = [], []
    for seed, claim, chance in ((0, [0.8, 0.6], [0.9, 0.7]), (1, [0.4, 0.2], [0.5, 0.5])):
        table += _rows(seed, "share_discarded", claim) + \
            _rows(seed, "chance_share_discarded", chance)
    for seed, rep, unrel in ((0, [0.5, 0.3], [0.6, 0.6]), (1, [0.1, 0.3], [0.6, 0.6])):
        comparisons += _rows(seed, "share_discarded", rep, "replication") + \
            _rows(seed, "share_discarded", unrel, "unrelated") + \
            _rows(seed, "share_discarded", [9.0, 9.0], "other")
    table = attach(pd.DataFrame(table), SOURCES)
    return findings.Inputs(pd.DataFrame(), table, pd.DataFrame(comparisons))


SOURCES = Sources(("a" * 16,), ("b" * 16,), ("whypretrain study --preset ci",))


@pytest.mark.parametrize("sample, seed_means", [
    (None, {"claim": (0.7, 0.3), "replication": (0.4, 0.2), "unrelated": (0.6, 0.6),
            "chance": (0.8, 0.5)}),
    (1, {"claim": (0.6, 0.2), "replication": (0.3, 0.3), "unrelated": (0.6, 0.6),
         "chance": (0.7, 0.5)}),
])
def test_noise_floor_is_each_pairs_share_over_samples_then_seeds(sample, seed_means):
    floor = findings.noise_floor(floor_inputs(), sample=sample)
    # the ladder's rungs follow (face, probe: read from tables this hand input does not hold)
    assert list(floor.index)[:4] == ["claim", "replication", "unrelated", "chance"]
    assert sources_of(floor) == SOURCES  # the caption names the table it was read from
    for key, (m0, m1) in seed_means.items():
        row = floor.loc[key]
        sd = abs(m0 - m1) / np.sqrt(2)
        half = T_ONE_DF * sd / np.sqrt(2)
        assert row["n_seeds"] == 2, key
        assert row["mean"] == pytest.approx((m0 + m1) / 2), key
        assert row["sd"] == pytest.approx(sd, abs=1e-12), key
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            ((m0 + m1) / 2 - half, (m0 + m1) / 2 + half), abs=1e-12), key
    # the text is the mean and sd in percent: 50.0% ± 28.3% for the claim over both samples
    if sample is None:
        assert floor.loc["claim", "share"].startswith("50.0% ± 28.3% [")
        assert floor.loc["unrelated", "share"] == "60.0% ± 0.0% [60.0%, 60.0%]"


def verdict_table():
    """Three settings of four claims: near decided, disjoint mixed, far not run."""
    rows = []
    E, Q, B, I = (findings.EXCEEDS, findings.EQUIVALENT, findings.BELOW,
                  findings.INCONCLUSIVE)
    near = [("share_discarded", E, 0.5, 0.4, 0.6), ("share_new", B, 0.2, 0.1, 0.3),
            ("learnable", E, 0.3, 0.25, 0.35), ("discard_order", I, 1.0, np.nan, np.nan)]
    disjoint = {"share_discarded": (Q, 0.7), "share_new": (B, 0.05),
                "learnable": (E, 0.3), "discard_order": (B, 0.5)}
    for claim, verdict, mean, low, high in near:
        rows.append(dict(setting="near", claim=claim, verdict=verdict, mean=mean, ci_low=low,
                         ci_high=high, ours=f"N{claim}", effect=f"E{claim}",
                         reproduces=verdict == E))
        v, m = disjoint[claim]
        rows.append(dict(setting="disjoint", claim=claim, verdict=v, mean=m, ci_low=np.nan,
                         ci_high=np.nan, ours=f"D{claim}", effect="", reproduces=v == E))
        rows.append(dict(setting="far", claim=claim, verdict=findings.NOT_RUN, mean=np.nan,
                         ci_low=np.nan, ci_high=np.nan, ours="not run: `x`", effect="",
                         reproduces=False))
    return pd.DataFrame(rows)


FOUR = ("share_discarded", "share_new", "learnable", "discard_order")


@pytest.fixture
def four_claims(monkeypatch):
    """findings.CLAIMS cut to the four claims of ``verdict_table`` (movement walks CLAIMS)."""
    monkeypatch.setattr(findings, "CLAIMS",
                        tuple(c for c in findings.CLAIMS if c.key in FOUR))
    assert [c.key for c in findings.CLAIMS] == list(FOUR)


def test_verdict_counts_says_how_many_claims_reproduce():
    assert findings.verdict_counts(verdict_table()) == {
        "near": "2 of 4", "disjoint": "1 of 4", "far": findings.NOT_RUN}


def test_by_verdict_groups_the_claims_in_the_verdicts_order():
    assert findings.by_verdict(verdict_table()) == {
        "near": "*exceeds the null*: share discarded, learnable; *below the null*: share new; "
                "*inconclusive*: discard order",
        "disjoint": "*exceeds the null*: learnable; *equivalent to the null*: share discarded; "
                    "*below the null*: share new, discard order",
        "far": findings.NOT_RUN}


def test_movement_compares_each_setting_with_the_near_interval(four_claims):
    out = findings.movement(verdict_table())
    assert set(out) == set(FOUR)
    # 0.7 above near's [0.4, 0.6]; 0.05 below [0.1, 0.3]; 0.3 inside [0.25, 0.35]
    assert out["share_discarded"] == (
        "near Nshare_discarded (verdict exceeds the null); disjoint: higher "
        "(Dshare_discarded, verdict equivalent to the null); far: not run")
    assert out["share_new"].startswith("near Nshare_new (verdict below the null); disjoint: "
                                       "lower (")
    assert "disjoint: about the same (Dlearnable, verdict exceeds the null)" in out["learnable"]
    # near without an interval (one seed): its value is the edge, 0.5 < 1.0 is lower
    assert "disjoint: lower (Ddiscard_order, verdict below the null)" in out["discard_order"]


def test_narrative_names_every_text_the_findings_page_glues(four_claims):
    table = verdict_table()
    out = findings.narrative(table, SimpleNamespace(params={"preset": "ci"}))
    assert out["near-share_new"] == "Nshare_new"
    assert out["disjoint-learnable-verdict"] == findings.EXCEEDS
    assert out["near-learnable-effect"] == "Elearnable"
    assert out["disjoint-learnable-effect"] == "n/a"       # no effect text
    assert out["count-near"] == "2 of 4" and out["count-far"] == findings.NOT_RUN
    assert out["verdicts-disjoint"].startswith("*exceeds the null*: learnable;")
    assert out["move-share_discarded"].startswith("near Nshare_discarded")
    # the settings themselves: digits 0-4 of MNIST to 5-9 of UCI, and ci's far preset
    assert out["disjoint-setting"] == "`mnist-0-4` → `uci-5-9`"
    assert out["far-setting"] == "`imagenet-uci-ci`"
    assert findings.narrative(table)["far-setting"] == "`imagenet-uci`"  # the default's
    settings, claims = ("near", "disjoint", "far"), FOUR
    assert set(out) == ({f"{s}-{c}{end}" for s in settings for c in claims
                         for end in ("", "-verdict", "-effect")}
                        | {f"{k}-{s}" for k in ("count", "verdicts") for s in settings}
                        | {f"move-{c}" for c in claims} | {"disjoint-setting", "far-setting"})


def test_folded_markdown_opens_under_its_summary():
    text = findings.folded("| a | b |\n|---|---|\n| 1 | 2 |", "the table")
    assert text.startswith("<details><summary>the table</summary>\n\n| a | b |")
    assert text.endswith("| 1 | 2 |\n\n</details>")   # blank lines: the table stays Markdown
