"""The null ladder (book/method.md, section 6): every rung against a hand computation on
hand-made results of two seeds, the ladder chart with every rung, and the weighted shares'
per-model normalisation."""
import altair as alt
import numpy as np
import pandas as pd
import pytest
import torch

from whypretrain.measures import knowledge, nulls
from whypretrain.provenance import Sources, attach
from whypretrain.report import charts, findings
from test_nulls import random_I, seed_results

TAU, EMPTY = 0.2, "exclude"


@pytest.fixture(autouse=True)
def plain_data():
    with alt.data_transformers.enable("default"):
        yield


def two_seeds():
    """Two seeds' canonical finals and one other rule's finals (other interactions, same
    games)."""
    canonical = [seed_results(s, random_I(s), random_I(s + 10), random_I(s + 20))
                 for s in (0, 1)]
    reverse = [seed_results(s, random_I(s) + 0.8 * random_I(s + 40), random_I(s + 10)
                            + 0.8 * random_I(s + 50), random_I(s + 20)) for s in (0, 1)]
    return canonical, {"reverse": reverse}


def items(r, model):
    return knowledge.salient_items(r.interactions_of(model), TAU, EMPTY)


def lacks(a, b):
    """Per sample: the share of ``a``'s items that ``b`` lacks (same kind, S and sign)."""
    return (((a != 0) & ~knowledge.shared(a, b)).sum((-2, -1)).double()
            / (a != 0).sum((-2, -1)).double()).numpy()


def has(a, b):
    return 1 - lacks(a, b)


def inputs(canonical, rules):
    table = attach(pd.concat([r._build_table(TAU, EMPTY) for r in canonical],
                             ignore_index=True), Sources())
    return findings.Inputs(pd.DataFrame(), table,
                           nulls.comparison_table(canonical, TAU, EMPTY), None,
                           nulls.face_table(canonical, rules, TAU, EMPTY))


def hand_ladder(canonical, rules):
    """Per rung of share_discarded, share_new and learnable: the mean over seeds of the mean
    over samples, computed from the items alone."""
    rev = {r.seed: r for r in rules["reverse"]}
    other = {0: canonical[1], 1: canonical[0]}
    per_seed = {}
    for r in canonical:
        s = r.seed
        p, f, sc = items(r, "probe"), items(r, "finetune"), items(r, "scratch")
        new = (f != 0) & ~knowledge.shared(p, f)
        learnable_new = new & knowledge.shared(f, sc)
        per_seed[s] = {
            ("share_discarded", "null_face"): lacks(p, items(rev[s], "probe")).mean(),
            ("share_discarded", "null_probe"): lacks(p, items(other[s], "probe")).mean(),
            ("share_discarded", "null_unrelated"): lacks(p, items(other[s], "finetune")).mean(),
            ("share_new", "null_face"): lacks(f, items(rev[s], "finetune")).mean(),
            ("share_new", "null_probe"): lacks(items(other[s], "probe"), p).mean(),
            ("share_new", "null_unrelated"): lacks(items(other[s], "finetune"), p).mean(),
            ("learnable", "ceiling_finetune"): has(f, items(other[s], "finetune")).mean(),
            ("learnable", "ceiling_scratch"): has(sc, items(other[s], "scratch")).mean(),
            ("learnable", "comparator_finetune"): has(f, sc).mean(),
            ("learnable", "comparator_new"): np.nanmean(
                (learnable_new.sum((-2, -1)).double() / new.sum((-2, -1)).double()).numpy()),
        }
    return {k: np.mean([per_seed[s][k] for s in per_seed]) for k in per_seed[0]}


def test_every_rung_is_its_hand_computation():
    canonical, rules = two_seeds()
    x = inputs(canonical, rules)
    judged = findings.with_ladder(findings.judge_inputs(x, "near", findings.KNOWLEDGE_CLAIMS),
                                  x, findings.KNOWLEDGE_CLAIMS).set_index("claim")
    expected = hand_ladder(canonical, rules)
    for (claim, rung), value in expected.items():
        assert judged.loc[claim, rung] == pytest.approx(value, abs=1e-12), (claim, rung)
        # the effect: the claim's value minus the rung, per seed, then over seeds
        assert judged.loc[claim, f"{rung}_effect_mean"] == pytest.approx(
            judged.loc[claim, "mean"] - value, abs=1e-12)
        assert judged.loc[claim, f"{rung}_effect_low"] < judged.loc[claim, f"{rung}_effect_high"]
    # the noise floor's face and probe rows are the share discarded's rungs
    floor = findings.noise_floor(x)
    assert floor.loc["face", "mean"] == pytest.approx(expected["share_discarded", "null_face"])
    assert floor.loc["probe", "mean"] == pytest.approx(expected["share_discarded", "null_probe"])
    # the face rung differs from the others, the learnable share has no face or probe rung
    assert judged.loc["share_discarded", "null_face"] != judged.loc["share_discarded",
                                                                    "null_probe"]
    assert np.isnan(judged.loc["learnable", "null_face"])
    assert judged.loc["learnable", "verdict_null"] == "chance"
    assert judged.loc["share_new", "verdict_null"] == "replication"
    # the learnable share's weighted measure has no null any more
    assert np.isnan(judged.loc["learnable", "weighted_null"])


def test_face_of_a_rule_that_returns_the_same_optimum_is_zero():
    canonical, _ = two_seeds()
    t = nulls.face_table(canonical, {"same": canonical}, TAU, EMPTY)
    assert set(t["comparison"]) == set(nulls.FACE_COMPARISONS)
    assert set(t["partner"]) == {"same"}
    final = t[(t["order"] == knowledge.ALL_ORDERS)]
    for measure in ("share_discarded", "share_new", "weighted_share_discarded"):
        assert (final[final["measure"] == measure]["value"] == 0).all(), measure
    with pytest.raises(ValueError, match="does not match"):
        nulls.face_table(canonical, {"swapped": canonical[::-1]}, TAU, EMPTY)


def test_the_ladder_chart_draws_every_rung():
    canonical, rules = two_seeds()
    x = inputs(canonical, rules)
    frames = []
    for setting in ("near", "far"):
        frames.append(findings.with_ladder(findings.judge_inputs(
            x, setting, findings.KNOWLEDGE_CLAIMS), x, findings.KNOWLEDGE_CLAIMS))
    long = findings.ladder_long(pd.concat(frames, ignore_index=True))
    rungs = set(long[long["claim"] == "share_discarded"]["rung"])
    assert rungs == {"claim", "null_face", "replication", "null_probe", "null_unrelated",
                     "chance"}
    assert set(long[long["claim"] == "learnable"]["rung"]) == {
        "claim", "null_unrelated", "ceiling_finetune", "ceiling_scratch", "comparator_new",
        "comparator_finetune", "chance"}
    for claim in ("share_discarded", "share_new", "learnable", "discard_order"):
        spec = charts.ladder(long, claim).to_dict()
        drawn = [row for rows in spec["datasets"].values() for row in rows]
        part = long[long["claim"] == claim]
        assert {(r["setting"], r["rung"]) for r in drawn} == set(zip(part["setting"],
                                                                      part["rung"]))
    both = charts.ladders(long).to_dict()
    assert len(both["vconcat"]) == 4
    with pytest.raises(ValueError, match="no ladder rows"):
        charts.ladder(long, "accuracy_gap")


def test_normalised_weighted_shares_do_not_change_when_one_model_is_scaled():
    p, f, s = random_I(1), random_I(2), random_I(3)
    base = knowledge.weighted_measures(p, f, s)
    for scaled in (knowledge.weighted_measures(p, 3.0 * f, s),
                   knowledge.weighted_measures(0.01 * p, f, 7.0 * s)):
        for m in ("weighted_share_discarded", "weighted_share_new", "weighted_ratio_learnable"):
            torch.testing.assert_close(scaled[m], base[m], equal_nan=True)
    # over all orders, both norms are 1: what the probe keeps is what the fine-tuned shares
    torch.testing.assert_close(base["weighted_share_discarded"][:, -1],
                               base["weighted_share_new"][:, -1])
    # the unnormalised share did change with the scale (hand computation, one sample)
    a, b = knowledge.without_empty_set(p[0]), knowledge.without_empty_set(3.0 * f[0])
    raw = 1 - knowledge.shared_strength(a, b).sum() / a.abs().sum()
    assert not np.isclose(float(raw), float(base["weighted_share_discarded"][0, -1]))


def checkpointed(seed, epochs=3):
    """A SeedResults with the probe's final model and every epoch of both runs."""
    labels = [("probe", epochs)] + [(m, e) for m in ("finetune", "scratch")
                                    for e in range(epochs + 1)]
    I = torch.stack([random_I(100 * seed + i) for i in range(len(labels))])
    r = seed_results(seed, I[0], I[1], I[2])
    zeros = torch.zeros(I.shape[:-2] + (I.shape[-1],), dtype=torch.float64)
    r.result = type(r.result)(I[..., 0, :], I[..., 1, :], zeros, zeros, zeros, zeros[..., 0],
                              zeros[..., 0], "and-or")
    r.labels = labels
    return r


def test_crossed_curves_score_every_checkpoint_against_the_other_seeds_final_finetuned():
    loaded = [checkpointed(0), checkpointed(1)]
    t = nulls.crossed_table(loaded, EMPTY)
    assert len(t) == 2 * 2 * 4 * 3              # pairs x runs x epochs x samples
    row = t[(t["seed"] == 0) & (t["model"] == "scratch") & (t["epoch"] == 1)]
    expected = knowledge.weighted_jaccard(loaded[0].interactions_of("scratch", 1),
                                          loaded[1].interactions_of("finetune"), EMPTY)
    np.testing.assert_allclose(row["value"].to_numpy(), expected.numpy())
    assert nulls.crossed_table(two_seeds()[0], EMPTY).empty   # finals only: no curve


def test_reach_null_is_an_unrelated_finetuned_run_in_the_scratch_runs_place():
    """Hand-made curves (T = 3): against its own endpoint the fine-tuned run of each seed
    reaches 0.5 at epoch 1; the other seed's fine-tuned run reaches it at 2 (seed 0's) and
    never (seed 1's: T + 1 = 4); the scratch run at 2 in both seeds."""
    rows, crossed = [], []
    own = {"finetune": [0.3, 0.6, 0.8, 1.0], "scratch": [0.1, 0.2, 0.6, 1.0]}
    for seed in (0, 1):
        for model, curve in own.items():
            for epoch, v in enumerate(curve):
                rows += [dict(seed=seed, sample=0, model=model, epoch=epoch, order=-1,
                              measure=m, value=v)
                         for m in ("jaccard_weighted", "jaccard_weighted_vs_finetune")]
    other = {0: [0.1, 0.4, 0.5, 0.7], 1: [0.1, 0.2, 0.3, 0.4]}  # fine-tuned(s) vs final of s'
    for seed, curve in other.items():
        for model in ("finetune", "scratch"):
            crossed += [dict(seed=seed, partner=1 - seed, model=model, epoch=e, sample=0,
                             value=v if model == "finetune" else v / 2)
                        for e, v in enumerate(curve)]
    x = findings.Inputs(pd.DataFrame(), pd.DataFrame(rows), crossed=pd.DataFrame(crossed))
    # null of seed 1 (reference: fine-tuned 1's final): fine-tuned 0 reaches it at 2, own at 1
    null = findings.reach_null(x)
    assert null.to_dict() == {0: 4 - 1, 1: 2 - 1}
    reach = findings.CLAIMS[findings.CLAIM_KEYS.index("convergence_reach")]
    value = reach.value(x)
    assert value.to_dict() == {0: 1.0, 1: 1.0}      # scratch at 2 minus fine-tuned at 1
    assert findings.effect_of(value, findings.null_of(reach, x)).to_dict() == {0: -2.0,
                                                                               1: 0.0}
    # both runs against the other seed's final: area (epochs 0..2) and reach gaps
    area = findings.crossed_gap(x, "area")
    assert area[0] == pytest.approx(np.mean([0.1, 0.4, 0.5]) / 2)
    # seed 0: scratch never (4), fine-tuned at 2; seed 1: neither (4 - 4)
    assert findings.crossed_gap(x, "reach").to_dict() == {0: 2.0, 1: 0.0}


def test_the_grid_computes_only_the_comparisons_the_verdicts_read():
    canonical, _ = two_seeds()
    some = nulls.comparison_table(canonical, TAU, EMPTY, nulls.VERDICT_COMPARISONS)
    every = nulls.comparison_table(canonical, TAU, EMPTY)
    assert set(some["comparison"]) == set(nulls.VERDICT_COMPARISONS)
    assert set(every["comparison"]) == set(nulls.COMPARISONS)
    pd.testing.assert_frame_equal(
        some.reset_index(drop=True),
        every[every["comparison"].isin(nulls.VERDICT_COMPARISONS)].reset_index(drop=True))
