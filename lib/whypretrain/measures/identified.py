"""Identified items: the knowledge items that every optimum of the sparsification LP holds
(book/method.md, section 2, "The range of an interaction over the optimal face").

The extraction returns one point of the optimal face (a rule, ``exact.RULES``); the ranges
(``engine.ranges.item_ranges``) bound each term over the whole face. An item is *identified*
when, at every optimum, it is salient with one sign: its range lies on one side of 0 and
``min |I(S)| >= tau * M``, ``M`` being the largest ``|I|`` any term reaches over the face. It is a
property of the network's game; a salient item that is not identified is a property of the
tie-break.

Read after the study's OR merge (``or_merge="and"``: the OR terms of order <= 1 moved into AND):
the merged term's range is bounded by the sum of its two raw ranges (an outer bound, so an
identified item stays identified under the exact range).

Cost. Only the *candidates* are bounded: the terms salient at ``CANDIDATE_TAU`` times ``tau``
under the rule the study extracted (an identified item is salient at every optimum, the
extracted one included; the margin covers that the rule's solution is an optimum only within
``tol``), and both raw parts of a merged term. ``M`` is then the largest bound of a candidate:
the study's largest terms are candidates, and a term below the threshold at the extracted optimum
that became the largest elsewhere on the face would be missed (``benchmarks/ranges.py`` compares
the masked reading with every term bounded).
"""
from __future__ import annotations

import torch
from torch import Tensor

from whypretrain.engine import interactions, ranges
from whypretrain.measures import knowledge

CANDIDATE_TAU = 0.9  # candidates: salient at this times tau under the extracted rule
MAX_N = 8  # the study bounds the faces of its final models up to this n: at n = 10 a game costs
# 7.6-27x its extraction even with the mask, about 28 min of CPU for the default preset's 180 final
# games (benchmarks/README.md, "Ranges over the optimal face")
CLAIMS = ("share_discarded", "share_new", "ratio_learnable")


def low_order(n: int) -> Tensor:
    """Booleans ``[2**n]``: the empty set and the singletons (the terms the OR merge moves)."""
    low = torch.zeros(1 << n, dtype=torch.bool)
    low[0] = True
    low[[1 << i for i in range(n)]] = True
    return low


def merged(low: Tensor, high: Tensor, merge: bool = True) -> tuple[Tensor, Tensor]:
    """Outer bounds ``[..., 2, 2**n]`` of the terms after the OR merge (``merge``): an AND term
    of order <= 1 gets the sum of its AND and OR bounds, its OR term the point 0."""
    if not merge:
        return low, high
    small = low_order(low.shape[-1].bit_length() - 1).to(low.device)
    out = []
    for x in (low, high):
        x = x.clone()
        x[..., 0, :] = torch.where(small, x[..., 0, :] + x[..., 1, :], x[..., 0, :])
        x[..., 1, :] = torch.where(small, torch.zeros_like(x[..., 1, :]), x[..., 1, :])
        out.append(x)
    return out[0], out[1]


def identified_items(low: Tensor, high: Tensor, tau: float, empty_set: str = "exclude"
                     ) -> Tensor:
    """Identified items, signed int8 ``[..., 2, 2**n]``, from the ranges ``low, high`` of the
    terms as the items read them (merged, ``merged``): ``+1`` where ``low >= tau * M > 0``,
    ``-1`` where ``high <= -tau * M < 0``, ``M`` the largest ``max(|low|, |high|)`` of the sample
    (order 0 left out under ``empty_set="exclude"``). NaN bounds (terms not bounded) are never
    identified and leave ``M`` alone."""
    if not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    keep = torch.ones(low.shape[-1], dtype=torch.bool, device=low.device)
    if empty_set == "exclude":
        keep[0] = False
    reach = torch.maximum(low.abs(), high.abs()).nan_to_num(0.0) * keep
    top = reach.flatten(-2).amax(-1)[..., None, None]
    line = tau * top
    plus = (low >= line) & (top > 0)
    minus = (high <= -line) & (top > 0)
    return ((plus.to(torch.int8) - minus.to(torch.int8)) * keep).to(torch.int8)


def candidates(I: Tensor, tau: float, empty_set: str = "exclude", merge: bool = True) -> Tensor:
    """Booleans ``[..., 2, 2**n]`` over the raw terms: those to bound so that every identified
    item of the interactions ``I`` (as the study reads them: merged) can be found: the terms
    salient at ``CANDIDATE_TAU * tau``, and both raw parts of a merged one (module docstring)."""
    salient = knowledge.salient_items(I, CANDIDATE_TAU * tau, empty_set) != 0
    if not merge:
        return salient
    small = low_order(interactions.players_of(I)).to(I.device)
    both = salient[..., 0, :] & small
    out = salient.clone()
    out[..., 1, :] |= both
    return out


def face_items(values: Tensor, I: Tensor, tau: float, empty_set: str = "exclude",
               q_bound: float = 0.04, merge: bool = True, mask: bool = True,
               workers: int = 1) -> tuple[Tensor, ranges.Ranges]:
    """The identified items ``[..., 2, 2**n]`` of the games ``values`` (``[..., 2**n]``) whose
    extracted interactions are ``I`` (merged as the study reads them, ``merge``), and their
    ranges. ``mask``: bound only the candidates (``candidates``), else every term."""
    cand = candidates(I, tau, empty_set, merge) if mask else None
    r = ranges.item_ranges(values, q_bound, cand, workers=workers)
    low, high = merged(r.low, r.high, merge)
    return identified_items(low, high, tau, empty_set), r


def claim_shares(K_probe: Tensor, K_finetune: Tensor, K_scratch: Tensor) -> dict[str, Tensor]:
    """The headline claims' shares per sample (all orders together) read on the given item sets
    (e.g. identified items): share discarded, share new, learnable ratio (NaN where the
    denominator set is empty), as ``knowledge.knowledge_measures`` defines them."""
    sets = knowledge.knowledge_sets(K_probe, K_finetune, K_scratch)
    count = {k: knowledge.count_by_order(s)[..., -1] for k, s in sets.items()}
    return {"share_discarded": knowledge.ratio(count["discard"], count["probe"]),
            "share_new": knowledge.ratio(count["new"], count["finetune"]),
            "ratio_learnable": knowledge.ratio(count["learnable"], count["preserve"])}
