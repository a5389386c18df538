"""Joint extraction (book/method.md, section 2) against a general LP solver written from the
definitions, and the identities it must keep; face sampling over the rules."""
import pytest
import torch

from whypretrain.engine import exact, joint, masking
from whypretrain.measures import face
from whypretrain import presets
from whypretrain.study import extraction
from whypretrain.engine import interactions as I
from whypretrain.engine.sparsify import sparsify

import oracle


@pytest.fixture(scope="module")
def joint_games(three_cnns):
    """Games ``[3 models, 2 samples, 2**n]`` of three real CNNs, n = 3..5 and 8 (players
    shared)."""
    nets, xs, ys = three_cnns
    xs, ys = xs[:2], ys[:2]
    games = {}
    for n in (3, 4, 5, 8):
        players = torch.stack([masking.choose_players(x, n, 4, seed=i) for i, x in enumerate(xs)])
        games[n] = torch.stack([masking.evaluate(net, xs, ys, players, "zero", batch_size=1024,
                                                 patch=4) for net in nets]).double()
    return games


@pytest.mark.parametrize("columns", ["generated", "all"])
@pytest.mark.parametrize("n, models", [(3, 3), (4, 2), (4, 3), (5, 3)])
def test_joint_reaches_the_lp_optimum_with_a_valid_certificate(joint_games, n, models, columns):
    v = joint_games[n][:models]
    span = (v[..., -1] - v[..., 0]).abs()
    b, c = 0.04 * span, joint.P_BOUND * span
    tol = 1e-4
    sol = joint.solve(v, b, tol=tol, columns=columns)
    i_and, i_or = I.and_or(v, sol.p, sol.q)
    # the loss is the engine's own measure of the returned split
    torch.testing.assert_close(sol.loss, joint.joint_loss(i_and, i_or), rtol=0, atol=1e-9)
    for g in range(v.shape[1]):
        optimum, o_and, o_or, o_q = oracle.joint_lp(v[:, g], q_bound=0.04, p_bound=joint.P_BOUND)
        assert float(sol.loss_bound[g]) <= optimum * (1 + 1e-9) + 1e-12   # a lower bound
        assert float(sol.loss[g]) <= optimum * (1 + tol) + 1e-12         # within tol
        assert float(sol.loss[g]) >= optimum * (1 - 1e-9) - 1e-12        # feasible
        # the oracle's solution is feasible for the same definitions: its q explains v
        torch.testing.assert_close(I.reconstruct(o_and, o_or), v[:, g] + o_q, rtol=0, atol=1e-7)
    assert float(sol.gap.max()) <= tol
    # every model's outputs explained within its q bound; q and the own part of p in their boxes
    assert ((sol.q.abs() - b[..., None]) <= 1e-12).all()
    assert ((I.reconstruct(i_and, i_or) - v).abs().amax(-1) <= b + 1e-9).all()
    own = sol.p - sol.shared
    assert ((own.abs() - c[..., None]) <= 1e-7 * (1 + c[..., None])).all()


def test_the_two_forms_of_the_transforms_give_one_solution(joint_games):
    """The LP holds the transforms as chains of butterfly passes (the default) or as their
    ``3**n``-entry matrices; the matrices are the engine's transforms, and both forms reach the
    same optimum (the tie-broken one, unique)."""
    v = joint_games[5]
    a, b = joint.transforms(5)
    p = torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    i_and, i_or = I.and_or(v, p, torch.zeros_like(v))
    half = v / 2
    torch.testing.assert_close(i_and, (half + p) @ torch.from_numpy(a.toarray()).T, rtol=0,
                               atol=1e-9)
    torch.testing.assert_close(i_or, (half - p) @ torch.from_numpy(b.toarray()).T, rtol=0,
                               atol=1e-9)
    span = (v[..., -1] - v[..., 0]).abs()
    chained, matrices = (joint.solve(v, 0.04 * span, columns="all", chain=c)
                         for c in (True, False))
    torch.testing.assert_close(chained.p, matrices.p, rtol=0, atol=1e-9 * float(v.abs().max()))
    torch.testing.assert_close(chained.loss, matrices.loss, rtol=1e-12, atol=0)


def test_any_duals_give_a_lower_bound(joint_games):
    """Weak duality, the certificate's ground (``joint.lower_bound``): random duals, scaled into
    the groups' dual constraints, never bound above the optimum; and the scale is the least
    that does (each group's constraint holds, one with equality)."""
    v = joint_games[4]
    span = (v[..., -1] - v[..., 0]).abs()
    b, c = 0.04 * span, joint.P_BOUND * span
    gen = torch.Generator().manual_seed(3)
    optima = [oracle.joint_lp(v[:, g])[0] for g in range(v.shape[1])]
    for _ in range(20):
        y = torch.randn(v.shape, dtype=torch.float64, generator=gen)
        z = torch.randn(v.shape, dtype=torch.float64, generator=gen)
        bound = joint.lower_bound(y, z, v, b, c)
        for g, optimum in enumerate(optima):
            assert float(bound[g]) <= optimum * (1 + 1e-9) + 1e-12
        z = z - z.mean(0, keepdim=True)
        price = joint.dual_prices(y, z)
        scale = joint.group_scale(price, joint.ALPHA)
        excess = joint.group_excess(price / scale[None, :, None, None], joint.ALPHA)
        assert float(excess.amax()) <= 1e-12
        tight = excess.flatten(-2).amax(-1)  # the binding group of each sample
        assert ((scale == 1) | (tight.abs() <= 1e-9)).all()
    # the solver's own duals certify within tol: the bound is the optimum's
    sol = joint.solve(v, b, columns="generated")
    for g, optimum in enumerate(optima):
        assert float(sol.loss_bound[g]) >= optimum * (1 - 1e-4)


@pytest.mark.slow
def test_generated_and_whole_lp_reach_one_optimum_on_real_games(joint_games):
    """n = 8, three real models' games on two samples: column and row generation reach the
    whole LP's tie-broken optimum, under two rules."""
    v = joint_games[8]
    b = 0.04 * (v[..., -1] - v[..., 0]).abs()
    for rule in ("canonical", "reverse"):
        gen = joint.solve(v, b, columns="generated", rule=rule)
        whole = joint.solve(v, b, columns="all", rule=rule)
        torch.testing.assert_close(gen.loss, whole.loss, rtol=1e-9, atol=0)
        torch.testing.assert_close(gen.p, whole.p, rtol=0, atol=1e-8 * float(v.abs().max()))
        assert (gen.rounds > 1).all() and (whole.rounds == 0).all()
    # samples in threads: the same solution
    threads = joint.solve(v, b, columns="generated", rule="reverse", workers=2)
    torch.testing.assert_close(threads.p, gen.p, rtol=0, atol=0)
    with pytest.raises(ValueError, match="columns"):
        joint.solve(v, b, columns="some")


@pytest.mark.parametrize("n", [4, 6, 8])
def test_joint_extraction_of_one_model_is_the_independent_solve(real_games_joint, n):
    """With one model the shared split is free and the loss is the L1 loss: the same optimum."""
    v = real_games_joint[n]
    b = 0.04 * (v[:, -1] - v[:, 0]).abs()
    alone = exact.solve(v, b)
    together = joint.solve(v[None], b[None])
    for g in range(v.shape[0]):
        optimum = oracle.sparsification_lp(v[g])
        for loss in (alone.loss[g], together.loss[g]):
            assert optimum * (1 - 1e-9) - 1e-12 <= float(loss) <= optimum * (1 + 1e-4) + 1e-12
        assert float(together.loss_bound[g]) <= optimum * (1 + 1e-9) + 1e-12
    torch.testing.assert_close(together.loss, alone.loss, rtol=1e-4, atol=0)


@pytest.fixture(scope="module")
def real_games_joint(cnn_and_samples):
    model, xs, ys = cnn_and_samples
    games = {}
    for n in (4, 6, 8):
        players = torch.stack([masking.choose_players(x, n, 4, seed=i) for i, x in enumerate(xs)])
        games[n] = masking.evaluate(model, xs, ys, players, "zero", batch_size=1024,
                                    patch=4).double()
    return games


def test_sparsify_joint_and_the_engine_route(joint_games):
    """``sparsify(extraction="joint")`` is ``joint.solve`` on the first dimension; the seed's
    engine decomposes the three final rows together and every checkpoint alone; AND-only mode
    ignores the rule and the extraction."""
    v = joint_games[4]
    result = sparsify(v, extraction="joint", merge_low_or=False)
    sol = joint.solve(v, 0.04 * (v[..., -1] - v[..., 0]).abs())
    torch.testing.assert_close(result.p, sol.p, rtol=0, atol=0)
    torch.testing.assert_close(result.loss, sol.loss.expand(3, -1), rtol=0, atol=0)
    assert result.params["extraction"] == "joint" and result.params["alpha"] == joint.ALPHA
    # five rows: probe, two fine-tuning epochs, two scratch epochs (finals: rows 0, 2, 4)
    rows = torch.cat([v[:1], v[1:2] * 0.5, v[1:2], v[2:3] * 0.5, v[2:3]])
    params = presets.resolve("ci", {"extraction": "joint"})
    engine = extraction.run_engine(rows, params)
    assert extraction.final_rows(5) == [0, 2, 4]
    together = sparsify(v, extraction="joint")
    alone = sparsify(rows[[1, 3]])
    torch.testing.assert_close(engine.I_and[[0, 2, 4]], together.I_and, rtol=0, atol=0)
    torch.testing.assert_close(engine.I_or[[1, 3]], alone.I_or, rtol=0, atol=0)
    and_only = extraction.run_engine(rows, {**params, "mode": "and", "rule": "reverse"})
    torch.testing.assert_close(and_only.I_and, I.harsanyi(rows), rtol=0, atol=0)
    with pytest.raises(ValueError, match="joint"):
        sparsify(v, optimizer="sgd", extraction="joint")
    with pytest.raises(ValueError, match="extraction"):
        sparsify(v, extraction="both")
    with pytest.raises(ValueError, match="model rows"):
        extraction.final_rows(4)
    with pytest.raises(ValueError, match="exact"):
        extraction.run_engine(rows, {**params, "optimizer": "sgd"})


def test_engine_tag_keeps_the_defaults_and_names_the_choices():
    params = presets.resolve("ci")
    assert extraction.engine_params(params) == dict(mode="and-or", optimizer="exact", q_bound=0.04,
                                                 tol=1e-4, or_merge="and", solution="canonical")
    reverse = extraction.engine_params({**params, "rule": "reverse"})
    assert reverse["solution"] == "reverse"
    assert extraction.engine_params({**params, "extraction": "joint"})["extraction"] == "joint"
    plain = extraction.engine_params({**params, "mode": "and"})
    assert extraction.engine_params({**params, "mode": "and", "rule": "hash",
                                  "extraction": "joint"}) == plain
    with pytest.raises(ValueError, match="rule"):
        presets.resolve("ci", {"rule": "vertex"})


def test_face_sampling_classifies_items(joint_games):
    """Every rule reaches the same optimum (within tol); robust items are salient with the same
    sign under every rule; the warm start changes no interaction."""
    v = joint_games[5]
    warm = face.sample(v, tau=0.05)
    cold = face.sample(v, tau=0.05, warm=False)
    base = warm.results["canonical"].loss
    for rule in exact.RULES:
        loss = warm.results[rule].loss
        assert ((loss - base).abs() <= 1e-4 * base).all()
        scale = float(v.abs().max())
        torch.testing.assert_close(warm.results[rule].I_and, cold.results[rule].I_and,
                                   rtol=0, atol=1e-9 * scale)
    for items in warm.items.values():
        assert (items[warm.robust] == warm.items["canonical"][warm.robust]).all()
    assert not (warm.robust & warm.dependent).any()
    salient_somewhere = torch.stack([k != 0 for k in warm.items.values()]).any(0)
    assert torch.equal(warm.robust | warm.dependent, salient_somewhere)
    table = warm.shares(["a", "b", "c"])
    assert list(table["model"]) == ["a", "b", "c"]
    assert ((table["robust"] <= table["canonical_items"]) & (table["robust_share"] <= 1)).all()
