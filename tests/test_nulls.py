"""Nulls on hand-made results: models that agree give a null of 0, models with no item in
common give 1, and every seed must read the same games."""
import numpy as np
import pytest
import torch

from whypretrain.engine import interactions
from whypretrain.measures import knowledge, nulls
from whypretrain.study.seed_results import SeedResults

N, SAMPLES, TAU = 4, 3, 0.2


def seed_results(seed, probe, finetune, scratch, sample_ids=(5, 7, 9)):
    """A SeedResults of final models only, from their interactions ``[S, 2, 2**n]``."""
    I = torch.stack([probe, finetune, scratch])            # [model, S, 2, 2**n]
    zeros = torch.zeros(I.shape[:-2] + (1 << N,), dtype=torch.float64)
    result = interactions.Interactions(I[..., 0, :], I[..., 1, :], zeros, zeros, zeros,
                                       zeros[..., 0], zeros[..., 0], "and-or")
    return SeedResults(
        path=None, engine_tag="t", params={}, seed=seed, sample_ids=list(sample_ids),
        x=torch.zeros(SAMPLES, 1, 4, 4), y=torch.zeros(SAMPLES, dtype=torch.long),
        players=torch.arange(N).repeat(SAMPLES, 1), result=result, final_epoch=3,
        labels=[("probe", 3), ("finetune", 3), ("scratch", 3)], candidates=10, eligible=10,
        runs={})


def random_I(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SAMPLES, 2, 1 << N, generator=g, dtype=torch.float64)


def share(table, comparison, measure):
    rows = table[(table["comparison"] == comparison) & (table["measure"] == measure)
                 & (table["order"] == knowledge.ALL_ORDERS)]
    return rows["value"].to_numpy()


def test_identical_replicates_have_a_null_of_zero_and_opposite_ones_of_one():
    probe, ft, sc = random_I(0), random_I(1), random_I(2)
    same = [seed_results(s, probe, ft, sc) for s in (0, 1, 2)]
    t = nulls.comparison_table(same, TAU, "exclude")
    assert set(t["comparison"]) == set(nulls.COMPARISONS)
    assert len(t) == 3 * 2 * len(nulls.COMPARISONS) * SAMPLES * len(
        knowledge.KNOWLEDGE_MEASURES) * (N + 2)           # 6 ordered pairs
    np.testing.assert_array_equal(share(t, "replication", "share_discarded"), 0.0)
    np.testing.assert_array_equal(share(t, "replication", "weighted_share_discarded"), 0.0)
    # with identical seeds every comparison equals the same-seed value
    own = knowledge.knowledge_table(probe, ft, sc, TAU, [5, 7, 9], epoch=3)
    value = own[(own["measure"] == "share_discarded") & (own["order"] == -1)]["value"]
    np.testing.assert_allclose(share(t, "unrelated", "share_discarded"),
                               np.tile(value.to_numpy(), 6))
    flipped = [seed_results(0, probe, ft, sc), seed_results(1, probe, -ft, sc)]
    t = nulls.comparison_table(flipped, TAU, "exclude")
    np.testing.assert_array_equal(share(t, "replication", "share_discarded"), 1.0)
    np.testing.assert_array_equal(share(t, "replication", "share_new"), 1.0)
    np.testing.assert_array_equal(share(t, "replication", "weighted_share_discarded"), 1.0)


def test_pairs_are_ordered_and_name_both_seeds():
    loaded = [seed_results(s, random_I(s), random_I(s + 10), random_I(s + 20)) for s in (0, 1)]
    t = nulls.comparison_table(loaded, TAU, "exclude")
    assert set(zip(t["seed"], t["partner"])) == {(0, 1), (1, 0)}
    # replication of (0, 1): fine-tuned 0 in the probe's role, fine-tuned 1 in the fine-tuned
    a = loaded[0].interactions_of("finetune")
    b = loaded[1].interactions_of("finetune")
    ka, kb = knowledge.salient_items(a, TAU), knowledge.salient_items(b, TAU)
    lacks = ((ka != 0) & ~knowledge.shared(ka, kb)).sum((-2, -1)) / (ka != 0).sum((-2, -1))
    got = t[(t["comparison"] == "replication") & (t["seed"] == 0)
            & (t["measure"] == "share_discarded") & (t["order"] == -1)]["value"]
    np.testing.assert_allclose(got.to_numpy(), lacks.numpy())
    assert nulls.comparison_table(loaded[:1], TAU, "exclude").empty


def test_replicates_compare_final_models_of_two_seeds():
    probe, ft, sc = random_I(0), random_I(1), random_I(2)
    t = nulls.replicate_table([seed_results(0, probe, ft, sc), seed_results(1, probe, ft, -sc)],
                              TAU, "exclude")
    w = t[t["measure"] == "jaccard_weighted"].set_index("model")["value"]
    assert (w.loc["finetune"] == 1.0).all() and (w.loc["scratch"] == 0.0).all()
    assert len(t) == 2 * 2 * 2 * SAMPLES


def test_seeds_on_different_games_are_refused():
    probe, ft, sc = random_I(0), random_I(1), random_I(2)
    other = [seed_results(0, probe, ft, sc), seed_results(1, probe, ft, sc, (5, 7, 11))]
    with pytest.raises(ValueError, match="different games"):
        nulls.comparison_table(other, TAU, "exclude")
