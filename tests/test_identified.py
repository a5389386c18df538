"""Identified items (measures/identified.py): hand computations, the identity with the knowledge
measures, and on real games the properties the optimal face guarantees."""
import pytest
import torch

from whypretrain.engine import exact, masking
from whypretrain.engine.sparsify import sparsify
from whypretrain.measures import identified, knowledge


def test_identified_items_by_hand():
    """n = 2, AND and OR over masks 0..3; M = 4 (the largest reach, order 0 left out), so at
    tau = 0.5 an item needs its whole range beyond +-2."""
    nan = float("nan")
    low = torch.tensor([[[9.0, 2.0, -1.0, -4.0], [0.0, nan, 0.5, 1.9]]])
    high = torch.tensor([[[9.0, 3.0, 2.5, -2.0], [0.0, nan, 1.0, 2.1]]])
    items = identified.identified_items(low, high, 0.5)
    assert items.tolist() == [[[0, 1, 0, -1], [0, 0, 0, 0]]]
    # with the empty set included, M = 9: only |range| >= 4.5 counts, the empty set's alone
    items = identified.identified_items(low, high, 0.5, "include")
    assert items.tolist() == [[[1, 0, 0, 0], [0, 0, 0, 0]]]
    with pytest.raises(ValueError, match="tau"):
        identified.identified_items(low, high, 1.5)


def test_merged_bounds_add_the_low_order_or_terms():
    low = torch.arange(8.0).reshape(2, 4)
    high = low + 1
    m_low, m_high = identified.merged(low, high)
    # masks 0, 1, 2 (empty set and singletons) move over; mask 3 (order 2) stays
    assert m_low.tolist() == [[4.0, 6.0, 8.0, 3.0], [0.0, 0.0, 0.0, 7.0]]
    assert m_high.tolist() == [[6.0, 8.0, 10.0, 4.0], [0.0, 0.0, 0.0, 8.0]]
    assert identified.merged(low, high, merge=False)[0] is low


def test_claim_shares_are_the_knowledge_measures_on_the_same_items():
    gen = torch.Generator().manual_seed(3)
    I = [torch.randn(5, 2, 64, generator=gen, dtype=torch.float64) for _ in range(3)]
    K = [knowledge.salient_items(x, 0.3) for x in I]
    ours = identified.claim_shares(*K)
    theirs = knowledge.knowledge_measures(*I, tau=0.3)
    for measure in identified.CLAIMS:
        torch.testing.assert_close(ours[measure], theirs[measure][..., -1], equal_nan=True)


@pytest.fixture(scope="module")
def games(cnn_and_samples):
    """Games ``[3 samples, 2**5]`` of a real trained CNN."""
    net, xs, ys = cnn_and_samples
    xs, ys = xs[:3], ys[:3]
    players = torch.stack([masking.choose_players(x, 5, 4, seed=i) for i, x in enumerate(xs)])
    return masking.evaluate(net, xs, ys, players, "zero", batch_size=1024, patch=4).double()


@pytest.mark.parametrize("tau", [0.05, 0.2])
def test_identified_items_are_items_of_every_rule(games, tau):
    """An identified item is salient with its sign under the canonical, reverse and hash
    rules (each an optimum); the candidates mask finds the same items as bounding every term;
    on these games some canonical items are not identified (the face is not a point)."""
    x = sparsify(games)
    ids, r = identified.face_items(games, x.stacked(), tau)
    every, _ = identified.face_items(games, x.stacked(), tau, mask=False)
    assert torch.equal(ids, every)
    assert (ids != 0).any()
    for rule in exact.RULES:
        items = knowledge.salient_items(sparsify(games, rule=rule).stacked(), tau)
        assert (items[ids != 0] == ids[ids != 0]).all(), rule
    canonical = knowledge.salient_items(x.stacked(), tau)
    assert (canonical != 0).sum() > (ids != 0).sum()
