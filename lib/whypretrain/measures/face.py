"""Face sampling: the same games extracted under every rule of the optimal face, and which
knowledge items survive the choice (book/method.md, section 2, "Optimal solutions are not
unique").

Every rule (``exact.RULES``) returns an optimum of the same objective (within ``tol``); they are
different points of its optimal face, and their salient items differ. An item is *robust* when it
is salient with the same sign under every rule, *rule-dependent* when it is salient under some
rule but not robust. The canonical rule is solved first; the other rules start their column
generation from its interactions (the same face: its support is an optimal basis of the plain
objective), which ``warm=False`` turns off for comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
from torch import Tensor

from whypretrain.engine import interactions, sparsify
from whypretrain.measures import knowledge
from whypretrain.engine.exact import RULES


@dataclass
class Face:
    """``results``: rule -> the extraction of the games under that rule; ``items``: rule ->
    salient items ``[..., 2, 2**n]`` (signed int8); ``robust``: items salient with the same sign
    under every rule; ``dependent``: salient under some rule, not robust (booleans);
    ``seconds``: rule -> CPU time of its solve (this process; the LPs run on one thread unless
    ``workers`` says otherwise, and CPU time is what a shared machine's load changes least)."""

    results: dict[str, interactions.Interactions]
    items: dict[str, Tensor]
    robust: Tensor
    dependent: Tensor
    seconds: dict[str, float]

    def shares(self, models: Sequence[str] | None = None) -> pd.DataFrame:
        """Per model (the games' first dimension): items under the canonical rule, robust items,
        rule-dependent items, the robust share of the canonical items, and each rule's mean set
        Jaccard of its items with the canonical ones, summed or averaged over the other
        dimensions (samples)."""
        canonical = self.items["canonical"]
        count = lambda x: x.flatten(1).sum(-1).tolist()  # noqa: E731
        k_canon = count(canonical != 0)
        robust, dependent = count(self.robust), count(self.dependent)
        names = list(models) if models is not None else list(range(canonical.shape[0]))
        rows = []
        for i, name in enumerate(names):
            row = dict(model=name, canonical_items=k_canon[i], robust=robust[i],
                       rule_dependent=dependent[i],
                       robust_share=robust[i] / k_canon[i] if k_canon[i] else float("nan"))
            for rule, items in self.items.items():
                if rule != "canonical":
                    jac = knowledge.set_jaccard(canonical[i], items[i])
                    row[f"jaccard_{rule}"] = float(jac.double().mean())
            rows.append(row)
        return pd.DataFrame(rows)


def sample(values: Tensor, tau: float = 0.05, empty_set: str = "exclude",
           rules: Sequence[str] = RULES, warm: bool = True, **engine) -> Face:
    """Extract the games ``values`` ``[M, ..., 2**n]`` (models first) under every rule of
    ``rules`` (the canonical one first, always in) and classify their salient items (tau,
    empty_set: ``knowledge.salient_items``). ``engine``: further arguments of
    ``sparsify.sparsify`` (``q_bound``, ``tol``, ``merge_low_or``, ``workers``, ...; the
    optimiser is the exact one). ``warm``: the other rules start from the canonical support."""
    import time

    rules = ["canonical"] + [r for r in rules if r != "canonical"]
    results, seconds = {}, {}
    support = None
    for rule in rules:
        start = time.process_time()
        results[rule] = sparsify.sparsify(values, optimizer="exact", rule=rule,
                                          support=support, **engine)
        seconds[rule] = time.process_time() - start
        if warm and rule == "canonical":
            support = support_of(results[rule])
    items = {rule: knowledge.salient_items(r.stacked(), tau, empty_set)
             for rule, r in results.items()}
    robust, dependent = classify(list(items.values()))
    return Face(results, items, robust, dependent, seconds)


def classify(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``(robust, dependent)`` booleans of the salient items of one set of games under several
    rules (the first one's items first): robust = salient with the same sign under every rule;
    dependent = salient under some rule, not robust."""
    stacked = torch.stack(list(items))
    first = stacked[0]
    robust = (first != 0) & (stacked == first).all(0)
    return robust, (stacked != 0).any(0) & ~robust


def support_of(result: interactions.Interactions, rtol: float = 1e-12) -> Tensor:
    """``[..., 2, 2**n]``: the interactions of an exact extraction that are not zero (before OR
    terms of order <= 1 were moved into AND), relative to the game's largest ``|v|``: a warm start
    for another rule's solve (``exact.solve``'s ``support``)."""
    i_and, i_or = interactions.and_or(result.values, result.p, result.q)
    scale = result.values.abs().amax(-1)[..., None, None]
    return torch.stack([i_and, i_or], dim=-2).abs() > rtol * scale
