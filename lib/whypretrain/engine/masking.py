"""Players and masking: from a model and a sample to its game, the ``2**n`` outputs ``v(x_T)``.

A player is an image patch (or any pixel mask); ``players`` are the ``n`` chosen for a sample.
``x_T`` keeps the players in ``T``, gives the other chosen players the baseline value and leaves
every pixel that belongs to no chosen player as it is (so ``x_N = x``). The output is the
log-odds of the ground-truth class, ``z_y - logsumexp_{c != y} z_c``. Definitions: book/method.md,
section 1.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from whypretrain.engine.interactions import MAX_PLAYERS

BASELINES = ("zero", "mean", "blur")


# --------------------------------------------------------------------------------------------
# players
# --------------------------------------------------------------------------------------------
def patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    if patch < 1 or patch > min(height, width):
        raise ValueError(f"patch = {patch} must be in [1, {min(height, width)}] for "
                         f"{height}x{width} images")
    return height // patch, width // patch


def foreground_patches(x: Tensor, patch: int) -> Tensor:
    """Bool ``[rows * cols]``: patches holding a pixel that differs from the background.

    The background is the image's most common value (0 ink for digits; an image with no
    uniform background has every patch in the foreground).
    """
    rows, cols = patch_grid(x.shape[-2], x.shape[-1], patch)
    crop = x[..., : rows * patch, : cols * patch]
    background = crop.flatten().mode().values
    differs = (crop - background).abs().amax(0) > 1e-6  # over channels
    return differs.view(rows, patch, cols, patch).any(3).any(1).flatten()


def choose_players(x: Tensor, n: int, patch: int, seed: int, choice: str = "foreground"
                   ) -> Tensor:
    """``n`` distinct patch indices (row-major on the patch grid) for one image ``[C, H, W]``.

    ``choice="foreground"`` draws among patches with foreground (and tops up from the others
    when there are fewer than ``n``); ``"random"`` among all patches. Same seed, same players.
    """
    if x.dim() != 3:
        raise ValueError(f"choose_players takes one image [C, H, W], got shape {tuple(x.shape)}")
    rows, cols = patch_grid(x.shape[-2], x.shape[-1], patch)
    total = rows * cols
    if not 1 <= n <= min(MAX_PLAYERS, total):
        raise ValueError(f"n = {n} players must be in [1, {min(MAX_PLAYERS, total)}] "
                         f"({total} patches of {patch}x{patch} pixels)")
    if choice not in ("foreground", "random"):
        raise ValueError(f"player choice must be 'foreground' or 'random', got {choice!r}")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(total, generator=gen)
    if choice == "foreground":
        fg = foreground_patches(x, patch)[order]
        order = torch.cat([order[fg], order[~fg]])  # stable: random within each group
    return order[:n].sort().values


def player_masks(players: Tensor, shape: tuple[int, int], patch: int | None = None) -> Tensor:
    """Bool pixel masks ``[..., n, H, W]`` of players given as patch indices ``[..., n]``
    (with ``patch``) or already as pixel masks ``[..., n, H, W]``; checks range and overlap."""
    height, width = shape
    if players.dtype == torch.bool:
        masks = players
        if masks.shape[-2:] != (height, width):
            raise ValueError(f"player masks are {tuple(masks.shape[-2:])}, images {shape}")
        if (masks.sum(-3) > 1).any():
            raise ValueError("players overlap: a pixel belongs to two player masks")
        if (masks.flatten(-2).sum(-1) == 0).any():
            raise ValueError("a player mask is empty")
    else:
        if patch is None:
            raise ValueError("players given as patch indices need the patch size")
        rows, cols = patch_grid(height, width, patch)
        if players.numel() and (players.min() < 0 or players.max() >= rows * cols):
            raise ValueError(f"player indices must be in [0, {rows * cols}) for a {rows}x{cols} "
                             f"grid of {patch}-pixel patches; got {players.tolist()}")
        ordered = players.sort(-1).values
        if (ordered[..., 1:] == ordered[..., :-1]).any():
            raise ValueError(f"players overlap: repeated patch index in {players.tolist()}")
        grid = torch.zeros(rows * cols, height, width, dtype=torch.bool)
        for k in range(rows * cols):
            r, c = divmod(k, cols)
            grid[k, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = True
        masks = grid[players.long()]
    n = masks.shape[-3]
    if not 1 <= n <= MAX_PLAYERS:
        raise ValueError(f"n = {n} players; the engine takes 1 to {MAX_PLAYERS}")
    return masks


# --------------------------------------------------------------------------------------------
# baseline and output
# --------------------------------------------------------------------------------------------
def make_baseline(x: Tensor, kind: str = "zero") -> Tensor:
    """The value masked players take, for images ``[..., C, H, W]`` in normalised space.

    ``zero``: 0, the data mean (default); ``mean``: the image's per-channel mean; ``blur``: a
    Gaussian blur of the image (kernel 7, sigma 2).
    """
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur
        return gaussian_blur(x, kernel_size=[7, 7], sigma=[2.0, 2.0])
    raise ValueError(f"baseline must be one of {list(BASELINES)}, got {kind!r}")


def log_odds(logits: Tensor, y: Tensor) -> Tensor:
    """``log p_y / (1 - p_y) = z_y - logsumexp_{c != y} z_c``, computed without ``p``."""
    z = logits.double()
    target = z.gather(-1, y[..., None])
    others = z.scatter(-1, y[..., None], float("-inf"))
    return (target - others.logsumexp(-1, keepdim=True))[..., 0]


# --------------------------------------------------------------------------------------------
# the game
# --------------------------------------------------------------------------------------------
def presence(masks: Tensor, n: int) -> Tensor:
    """Float ``[len(masks), n]``: bit i of each mask."""
    return ((masks[:, None] >> torch.arange(n, device=masks.device)) & 1).float()


def masked_inputs(x: Tensor, pmasks: Tensor, baseline: Tensor, masks: Tensor) -> Tensor:
    """``x_T`` for every mask in ``masks``: ``[k, len(masks), C, H, W]`` for ``k`` images.

    ``x``, ``baseline``: ``[k, C, H, W]``; ``pmasks``: float ``[k, n, H*W]`` player pixel masks.
    """
    n = pmasks.shape[-2]
    absent = 1.0 - presence(masks, n)                            # [m, n]
    removed = torch.matmul(absent, pmasks)                       # [k, m, H*W] in {0, 1}
    removed = removed.view(*removed.shape[:2], 1, *x.shape[-2:])  # broadcast over channels
    return torch.lerp(x[:, None], baseline[:, None], removed)


# cuDNN runs float32 convolutions in TF32 by default (10-bit mantissa): on an H200 that moved
# EfficientNet-Lite0's games by 8e-4 of their largest value against the CPU, and the small
# CNN's by 7e-6 (benchmarks/README.md, "GPU"). The games feed an exact extraction, so they are
# evaluated in full float32 on CUDA; True trades that for speed.
CUDA_TF32 = False


def _cudnn_precision(device: torch.device):
    """A context in which cuDNN uses TF32 only if ``CUDA_TF32`` (nothing changes off CUDA)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    c = torch.backends.cudnn
    return c.flags(enabled=c.enabled, benchmark=c.benchmark, deterministic=c.deterministic,
                   allow_tf32=CUDA_TF32)


def _checked_inputs(x: Tensor, y: Tensor | int, players: Tensor, batch_size: int) -> Tensor:
    """``ValueError`` unless ``x`` is ``[B, C, H, W]`` with one label and one player set per
    image and ``batch_size >= 1``; the labels as ``[B]``."""
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
    count = x.shape[0]
    y = torch.as_tensor(y).reshape(-1)
    if y.numel() == 1:
        y = y.expand(count)
    if y.shape != (count,):
        raise ValueError(f"y must hold one label per image ({count}), got shape {tuple(y.shape)}")
    if players.shape[0] != count:
        raise ValueError(f"players must hold one set per image ({count}), got {players.shape[0]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return y


@torch.inference_mode()
def evaluate(model: nn.Module, x: Tensor, y: Tensor | int, players: Tensor,
             baseline: str | Tensor = "zero", batch_size: int = 1024, patch: int | None = None,
             subtract_empty: bool = False, progress: bool = False) -> Tensor:
    """The games ``v(x_T)`` of ``model`` on images ``x``: float64 ``[B, 2**n]`` (or ``[2**n]``).

    ``x``: ``[B, C, H, W]`` (or one ``[C, H, W]``); ``y``: ground-truth labels ``[B]``;
    ``players``: patch indices ``[B, n]`` / ``[n]`` with ``patch``, or pixel masks
    ``[B, n, H, W]``; ``baseline``: a name from ``BASELINES`` or a tensor like ``x``. Masked
    inputs are built and evaluated ``batch_size`` at a time on the model's device, several
    samples per batch when ``2**n < batch_size``.
    """
    single = x.dim() == 3
    if single:
        x = x[None]
        players = players[None]
    y = _checked_inputs(x, y, players, batch_size)
    count = x.shape[0]
    pm = player_masks(players.cpu(), tuple(x.shape[-2:]), patch)
    n = pm.shape[-3]
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = x.to(device, torch.float32)
    base = make_baseline(x, baseline) if isinstance(baseline, str) \
        else baseline.to(device, torch.float32).expand_as(x)
    pm = pm.flatten(-2).to(device, torch.float32)
    y = y.to(device)
    size = 1 << n
    per_batch = max(1, batch_size // size)          # images per forward pass
    chunk = min(size, batch_size)                   # masks per image per forward pass
    out = torch.empty(count, size, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    steps = [(i, m) for i in range(0, count, per_batch) for m in range(0, size, chunk)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(steps, desc=f"masked inputs ({count} x {size})", leave=False)
    try:
        with _cudnn_precision(device):
            for i, m in (bar if bar is not None else steps):
                imgs = slice(i, min(i + per_batch, count))
                masks = torch.arange(m, min(m + chunk, size), device=device)
                inputs = masked_inputs(x[imgs], pm[imgs], base[imgs], masks)
                k, width = inputs.shape[:2]
                logits = model(inputs.flatten(0, 1))
                labels = y[imgs].repeat_interleave(width)
                out[imgs, m:m + width] = log_odds(logits, labels).view(k, width)
    finally:
        model.train(was_training)
    if subtract_empty:
        out = out - out[:, :1]
    return out[0] if single else out
