"""The ranges of the interactions over the optimal face (engine/ranges.py) against a general LP
solver written from the definitions (tests/oracle.py), and the properties they must have."""
import pytest
import torch

from whypretrain.engine import exact, masking, ranges
from whypretrain.engine.sparsify import sparsify

import oracle


@pytest.fixture(scope="module")
def games(cnn_and_samples):
    """Games ``[2 samples, 2**n]`` of a real trained CNN, n = 3..5."""
    net, xs, ys = cnn_and_samples
    xs, ys = xs[:2], ys[:2]
    out = {}
    for n in (3, 4, 5):
        players = torch.stack([masking.choose_players(x, n, 4, seed=i) for i, x in enumerate(xs)])
        out[n] = masking.evaluate(net, xs, ys, players, "zero", batch_size=1024, patch=4).double()
    return out


@pytest.mark.parametrize("n", [3, 4, 5])
def test_ranges_match_a_general_lp_term_by_term(games, n):
    """Every AND and OR term (the empty set included) of two real games: the certified bounds
    equal the lowest and highest value scipy's LP finds over the same face; the face is not a
    point (the LP has many optima on these games)."""
    v = games[n]
    r = ranges.item_ranges(v)
    scale = float(v.abs().max())
    wide = 0
    for g in range(v.shape[0]):
        for kind in (0, 1):
            for s in range(1 << n):
                low, high = oracle.face_range(v[g], kind, s)
                assert abs(float(r.low[g, kind, s]) - low) <= 1e-6 * scale, (g, kind, s)
                assert abs(float(r.high[g, kind, s]) - high) <= 1e-6 * scale, (g, kind, s)
                wide += high - low > 1e-4 * scale
    assert wide > 0
    assert r.gap() <= 1e-6 * scale
    assert (r.low <= r.low_reached).all() and (r.high_reached <= r.high).all()
    for g in range(v.shape[0]):
        assert abs(float(r.loss[g]) - oracle.sparsification_lp(v[g])) <= 1e-8 * float(r.loss[g])


def test_a_unique_optimum_gives_zero_width():
    """A game made of one AND term of order 2 and one OR term of order 3 read without error
    (q_bound = 0): those two terms are its only optimum, as the general LP confirms term by
    term, and every range has zero width around them."""
    n = 3
    u, w = torch.zeros(1, 1 << n, dtype=torch.float64), torch.zeros(1, 1 << n, dtype=torch.float64)
    u[0, 0b011], w[0, 0b111] = 2.0, -1.5
    v = oracle.reconstruct(u[0], w[0])[None]
    r = ranges.item_ranges(v, q_bound=0.0)
    truth = torch.stack([u, w], dim=-2)
    for kind in (0, 1):
        for s in range(1 << n):
            low, high = oracle.face_range(v[0], kind, s, q_bound=0.0)
            assert abs(low - high) <= 1e-7
    torch.testing.assert_close(r.low, truth, rtol=0, atol=1e-7)
    torch.testing.assert_close(r.high, truth, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n", [4, 5])
def test_every_rule_lies_inside_the_ranges(games, n):
    """The canonical, reverse and hash solutions (raw terms, before the OR merge) are optima:
    inside the ranges."""
    v = games[n]
    r = ranges.item_ranges(v)
    scale = float(v.abs().max())
    for rule in exact.RULES:
        x = sparsify(v, rule=rule, merge_low_or=False)
        terms = torch.stack([x.I_and, x.I_or], dim=-2)
        assert (terms >= r.low - 1e-7 * scale).all(), rule
        assert (terms <= r.high + 1e-7 * scale).all(), rule


def test_candidates_bound_only_their_terms(games):
    """A mask bounds its terms as the full run does and leaves the others NaN, with fewer LPs;
    a mask of the wrong shape is refused."""
    v = games[5]
    full = ranges.item_ranges(v)
    mask = torch.zeros(v.shape[0], 2, 32, dtype=torch.bool)
    mask[:, 0, 0b00011] = mask[:, 1, 0b10110] = mask[:, 1, 0] = True
    part = ranges.item_ranges(v, candidates=mask)
    assert torch.equal(torch.isnan(part.low), ~mask) and torch.equal(torch.isnan(part.high), ~mask)
    torch.testing.assert_close(part.low[mask], full.low[mask], rtol=0, atol=1e-9)
    torch.testing.assert_close(part.high[mask], full.high[mask], rtol=0, atol=1e-9)
    assert (part.lps < full.lps).all()
    with pytest.raises(ValueError, match="candidates must have the shape"):
        ranges.item_ranges(v, candidates=mask[:, 0])
