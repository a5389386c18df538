"""Knowledge measures on hand-made and random interaction tensors (book/method.md, section 3)."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from whypretrain.measures import knowledge as kn
from whypretrain.measures import stats

NAN = float("nan")
AND_, OR_ = kn.AND, kn.OR


def inter(and_row, or_row):
    """One sample's interactions ``[2, 2**n]`` from its AND and OR rows."""
    return torch.tensor([and_row, or_row], dtype=torch.float32)


def assert_same(actual, expected):
    """Elementwise equality with NaN == NaN."""
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    assert torch.allclose(a, e, equal_nan=True), (a, e)


# --- hand-made example (n = 2, tau = 0.5) -----------------------------------------------------
# masks: 0 = {}, 1 = {0}, 2 = {1}, 3 = {0, 1}; per-order tensors are [order 0, 1, 2, all]
TAU = 0.5
# items: AND{0}+ (4), AND{0,1}+ (2, tie at 0.5*4), OR{0,1}- (2, tie)
PRE = inter([0, 4, 1, 2], [0, 0, 0, -2])
# items: AND{0}+ (8), AND{1}+ (4), AND{0,1}- (4, flipped sign), OR{0,1}- (4)
FIN = inter([0, 8, 4, -4], [0, 0, 0, -4])
# items: AND{0}+ (1), OR{0,1}+ (1, opposite sign to the preserved OR item)
SCR = inter([0.25, 1, 0, 0], [0, 0, 0, 1])

EXPECTED = {
    "count_probe": [0, 1, 2, 3],
    "count_finetune": [0, 2, 2, 4],
    "count_scratch": [0, 1, 1, 2],
    "count_preserve": [0, 1, 1, 2],   # AND{0}+, OR{0,1}-
    "count_discard": [0, 0, 1, 1],    # AND{0,1}+ (fine-tuned has it with the other sign)
    "count_new": [0, 1, 1, 2],        # AND{1}+, AND{0,1}-
    "count_learnable": [0, 1, 0, 1],  # AND{0}+ only: scratch's OR{0,1} has the other sign
    "strength_probe": [0, 4, 4, 8],
    "strength_finetune": [0, 12, 8, 20],
    "strength_scratch": [0, 1, 1, 2],
    "strength_preserve": [0, 8, 4, 12],   # in the fine-tuned model's |I|
    "strength_discard": [0, 0, 2, 2],     # in the pretrain model's |I|
    "strength_new": [0, 4, 4, 8],
    "strength_learnable": [0, 8, 0, 8],
    "share_preserved": [NAN, 1, 0.5, 2 / 3],
    "share_discarded": [NAN, 0, 0.5, 1 / 3],
    "share_new": [NAN, 0.5, 0.5, 0.5],
    "ratio_learnable": [NAN, 1, 0, 0.5],
    # K_new (AND{1}+, AND{0,1}-) shares nothing with scratch; K_finetune shares AND{0}+
    "count_learnable_new": [0, 0, 0, 0],
    "ratio_learnable_new": [NAN, 0, 0, 0],
    "count_learnable_finetune": [0, 1, 0, 1],
    "ratio_learnable_finetune": [NAN, 0.5, 0, 0.25],
}


def test_orders_are_popcounts():
    for n in range(0, 7):
        expected = [bin(m).count("1") for m in range(2 ** n)]
        assert kn.orders(n).tolist() == expected
        assert kn.orders(n).dtype == torch.long


def test_salient_ties_signs_and_empty():
    K = kn.salient_items(PRE, TAU)
    assert K.dtype == torch.int8
    assert K.tolist() == [[0, 1, 0, 1], [0, 0, 0, -1]]  # 1 < 2 = threshold; 2 ties -> salient
    # just below the tie is not salient
    assert kn.salient_items(inter([0, 4, 0, 1.999], [0, 0, 0, 0]), TAU).tolist() == \
        [[0, 1, 0, 0], [0, 0, 0, 0]]
    # the max is over both kinds: a large OR term raises the AND threshold
    assert kn.salient_items(inter([0, 1, 0, 0], [0, 0, 0, -3]), TAU).tolist() == \
        [[0, 0, 0, 0], [0, 0, 0, -1]]
    # an all-zero sample has no items, even at tau = 0
    zero = torch.zeros(2, 4)
    assert not kn.salient_items(zero, 0.0).any()
    # tau = 0: every non-zero term, zero terms are no items (no sign)
    assert kn.salient_items(inter([0, 1e-9, 0, -1], [0, 0, 0, 0]), 0.0).tolist() == \
        [[0, 1, 0, -1], [0, 0, 0, 0]]
    # tau = 1: only the ties at the max
    assert kn.salient_items(inter([3, -3, 1, 0], [0, 2.9, 0, 3]), 1.0, "include").tolist() == \
        [[1, -1, 0, 0], [0, 0, 0, 1]]


def test_the_empty_set_is_no_item_and_leaves_the_threshold_to_the_rest():
    # the order-0 term (v of the fully masked input) is 10x the largest real interaction
    I = inter([10, 1, -0.6, 0.4], [0.3, 0, 0, -0.5])
    # exclude (default): not an item; tau scales the max of the rest (1): 0.5 and up are salient
    K = kn.salient_items(I, 0.5)
    assert K.tolist() == [[0, 1, -1, 0], [0, 0, 0, -1]]
    assert torch.equal(K, kn.salient_items(I, 0.5, "exclude"))
    # include (the earlier rule): the empty set is the only item, its 10 sets the threshold at 5
    assert kn.salient_items(I, 0.5, "include").tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    # measures follow: with include every model shares AND{} and nothing else
    m_ex = kn.knowledge_measures(I, I, I, 0.5)
    m_in = kn.knowledge_measures(I, I, I, 0.5, "include")
    assert m_ex["count_probe"].tolist() == [0, 2, 1, 3]
    assert m_in["count_probe"].tolist() == [1, 0, 0, 1]
    with pytest.raises(ValueError, match="empty_set"):
        kn.salient_items(I, 0.5, "drop")


def test_salient_is_per_sample_over_leading_dims():
    batch = torch.stack([PRE, FIN * 100, torch.zeros(2, 4)]).reshape(3, 1, 2, 4)
    K = kn.salient_items(batch, TAU)
    assert K.shape == (3, 1, 2, 4)
    assert torch.equal(K[0, 0], kn.salient_items(PRE, TAU))
    assert torch.equal(K[1, 0], kn.salient_items(FIN, TAU))
    assert not K[2].any()


@pytest.mark.parametrize("bad", [torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(2, 2, 6)])
def test_salient_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        kn.salient_items(bad, TAU)


def test_salient_rejects_bad_tau_and_nan():
    with pytest.raises(ValueError):
        kn.salient_items(PRE, 1.5)
    with pytest.raises(ValueError):
        kn.salient_items(PRE, -0.1)
    with pytest.raises(ValueError):
        kn.salient_items(inter([NAN, 1, 0, 0], [0, 0, 0, 0]), TAU)


def test_sign_disagreement_is_not_shared():
    K1 = kn.salient_items(inter([0, 0, 0, 2], [0, 0, 0, 0]), TAU)
    K2 = kn.salient_items(inter([0, 0, 0, -2], [0, 0, 0, 0]), TAU)
    sets = kn.knowledge_sets(K1, K2)
    assert not sets["preserve"].any()
    assert kn.count_by_order(sets["discard"]).tolist() == [0, 0, 1, 1]
    assert kn.count_by_order(sets["new"]).tolist() == [0, 0, 1, 1]
    # the same S in different kinds is not shared either
    K3 = kn.salient_items(inter([0, 0, 0, 0], [0, 0, 0, 2]), TAU)
    assert not kn.shared(K1, K3).any()
    assert kn.set_jaccard(K1, K2).item() == 0.0
    assert kn.weighted_jaccard(inter([0, 0, 0, 2], [0] * 4), inter([0, 0, 0, -2], [0] * 4)) == 0


def test_hand_made_measures():
    m = kn.knowledge_measures(PRE, FIN, SCR, TAU)
    assert list(m) == list(kn.KNOWLEDGE_MEASURES)
    # the item measures by hand; the weighted and chance ones have tests of their own below
    assert set(m) - set(EXPECTED) == {k for k in m if k.startswith(("weighted_", "chance_"))}
    for name, expected in EXPECTED.items():
        assert_same(m[name], expected)
        if name.startswith("count_"):
            assert m[name].dtype == torch.int64


def test_no_preserved_knowledge_makes_ratio_undefined_and_counted():
    # sample 1: the hand-made one; sample 2: pretrain and finetune share nothing
    pre = torch.stack([PRE, inter([0, 1, 0, 0], [0, 0, 0, 0])])
    fin = torch.stack([FIN, inter([0, 0, 1, 0], [0, 0, 0, 0])])
    scr = torch.stack([SCR, inter([0, 0, 1, 0], [0, 0, 0, 0])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r, n_undefined = kn.learnability(*(kn.salient_items(x, TAU) for x in (pre, fin, scr)))
        m = kn.knowledge_measures(pre, fin, scr, TAU)
    assert_same(r[0], EXPECTED["ratio_learnable"])
    assert torch.isnan(r[1]).all()
    assert n_undefined.tolist() == [2, 1, 1, 1]  # order 0 undefined for both samples
    assert_same(m["ratio_learnable"], r)
    assert m["count_preserve"][1].tolist() == [0, 0, 0, 0]
    assert m["share_preserved"][1, -1].item() == 0.0  # defined: K_pretrain is not empty


def test_empty_sample_gives_zero_counts_and_undefined_ratios():
    zero = torch.zeros(2, 8)
    m = kn.knowledge_measures(zero, zero, zero, TAU)
    for name, v in m.items():
        assert v.shape == (5,)
        if name.startswith(("count_", "strength_", "chance_count_")) or name in (
                "weighted_preserve", "weighted_discard"):
            assert (v == 0).all(), name
        else:
            assert torch.isnan(v).all(), name


def random_interactions(shape, n, generator, integer=True):
    """Integer-valued interactions (so ties at tau = 0.5 and sign flips are common)."""
    if integer:
        x = torch.randint(-4, 5, (*shape, 2, 2 ** n), generator=generator).float()
    else:
        x = torch.randn((*shape, 2, 2 ** n), generator=generator)
    return x


def items_oracle(I, tau, empty_set="exclude"):
    """Items of one sample as a Python set of (kind, mask, sign), by brute force: with
    ``exclude`` the empty set (mask 0) is skipped, for the items and for the peak alike."""
    terms = [(k, s, v) for k, row in enumerate(I.tolist()) for s, v in enumerate(row)
             if empty_set == "include" or s != 0]
    peak = max(abs(v) for _, _, v in terms)
    return {(k, s, 1 if v > 0 else -1) for k, s, v in terms
            if peak > 0 and v != 0 and abs(v) >= tau * peak}


@pytest.mark.parametrize("empty_set", kn.EMPTY_SET_CHOICES)
def test_measures_match_a_brute_force_oracle(empty_set):
    g = torch.Generator().manual_seed(0)
    n, tau = 3, 0.5
    pre, fin, scr = (random_interactions((40,), n, g) for _ in range(3))
    m = kn.knowledge_measures(pre, fin, scr, tau, empty_set)
    for i in range(40):
        P, F, S = (items_oracle(x[i], tau, empty_set) for x in (pre, fin, scr))
        sets = {"probe": P, "finetune": F, "scratch": S, "preserve": P & F,
                "discard": P - F, "new": F - P, "learnable": P & F & S}
        source = {"probe": pre, "finetune": fin, "scratch": scr, "preserve": fin,
                  "discard": pre, "new": fin, "learnable": fin}
        for name, items in sets.items():
            counts = [sum(1 for _, s, _ in items if bin(s).count("1") == o) for o in range(n + 1)]
            strength = [sum(abs(source[name][i, k, s].item()) for k, s, _ in items
                            if bin(s).count("1") == o) for o in range(n + 1)]
            assert m[f"count_{name}"][i].tolist() == counts + [len(items)]
            assert_same(m[f"strength_{name}"][i], strength + [sum(strength)])
        r = len(P & F & S) / len(P & F) if P & F else NAN
        assert_same(m["ratio_learnable"][i, -1], r)
        assert_same(m["share_new"][i, -1], len(F - P) / len(F) if F else NAN)


def test_sets_partition_and_orders_sum_to_totals():
    g = torch.Generator().manual_seed(1)
    for n, tau, integer in [(2, 0.5, True), (4, 0.05, False), (5, 0.25, True), (6, 0.1, False)]:
        pre, fin, scr = (random_interactions((3, 7), n, g, integer) for _ in range(3))
        m = kn.knowledge_measures(pre, fin, scr, tau)
        assert torch.equal(m["count_preserve"] + m["count_discard"], m["count_probe"])
        assert torch.equal(m["count_preserve"] + m["count_new"], m["count_finetune"])
        assert (m["count_learnable"] <= m["count_preserve"]).all()
        for name, v in m.items():
            assert v.shape == (3, 7, n + 2)
            if name.startswith("count_"):
                assert torch.equal(v[..., :-1].sum(-1), v[..., -1]), name
            elif name.startswith(("strength_", "chance_count_")) or name in (
                    "weighted_preserve", "weighted_discard"):
                assert torch.allclose(v[..., :-1].sum(-1), v[..., -1]), name
            else:
                ok = ~torch.isnan(v)
                assert ((v[ok] >= 0) & (v[ok] <= 1)).all(), name
        # strengths of the fine-tuned model split the same way
        assert torch.allclose(m["strength_preserve"] + m["strength_new"], m["strength_finetune"])
        total = m["share_preserved"] + m["share_discarded"]
        undefined = m["count_probe"] == 0
        assert torch.equal(torch.isnan(total), undefined)
        assert torch.allclose(total[~undefined], torch.ones(()).double())


def test_leading_dims_are_independent_samples():
    g = torch.Generator().manual_seed(2)
    pre, fin, scr = (random_interactions((2, 3), 3, g) for _ in range(3))
    batched = kn.knowledge_measures(pre, fin, scr, 0.5)
    for i in range(2):
        for j in range(3):
            one = kn.knowledge_measures(pre[i, j], fin[i, j], scr[i, j], 0.5)
            for name in one:
                assert_same(batched[name][i, j], one[name])


# --- Jaccard ---------------------------------------------------------------------------------

def test_weighted_jaccard_hand_made():
    a = inter([1, -2, 0, 0], [0, 0, 0, 0])
    b = inter([3, -1, 0, 0], [0, 0, 0, 0])
    assert kn.weighted_jaccard(a, b, "include").item() == pytest.approx(2 / 5)
    # a sign flip on one term: it counts in the denominator on both sides, not in the numerator
    c = inter([1, 2, 0, 0], [0, 0, 0, 0])
    assert kn.weighted_jaccard(a, c, "include").item() == pytest.approx(1 / 5)
    # without the empty set only AND{0} is left: min(2, 1) / max(2, 1)
    assert kn.weighted_jaccard(a, b).item() == pytest.approx(1 / 2)


def test_weighted_jaccard_matches_the_definition():
    g = torch.Generator().manual_seed(9)
    I1 = random_interactions((4, 6), 4, g)  # integer-valued: many zeros, ties and sign flips
    I2 = random_interactions((4, 6), 4, g)
    a, b = I1.double(), I2.double()
    ap, an, bp, bn = a.clamp(min=0), (-a).clamp(min=0), b.clamp(min=0), (-b).clamp(min=0)
    num = (torch.minimum(ap, bp) + torch.minimum(an, bn)).sum(dim=(-2, -1))
    den = (torch.maximum(ap, bp) + torch.maximum(an, bn)).sum(dim=(-2, -1))
    assert torch.allclose(kn.weighted_jaccard(I1, I2, "include"), num / den)


def test_set_jaccard_hand_made():
    K1 = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.int8)
    K2 = torch.tensor([[1, -1, 1, 0], [0, 0, 0, 0]], dtype=torch.int8)
    # shared: AND{}+ ; union: AND{}+, AND{0}+, AND{0}-, AND{1}+
    assert kn.set_jaccard(K1, K2).item() == pytest.approx(1 / 4)


def test_jaccard_of_a_model_with_itself_is_one():
    g = torch.Generator().manual_seed(3)
    I = random_interactions((5, 4), 4, g, integer=False)
    I[0, 0] = 0  # an all-zero sample: both similarities are defined as 1
    assert torch.allclose(kn.weighted_jaccard(I, I), torch.ones(5, 4).double())
    K = kn.salient_items(I, 0.1)
    assert torch.equal(kn.set_jaccard(K, K), torch.ones(5, 4).double())


def test_jaccard_of_disjoint_supports_is_zero():
    g = torch.Generator().manual_seed(4)
    I1 = random_interactions((6,), 3, g, integer=False)
    I2 = random_interactions((6,), 3, g, integer=False)
    I1[..., OR_, :] = 0
    I2[..., AND_, :] = 0
    assert (kn.weighted_jaccard(I1, I2) == 0).all()
    assert (kn.set_jaccard(kn.salient_items(I1, 0.1), kn.salient_items(I2, 0.1)) == 0).all()
    # all zero against non-zero: nothing in common
    assert (kn.weighted_jaccard(torch.zeros_like(I1), I1) == 0).all()
    assert (kn.set_jaccard(kn.salient_items(torch.zeros_like(I1), 0.1),
                           kn.salient_items(I1, 0.1)) == 0).all()



def test_weighted_jaccard_symmetric_bounded_scale_invariant():
    g = torch.Generator().manual_seed(5)
    I1 = random_interactions((50,), 5, g, integer=False)
    I2 = I1 + 0.7 * random_interactions((50,), 5, g, integer=False)
    J = kn.weighted_jaccard(I1, I2)
    assert J.shape == (50,) and J.dtype == torch.float64
    assert torch.allclose(J, kn.weighted_jaccard(I2, I1))
    assert ((J >= 0) & (J <= 1)).all()
    assert (J < 1).all() and (J > 0).all()
    assert torch.allclose(J, kn.weighted_jaccard(3 * I1, 3 * I2))
    Js = kn.set_jaccard(kn.salient_items(I1, 0.1), kn.salient_items(I2, 0.1))
    assert torch.equal(Js, kn.set_jaccard(kn.salient_items(I2, 0.1), kn.salient_items(I1, 0.1)))
    assert ((Js >= 0) & (Js <= 1)).all()


# --- tables ----------------------------------------------------------------------------------

def test_knowledge_table_is_tidy_and_complete():
    g = torch.Generator().manual_seed(6)
    n, N = 3, 4
    pre, fin, scr = (random_interactions((N,), n, g) for _ in range(3))
    pre[1] = PRE.repeat(1, 2)  # a sample whose values we can read back
    ids = [10, 11, 12, 13]
    t = kn.knowledge_table(pre, fin, scr, 0.5, sample_ids=ids, epoch=20)
    assert list(t.columns) == kn.TABLE_COLUMNS
    assert len(t) == N * (n + 2) * len(kn.KNOWLEDGE_MEASURES)
    assert not t.duplicated(["sample", "model", "epoch", "measure", "order"]).any()
    assert set(t["order"]) == {-1, 0, 1, 2, 3}
    assert set(t["sample"]) == set(ids) and (t["epoch"] == 20).all()
    assert set(t["measure"]) == set(kn.KNOWLEDGE_MEASURES)
    for measure, model in kn.KNOWLEDGE_MEASURES.items():
        assert set(t.loc[t.measure == measure, "model"]) == {model}
    # NaN only in ratios
    nan_measures = set(t.loc[t.value.isna(), "measure"])
    assert all(m.startswith(("share_", "ratio_", "weighted_share_", "weighted_ratio_",
                             "chance_share_", "chance_ratio_")) for m in nan_measures)
    # the values are the per-sample measures, order -1 = all orders
    m = kn.knowledge_measures(pre, fin, scr, 0.5)
    for measure in ("count_discard", "ratio_learnable", "strength_new"):
        row = t[(t.measure == measure) & (t["sample"] == 12)].set_index("order")["value"]
        assert_same([row[o] for o in [0, 1, 2, 3, -1]], m[measure][2])
    # counts by order sum to the total in the table too
    c = t[t.measure.str.startswith("count_")]
    per_order = c[c.order >= 0].groupby(["sample", "measure"])["value"].sum()
    total = c[c.order == -1].set_index(["sample", "measure"])["value"]
    pd.testing.assert_series_equal(per_order.sort_index(), total.sort_index(), check_names=False)


def test_knowledge_table_flattens_leading_dims_and_checks_ids():
    g = torch.Generator().manual_seed(7)
    pre, fin, scr = (random_interactions((2, 3), 2, g) for _ in range(3))
    t = kn.knowledge_table(pre, fin, scr, 0.5, epoch=3)
    assert sorted(set(t["sample"])) == list(range(6))
    with pytest.raises(ValueError):
        kn.knowledge_table(pre, fin, scr, 0.5, sample_ids=[0, 1, 2], epoch=3)
    with pytest.raises(ValueError):
        kn.knowledge_table(pre, fin[..., :2], scr, 0.5, epoch=3)


def test_convergence_table():
    g = torch.Generator().manual_seed(8)
    final = random_interactions((3,), 3, g, integer=False)
    by_epoch = {2: final.clone(), 0: random_interactions((3,), 3, g, integer=False),
                1: 0.5 * final}
    t = kn.convergence_table(by_epoch, final, 0.1, sample_ids=["a", "b", "c"], model="scratch")
    assert list(t.columns) == kn.TABLE_COLUMNS
    assert len(t) == 3 * 3 * 2
    assert set(t["measure"]) == {"jaccard_weighted", "jaccard_set"}
    assert (t["model"] == "scratch").all() and (t["order"] == kn.ALL_ORDERS).all()
    assert t["epoch"].tolist() == sorted(t["epoch"].tolist())
    last = t[t.epoch == 2]
    assert (last["value"] == 1).all()
    half = t[t.epoch == 1].set_index("measure")["value"]
    assert np.allclose(half["jaccard_weighted"], 0.5)  # min/max of a and a/2
    assert (half["jaccard_set"] == 1).all()  # salience is scale-free
    assert t["value"].between(0, 1).all()
    ref = kn.convergence_table(by_epoch, final, 0.1, reference="finetune")
    assert set(ref["measure"]) == {"jaccard_weighted_vs_finetune", "jaccard_set_vs_finetune"}
    assert (ref["model"] == "finetune").all()


def test_aggregate_of_a_knowledge_table_counts_undefined_ratios():
    pre = torch.stack([PRE, inter([0, 1, 0, 0], [0, 0, 0, 0])])
    fin = torch.stack([FIN, inter([0, 0, 1, 0], [0, 0, 0, 0])])
    scr = torch.stack([SCR, inter([0, 0, 1, 0], [0, 0, 0, 0])])
    agg = stats.aggregate(kn.knowledge_table(pre, fin, scr, TAU, epoch=3))
    r = agg[(agg.measure == "ratio_learnable") & (agg.order == -1)].iloc[0]
    assert (r["mean"], r.n, r.n_undefined) == (0.5, 1, 1)
    assert np.isnan(r.ci_low)


# --- weighted measures and the chance level -------------------------------------------------

def test_weighted_shares_are_zero_for_one_model_and_one_for_opposite_signs():
    g = torch.Generator().manual_seed(3)
    I = torch.randn(5, 2, 32, generator=g, dtype=torch.float64)
    same = kn.weighted_measures(I, I, I)
    zeros, ones = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    assert torch.equal(same["weighted_share_discarded"][:, -1], zeros)
    assert torch.equal(same["weighted_share_new"][:, -1], zeros)
    assert torch.allclose(same["weighted_ratio_learnable"][:, -1], ones)
    flip = kn.weighted_measures(I, -I, I)
    assert torch.equal(flip["weighted_share_discarded"][:, -1], ones)
    assert torch.isnan(flip["weighted_ratio_learnable"][:, -1]).all()  # nothing preserved
    # the parts add up: preserve + discard = the probe's strength (divided by its L1 norm per
    # sample), order by order
    total = kn.strength_by_order(torch.ones_like(I, dtype=torch.bool),
                                 kn.l1_normalised(kn.without_empty_set(I)))
    other = torch.randn(5, 2, 32, generator=g, dtype=torch.float64)
    m = kn.weighted_measures(I, other, other)
    torch.testing.assert_close(m["weighted_preserve"] + m["weighted_discard"], total)


def test_shared_strength_is_the_smallest_strength_where_every_sign_agrees():
    a = torch.tensor([[[1.0, -2.0, 3.0, 0.0], [0.5, 0.5, -1.0, 2.0]]])
    b = torch.tensor([[[2.0, -1.0, -3.0, 1.0], [0.25, 1.0, -4.0, 2.0]]])
    expected = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.25, 0.5, 1.0, 2.0]]],
                            dtype=torch.float64)
    torch.testing.assert_close(kn.shared_strength(a, b), expected)


def test_chance_overlap_matches_random_placements_within_kind_and_order():
    """Oracle: the mean overlap over many random placements of the second set's items (each
    moved to a random subset of its kind and order, sign kept)."""
    n = 5
    g = torch.Generator().manual_seed(0)
    K1 = kn.salient_items(torch.randn(3, 2, 1 << n, generator=g, dtype=torch.float64), 0.3)
    K2 = kn.salient_items(torch.randn(3, 2, 1 << n, generator=g, dtype=torch.float64), 0.3)
    order = kn.orders(n)
    total, draws = 0, 3000
    for _ in range(draws):
        moved = K2.clone()
        for kind in range(2):
            for o in range(n + 1):
                where = (order == o).nonzero()[:, 0]
                moved[..., kind, where] = K2[..., kind, where[torch.randperm(len(where),
                                                                            generator=g)]]
        total = total + kn.count_by_order(kn.shared(K1, moved)).double()
    expected = kn.chance_overlap(K1, K2)
    torch.testing.assert_close(total / draws, expected, atol=0.08, rtol=0)
    # every subset salient with one sign in both: every item coincides
    full = torch.ones(1, 2, 1 << n, dtype=torch.int8)
    torch.testing.assert_close(kn.chance_overlap(full, full),
                               kn.count_by_order(full != 0).double())


def test_chance_shares_partition_like_the_item_shares():
    g = torch.Generator().manual_seed(4)
    I = [torch.randn(4, 2, 64, generator=g, dtype=torch.float64) for _ in range(3)]
    m = kn.knowledge_measures(*I, 0.2)
    torch.testing.assert_close(m["chance_count_preserve"] + m["chance_count_discard"],
                               m["count_probe"].double())
    chance = m["chance_share_discarded"][:, -1]
    assert ((chance >= 0) & (chance <= 1)).all()
