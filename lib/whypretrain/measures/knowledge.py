"""Knowledge: salient interactions as items, the K sets of the paper, and their measures.

Pure functions on tensors (book/method.md, section 3). No model, no training, no I/O:
``results`` runs the models and the engine and calls these.

Names: the paper's pre-trained model is read on the target task through a linear probe (the
pre-trained backbone under a new linear head), so its knowledge is ``K_probe`` here (the
paper's ``K_pretrain``) and its model label is ``probe``; ``pretrain`` only names the source
pre-training run.

Representation (the engine produces it)
    ``I``: interactions, a float tensor ``[..., 2, 2**n]``. Axis -2 is the kind (``AND = 0``,
    ``OR = 1``); the last axis is the subset ``S`` as an integer mask (bit i set = player i in
    S; the empty set is mask 0; the order is ``|S| = popcount(mask)``). Leading dims are
    samples (any number of them; tables flatten them in C order).
    ``K``: knowledge items, an ``int8`` tensor of the same shape: ``+1`` / ``-1`` = a salient
    interaction with that sign, ``0`` = not salient. Two models share an item only if kind,
    S and sign agree: ``K1 == K2 != 0``. Same kind and S with opposite signs is *not* shared.

Salience
    ``|I| >= tau * max |I|``, the max over both kinds and all S of one sample of one model. Ties
    at the threshold are salient. A sample whose interactions are all zero has no items, and a
    term that is exactly 0 is never an item (it has no sign), even with ``tau = 0``.
    ``empty_set``: the order-0 terms ``I_and(empty) + I_or(empty) = v(x_empty)`` are the output
    with every player masked, not an interaction between players. With ``"exclude"`` (the
    default) they are neither items nor part of the max that ``tau`` scales, nor of the
    weighted Jaccard; ``"include"`` treats them as any other term (the earlier rule).

Per-order layout
    Every per-sample measure is a tensor ``[..., n + 2]``: entries ``0..n`` are the orders
    ``|S| = 0..n`` and the last entry is *all orders together*. In the tidy tables this is
    ``order = 0..n`` and ``order = ALL_ORDERS``.

Measures (``measure`` column of ``knowledge_table``; each by order and in total)
    count_probe, count_finetune, count_scratch   |K_x|
    count_preserve      |K_preserve|, K_preserve = K_probe & K_finetune (same sign)
    count_discard       |K_discard|,  K_discard  = K_probe - K_finetune
    count_new           |K_new|,      K_new      = K_finetune - K_probe
    count_learnable     |K_preserve & K_scratch| (same sign)
    strength_<set>      sum of |I| over the items of the set, read in
                          probe: the probe's |I| (pre-trained backbone, linear head)
                          finetune, preserve, new, learnable: the fine-tuned model's |I|
                          discard: the probe's |I| (the fine-tuned model lost it)
                          scratch: the scratch model's |I|
    share_preserved     |K_preserve| / |K_probe|   (NaN when K_probe is empty)
    share_discarded     |K_discard|  / |K_probe|   (NaN when K_probe is empty)
    share_new           |K_new|      / |K_finetune|   (NaN when K_finetune is empty)
    ratio_learnable     r = |K_preserve & K_scratch| / |K_preserve|   (NaN when K_preserve is
                        empty: undefined, counted by ``stats.aggregate`` as ``n_undefined``)
    count_learnable_new, ratio_learnable_new   |K_new & K_scratch| (same sign) and its share of
                        |K_new|: how learnable the knowledge fine-tuning added is
    count_learnable_finetune, ratio_learnable_finetune   |K_finetune & K_scratch| and its share
                        of |K_finetune|: how learnable all of the fine-tuned model's knowledge
                        is (the comparators of ratio_learnable)
  By order, a ratio's numerator and denominator are both restricted to that order, so a ratio
  is NaN at every order where its denominator set has no items.

  Weighted (no tau): the same questions asked of interaction strength instead of item counts.
  Each model's interactions of a sample are first divided by their L1 norm (sum |I| over the
  terms read: order 0 left out under ``empty_set="exclude"``), so a model that is stronger
  overall does not keep or lose more by scale; the strength two models share on a term is then
  min(|I1|, |I2|) where their signs agree, else 0.
    weighted_preserve   shared (normalised) strength of probe and fine-tuned, by order
    weighted_discard    the probe's normalised |I| minus weighted_preserve, by order
    weighted_share_discarded   weighted_discard / the probe's normalised |I|   (NaN when all
                        zero; over all orders 1 - weighted_preserve)
    weighted_share_new  1 - weighted_preserve / the fine-tuned model's normalised |I|; over all
                        orders it equals weighted_share_discarded (both norms are 1)
    weighted_ratio_learnable   strength all three share (min of the three normalised where
                        the three signs agree) / weighted_preserve   (NaN when that is 0)
  Chance (``chance_overlap``): what the item measures would be if the second model's items
  stood on random subsets of the same kind and order (signs kept): per (kind, order, sign),
  E|K1 & R| = |K1| |K2| / C(n, order). The same shares, from expected counts:
    chance_count_preserve, chance_count_discard   expected |K_probe & R| and the rest, R drawn
                        from the fine-tuned model's order profile
    chance_share_discarded, chance_share_new, chance_ratio_learnable   (R from K_scratch's
                        profile for the last; K_preserve as it is)

  The sets partition: |K_preserve| + |K_discard| = |K_probe| and
  |K_preserve| + |K_new| = |K_finetune| (at every order). An item of K_probe whose S stays
  salient in the fine-tuned model with the opposite sign is discarded, and the flipped item
  is new.

Convergence (``measure`` column of ``convergence_table``; order is always ``ALL_ORDERS``)
    jaccard_weighted    strength-weighted Jaccard with signs split,
                        sum[min(I1+, I2+) + min(I1-, I2-)] / sum[max(I1+, I2+) + max(I1-, I2-)]
                        over all AND and OR terms of a sample (order 0 left out under
                        ``empty_set="exclude"``); 1 when both are all zero.
    jaccard_set         |K1 & K2| / |K1 | K2| (same-sign items); 1 when both sets are empty.
  Against a reference other than the run's own final model the names get a suffix,
  e.g. ``jaccard_weighted_vs_finetune``.

Model column
    ``probe``, ``finetune``, ``scratch`` for measures of one model's items; measures that
    compare models name all of them joined by ``+`` (``probe+finetune`` for
    preserve/discard/new and the shares, ``probe+finetune+scratch`` for learnability).
    In convergence tables: the run whose checkpoints are compared (``finetune``, ``scratch``).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from whypretrain.engine import interactions

from whypretrain.engine.interactions import AND, OR  # noqa: E402  (the one definition of the kind axis)

KINDS = ("and", "or")
KIND_NAMES = ("AND", "OR")  # display names, indexed by AND / OR
ALL_ORDERS = -1  # the ``order`` value of a measure over all orders together (no real order)
EMPTY_SET_CHOICES = ("exclude", "include")
TABLE_COLUMNS = ["sample", "model", "epoch", "measure", "order", "value"]

PROBE = "probe"  # the pre-trained backbone under a linear head trained on the target task
PAIR = "probe+finetune"
TRIPLE = "probe+finetune+scratch"
# measure -> model label, in table order
KNOWLEDGE_MEASURES: dict[str, str] = {
    "count_probe": PROBE,
    "count_finetune": "finetune",
    "count_scratch": "scratch",
    "count_preserve": PAIR,
    "count_discard": PAIR,
    "count_new": PAIR,
    "count_learnable": TRIPLE,
    "strength_probe": PROBE,
    "strength_finetune": "finetune",
    "strength_scratch": "scratch",
    "strength_preserve": PAIR,
    "strength_discard": PAIR,
    "strength_new": PAIR,
    "strength_learnable": TRIPLE,
    "share_preserved": PAIR,
    "share_discarded": PAIR,
    "share_new": PAIR,
    "ratio_learnable": TRIPLE,
    "count_learnable_new": TRIPLE,
    "ratio_learnable_new": TRIPLE,
    "count_learnable_finetune": TRIPLE,
    "ratio_learnable_finetune": TRIPLE,
    "weighted_preserve": PAIR,
    "weighted_discard": PAIR,
    "weighted_share_discarded": PAIR,
    "weighted_share_new": PAIR,
    "weighted_ratio_learnable": TRIPLE,
    "chance_count_preserve": PAIR,
    "chance_count_discard": PAIR,
    "chance_share_discarded": PAIR,
    "chance_share_new": PAIR,
    "chance_ratio_learnable": TRIPLE,
}


# --- shapes and orders -----------------------------------------------------------------------

def n_players(x: torch.Tensor) -> int:
    """``n`` from a ``[..., 2, 2**n]`` interaction or item tensor (checks the shape)."""
    if x.dim() < 2 or x.shape[-2] != 2:
        raise ValueError(f"expected shape [..., 2, 2**n] (AND, OR), got {tuple(x.shape)}")
    size = x.shape[-1]
    n = size.bit_length() - 1
    if size < 1 or (1 << n) != size:
        raise ValueError(f"last dimension must be 2**n, got {size}")
    return n


def orders(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``|S|`` of every mask ``0 .. 2**n - 1`` (popcount), as a LongTensor ``[2**n]``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return interactions.popcount(n, device)


def _same_shape(*xs: torch.Tensor) -> int:
    n = n_players(xs[0])
    for x in xs[1:]:
        if x.shape != xs[0].shape:
            raise ValueError(f"shapes differ: {tuple(xs[0].shape)} vs {tuple(x.shape)}")
    return n


# --- items -----------------------------------------------------------------------------------

def without_empty_set(I: torch.Tensor, empty_set: str = "exclude") -> torch.Tensor:
    """``I`` with both order-0 terms set to 0 (``"exclude"``), or ``I`` itself (``"include"``).

    A term that is exactly 0 is never an item and never the max, so this is all that
    excluding the empty set takes."""
    if empty_set not in EMPTY_SET_CHOICES:
        raise ValueError(f"empty_set must be one of {list(EMPTY_SET_CHOICES)}, got {empty_set!r}")
    if empty_set == "include":
        return I
    out = I.clone()
    out[..., 0] = 0
    return out


def salient_items(I: torch.Tensor, tau: float, empty_set: str = "exclude") -> torch.Tensor:
    """Knowledge items ``K`` (int8, +1/-1/0) of interactions ``I`` ``[..., 2, 2**n]``.

    Salient: ``|I| >= tau * max |I|`` over both kinds and all S of the sample (ties count).
    All-zero samples have no items. ``tau`` must lie in [0, 1]. ``empty_set="exclude"``: the
    order-0 terms are no items and leave the max alone (module docstring).
    """
    n_players(I)
    if not torch.is_floating_point(I):
        raise TypeError(f"interactions must be floating point, got {I.dtype}")
    if not bool(torch.isfinite(I).all()):
        raise ValueError("interactions contain NaN or inf")
    I = without_empty_set(I, empty_set)
    return _salient(I[..., AND, :], I[..., OR, :], tau)


def _salient(I_and: torch.Tensor, I_or: torch.Tensor, tau: float) -> torch.Tensor:
    """The salience rule (the one place it is written): knowledge items, a signed int8 tensor ``[..., 2, 2**n]`` (kind 0 = AND, 1 = OR).

    ``+1`` / ``-1``: the term is salient with that sign, i.e. ``|I| >= tau * max |I|`` over all
    (kind, S) of its sample (ties count as salient); ``0``: not salient. A sample whose largest
    ``|I|`` is 0 has no items. Two models share an item only where their entries are equal and
    non-zero.
    """
    if not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    both = torch.stack([I_and, I_or], dim=-2)
    n_players(both)
    strength = both.abs()
    top = strength.flatten(-2).amax(-1)[..., None, None]
    keep = (strength >= tau * top) & (top > 0)
    return (torch.sign(both) * keep).to(torch.int8)


def shared(K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """Boolean ``[..., 2, 2**n]``: items in both (same kind, S and sign)."""
    _same_shape(K1, K2)
    return (K1 == K2) & (K1 != 0)


def union(K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """Number of distinct items in ``K1 | K2`` per (kind, S): 0, 1 or 2 (opposite signs)."""
    _same_shape(K1, K2)
    both = shared(K1, K2)
    return (K1 != 0).long() + (K2 != 0).long() - both.long()


def knowledge_sets(K_probe: torch.Tensor, K_finetune: torch.Tensor,
                   K_scratch: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The item sets of the paper as boolean masks ``[..., 2, 2**n]``.

    Keys: probe, finetune, preserve, discard, new, and with ``K_scratch``: scratch,
    learnable (= preserve & scratch, same sign), learnable_finetune (finetune & scratch, same
    sign) and learnable_new (new & scratch, same sign).
    """
    preserve = shared(K_probe, K_finetune)
    sets = {
        "probe": K_probe != 0,
        "finetune": K_finetune != 0,
        "preserve": preserve,
        "discard": (K_probe != 0) & ~preserve,
        "new": (K_finetune != 0) & ~preserve,
    }
    if K_scratch is not None:
        _same_shape(K_probe, K_scratch)
        sets["scratch"] = K_scratch != 0
        sets["learnable"] = preserve & (K_scratch == K_finetune)
        sets["learnable_finetune"] = shared(K_finetune, K_scratch)
        sets["learnable_new"] = sets["new"] & sets["learnable_finetune"]
    return sets


# --- per-order sums --------------------------------------------------------------------------

def _by_order(per_mask: torch.Tensor, n: int) -> torch.Tensor:
    """``[..., 2**n]`` -> ``[..., n + 2]``: sums per order 0..n, then the total."""
    out = per_mask.new_zeros(per_mask.shape[:-1] + (n + 1,))
    out.index_add_(-1, orders(n, per_mask.device), per_mask)
    return torch.cat([out, out.sum(-1, keepdim=True)], dim=-1)


def count_by_order(items: torch.Tensor) -> torch.Tensor:
    """Item counts ``[..., n + 2]`` (orders 0..n, then all) of a boolean ``[..., 2, 2**n]``."""
    n = n_players(items)
    return _by_order(items.long().sum(-2), n)


def strength_by_order(items: torch.Tensor, I: torch.Tensor) -> torch.Tensor:
    """Sum of ``|I|`` (float64) over ``items``, ``[..., n + 2]`` (orders 0..n, then all)."""
    n = _same_shape(items, I)
    return _by_order((I.double().abs() * items).sum(-2), n)


def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in float64, NaN where ``den == 0`` (never a 0/0 computation)."""
    num, den = num.double(), den.double()
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.full_like(num, float("nan")))


def learnability(K_probe: torch.Tensor, K_finetune: torch.Tensor, K_scratch: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``r = |K_preserve & K_scratch| / |K_preserve|`` per sample and order, and the undefined.

    Returns ``(r, n_undefined)``: ``r`` is float64 ``[..., n + 2]`` (orders 0..n, then all), NaN
    where K_preserve has no items; ``n_undefined`` is a LongTensor ``[n + 2]``, the number of
    samples (over all leading dims) for which ``r`` is undefined at that order.
    """
    sets = knowledge_sets(K_probe, K_finetune, K_scratch)
    r = ratio(count_by_order(sets["learnable"]), count_by_order(sets["preserve"]))
    n_undefined = torch.isnan(r).reshape(-1, r.shape[-1]).sum(0)
    return r, n_undefined


def knowledge_measures(I_probe: torch.Tensor, I_finetune: torch.Tensor,
                       I_scratch: torch.Tensor, tau: float, empty_set: str = "exclude"
                       ) -> dict[str, torch.Tensor]:
    """Every measure of ``KNOWLEDGE_MEASURES`` per sample, as ``[..., n + 2]`` tensors.

    Counts are int64, strengths and ratios float64. See the module docstring for which model's
    ``|I|`` each strength reads.
    """
    _same_shape(I_probe, I_finetune, I_scratch)
    K = {m: salient_items(I, tau, empty_set) for m, I in
         (("probe", I_probe), ("finetune", I_finetune), ("scratch", I_scratch))}
    sets = knowledge_sets(K["probe"], K["finetune"], K["scratch"])
    strength_of = {"probe": I_probe, "finetune": I_finetune, "scratch": I_scratch,
                   "preserve": I_finetune, "new": I_finetune, "learnable": I_finetune,
                   "discard": I_probe}
    out: dict[str, torch.Tensor] = {}
    for name in ("probe", "finetune", "scratch", "preserve", "discard", "new", "learnable"):
        out[f"count_{name}"] = count_by_order(sets[name])
    for name in ("probe", "finetune", "scratch", "preserve", "discard", "new", "learnable"):
        out[f"strength_{name}"] = strength_by_order(sets[name], strength_of[name])
    out["share_preserved"] = ratio(out["count_preserve"], out["count_probe"])
    out["share_discarded"] = ratio(out["count_discard"], out["count_probe"])
    out["share_new"] = ratio(out["count_new"], out["count_finetune"])
    out["ratio_learnable"] = ratio(out["count_learnable"], out["count_preserve"])
    for part in ("new", "finetune"):
        out[f"count_learnable_{part}"] = count_by_order(sets[f"learnable_{part}"])
        out[f"ratio_learnable_{part}"] = ratio(out[f"count_learnable_{part}"],
                                               out[f"count_{part}"])
    out.update(weighted_measures(I_probe, I_finetune, I_scratch, empty_set))
    out.update(chance_measures(K["probe"], K["finetune"], K["scratch"], sets["preserve"]))
    return {m: out[m] for m in KNOWLEDGE_MEASURES}


def shared_strength(*Is: torch.Tensor) -> torch.Tensor:
    """Per term, the strength every one of ``Is`` holds with one sign: ``min |I|`` where all
    signs agree (and none is 0), else 0. float64 ``[..., 2, 2**n]``."""
    a = torch.stack([I.double() for I in Is])
    same = ((a > 0).all(0)) | ((a < 0).all(0))
    return torch.where(same, a.abs().amin(0), torch.zeros_like(a[0]))


def l1_normalised(I: torch.Tensor) -> torch.Tensor:
    """``I`` (float64) divided per sample by its L1 norm over both kinds and all S; a sample
    whose interactions are all zero stays zero."""
    I = I.double()
    norm = I.abs().sum((-2, -1), keepdim=True)
    return torch.where(norm > 0, I / torch.where(norm > 0, norm, torch.ones_like(norm)), I)


def weighted_measures(I_probe: torch.Tensor, I_finetune: torch.Tensor, I_scratch: torch.Tensor,
                      empty_set: str = "exclude") -> dict[str, torch.Tensor]:
    """The ``weighted_*`` measures (module docstring): the item shares with strength in place
    of counts, so no ``tau``, each model's interactions divided by their L1 norm per sample
    (``l1_normalised``). float64 ``[..., n + 2]``."""
    n = _same_shape(I_probe, I_finetune, I_scratch)
    p, f, s = (l1_normalised(without_empty_set(I, empty_set))
               for I in (I_probe, I_finetune, I_scratch))
    keep = _by_order(shared_strength(p, f).sum(-2), n)
    total_p = _by_order(p.double().abs().sum(-2), n)
    total_f = _by_order(f.double().abs().sum(-2), n)
    learned = _by_order(shared_strength(p, f, s).sum(-2), n)
    return {"weighted_preserve": keep, "weighted_discard": total_p - keep,
            "weighted_share_discarded": ratio(total_p - keep, total_p),
            "weighted_share_new": ratio(total_f - keep, total_f),
            "weighted_ratio_learnable": ratio(learned, keep)}


def chance_overlap(K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """Expected ``|K1 & R|`` by order (float64 ``[..., n + 2]``), where ``R`` puts each item
    of ``K2`` on a subset drawn at random among those of its kind and order (its sign kept).

    Per kind, order and sign there are ``C(n, order)`` subsets, ``a`` items of ``K1`` and
    ``b`` of ``K2``, so ``a * b / C(n, order)`` of them coincide on average.
    """
    n = _same_shape(K1, K2)
    subsets = torch.bincount(orders(n), minlength=n + 1).double()  # C(n, order)
    out = 0
    for sign in (1, -1):
        a = _by_order((K1 == sign).double(), n)[..., :-1]  # [..., kind, order]
        b = _by_order((K2 == sign).double(), n)[..., :-1]
        out = out + (a * b / subsets).sum(-2)
    return torch.cat([out, out.sum(-1, keepdim=True)], dim=-1)


def chance_measures(K_probe: torch.Tensor, K_finetune: torch.Tensor, K_scratch: torch.Tensor,
                    preserve: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ``chance_*`` measures (module docstring): the shares when the second model's items
    stand on random subsets of their kind and order. float64 ``[..., n + 2]``."""
    kept = chance_overlap(K_probe, K_finetune)
    K_preserve = torch.where(preserve, K_finetune, torch.zeros_like(K_finetune))
    probe, finetune = count_by_order(K_probe != 0), count_by_order(K_finetune != 0)
    return {"chance_count_preserve": kept, "chance_count_discard": probe - kept,
            "chance_share_discarded": ratio(probe - kept, probe),
            "chance_share_new": ratio(finetune - kept, finetune),
            "chance_ratio_learnable": ratio(chance_overlap(K_preserve, K_scratch),
                                            count_by_order(preserve))}


# --- convergence -----------------------------------------------------------------------------

def weighted_jaccard(I1: torch.Tensor, I2: torch.Tensor, empty_set: str = "exclude"
                     ) -> torch.Tensor:
    """Strength-weighted Jaccard with signs split, per sample (float64 ``[...]``).

    ``sum[min(I1+, I2+) + min(I1-, I2-)] / sum[max(I1+, I2+) + max(I1-, I2-)]`` over both
    kinds and all S (without the order-0 terms for ``empty_set="exclude"``). Defined as 1 when
    both are all zero (identical, empty interactions).
    """
    _same_shape(I1, I2)
    a = without_empty_set(I1, empty_set).double()
    b = without_empty_set(I2, empty_set).double()
    # Per term, min(a+, b+) + min(a-, b-) is min(|a|, |b|) when the signs agree and 0 otherwise
    # (0 too when either is 0); and max + min = a+ + b+ + a- + b- = |a| + |b|, so the
    # denominator is sum(|a| + |b|) - numerator. Same value, a third of the passes.
    abs_a, abs_b = a.abs(), b.abs()
    agree = torch.signbit(a) == torch.signbit(b)
    num = torch.where(agree, torch.minimum(abs_a, abs_b), torch.zeros_like(a)).sum(dim=(-2, -1))
    den = (abs_a.sum(dim=(-2, -1)) + abs_b.sum(dim=(-2, -1))) - num
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.ones_like(den))


def set_jaccard(K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """``|K1 & K2| / |K1 | K2|`` over items (same-sign match), per sample; 1 when both empty."""
    inter = shared(K1, K2).long().sum(dim=(-2, -1)).double()
    uni = union(K1, K2).sum(dim=(-2, -1)).double()
    return torch.where(uni > 0, inter / torch.where(uni > 0, uni, torch.ones_like(uni)),
                       torch.ones_like(uni))


# --- tidy tables -----------------------------------------------------------------------------

def _sample_ids(sample_ids: Sequence | np.ndarray | torch.Tensor | None, n_samples: int
                ) -> np.ndarray:
    if sample_ids is None:
        return np.arange(n_samples)
    ids = np.asarray(sample_ids.cpu() if isinstance(sample_ids, torch.Tensor) else sample_ids)
    if ids.ndim != 1 or len(ids) != n_samples:
        raise ValueError(f"need {n_samples} sample ids (leading dims flattened), "
                         f"got shape {ids.shape}")
    return ids


def _tidy(blocks: Iterable[tuple[str, int, str, torch.Tensor, np.ndarray, np.ndarray]]
          ) -> pd.DataFrame:
    """Stack ``(model, epoch, measure, values [samples, k], orders [k], ids [samples])``."""
    frames = []
    for model, epoch, measure, values, order_labels, ids in blocks:
        v = values.detach().cpu().double().numpy()
        s, k = v.shape
        frames.append(pd.DataFrame({
            "sample": np.repeat(ids, k),
            "model": model,
            "epoch": np.int64(epoch),
            "measure": measure,
            "order": np.tile(order_labels, s).astype(np.int64),
            "value": v.reshape(-1),
        }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            TABLE_COLUMNS, ("int64", "object", "int64", "object", "int64", "float64"))})
    return pd.concat(frames, ignore_index=True)[TABLE_COLUMNS]


def knowledge_table(I_probe: torch.Tensor, I_finetune: torch.Tensor, I_scratch: torch.Tensor,
                    tau: float, sample_ids: Sequence | None = None, *, epoch: int,
                    empty_set: str = "exclude") -> pd.DataFrame:
    """Tidy table (``TABLE_COLUMNS``) of every knowledge measure of three models' interactions.

    Leading dims of the ``[..., 2, 2**n]`` inputs are flattened (C order) into samples, named
    by ``sample_ids`` (default 0..N-1). ``order`` is 0..n, and ``ALL_ORDERS`` for all orders;
    ``epoch`` is the epoch of the fine-tuned and scratch models compared (their last one, for
    the final models: a real epoch, never a sentinel). NaN marks an undefined ratio.
    """
    n = _same_shape(I_probe, I_finetune, I_scratch)
    measures = knowledge_measures(I_probe, I_finetune, I_scratch, tau, empty_set)
    n_samples = int(np.prod(I_probe.shape[:-2], dtype=np.int64))
    ids = _sample_ids(sample_ids, n_samples)
    order_labels = np.r_[np.arange(n + 1), ALL_ORDERS]
    return _tidy((KNOWLEDGE_MEASURES[m], epoch, m, v.reshape(n_samples, n + 2), order_labels, ids)
                 for m, v in measures.items())


def convergence_table(I_by_epoch: Mapping[int, torch.Tensor], I_final: torch.Tensor, tau: float,
                      sample_ids: Sequence | None = None, model: str = "finetune",
                      reference: str = "own", empty_set: str = "exclude") -> pd.DataFrame:
    """Weighted and set Jaccard of each epoch's interactions against ``I_final``, per sample.

    ``I_by_epoch`` maps epoch -> ``[..., 2, 2**n]`` interactions of one run (``model``).
    ``reference="own"`` means ``I_final`` is that run's final model (measures
    ``jaccard_weighted``, ``jaccard_set``); any other name (e.g. ``"finetune"``) suffixes the
    measures (``jaccard_weighted_vs_finetune``). ``order`` is ``ALL_ORDERS``.
    """
    n_players(I_final)
    suffix = "" if reference == "own" else f"_vs_{reference}"
    n_samples = int(np.prod(I_final.shape[:-2], dtype=np.int64))
    ids = _sample_ids(sample_ids, n_samples)
    K_final = salient_items(I_final, tau, empty_set)
    order_labels = np.array([ALL_ORDERS])
    blocks = []
    for epoch in sorted(I_by_epoch):
        I_t = I_by_epoch[epoch]
        _same_shape(I_t, I_final)
        jw = weighted_jaccard(I_t, I_final, empty_set).reshape(n_samples, 1)
        js = set_jaccard(salient_items(I_t, tau, empty_set), K_final).reshape(n_samples, 1)
        blocks.append((model, epoch, f"jaccard_weighted{suffix}", jw, order_labels, ids))
        blocks.append((model, epoch, f"jaccard_set{suffix}", js, order_labels, ids))
    return _tidy(blocks)
