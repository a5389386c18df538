"""The claims as data: verdict rules on hand-made tables, the sensitivity grid, the three
transfer settings on `ci`-sized studies, and reads that never compute."""
import numpy as np
import pandas as pd
import pytest

from whypretrain import errors, presets, provenance
from whypretrain.report import findings
from whypretrain.measures import stats
from whypretrain.study import pipeline
from whypretrain.provenance import sources_of


def est(values):
    return stats.Estimate.of(pd.Series(values, dtype=float))


# --- rules -------------------------------------------------------------------------------------

def test_above_rule_uses_the_interval_and_the_mean_for_one_seed():
    rule = findings.above(0.5)
    assert rule.judge(est([0.70, 0.72, 0.74])) == "yes"     # interval well above
    assert rule.judge(est([0.30, 0.32, 0.34])) == "no"      # interval below
    assert rule.judge(est([0.40, 0.60, 0.70])) == "partly"  # interval contains 0.5
    assert rule.judge(est([0.6])) == "yes" and rule.judge(est([0.4])) == "no"
    assert rule.judge(est([np.nan, np.nan])) == "no"
    assert "95% interval" in rule.text


def test_inside_rule_for_the_learnable_range():
    rule = findings.inside(*findings.LEARNABLE_RANGE)
    assert rule.judge(est([0.30, 0.31, 0.32])) == "yes"
    assert rule.judge(est([0.50, 0.52, 0.54])) == "no"
    assert rule.judge(est([0.30, 0.60, 0.70])) == "partly"   # mean 0.53 above, interval overlaps
    assert "13%-45%" in rule.text


def hand_made_inputs():
    """Two seeds, two samples each, with known values of every claim's measure."""
    metrics = []
    for seed, (ft, sc) in enumerate([([0.5, 0.95, 0.96], [0.2, 0.5, 0.8]),
                                     ([0.6, 0.95, 0.96], [0.2, 0.4, 0.7])]):
        for model, curve in (("finetune", ft), ("scratch", sc), ("probe", [0.5, 0.6, 0.6])):
            for epoch, acc in enumerate([0.1] + curve):
                metrics.append(dict(seed=seed, model=model, epoch=epoch, test_acc=acc))
    rows = []

    def add(seed, measure, values, model="x", epoch=3, order=-1):
        for sample, v in enumerate(values):
            rows.append(dict(seed=seed, tau=0.05, sample=sample, model=model, epoch=epoch,
                             measure=measure, order=order, value=v))
    for seed in (0, 1):
        add(seed, "share_discarded", [0.8, 0.6])
        add(seed, "share_new", [0.4, 0.2])
        add(seed, "ratio_learnable", [0.3, np.nan])   # undefined ratio: left out
        add(seed, "count_discard", [3, 3], order=3)
        add(seed, "count_preserve", [2, 2], order=1)
        add(seed, "chance_share_discarded", [0.9, 0.9])
        add(seed, "chance_share_new", [0.9, 0.9])
        add(seed, "chance_ratio_learnable", [0.1, 0.1])
        add(seed, "chance_count_discard", [3, 3], order=4)
        add(seed, "chance_count_preserve", [2, 2], order=1)
        add(seed, "weighted_share_discarded", [0.5, 0.5])
        for model, own, ref in (("finetune", [0.6, 0.8, 0.9, 1.0], [0.6, 0.8, 0.9, 1.0]),
                                ("scratch", [0.1, 0.3, 0.6, 1.0], [0.1, 0.2, 0.3, 0.4])):
            for epoch in range(4):
                add(seed, "jaccard_weighted", [own[epoch]] * 2, model, epoch)
                add(seed, "jaccard_weighted_vs_finetune", [ref[epoch]] * 2, model, epoch)
    table = pd.DataFrame(rows)
    # the nulls: the same table as if read across seeds, with other values
    comparisons = []
    for name, discarded in (("replication", {0: 0.50, 1: 0.50}), ("unrelated", {0: 0.9, 1: 0.7}),
                            ("scratch_other", {0: 0.8, 1: 0.8})):
        c = table[table["measure"].isin(["share_discarded", "share_new", "count_discard",
                                         "count_preserve", "ratio_learnable"])].copy()
        c.insert(0, "comparison", name)
        c.insert(2, "partner", 1 - c["seed"])
        is_discarded = c["measure"] == "share_discarded"
        c.loc[is_discarded, "value"] = c.loc[is_discarded, "seed"].map(discarded)
        comparisons.append(c)
    return findings.Inputs(pd.DataFrame(metrics), table, pd.concat(comparisons,
                                                                   ignore_index=True))


def test_claims_on_a_hand_made_table():
    out = findings.judge_inputs(hand_made_inputs()).set_index("claim")
    assert list(out.index) == list(findings.CLAIM_KEYS)
    assert out.loc["accuracy_gap", "mean"] == pytest.approx(((0.96 - 0.8) + (0.96 - 0.7)) / 2)
    # 95% of final: fine-tuned at epoch 2 in both seeds, scratch at 3
    assert out.loc["accuracy_speed", "mean"] == pytest.approx(1.0)
    assert out.loc["share_discarded", "mean"] == pytest.approx(0.7)
    # null: replication 0.5 in both seeds, so the effect is 0.2 with sd 0
    assert out.loc["share_discarded", "null"] == pytest.approx(0.5)
    assert out.loc["share_discarded", "effect_mean"] == pytest.approx(0.2)
    assert out.loc["share_discarded", "verdict"] == "yes"          # sd 0: interval = 0.7
    assert out.loc["share_discarded", "reference"] == pytest.approx(0.8)   # unrelated
    assert out.loc["share_discarded", "chance"] == pytest.approx(0.9)
    assert out.loc["share_discarded", "weighted"] == pytest.approx(0.5)
    # the comparisons hold the same share new as the seeds themselves: effect 0
    assert out.loc["share_new", "effect_mean"] == pytest.approx(0.0)
    assert out.loc["share_new", "verdict"] == findings.INDISTINCT
    assert out.loc["learnable", "mean"] == pytest.approx(0.3)
    assert out.loc["learnable", "null"] == pytest.approx(0.1)      # chance
    assert out.loc["learnable", "verdict"] == "yes"
    assert out.loc["discard_order", "mean"] == pytest.approx(2.0)  # order 3 vs order 1
    assert out.loc["discard_order", "chance"] == pytest.approx(3.0)  # order 4 vs order 1
    assert out.loc["discard_order", "effect_mean"] == pytest.approx(0.0)
    # the replication null has the same gap: an interval [0, 0] that contains 0
    assert out.loc["discard_order", "verdict"] == findings.INDISTINCT
    # area: mean over epochs 0..2 of own curve: (0.6+0.8+0.9)/3 - (0.1+0.3+0.6)/3
    assert out.loc["convergence_area", "mean"] == pytest.approx((2.3 - 1.0) / 3)
    # reach 0.5 of the final fine-tuned: fine-tuned at epoch 0, scratch never (T + 1 = 4)
    assert out.loc["convergence_reach", "mean"] == pytest.approx(4.0)
    assert set(out["verdict"]) <= set(findings.VERDICTS)
    assert (out["n_seeds"] == 2).all()


def test_an_effect_whose_interval_contains_zero_cannot_be_told_from_its_null():
    claim = findings.CLAIMS[findings.CLAIM_KEYS.index("share_discarded")]
    value = est([0.70, 0.72, 0.74])                 # the threshold alone says yes
    assert findings.verdict(claim, value, est([0.10, 0.12, 0.14])) == "yes"
    assert findings.verdict(claim, value, est([-0.05, 0.02, 0.06])) == findings.INDISTINCT
    assert findings.verdict(claim, value, est([-0.10, -0.12, -0.14])) == "no"
    assert findings.verdict(claim, value, est([])) == "yes"       # no null: the rule alone
    assert findings.verdict(claim, est([0.7]), est([-0.01])) == "no"  # one seed: the sign
    undecided = hand_made_inputs()
    c = undecided.comparisons
    flip = (c["comparison"] == "replication") & (c["measure"] == "share_discarded")
    c.loc[flip, "value"] = c.loc[flip, "seed"].map({0: 0.6, 1: 0.8})  # effects +0.2 and -0.2
    out = findings.judge_inputs(undecided).set_index("claim")
    assert out.loc["share_discarded", "verdict"] == findings.INDISTINCT
    assert out.loc["share_discarded", "effect_low"] < 0 < out.loc["share_discarded",
                                                                  "effect_high"]


def test_paper_range_is_written_once():
    import pathlib
    lib = pathlib.Path(findings.__file__).parent
    hits = [p.name for p in lib.glob("*.py") if "0.13" in p.read_text()]
    assert hits == ["findings.py"]


# --- grid and settings -----------------------------------------------------------------------

def test_sensitivity_grid_names_every_choice():
    params = presets.resolve("default")
    grid = pipeline.sensitivity_grid(params)
    assert set(grid) == {"tau", "n", "baseline", "optimizer", "empty_set", "or_merge",
                         "player_seed", "samples_per_class", "rule", "mode", "extraction"}
    assert set(grid["rule"]) == {"canonical", "reverse", "hash"}
    assert set(grid["mode"]) == {"and-or", "and"}
    for key, values in grid.items():
        assert params[key] in values, key          # the preset's own value is a point
    assert set(grid["empty_set"]) == {"exclude", "include"}
    assert set(grid["or_merge"]) == {"and", "keep"}
    assert "sgd" in grid["optimizer"]
    assert len(grid["player_seed"]) == 2 and len(grid["samples_per_class"]) == 3
    settings = list(pipeline.sensitivity_settings(params, grid))
    # only values other than the preset's, of parameters that change games, need new results
    new = [(k, v) for k, v, _, finals in settings if finals]
    assert all(v != params[k] and k not in pipeline.TABLE_ONLY for k, v in new)


def test_transfer_settings_near_disjoint_far(tmp_path):
    params = presets.resolve("ci", {"workdir": str(tmp_path)})
    s = pipeline.transfer_settings(params)
    assert list(s) == list(pipeline.TRANSFER_SETTINGS)
    assert s["near"] is params
    assert (s["disjoint"]["source"], s["disjoint"]["target"]) == ("mnist-0-4", "uci-5-9")
    assert s["disjoint"]["seeds"] == params["seeds"] and s["disjoint"]["n"] == params["n"]
    assert s["far"]["preset"] == "imagenet-uci-ci" and s["far"]["n"] == params["n"]
    assert s["far"]["arch"] == "efficientnet_lite0" and s["far"]["workdir"] == str(tmp_path)
    # the disjoint setting splits the digits: other data have none, and say why
    cifar = presets.resolve("cifar10-resnet18", {"weights": ""})
    assert pipeline.transfer_settings(cifar)["disjoint"] is None
    assert "digit data only" in pipeline.unavailable("disjoint", cifar)
    default = pipeline.transfer_settings(presets.resolve("default"))
    assert default["far"]["preset"] == pipeline.FAR_PRESET


def test_command_names_the_preset_and_what_differs():
    params = presets.resolve("ci", {"tau": 0.1, "seeds": "0,2"})
    assert provenance.command("analyze", params) == \
        "whypretrain analyze --preset ci --set seeds=0,2 --set tau=0.1"


# --- on ci-sized studies ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ci_transfer(tmp_path_factory):
    params = presets.resolve("ci", {"workdir": str(tmp_path_factory.mktemp("transfer"))})
    result = pipeline.compute(params, ("near", "disjoint", "far"), progress=False, far=True)
    return params, result


@pytest.mark.slow
def test_findings_table_has_all_three_settings(ci_transfer):
    params, result = ci_transfer
    assert result.manifest["notes"] == dict(disjoint="computed", far="computed")
    table = findings.transfer_table(result)
    assert list(dict.fromkeys(table["setting"])) == ["near", "disjoint", "far"]
    assert len(table) == 3 * len(findings.CLAIMS)
    assert table["verdict"].isin(findings.VERDICTS).all()
    for setting in ("near", "disjoint", "far"):  # every setting measured most claims
        ran = table[table["setting"] == setting]
        assert ran["mean"].notna().sum() >= 6, setting
        # two seeds: every knowledge claim has a null, an effect and its interval
        knowledge_claims = ran[ran["claim"].isin(["share_discarded", "share_new", "learnable",
                                                  "discard_order"])]
        for column in ("null", "effect_mean", "effect_low", "effect_high", "weighted",
                       "weighted_null"):
            assert knowledge_claims[column].notna().all(), (setting, column)
        assert (ran["effect_low"] <= ran["effect_mean"]).all()
    # both settings' results and runs are named
    sources = sources_of(table)
    assert len(sources.results) >= 3 and len(sources.runs) >= 11
    text = findings.as_markdown(table)
    assert "| claim (paper) | near | disjoint | far |" in text
    assert sources.markdown().count("results `") == len(sources.results)


@pytest.mark.slow
def test_findings_numbers_and_verdicts_are_those_of_the_seeds_tables(ci_transfer):
    """On the real ci data of every setting: the accuracy gap, and the share discarded with
    its replication null, worked out here from the stored per-sample rows (final epoch of
    each run; mean over samples per seed, then over seeds); the verdict is the rule's on
    those numbers."""
    _, result = ci_transfer
    table = findings.transfer_table(result).set_index(["setting", "claim"])
    claim = findings.CLAIMS[findings.CLAIM_KEYS.index("share_discarded")]
    for setting in ("near", "disjoint", "far"):
        m = result.part(f"{setting}/metrics")
        final = {(s, model): g.loc[g["epoch"].idxmax(), "test_acc"]
                 for (s, model), g in m.groupby(["seed", "model"])}
        seeds = sorted({s for s, _ in final})
        assert len(seeds) == 2
        gap = [final[(s, "finetune")] - final[(s, "scratch")] for s in seeds]
        row = table.loc[(setting, "accuracy_gap")]
        assert row["mean"] == pytest.approx(np.mean(gap)) and row["n_seeds"] == 2
        assert row["sd"] == pytest.approx(np.std(gap, ddof=1))

        def per_seed(t):
            rows = t[(t["measure"] == "share_discarded") & (t["order"] == -1)]
            return pd.Series({s: rows[rows["seed"] == s]["value"].mean() for s in seeds})
        value = per_seed(result.part(f"{setting}/knowledge"))
        c = result.part(f"{setting}/comparisons")
        null = per_seed(c[c["comparison"] == "replication"])
        row = table.loc[(setting, "share_discarded")]
        assert row["mean"] == pytest.approx(value.mean()), setting
        assert row["null"] == pytest.approx(null.mean()), setting
        assert row["effect_mean"] == pytest.approx((value - null).mean()), setting
        assert 0 <= row["mean"] <= 1
        assert row["verdict"] == findings.verdict(claim, est(value), est(value - null)), setting


@pytest.mark.slow
def test_reading_before_analysing_names_the_analyze_command(ci_transfer):
    params, _ = ci_transfer
    other = {**params, "n": 5}   # the runs exist, these games do not
    with pytest.raises(errors.MissingResults, match="whypretrain analyze --preset ci .*n=5"):
        pipeline.read(other).part("near/knowledge")
    with pytest.raises(errors.MissingResults, match="whypretrain study --preset ci"):
        pipeline.read(params).part("sensitivity")   # the grid is not computed yet


def test_game_counts_of_the_ci_preset():
    counts = pipeline.game_counts(presets.resolve("ci")).set_index("part")
    # 2 seeds x (probe + 4 fine-tuning + 4 scratch checkpoints) x 10 classes x 1 sample
    assert counts.loc["main", "games"] == 2 * 9 * 10
    assert counts.loc["transfer disjoint", "samples"] == 5   # target digits 5..9
    # the far setting (imagenet-uci-ci, 3 epochs) analyses every epoch as main does
    assert counts.loc["transfer far", "models"] == 9
    assert (counts.drop(index=["main", "transfer disjoint", "transfer far"])["models"] == 3).all()


def test_seeds_to_decide_is_the_fewest_seeds_whose_interval_excludes_zero():
    from scipy import stats
    e = est([0.10, 0.12, 0.14])                  # mean 0.12, sd 0.02
    k = findings.seeds_to_decide(e)
    assert k == 3
    assert stats.t.ppf(0.975, k - 1) * 0.02 / np.sqrt(k) < 0.12
    assert stats.t.ppf(0.975, k - 2) * 0.02 / np.sqrt(k - 1) >= 0.12
    assert findings.seeds_to_decide(est([-0.05, 0.02, 0.06])) > 10
    assert np.isnan(findings.seeds_to_decide(est([0.3])))          # no spread to go on


def test_replicate_level_is_the_mean_similarity_of_two_seeds_final_models():
    rows = [dict(seed=s, partner=1 - s, model=m, sample=i, measure="jaccard_weighted", value=v)
            for s in (0, 1) for m, v in (("finetune", 0.4 + 0.1 * s), ("scratch", 0.2))
            for i in range(3)]
    x = findings.Inputs(pd.DataFrame(), pd.DataFrame(), None, pd.DataFrame(rows))
    level = findings.replicate_level(x)
    assert level.loc["finetune", "mean"] == pytest.approx(0.45)
    assert level.loc["scratch", "sd"] == pytest.approx(0.0)
    assert level.loc["finetune", "n_seeds"] == 2
