"""Sparsity: whether a model's interactions are sparse enough to be read as knowledge
(book/method.md, section 3, "Sparsity first").

The paper's knowledge is a small set of salient interactions; that reading needs the
interactions of a model to be sparse. Pure functions on interactions ``I`` ``[..., 2, 2**n]``
(``knowledge``'s representation) and games ``v`` ``[..., 2**n]``; no model, no I/O.

Per sample (``measures``; the order-0 terms follow ``empty_set`` as in ``knowledge``):
    items           salient items (``knowledge.salient_items`` at ``tau``: |I| >= tau max |I|)
    items_share     items / terms, ``terms`` = the (kind, S) terms that can be items:
                    2 (2**n - 1) under ``empty_set="exclude"``, 2**n+1 under ``"include"``
    items_mass      sum |I| over the items / sum |I| over all terms (NaN when all are 0)
    terms_90        the fewest terms whose |I| sum to at least ``MASS`` (90%) of sum |I|
                    (0 when all are 0)
    terms_90_share  terms_90 / terms
The sample conditions of the lab's sparsity results (``conditions``, on the games):
    rising          the mean output over coalitions of size k, k = 0..n, never falls as k grows
    span            v(N) - v(empty)
    meets           rising and span >= ``SPAN_MIN``
The criterion (``sparse_enough``): a model's interactions are sparse enough to be read as
knowledge when its terms_90_share, the mean over samples, is at most ``SPARSE_BOUND``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from whypretrain.engine import interactions
from whypretrain.measures import knowledge

MASS = 0.9  # terms_90: the share of sum |I| the fewest strongest terms must hold
# the largest terms_90_share (mean over samples) of a model whose interactions are read as
# knowledge: a random set of that density overlaps any fixed set by that share, so overlap
# shares of the knowledge sets cannot be told from chance much above it (book/method.md)
SPARSE_BOUND = 0.05
SPAN_MIN = 1.0  # v(N) - v(empty) of a kept sample, in log-odds (one nat: odds x e)
COLUMNS = ["items", "items_share", "items_mass", "terms_90", "terms_90_share", "rising",
           "span", "meets"]


def terms(n: int, empty_set: str = "exclude") -> int:
    """The (kind, S) terms of ``n`` players that can be items (module docstring)."""
    return 2 * ((1 << n) - (1 if empty_set == "exclude" else 0))


def terms_for_mass(I: torch.Tensor, mass: float = MASS) -> torch.Tensor:
    """The fewest terms of each sample whose |I| sum to at least ``mass`` of the sample's sum
    |I| (LongTensor ``[...]``; 0 where every term is 0). ``I``: ``[..., 2, 2**n]``."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must lie in (0, 1], got {mass}")
    strength = I.double().abs().flatten(-2)
    ranked = torch.sort(strength, dim=-1, descending=True).values
    cum = ranked.cumsum(-1)
    total = cum[..., -1:]
    # a relative slack: a cumulative sum that equals the target up to rounding reaches it
    short = cum < mass * total * (1 - 1e-12)
    return torch.where(total[..., 0] > 0, short.sum(-1) + 1, torch.zeros_like(total[..., 0],
                                                                                dtype=torch.long))


def measures(I: torch.Tensor, tau: float, empty_set: str = "exclude") -> dict[str, torch.Tensor]:
    """``items``, ``items_share``, ``items_mass``, ``terms_90``, ``terms_90_share`` per sample
    (tensors ``[...]``, float64 but the counts) of interactions ``I`` ``[..., 2, 2**n]``."""
    n = knowledge.n_players(I)
    I = knowledge.without_empty_set(I, empty_set)
    K = knowledge.salient_items(I, tau, "include")  # the order-0 terms are 0 already
    items = (K != 0).flatten(-2).sum(-1)
    strength = I.double().abs().flatten(-2)
    held = (strength * (K != 0).flatten(-2)).sum(-1)
    total = strength.sum(-1)
    top = terms_for_mass(I)
    count = terms(n, empty_set)
    return dict(items=items, items_share=items.double() / count,
                items_mass=knowledge.ratio(held, total), terms_90=top,
                terms_90_share=top.double() / count)


def mean_by_size(v: torch.Tensor) -> torch.Tensor:
    """The mean output over the coalitions of each size k = 0..n: float64 ``[..., n + 1]``."""
    n = interactions.players_of(v)
    size = knowledge.orders(n, v.device)
    sums = v.new_zeros(v.shape[:-1] + (n + 1,), dtype=torch.float64)
    sums.index_add_(-1, size, v.double())
    return sums / torch.bincount(size, minlength=n + 1).double()


def conditions(v: torch.Tensor, span_min: float = SPAN_MIN) -> dict[str, torch.Tensor]:
    """The lab's sample conditions on games ``v`` ``[..., 2**n]`` (module docstring):
    ``rising`` and ``meets`` (bool ``[...]``) and ``span`` (float64 ``[...]``)."""
    means = mean_by_size(v)
    rising = (means.diff(dim=-1) >= 0).all(-1)
    span = v[..., -1].double() - v[..., 0].double()
    return dict(rising=rising, span=span, meets=rising & (span >= span_min))


def table(I: torch.Tensor, v: torch.Tensor, tau: float, sample_ids: Sequence | None = None,
          empty_set: str = "exclude", span_min: float = SPAN_MIN) -> pd.DataFrame:
    """One row per sample (leading dims flattened in C order): ``sample`` and ``COLUMNS``.
    ``I`` ``[..., 2, 2**n]`` are the interactions of the games ``v`` ``[..., 2**n]``."""
    if I.shape[:-2] != v.shape[:-1] or I.shape[-1] != v.shape[-1]:
        raise ValueError(f"interactions {tuple(I.shape)} do not belong to games "
                         f"{tuple(v.shape)}")
    out = {**measures(I, tau, empty_set), **conditions(v, span_min)}
    count = int(np.prod(v.shape[:-1], dtype=np.int64))
    ids = np.arange(count) if sample_ids is None else np.asarray(sample_ids)
    frame = pd.DataFrame({k: out[k].reshape(-1).cpu().numpy() for k in COLUMNS})
    frame.insert(0, "sample", ids)
    return frame


def summary(per_sample: pd.DataFrame, by: Sequence[str] = ("model", "epoch")) -> pd.DataFrame:
    """Per ``by`` (and seed, where the table has one): the mean of every measure over samples
    and the share of samples that meet the conditions (``meets``, ``rising``); then over seeds,
    the mean and the lowest and highest seed (``<measure>``, ``<measure>_low``,
    ``<measure>_high``), and ``games``, the rows (samples over all seeds) read."""
    by = list(by)
    seeds = ["seed"] if "seed" in per_sample else []
    frame = per_sample.assign(rising=per_sample["rising"].astype(float),
                              meets=per_sample["meets"].astype(float))
    names = [c for c in COLUMNS if c != "span"] + ["span"]
    per_seed = frame.groupby(seeds + by, sort=False)[names].mean().reset_index()
    grouped = per_seed.groupby(by, sort=False)[names]
    out = grouped.mean()
    low, high = grouped.min().add_suffix("_low"), grouped.max().add_suffix("_high")
    games = per_sample.groupby(by, sort=False).size().rename("games")
    return out.join(games).join(low).join(high).reset_index()


def finals(per_sample: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-sample table (columns ``seed, model, epoch``, ...) of each seed's
    final models: the last epoch of each (seed, model)."""
    last = per_sample.groupby(["seed", "model"], as_index=False)["epoch"].max()
    return per_sample.merge(last)


def lab_kept(per_sample: pd.DataFrame) -> list:
    """The samples the lab's filter keeps (``sample_filter = lab``): those on which every final
    model of every seed meets the conditions, from a per-sample table with ``meets``."""
    met = finals(per_sample).groupby("sample")["meets"].all()
    return sorted(met.index[met])


def sparse_enough(terms_90_share: float, bound: float = SPARSE_BOUND) -> bool:
    """The criterion (module docstring): a mean terms_90_share at most ``bound``."""
    return bool(np.isfinite(terms_90_share) and terms_90_share <= bound)
