"""The interaction engine against brute-force oracles and the identities the theory guarantees."""
import weakref

import pytest
import torch

from whypretrain.engine import interactions as I, masking
from whypretrain.measures import knowledge
from whypretrain.engine.sparsify import sparsify

import oracle


def random_games(n: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 97 * n)
    return torch.randn(batch, 1 << n, generator=gen, dtype=torch.float64) * 3


# n = 10 (a 1,024 x 1,024 oracle) with the slow tests: n <= 9 in the quick subset
BRUTE_FORCE_N = [*range(1, 10), pytest.param(10, marks=pytest.mark.slow)]


@pytest.mark.parametrize("n", BRUTE_FORCE_N)
def test_harsanyi_matches_brute_force(n):
    v = random_games(n)
    fast = I.harsanyi(v)
    for b in range(v.shape[0]):
        torch.testing.assert_close(fast[b], oracle.harsanyi(v[b]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", BRUTE_FORCE_N)
def test_and_or_and_reconstruct_match_brute_force(n):
    v = random_games(n, batch=1)
    p, q = random_games(n, batch=1, seed=1), random_games(n, batch=1, seed=2) * 0.1
    i_and, i_or = I.and_or(v, p, q)
    o_and, o_or = oracle.and_or(v[0], p[0], q[0])
    torch.testing.assert_close(i_and[0], o_and, rtol=0, atol=1e-9)
    torch.testing.assert_close(i_or[0], o_or, rtol=0, atol=1e-9)
    torch.testing.assert_close(I.reconstruct(i_and, i_or)[0], oracle.reconstruct(i_and[0], i_or[0]),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [1, 3, 8, 12])
def test_universal_matching_and(n):
    v = random_games(n, batch=4)
    torch.testing.assert_close(I.reconstruct(I.harsanyi(v), torch.zeros_like(v)), v,
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [1, 4, 9, 12])
def test_universal_matching_and_or_any_p(n):
    """With q = 0 the AND-OR pair explains v exactly, whatever p is (Theorem 3.1)."""
    v = random_games(n, batch=3)
    p = random_games(n, batch=3, seed=5) * 10
    i_and, i_or = I.and_or(v, p, torch.zeros_like(v))
    torch.testing.assert_close(I.reconstruct(i_and, i_or), v, rtol=0, atol=1e-9)


def test_universal_matching_with_q_is_off_by_q_only():
    """From the interactions alone, v_hat(S) = v(S) + q(S): the error is bounded by the q bound."""
    v, p = random_games(7, batch=3), random_games(7, batch=3, seed=3)
    q = random_games(7, batch=3, seed=4) * 0.05
    i_and, i_or = I.and_or(v, p, q)
    torch.testing.assert_close(I.reconstruct(i_and, i_or), v + q, rtol=0, atol=1e-9)
    result = sparsify(v, optimizer="sgd", iterations=300, lr=1e-3)
    bound = 0.04 * (v[..., -1] - v[..., 0]).abs()
    err = (result.reconstruct() - v).abs().amax(-1)
    assert (err <= bound + 1e-9).all()


def test_transforms_keep_leading_dims_and_gradients_are_exact():
    v = random_games(5, batch=6).view(2, 3, 32).requires_grad_(True)
    weights = random_games(5, batch=6, seed=9).view(2, 3, 32)
    (I.harsanyi(v) * weights).sum().backward()
    # d/dv(T) sum_S w(S) I(S) = sum_{S superset T} (-1)^{|S|-|T|} w(S)
    expected = torch.zeros(32, dtype=torch.float64)
    w = weights[1, 2]
    for t in range(32):
        expected[t] = sum((-1) ** (bin(s).count("1") - bin(t).count("1")) * w[s]
                          for s in range(32) if s & t == t)
    assert I.harsanyi(v).shape == (2, 3, 32)
    torch.testing.assert_close(v.grad[1, 2], expected, rtol=0, atol=1e-9)


def test_sparsify_respects_q_bound_at_every_step(monkeypatch):
    v = random_games(6, batch=5)
    bound = 0.04 * (v[..., -1:] - v[..., :1]).abs()
    seen = []
    original = I.l1_gradient

    def spy(values, p, q, n):
        seen.append(bool(((q.abs() - bound) <= 1e-12).all()))
        return original(values, p, q, n)

    import whypretrain.engine.sparsify as extraction
    monkeypatch.setattr(extraction, "l1_gradient", spy)   # the name the descent loop calls
    result = sparsify(v, optimizer="sgd", iterations=200, lr=1e-3)
    assert len(seen) >= 200 and all(seen)
    assert ((result.q.abs() - bound) <= 1e-12).all()


def test_hand_written_gradient_equals_autograd():
    v = random_games(7, batch=3)
    p = random_games(7, batch=3, seed=1).requires_grad_(True)
    q = (random_games(7, batch=3, seed=2) * 0.1).requires_grad_(True)
    i_and, i_or = I.and_or(v, p, q)
    (i_and.abs().sum() + i_or.abs().sum()).backward()
    dp, dq = I.l1_gradient(v, p.detach(), q.detach(), 7)
    torch.testing.assert_close(dp, p.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(dq, q.grad, rtol=0, atol=1e-12)


def test_sgd_is_deterministic_and_lowers_the_objective():
    v = random_games(8, batch=3, seed=21)
    first = sparsify(v, optimizer="sgd", iterations=300)
    second = sparsify(v, optimizer="sgd", iterations=300)
    assert torch.equal(first.I_and, second.I_and) and torch.equal(first.p, second.p)
    assert (first.loss < first.loss_start).all()


def test_a_diverging_game_keeps_the_plain_split():
    """A step size far too large makes SGD climb; such games fall back to p = q = 0."""
    v = random_games(8, batch=3, seed=5)
    result = sparsify(v, optimizer="sgd", iterations=200, lr=1.0)
    assert result.params["games_kept_at_start"] == 3
    assert torch.equal(result.loss, result.loss_start)
    assert (result.p == 0).all() and (result.q == 0).all()
    plain = I.and_or(v, torch.zeros_like(v), torch.zeros_like(v))
    torch.testing.assert_close(result.reconstruct(), I.reconstruct(*plain), rtol=0, atol=1e-9)


def test_sgd_games_are_independent():
    """Batched SGD follows each game's own trajectory."""
    v = random_games(6, batch=4)
    together = sparsify(v, optimizer="sgd", iterations=100, lr=1e-4)
    alone = sparsify(v[2:3], optimizer="sgd", iterations=100, lr=1e-4)
    torch.testing.assert_close(together.I_and[2:3], alone.I_and, rtol=0, atol=1e-10)
    torch.testing.assert_close(together.loss[2:3], alone.loss, rtol=0, atol=1e-10)


def test_sparsify_moves_low_order_or_terms_into_and():
    v = random_games(5, batch=2)
    result = sparsify(v, optimizer="sgd", iterations=50, lr=1e-3)
    orders = I.popcount(5)
    assert (result.I_or[..., orders <= 1] == 0).all()
    # moving them keeps the explanation intact
    i_and, i_or = I.and_or(result.values, result.p, result.q)
    torch.testing.assert_close(result.reconstruct(), I.reconstruct(i_and, i_or), rtol=0, atol=1e-9)


def test_adam_in_fewer_steps_reaches_a_lower_objective_than_the_reference():
    v = random_games(8, batch=4, seed=11)
    sgd = sparsify(v, optimizer="sgd", iterations=2000, lr=1e-5)
    adam = sparsify(v, iterations=1000, lr=3e-2, optimizer="adam")
    assert (sgd.loss < sgd.loss_start).all()
    assert (adam.loss <= sgd.loss * (1 + 1e-9)).all()


def test_and_only_mode_is_plain_harsanyi():
    v = random_games(6, batch=2)
    result = I.and_only(v)
    torch.testing.assert_close(result.I_and, I.harsanyi(v), rtol=0, atol=0)
    assert (result.I_or == 0).all() and result.mode == "and"


def test_salient_items_threshold_ties_and_signs():
    i_and = torch.tensor([[0.0, 1.0, -0.5, 0.049]])
    i_or = torch.tensor([[0.0, 0.0, 0.05, -0.2]])
    items = knowledge.salient_items(torch.stack([i_and, i_or], -2), 0.05, "include")
    assert items.dtype == torch.int8 and items.shape == (1, 2, 4)
    # max |I| = 1 -> threshold 0.05: 0.05 ties (salient), 0.049 is not
    assert items[0].tolist() == [[0, 1, -1, 0], [0, 0, 1, -1]]
    assert I.item_list(items[0]) == [("AND", (0,), 1), ("AND", (1,), -1), ("OR", (1,), 1),
                                     ("OR", (0, 1), -1)]
    assert (knowledge.salient_items(torch.zeros(3, 2, 8), 0.1) == 0).all()


# --------------------------------------------------------------------------------------------
# the exact optimiser
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_games(cnn_and_samples):
    """Games of a real small trained CNN: the 4 test samples at n = 2..8 players."""
    model, xs, ys = cnn_and_samples
    games = {}
    for n in range(2, 9):
        players = torch.stack([masking.choose_players(x, n, 4, seed=i) for i, x in enumerate(xs)])
        games[n] = masking.evaluate(model, xs, ys, players, "zero", batch_size=1024, patch=4)
    return games


@pytest.mark.parametrize("n", range(2, 9))
def test_exact_reaches_the_lp_optimum_with_a_valid_certificate(real_games, n):
    v = real_games[n].double()
    result = sparsify(v, tol=1e-4)
    bound = 0.04 * (v[..., -1] - v[..., 0]).abs()
    for g in range(v.shape[0]):
        optimum = oracle.sparsification_lp(v[g])
        assert float(result.loss_bound[g]) <= optimum * (1 + 1e-9) + 1e-12  # a lower bound
        assert float(result.loss[g]) <= optimum * (1 + 1e-4) + 1e-12       # within tol
        assert float(result.loss[g]) >= optimum * (1 - 1e-9) - 1e-12       # feasible
    assert float(result.gap.max()) <= 1e-4 and result.params["gap"] <= 1e-4
    assert ((result.q.abs() - bound[..., None]) <= 1e-12).all()
    # the interactions still explain the outputs, to within the q bound (universal matching)
    assert ((result.reconstruct() - v).abs().amax(-1) <= bound + 1e-9).all()
    # its loss is the one the engine measures on its own p, q
    i_and, i_or = I.and_or(v, result.p, result.q)
    torch.testing.assert_close(result.loss, i_and.abs().sum(-1) + i_or.abs().sum(-1),
                               rtol=0, atol=1e-9)


def test_any_dual_point_gives_a_lower_bound(real_games):
    """Weak duality, the certificate's foundation: every y, scaled into the dual's feasible set,
    bounds the optimum from below, and the solver's own y reaches it."""
    from whypretrain.engine import exact
    v = real_games[6].double()
    b = 0.04 * (v[:, -1] - v[:, 0]).abs()
    optimum = torch.tensor([oracle.sparsification_lp(g) for g in v], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    for scale in (1e-3, 1.0, 1e3):
        y = torch.randn(v.shape, generator=gen, dtype=torch.float64) * scale
        assert (exact.lower_bound(y, v, b, 6) <= optimum * (1 + 1e-12)).all()
    aligned = exact.lower_bound(v, v, b, 6)  # y = v: a positive dual objective, scaled down
    assert (aligned > 0).all() and (aligned <= optimum * (1 + 1e-12)).all()
    result = sparsify(v)
    assert ((optimum - result.loss_bound) <= 1e-4 * optimum).all()


def test_exact_is_never_above_sgd(real_games):
    v = torch.cat([real_games[6], real_games[8][:, ::4]])  # 8 games of n = 6
    exact = sparsify(v)
    sgd = sparsify(v, optimizer="sgd", iterations=2000, lr=1e-7)
    assert (exact.loss <= sgd.loss * (1 + 1e-12)).all()
    assert (exact.loss <= exact.loss_start * (1 + 1e-12)).all()
    assert (sgd.loss_bound == 0).all() and (exact.loss_bound > 0).all()


def test_exact_is_deterministic_and_keeps_leading_dimensions(real_games):
    v = real_games[7].double()
    first, second = sparsify(v), sparsify(v.view(2, 2, -1))
    again = sparsify(v)
    assert torch.equal(first.I_and, again.I_and) and torch.equal(first.I_or, again.I_or)
    assert second.I_and.shape == (2, 2, 128) and second.loss.shape == (2, 2)
    torch.testing.assert_close(second.loss.reshape(-1), first.loss, rtol=1e-9, atol=1e-12)
    threaded = sparsify(v, workers=3)  # the LPs in threads: the same numbers
    assert torch.equal(first.I_and, threaded.I_and) and torch.equal(first.loss, threaded.loss)


@pytest.mark.parametrize("n", [4, 6, 8])
def test_exact_returns_the_canonical_optimum(real_games, n):
    """The returned solution is the one optimum of the tie-broken objective (book/method.md,
    section 2): equal to a general LP solver's solution of that objective, and the same whatever
    the solver's path (simplex variant, starting columns, all rows or generated rows, every
    column at once), where the plain objective's optima differ."""
    from whypretrain.engine import exact
    v = real_games[n].double()
    b = 0.04 * (v[:, -1] - v[:, 0]).abs()
    tol = 1e-4
    cost = 1 + tol / 4 * exact.tie_break(n)
    cost[1, 0] = cost[0, 0] + 1  # the engine holds the constant as AND(empty)
    ours = exact.solve(v, b, tol=tol)
    i_and, i_or = I.and_or(v, ours.p, ours.q)
    for g in range(v.shape[0]):
        _, lp_and, lp_or = oracle.sparsification_lp(v[g], cost=cost, solution=True)
        scale = float(v[g].abs().max())
        torch.testing.assert_close(i_and[g], lp_and, rtol=0, atol=1e-9 * scale)
        torch.testing.assert_close(i_or[g], lp_or, rtol=0, atol=1e-9 * scale)
    for simplex, start, rows, columns in (("dual", 1, "all", "generated"),
                                          ("primal", 8, "generated", "generated"),
                                          ("primal", 3, "all", "all")):
        other = exact.solve(v, b, tol=tol, simplex=simplex, start_columns=start, rows=rows,
                            columns=columns)
        o_and, o_or = I.and_or(v, other.p, other.q)
        torch.testing.assert_close(o_and, i_and, rtol=0, atol=1e-9 * float(v.abs().max()))
        torch.testing.assert_close(o_or, i_or, rtol=0, atol=1e-9 * float(v.abs().max()))


@pytest.mark.parametrize("rule", ["reverse", "hash"])
def test_every_rule_returns_its_own_optimum_of_the_same_face(real_games, rule):
    """Each rule (book/method.md, section 2) returns the one optimum of its tie-broken objective
    (a general LP solver's solution of that objective), at the plain optimum within tol; the warm
    start from the canonical solution's support gives the same interactions; and the rules'
    points of the face differ."""
    from whypretrain.engine import exact
    from whypretrain.measures import face
    n = 8
    v = real_games[n].double()
    b = 0.04 * (v[:, -1] - v[:, 0]).abs()
    tol = 1e-4
    cost = 1 + tol / 4 * exact.tie_break(n, rule)
    cost[1, 0] = cost[0, 0] + 1  # the engine holds the constant as AND(empty)
    canonical = sparsify(v, tol=tol, merge_low_or=False)
    ours = exact.solve(v, b, tol=tol, rule=rule)
    warm = exact.solve(v, b, tol=tol, rule=rule, support=face.support_of(canonical))
    i_and, i_or = I.and_or(v, ours.p, ours.q)
    w_and, w_or = I.and_or(v, warm.p, warm.q)
    scale = float(v.abs().max())
    for g in range(v.shape[0]):
        optimum = oracle.sparsification_lp(v[g])
        assert optimum * (1 - 1e-9) <= float(ours.loss[g]) <= optimum * (1 + tol)
        _, lp_and, lp_or = oracle.sparsification_lp(v[g], cost=cost, solution=True)
        g_scale = float(v[g].abs().max())
        torch.testing.assert_close(i_and[g], lp_and, rtol=0, atol=1e-9 * g_scale)
        torch.testing.assert_close(i_or[g], lp_or, rtol=0, atol=1e-9 * g_scale)
    torch.testing.assert_close(w_and, i_and, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(w_or, i_or, rtol=0, atol=1e-9 * scale)
    assert (canonical.I_and - i_and).abs().amax() > 1e-3 * scale  # another point of the face


def test_rules_order_their_costs():
    from whypretrain.engine import exact
    order = torch.tensor([bin(m).count("1") for m in range(64)])
    reverse = torch.from_numpy(exact.tie_break(6, "reverse"))
    assert reverse[:, order == 3].max() < reverse[:, order == 2].min()  # higher orders cheaper
    hashed = torch.from_numpy(exact.tie_break(6, "hash"))
    canonical = torch.from_numpy(exact.tie_break(6))
    torch.testing.assert_close(canonical, (order + hashed) / 7, rtol=0, atol=1e-15)
    torch.testing.assert_close(reverse, (6 - order + hashed) / 7, rtol=0, atol=1e-15)
    assert len(set(hashed.reshape(-1).tolist())) == 128
    with pytest.raises(ValueError, match="rule"):
        exact.tie_break(6, "vertex")
    with pytest.raises(ValueError, match="support"):
        exact.solve(random_games(3), torch.ones(2), support=torch.ones(2, 2, 4, dtype=torch.bool))


def test_exact_raises_rather_than_return_an_uncertified_game():
    """A game not certified within ``max_rounds`` LP rounds is an error that says so, never a
    returned solution whose gap exceeds ``tol``, on one thread or several."""
    from whypretrain.engine import exact
    v = random_games(5, batch=3)
    b = 0.04 * (v[:, -1] - v[:, 0]).abs()
    solved = exact.solve(v, b)
    assert int(solved.rounds.max()) > 1 and (solved.gap <= 1e-4).all()
    for workers in (1, 2):
        with pytest.raises(RuntimeError, match="not certified after 1 rounds"):
            exact.solve(v, b, max_rounds=1, workers=workers)


def test_dense_games_get_every_interaction_at_once(real_games):
    """``spread`` tells a trained network's game (a few interactions explain it) from noise (most
    interactions needed); ``columns="auto"`` gives the dense one every interaction from the start
    and grows the sparse one, and the optimum is the one the other route finds."""
    from whypretrain.engine import exact
    n = 8
    trained = real_games[n].double()[:1]
    noise = torch.randn(1, 1 << n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = torch.cat([trained, noise])
    b = 0.04 * (v[:, -1] - v[:, 0]).abs()
    s = exact.spread(v)
    assert s[0] < exact.DENSE_SPREAD < s[1]
    auto = exact.solve(v, b)
    every = (1 << (n + 1)) - 1  # the constant and the non-empty AND and OR terms
    assert auto.columns[1] == every and auto.rounds[1] == 1 and auto.columns[0] < every
    grown = exact.solve(v, b, columns="generated")
    assert grown.columns[1] < every
    for a, c in zip(I.and_or(v, auto.p, auto.q), I.and_or(v, grown.p, grown.q)):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-9 * float(v.abs().max()))
    with pytest.raises(ValueError, match="columns"):
        exact.solve(v, b, columns="some")
    with pytest.raises(ValueError, match="every row"):
        exact.solve(v, b, columns="all", rows="generated")


def test_tie_break_is_fixed_generic_and_orders_first():
    from whypretrain.engine import exact
    r = exact.tie_break(6)
    assert r.shape == (2, 64) and (r >= 0).all() and (r < 1).all()
    assert len(set(r.reshape(-1).tolist())) == 128  # no two interactions cost the same
    order = torch.tensor([bin(m).count("1") for m in range(64)])
    assert (torch.from_numpy(r).floor() == 0).all()
    # a lower order always costs less than a higher one
    assert (torch.from_numpy(r)[:, order == 2].max() < torch.from_numpy(r)[:, order == 3].min())
    assert exact.tie_break(6).tobytes() == r.tobytes()  # a fixed rule, no random state


def test_exact_holds_a_bounded_number_of_lps(real_games, monkeypatch):
    """Games enter the solver a few at a time (memory bounded) and leave when solved: the same
    interactions as when all are held at once."""
    from whypretrain.engine import exact
    v = real_games[7].double().repeat(3, 1)  # 12 games
    b = 0.04 * (v[:, -1] - v[:, 0]).abs()
    together = exact.solve(v, b)
    alive, most = [0], []
    original = exact._GameLP.__post_init__

    def tracked(self):
        original(self)
        alive[0] += 1
        weakref.finalize(self, lambda: alive.__setitem__(0, alive[0] - 1))
        most.append(alive[0])

    monkeypatch.setattr(exact._GameLP, "__post_init__", tracked)
    monkeypatch.setattr(exact, "LIVE_SIZE", 1 << 7)  # one game at a time at n = 7
    alone = exact.solve(v, b)
    # the one solving, and the last ones solved until the solver's locals let go of them
    assert len(most) == v.shape[0] and max(most) <= 3
    scale = float(v.abs().max())
    torch.testing.assert_close(alone.p, together.p, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(alone.q, together.q, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(alone.loss, together.loss, rtol=1e-12, atol=0)


def test_exact_on_games_without_interactions():
    v = torch.zeros(2, 16, dtype=torch.float64)
    v[1] = 3.0  # a constant game: only the order-0 term
    result = sparsify(v)
    # the zero game is solved exactly; the constant one within the tie-break's share of tol
    assert float(result.loss[0]) == 0 and float(result.gap[0]) == 0
    assert float(result.gap[1]) <= 1e-4 / 4
    torch.testing.assert_close(result.loss[1], torch.tensor(3.0, dtype=torch.float64))


def test_or_merge_can_be_switched_off(real_games):
    v = real_games[5].double()
    merged, kept = sparsify(v), sparsify(v, merge_low_or=False)
    orders = I.popcount(5)
    assert (merged.I_or[..., orders <= 1] == 0).all()
    assert (kept.I_or[..., orders <= 1] != 0).any()
    torch.testing.assert_close(merged.reconstruct(), kept.reconstruct(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tol=0.0), "tol"), (dict(tol=-1e-3), "tol"), (dict(tol=1.5), "tol"),
    (dict(q_bound=-0.1), "q_bound"),
])
def test_bad_exact_parameters_are_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparsify(random_games(3), **kwargs)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[0.0, float("nan"), 1.0, 2.0]]), "NaN"),
    (torch.zeros(2, 6), "2\\*\\*n"),
])
def test_bad_games_for_the_exact_optimiser_are_clear_value_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        sparsify(bad)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3, 6), "2\\*\\*n"),
    (torch.zeros(1), "2\\*\\*n"),
    (torch.zeros(1 << 21), "more than the engine allows"),
    (torch.tensor([0.0, float("nan"), 1.0, 2.0]), "NaN"),
    (torch.zeros(4, dtype=torch.long), "floating-point"),
])
def test_bad_games_are_clear_value_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        I.harsanyi(bad)


def test_bad_parameters_are_clear_value_errors():
    v = random_games(3)
    with pytest.raises(ValueError, match="optimizer"):
        sparsify(v, optimizer="lbfgs")
    with pytest.raises(ValueError, match="tau"):
        knowledge.salient_items(torch.stack([v, v], -2), tau=1.5)
    with pytest.raises(ValueError, match="shape"):
        I.and_or(v, v[:1], v)
