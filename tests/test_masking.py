"""Masking on a real small CNN: the games are the model's log-odds on the masked samples."""
import numpy as np
import pytest
import torch

from whypretrain.engine import interactions, masking, sparsify


def test_log_odds_is_stable_and_matches_probabilities():
    logits = torch.tensor([[2.0, 0.5, -1.0], [1000.0, -1000.0, 0.0]])
    y = torch.tensor([0, 0])
    p = torch.softmax(logits[:1].double(), -1)[0, 0]
    assert masking.log_odds(logits, y)[0].item() == pytest.approx(torch.log(p / (1 - p)).item())
    assert torch.isfinite(masking.log_odds(logits, y)).all()  # p_y = 1 in float: no overflow


def test_players_are_reproducible_distinct_and_in_the_foreground(cnn_and_samples):
    _, xs, _ = cnn_and_samples
    a = masking.choose_players(xs[0], 8, 4, seed=3)
    assert torch.equal(a, masking.choose_players(xs[0], 8, 4, seed=3))
    assert not torch.equal(a, masking.choose_players(xs[0], 8, 4, seed=4))
    assert len(set(a.tolist())) == 8
    fg = masking.foreground_patches(xs[0], 4)
    assert fg[a].all() and fg.sum() < fg.numel()  # digits have background to avoid


def test_full_and_empty_masks_are_the_model_on_the_sample_and_the_baseline(cnn_and_samples):
    model, xs, ys = cnn_and_samples
    players = torch.stack([masking.choose_players(x, 6, 4, seed=i) for i, x in enumerate(xs)])
    games = masking.evaluate(model, xs, ys, players, "zero", batch_size=50, patch=4)
    assert games.shape == (4, 64) and games.dtype == torch.float64
    with torch.inference_mode():
        full = masking.log_odds(model(xs), ys)
        pm = masking.player_masks(players, (28, 28), 4).any(1, keepdim=True)  # [B, 1, H, W]
        empty = masking.log_odds(model(xs * ~pm), ys)
    torch.testing.assert_close(games[:, -1], full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(games[:, 0], empty, rtol=1e-5, atol=1e-5)
    # a masked input really differs from the sample: the empty and full outputs differ
    assert (games[:, -1] - games[:, 0]).abs().min() > 1e-4


def test_batched_equals_one_at_a_time(cnn_and_samples):
    model, xs, ys = cnn_and_samples
    players = torch.stack([masking.choose_players(x, 7, 4, seed=10 + i) for i, x in enumerate(xs)])
    together = masking.evaluate(model, xs, ys, players, "mean", batch_size=512, patch=4)
    for i in range(4):
        alone = masking.evaluate(model, xs[i], ys[i], players[i], "mean", batch_size=13, patch=4)
        torch.testing.assert_close(together[i], alone, rtol=1e-6, atol=1e-6)


def test_masked_input_keeps_unchosen_pixels_and_baselines_players():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    pm = masking.player_masks(torch.tensor([[0, 3]]), (4, 4), 2).flatten(-2).float()
    base = torch.full_like(x, -1.0)
    out = masking.masked_inputs(x, pm, base, torch.tensor([0, 1, 2, 3]))[0]
    assert torch.equal(out[3], x[0])                               # all present: x_N = x
    assert (out[0][:, :2, :2] == -1).all() and (out[0][:, 2:, 2:] == -1).all()
    assert torch.equal(out[0][:, :2, 2:], x[0][:, :2, 2:])         # unchosen patch stays
    assert torch.equal(out[1][:, :2, :2], x[0][:, :2, :2]) and (out[1][:, 2:, 2:] == -1).all()


def _blurred(image: np.ndarray, sigma: float = 2.0, half: int = 3) -> np.ndarray:
    """A Gaussian blur by its definition, pixel by pixel: weights exp(-d^2 / (2 sigma^2)) over
    a (2 half + 1)^2 window, normalised, the image mirrored at its edges (reflect: the edge
    pixel is not repeated)."""
    offsets = np.arange(-half, half + 1)
    w1 = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    weights = np.outer(w1, w1) / w1.sum() ** 2
    h, w = image.shape
    out = np.zeros_like(image, dtype=float)
    for r in range(h):
        for c in range(w):
            for i, dr in enumerate(offsets):
                for j, dc in enumerate(offsets):
                    rr, cc = abs(r + dr), abs(c + dc)
                    rr = 2 * (h - 1) - rr if rr > h - 1 else rr
                    cc = 2 * (w - 1) - cc if cc > w - 1 else cc
                    out[r, c] += weights[i, j] * image[rr, cc]
    return out


@pytest.mark.parametrize("kind", masking.BASELINES)
def test_baselines_are_their_definition(kind):
    """zero: 0; mean: each image's own per-channel mean over its pixels; blur: a 7x7 Gaussian
    of sigma 2 (book/method.md), checked against the definition written out here."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 12, 10, generator=gen)
    base = masking.make_baseline(x, kind)
    assert base.shape == x.shape
    for k in range(3):
        for ch in range(2):
            pixels = x[k, ch].double().numpy()
            expected = {"zero": np.zeros_like(pixels),
                        "mean": np.full_like(pixels, pixels.sum() / pixels.size),
                        "blur": _blurred(pixels) if kind == "blur" else None}[kind]
            np.testing.assert_allclose(base[k, ch].double().numpy(), expected, rtol=0,
                                       atol=1e-5)
    if kind != "zero":  # a baseline of the image, not of the batch: another image, other values
        assert not torch.allclose(base[0], base[1])


@pytest.mark.slow
def test_sixteen_players_run_without_any_dense_matrix(cnn_and_samples, monkeypatch):
    """n = 16: one sample, 65,536 masked inputs, then sparsification; a dense 2**n x 2**n
    anything would need 32 GB in float64 and fail the allocation guard below."""
    model, xs, ys = cnn_and_samples
    real_empty, real_zeros = torch.empty, torch.zeros

    def guard(make):
        def wrapped(*size, **kw):
            dims = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
            if len(dims) >= 2 and all(isinstance(d, int) for d in dims[-2:]) \
                    and dims[-1] >= 1 << 16 and dims[-2] >= 1 << 16:
                raise AssertionError(f"dense {dims} allocation")
            return make(*size, **kw)
        return wrapped

    monkeypatch.setattr(torch, "empty", guard(real_empty))
    monkeypatch.setattr(torch, "zeros", guard(real_zeros))
    players = masking.choose_players(xs[0], 16, 4, seed=0)
    game = masking.evaluate(model, xs[0], ys[0], players, "zero", batch_size=4096, patch=4)
    assert game.shape == (1 << 16,)
    # the SGD path: 5 steps (the exact optimiser takes minutes at n = 16: benchmarks/README.md)
    result = sparsify.sparsify(game[None], optimizer="sgd", iterations=5, lr=1e-5)
    torch.testing.assert_close(result.reconstruct()[0], game, rtol=0,
                               atol=0.04 * float((game[-1] - game[0]).abs()) + 1e-9)


@pytest.mark.parametrize("players, message", [
    (torch.tensor([0, 1, 49]), "must be in \\[0, 49\\)"),
    (torch.tensor([-1, 2]), "must be in"),
    (torch.tensor([3, 3, 5]), "overlap"),
])
def test_bad_players_are_clear_value_errors(players, message):
    with pytest.raises(ValueError, match=message):
        masking.player_masks(players, (28, 28), 4)


def test_bad_player_counts_are_clear_value_errors():
    x = torch.randn(1, 28, 28)
    with pytest.raises(ValueError, match="n = 0"):
        masking.choose_players(x, 0, 4, seed=0)
    with pytest.raises(ValueError, match="n = 21"):
        masking.choose_players(x, 21, 4, seed=0)
    masks = torch.zeros(2, 28, 28, dtype=torch.bool)
    masks[0, :4, :4] = masks[1, 2:6, 2:6] = True
    with pytest.raises(ValueError, match="overlap"):
        masking.player_masks(masks, (28, 28))
    with pytest.raises(ValueError, match="baseline"):
        masking.make_baseline(x, "noise")


def test_games_on_cuda_are_evaluated_without_tf32_and_the_setting_is_restored():
    # cuDNN's TF32 moved EfficientNet-Lite0's games by 8e-4 of their largest value on an H200
    # (benchmarks/README.md, section GPU); the flag is a backend setting, checkable without a GPU
    cudnn = torch.backends.cudnn
    before = cudnn.allow_tf32
    cudnn.allow_tf32 = True
    try:
        with masking._cudnn_precision(torch.device("cuda")):
            assert cudnn.allow_tf32 is False
        assert cudnn.allow_tf32 is True
        with masking._cudnn_precision(torch.device("cpu")):
            assert cudnn.allow_tf32 is True  # the CPU path changes nothing
    finally:
        cudnn.allow_tf32 = before
