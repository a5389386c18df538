"""Inference (book/method.md, section 7): the crossed jackknife covers a planted effect in
synthetic studies with a seed, a partner-pair and a sample component; the equivalence test on
hand-made effects; an interval of width 0 never decides; Holm on a known example; the
sign-flip joint test on a planted null and a planted effect; the power analysis against a
simulation; and the folds the findings recompute."""
import numpy as np
import pandas as pd
import pytest

from whypretrain.measures import stats
from whypretrain.measures.stats import Inference
from whypretrain.report import findings


# --- the simulation: synthetic studies with the study's dependence -------------------------

def synthetic_studies(rng, studies, seeds, samples, effect, sd_seed, sd_pair, sd_sample,
                      sd_noise):
    """Per study: value[s, i] = 0.5 + effect + a_s + b_i + e, the null of seed s against
    partner s' on sample i = 0.5 + h_s + h_s' + c_{ss'} + g_i + u (c symmetric: the pair's
    own component, shared by both seeds' nulls; g_i correlated with b_i: every seed reads the
    same samples). Returns value (studies, seeds, samples), null (studies, seeds, seeds,
    samples)."""
    B, k, m = studies, seeds, samples
    a, h = rng.normal(0, sd_seed, (B, k)), rng.normal(0, sd_seed, (B, k))
    c = rng.normal(0, sd_pair, (B, k, k))
    c = (c + c.transpose(0, 2, 1)) / np.sqrt(2)
    b = rng.normal(0, sd_sample, (B, m))
    g = 0.5 * b + rng.normal(0, sd_sample, (B, m))
    value = 0.5 + effect + a[:, :, None] + b[:, None, :] + rng.normal(0, sd_noise, (B, k, m))
    null = (0.5 + h[:, :, None, None] + h[:, None, :, None] + c[..., None]
            + g[:, None, None, :] + rng.normal(0, sd_noise, (B, k, k, m)))
    return value, null


def effect_statistic(value, null, seeds, samples):
    """The study's statistic on the given seeds and samples: the mean over seeds of the
    value minus the null pooled over the seed's partners among ``seeds``."""
    v = value[:, seeds][:, :, samples].mean(-1)
    n = null[:, seeds][:, :, seeds][..., samples].mean(-1)
    k = len(seeds)
    pooled = (n * ~np.eye(k, dtype=bool)).sum(-1) / (k - 1)
    return (v - pooled).mean(-1)


def coverage(value, null, effect):
    """Coverage of the crossed jackknife's 95% interval (nulls recomputed in each seed's fold)
    and of the Student-t interval over the seeds' effects (the method before)."""
    k, m = value.shape[1], value.shape[2]
    seeds, samples = np.arange(k), np.arange(m)
    estimate = effect_statistic(value, null, seeds, samples)
    by_seed = np.stack([effect_statistic(value, null, np.delete(seeds, j), samples)
                        for j in range(k)], -1)
    by_sample = np.stack([effect_statistic(value, null, seeds, np.delete(samples, i))
                          for i in range(m)], -1)
    low, high, _, _ = stats.crossed_interval(estimate, by_seed, by_sample)
    per_seed = value.mean(-1) - (null.mean(-1) * ~np.eye(k, dtype=bool)).sum(-1) / (k - 1)
    from scipy import stats as st
    half = st.t.ppf(0.975, k - 1) * per_seed.std(-1, ddof=1) / np.sqrt(k)
    naive = np.abs(per_seed.mean(-1) - effect) <= half
    return np.mean((low <= effect) & (effect <= high)), np.mean(naive)


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_crossed_jackknife_covers_a_planted_effect(seeds):
    rng = np.random.default_rng(30)
    value, null = synthetic_studies(rng, 500, seeds, 20, effect=0.1, sd_seed=0.03,
                                    sd_pair=0.03, sd_sample=0.05, sd_noise=0.05)
    ours, naive = coverage(value, null, 0.1)
    assert 0.90 <= ours <= 0.995
    # the samples every seed shares move every seed's effect together: the interval over
    # seeds alone misses it, which is why the sample part is in the variance
    assert naive < 0.85


def test_the_crossed_jackknife_covers_when_seeds_or_pairs_dominate():
    rng = np.random.default_rng(31)
    value, null = synthetic_studies(rng, 500, 5, 20, effect=-0.05, sd_seed=0.02,
                                    sd_pair=0.08, sd_sample=0.0, sd_noise=0.05)
    assert coverage(value, null, -0.05)[0] >= 0.90


# --- tests of one effect: exceeds, equivalent, inconclusive ---------------------------------

def effect(estimate, se, seeds=5, samples=1):
    """An Inference with standard error ``se`` all in the seed part."""
    return Inference(estimate, se ** 2, 0.0, seeds, samples)


def test_equivalence_needs_the_90_interval_inside_the_sesoi():
    sesoi = 0.05
    inside, outside, straddling = effect(0.005, 0.01), effect(0.2, 0.01), effect(0.04, 0.02)
    assert findings.verdict(inside, sesoi) == findings.EQUIVALENT
    lo, hi = inside.interval(0.90)
    assert -sesoi < lo and hi < sesoi
    assert findings.verdict(outside, sesoi) == findings.EXCEEDS
    assert outside.tests(sesoi)["exceeds_sesoi"] < 0.025          # above the SESOI too
    assert findings.verdict(effect(-0.2, 0.01), sesoi) == findings.BELOW
    assert findings.verdict(straddling, sesoi) == findings.INCONCLUSIVE
    lo, hi = straddling.interval(0.90)
    assert lo < sesoi < hi and lo < 0 < straddling.interval()[1]
    # the identity behind the words: TOST p < alpha exactly when the 90% interval is inside
    for e in (inside, outside, straddling, effect(0.03, 0.011), effect(-0.03, 0.0105)):
        lo, hi = e.interval(0.90)
        assert (e.tests(sesoi)["equivalent"] < 0.05) == (-sesoi < lo and hi < sesoi)


def test_an_interval_of_width_zero_never_decides():
    flat = Inference(2.0, 0.0, 0.0, 3, 10)
    assert flat.zero_width and flat.interval() == (2.0, 2.0)
    assert findings.verdict(flat, 1.0) == findings.INCONCLUSIVE
    assert findings.above(0.0).judge(flat) == findings.UNDECIDED
    assert np.isnan(findings.seeds_to_decide(flat, 1.0))
    assert all(np.isnan(p) for p in flat.tests(1.0).values())
    one_seed = Inference.of(0.3, [np.nan], [])
    assert not one_seed.defined
    assert findings.verdict(one_seed, 0.05) == findings.UNDEFINED
    assert findings.inside(0.13, 0.45).judge(one_seed) == findings.UNDEFINED


def test_the_paper_range_by_one_interval_rule():
    rule = findings.inside(0.13, 0.45)
    assert rule.judge(effect(0.30, 0.02)) == findings.AGREES
    assert rule.judge(effect(0.60, 0.02)) == findings.DISAGREES
    assert rule.judge(effect(0.44, 0.02)) == findings.UNDECIDED     # mean inside, interval not
    above = findings.above(0.5)
    assert above.judge(effect(0.7, 0.02)) == findings.AGREES
    assert above.judge(effect(0.3, 0.02)) == findings.DISAGREES
    assert above.judge(effect(0.52, 0.02)) == findings.UNDECIDED


def test_a_share_interval_stays_in_its_range():
    share = Inference(0.95, 0.01, 0.0, 3, 1, bounds=(0.0, 1.0))
    unbounded = Inference(0.95, 0.01, 0.0, 3, 1)
    assert share.high == 1.0 < unbounded.high
    assert share.low == pytest.approx(unbounded.low)


def test_beyond_the_floor_measures():
    v, n = pd.Series([0.6, 0.8]), pd.Series([0.2, 0.6])
    # retention 0.4 of a replicate's 0.8: half of what a replicate keeps is lost
    assert findings.beyond_retention(v, n).tolist() == pytest.approx([0.5, 0.5])
    assert findings.beyond_chance(pd.Series([0.55]), pd.Series([0.1])).iloc[0] == \
        pytest.approx(0.5)


# --- Holm -------------------------------------------------------------------------------------

def test_holm_on_a_known_example():
    # sorted: 0.005 <= 0.05/4, 0.01 <= 0.05/3, then 0.03 > 0.05/2 stops (0.04 too)
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p).tolist() == [True, False, False, True]
    # step by step 0.025, 0.033, 0.05, 0.1: all four (Bonferroni, 0.025 each: two)
    assert stats.holm([0.01, 0.02, 0.03, 0.04], alpha=0.1).tolist() == [True] * 4
    # a NaN is not a test: m = 2, so 0.04 <= 0.05 / 1 after 0.01 <= 0.05 / 2
    assert stats.holm([0.01, np.nan, 0.04]).tolist() == [True, False, True]


def test_decide_applies_holm_over_a_setting():
    sesoi = [0.05] * 4
    effects = [effect(0.1, 0.04, seeds=30), effect(0.1, 0.04, seeds=30),
               effect(0.3, 0.01), effect(0.0, 0.001)]
    table = pd.DataFrame(dict(sesoi=sesoi, paper_verdict=[findings.AGREES] * 4))
    table["p_differs"] = [e.tests(0.05)["differs"] for e in effects]
    table["p_equivalent"] = [e.tests(0.05)["equivalent"] for e in effects]
    out = findings.decide(table, effects)
    # alone, the first two exceed at 5% (p about 0.017); Holm at 0.05/3 and 0.05/2 does not
    # keep them (the third, p ~ 0, takes the first step)
    assert (table["p_differs"][:2] > 0.05 / 3).all() and (table["p_differs"][:2] < 0.05).all()
    assert out["verdict_uncorrected"].tolist()[:3] == [findings.EXCEEDS] * 3
    assert out["verdict"].tolist() == [findings.INCONCLUSIVE, findings.INCONCLUSIVE,
                                       findings.EXCEEDS, findings.EQUIVALENT]
    assert out["reproduces"].tolist() == [False, False, True, False]


# --- the joint test over specifications -----------------------------------------------------

def test_the_sign_flip_joint_test_holds_its_level_on_a_planted_null():
    rng = np.random.default_rng(32)
    shared = rng.normal(0, 1, (300, 1, 6))             # a seed moves every specification
    rejections = []
    for study in range(300):
        e = 0.8 * shared[study] + 0.6 * rng.normal(0, 1, (12, 6))   # 12 specs x 6 seeds
        rejections.append(stats.sign_flip_test(e)["p_median"] <= 0.05)
    assert np.mean(rejections) <= 0.08


def test_the_sign_flip_joint_test_finds_a_planted_effect():
    rng = np.random.default_rng(33)
    e = 0.5 + 0.8 * rng.normal(0, 0.1, (1, 8)) + rng.normal(0, 0.1, (12, 8))
    r = stats.sign_flip_test(e)
    assert r["patterns"] == 2 ** 8 and r["specifications"] == 12
    assert r["median"] == pytest.approx(np.median(e.mean(axis=1)))
    assert r["p_median"] == pytest.approx(2 / 256)     # ours and its mirror image
    # flipping one seed of eight leaves most t-tests rejecting: a weaker statistic
    assert r["share"] == 1.0 and r["p_share"] <= 0.05


def test_joint_tests_leave_out_resampling_and_gradient_optimisers():
    rows = [dict(spec=spec, kind=kind, claim=c.key, seed=s, effect=0.1 + 0.01 * s)
            for spec, kind in (("preset", "specification"), ("tau=0.1", "specification"),
                               ("player_seed=1", "resampling"),
                               ("optimizer=sgd", "stops above the optimum"))
            for c in findings.KNOWLEDGE_CLAIMS for s in range(3)]
    out = findings.joint_tests(pd.DataFrame(rows))
    assert (out["specifications"] == 2).all() and (out["patterns"] == 8).all()
    assert findings.specification_kind("player_seed", 1) == "resampling"
    assert findings.specification_kind("optimizer", "sgd") == "stops above the optimum"
    assert findings.specification_kind("tau", 0.1) == "specification"


# --- power ------------------------------------------------------------------------------------

def test_power_matches_a_simulation_of_t_tests():
    from scipy import stats as st
    rng = np.random.default_rng(34)
    n, sd, sesoi = 8, 1.0, 1.0
    planned = stats.power(sesoi, sd, np.array([n]))
    for truth, key in ((sesoi, "differs"), (0.0, "equivalent")):
        x = rng.normal(truth, sd, (20000, n))
        mean, se = x.mean(1), x.std(1, ddof=1) / np.sqrt(n)
        if key == "differs":
            hit = mean / se > st.t.ppf(0.975, n - 1)
        else:
            half = st.t.ppf(0.95, n - 1) * se
            hit = (mean - half > -sesoi) & (mean + half < sesoi)
        assert planned[key][0] == pytest.approx(hit.mean(), abs=0.04), key


def test_seeds_for_power_is_the_fewest_that_reach_80_percent():
    n = stats.seeds_for_power(0.05, 0.06)
    assert 2 < n < 100
    at = stats.power(0.05, 0.06, np.array([n - 1, n]))
    assert min(at["differs"][1], at["equivalent"][1]) >= 0.8
    assert min(at["differs"][0], at["equivalent"][0]) < 0.8
    # a sample part as wide as the SESOI: no number of seeds decides
    assert stats.seeds_for_power(0.05, 0.06, sd_sample=0.05, n_samples=20) == 101
    assert stats.sd_upper(1.0, 2) == pytest.approx(np.sqrt(2 / 0.4463), rel=1e-3)


def test_seeds_to_decide_plans_on_the_upper_bound_of_the_spread():
    e = Inference(0.02, 0.01 ** 2, 0.0, 3, 20)       # one seed's sd 0.01 * sqrt(3)
    k = findings.seeds_to_decide(e, 0.05)
    assert k == stats.seeds_for_power(0.05, stats.sd_upper(0.01 * np.sqrt(3), 2))
    assert k > stats.seeds_for_power(0.05, 0.01 * np.sqrt(3))   # the bound asks for more


# --- the folds on a study's tables ------------------------------------------------------------

def three_seed_inputs():
    rows, comparisons = [], []
    for seed in range(3):
        for sample, v in enumerate([0.6 + 0.1 * seed, 0.8]):
            rows.append(dict(seed=seed, sample=sample, model="x", epoch=3,
                             measure="share_discarded", order=-1, value=v))
            for partner in set(range(3)) - {seed}:
                comparisons.append(dict(comparison="replication", seed=seed, partner=partner,
                                        sample=sample, model="x", epoch=3,
                                        measure="share_discarded", order=-1,
                                        value=0.5 + 0.05 * (seed + partner)))
    return findings.Inputs(pd.DataFrame(dict(seed=[0, 1, 2])), pd.DataFrame(rows),
                           pd.DataFrame(comparisons))


def test_a_seed_fold_recomputes_the_nulls_without_that_seed():
    x = three_seed_inputs()
    by_seed, by_sample, method = findings.folds(x)
    assert method == "crossed jackknife" and len(by_seed) == 3 and len(by_sample) == 2
    for left_out, f in enumerate(by_seed):
        assert left_out not in set(f.comparisons["seed"]) | set(f.comparisons["partner"])
    claim = findings.CLAIMS[findings.CLAIM_KEYS.index("share_discarded")]
    # by hand: seed s's null is the mean of 0.5 + 0.05 (s + s') over its partners
    null = {s: np.mean([0.5 + 0.05 * (s + p) for p in set(range(3)) - {s}]) for s in range(3)}
    value = {s: (0.6 + 0.1 * s + 0.8) / 2 for s in range(3)}
    theta = np.mean([value[s] - null[s] for s in range(3)])
    fold0 = np.mean([value[s] - (0.5 + 0.05 * 3) for s in (1, 2)])   # 1 and 2 pair only
    i = findings.infer(claim, x)["effect"]
    assert i.estimate == pytest.approx(theta)
    assert findings._mean(findings.per_seed(claim, by_seed[0])["effect"]) == \
        pytest.approx(fold0)
    # the sample part: sample 1 reads 0.8 in every seed, sample 0 moves with the seed
    folds = [findings._mean(findings.per_seed(claim, f)["effect"]) for f in by_sample]
    assert i.v_sample == pytest.approx(stats.jackknife_variance(folds))


def test_a_claim_is_jackknifed_over_the_seeds_it_is_measured_on():
    """Seeds 3 and 4 trained (their metrics are there) but without the claim's measure, as a
    seed beyond ``curve_seeds`` is for the convergence claims: they add no fold, so the
    claim's interval is the one of its three seeds, not a narrower one of five."""
    x = three_seed_inputs()
    wider = findings.Inputs(pd.DataFrame(dict(seed=[0, 1, 2, 3, 4])), x.table, x.comparisons)
    assert len(findings.folds(wider)[0]) == 5
    claim = findings.CLAIMS[findings.CLAIM_KEYS.index("share_discarded")]
    three, five = findings.infer(claim, x)["effect"], findings.infer(claim, wider)["effect"]
    assert five.n_seeds == three.n_seeds == 3
    assert (five.estimate, five.v_seed, five.v_sample) == pytest.approx(
        (three.estimate, three.v_seed, three.v_sample))
    assert five.v_seed > 0
