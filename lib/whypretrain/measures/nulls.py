"""Nulls: what a knowledge measure gives between models that should not differ
(book/method.md, section 6).

Every seed of a study reads the same games (the same samples and players, ``results``), so the
final models of two seeds can be compared item by item. A *comparison* puts models of a seed
``s`` and of another seed ``s'`` in the three roles of ``knowledge.knowledge_table`` (the
probe's, the fine-tuned model's and the scratch model's role), and every knowledge measure is
then read off as usual:

- ``replication``: fine-tuned(s), fine-tuned(s'), scratch(s'). Its ``share_discarded`` is the
  share of a fine-tuned model's items that a fine-tuned model of another seed lacks: how much
  two runs of one recipe disagree. The null of the shares and of the order claim.
- ``unrelated``: probe(s), fine-tuned(s'), scratch(s). Fine-tuning that did not start from
  this probe's backbone: a reference for what "preserved" means by coincidence.
- ``scratch_other``: probe(s), fine-tuned(s), scratch(s'). A scratch model that shares no seed
  with the pre-trained one: a reference for the learnable share.
- ``probe_replication``: probe(s), probe(s'), scratch(s). Two backbones of different seeds
  under their probes: its ``share_discarded`` is how much two pre-trained models disagree
  with no fine-tuning at all (the ladder's ``null_probe``).
- ``scratch_replication``: scratch(s), scratch(s'), scratch(s). Its ``share_preserved`` is the
  share of a scratch model's items another seed's scratch model has: the ceiling of the
  learnable share (``replication``'s ``share_preserved`` is the same for fine-tuned models).

``face_table`` holds the same knowledge tables for one seed's models under another optimal
solution of the same games (``face``; the reverse and hash rules): ``face_probe`` is probe
(canonical), probe (other rule), scratch, so its ``share_discarded`` is the share of the
probe's canonical items that its other solution lacks; ``face_finetune`` is fine-tuned (other
rule), fine-tuned (canonical), scratch, so its ``share_new`` is the share of the fine-tuned
model's canonical items that its other solution lacks. Nothing in the network differs: the
ladder's ``null_face``, the part of a share that is which optimum the LP returned.

``comparison_table`` stacks them for every ordered pair of seeds (``seed`` = s, ``partner`` =
s'); ``replicate_table`` holds the weighted and set Jaccard between the final models of two
seeds (the level two equivalent final models reach, for the convergence curves);
``crossed_table`` the weighted Jaccard of every checkpoint of a seed's runs to another seed's
final fine-tuned model (a curve scored against a model it does not descend from: the
convergence claims' null). Pure functions of loaded results: nothing is trained or written.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch

from whypretrain.measures import knowledge

if TYPE_CHECKING:  # the loaded results of one seed; the study layer above reads them
    from whypretrain.study.seed_results import SeedResults

OWN, OTHER = "own", "other"
# comparison -> the (model, seed) in the probe's, the fine-tuned model's and the scratch role
COMPARISONS: dict[str, tuple[tuple[str, str], ...]] = {
    "replication": (("finetune", OWN), ("finetune", OTHER), ("scratch", OTHER)),
    "unrelated": (("probe", OWN), ("finetune", OTHER), ("scratch", OWN)),
    "scratch_other": (("probe", OWN), ("finetune", OWN), ("scratch", OTHER)),
    "probe_replication": (("probe", OWN), ("probe", OTHER), ("scratch", OWN)),
    "scratch_replication": (("scratch", OWN), ("scratch", OTHER), ("scratch", OWN)),
}
# the same seed under another rule of the optimal face (OTHER = that rule's results)
FACE_COMPARISONS: dict[str, tuple[tuple[str, str], ...]] = {
    "face_probe": (("probe", OWN), ("probe", OTHER), ("scratch", OWN)),
    "face_finetune": (("finetune", OTHER), ("finetune", OWN), ("scratch", OWN)),
}
REPLICATED = ("finetune", "scratch")  # the runs whose final models replicate_table compares


def check_shared_games(loaded: list[SeedResults]) -> None:
    """Raise ``ValueError`` unless every seed's results hold the same samples and players."""
    first = loaded[0]
    for r in loaded[1:]:
        if r.sample_ids != first.sample_ids or not torch.equal(r.players, first.players):
            raise ValueError(f"seeds {first.seed} and {r.seed} explain different games; "
                             f"nulls need results computed with shared games "
                             f"(results format 4 or later)")


def pairs(loaded: list[SeedResults]) -> list[tuple[SeedResults, SeedResults]]:
    """Every ordered pair of two different seeds' results."""
    return [(a, b) for a in loaded for b in loaded if a.seed != b.seed]


COLUMNS = ["comparison", "seed", "partner", *knowledge.TABLE_COLUMNS]


def _compare(own: SeedResults, other: SeedResults, comparisons: dict, tau: float,
             empty_set: str, partner) -> list[pd.DataFrame]:
    """The knowledge table of each of ``comparisons`` between ``own`` and ``other``."""
    frames = []
    for name, roles in comparisons.items():
        I = [(own if who == OWN else other).interactions_of(model) for model, who in roles]
        t = knowledge.knowledge_table(*I, tau, own.sample_ids, epoch=own.final_epoch,
                                      empty_set=empty_set)
        t.insert(0, "comparison", name)
        t.insert(1, "seed", own.seed)
        t.insert(2, "partner", partner)
        frames.append(t)
    return frames


# the comparisons the claims' verdicts read (the sensitivity grid computes only these)
VERDICT_COMPARISONS = ("replication", "unrelated", "scratch_other")


def comparison_table(loaded: list[SeedResults], tau: float, empty_set: str,
                     names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Knowledge tables (``knowledge.TABLE_COLUMNS``) of every comparison (or those in
    ``names``) and ordered pair of seeds, with columns ``comparison``, ``seed`` (s) and
    ``partner`` (s') in front. Empty with fewer than two seeds."""
    check_shared_games(loaded)
    chosen = {k: v for k, v in COMPARISONS.items() if names is None or k in names}
    frames = []
    for own, other in pairs(loaded):
        frames += _compare(own, other, chosen, tau, empty_set, other.seed)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def face_table(canonical: list[SeedResults], rules: dict[str, list[SeedResults]], tau: float,
               empty_set: str) -> pd.DataFrame:
    """Knowledge tables of ``FACE_COMPARISONS``: each seed's canonical final models against
    the same models under each other rule (``rules``: rule -> the finals-only results of every
    seed, in the order of ``canonical``). Columns as ``comparison_table``'s, ``partner`` the
    rule. Empty without another rule."""
    frames = []
    for rule, loaded in rules.items():
        for own, other in zip(canonical, loaded, strict=True):
            if own.seed != other.seed or own.sample_ids != other.sample_ids:
                raise ValueError(f"rule {rule}: seed {other.seed} does not match seed "
                                 f"{own.seed}'s games")
            frames += _compare(own, other, FACE_COMPARISONS, tau, empty_set, rule)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def replicate_table(loaded: list[SeedResults], tau: float, empty_set: str) -> pd.DataFrame:
    """Per ordered pair of seeds, run (fine-tuned, scratch) and sample: the weighted and the
    set Jaccard between the two seeds' final models. Columns ``seed, partner, model, sample,
    measure, value``."""
    check_shared_games(loaded)
    rows = []
    for own, other in pairs(loaded):
        for model in REPLICATED:
            a, b = own.interactions_of(model), other.interactions_of(model)
            measures = {
                "jaccard_weighted": knowledge.weighted_jaccard(a, b, empty_set),
                "jaccard_set": knowledge.set_jaccard(knowledge.salient_items(a, tau, empty_set),
                                                     knowledge.salient_items(b, tau, empty_set)),
            }
            for measure, values in measures.items():
                rows += [dict(seed=own.seed, partner=other.seed, model=model, sample=sid,
                              measure=measure, value=float(v))
                         for sid, v in zip(own.sample_ids, values.tolist())]
    return pd.DataFrame(rows, columns=["seed", "partner", "model", "sample", "measure",
                                       "value"])


def crossed_table(loaded: list[SeedResults], empty_set: str) -> pd.DataFrame:
    """Per ordered pair of seeds (s, s'), run (fine-tuned, scratch), analysed epoch and sample:
    the weighted Jaccard of run(s) at that epoch to the final fine-tuned model of s'. Columns
    ``seed, partner, model, epoch, sample, value``; a seed read at its final models only
    (``curve_seeds``) is a partner, never s; empty with one seed or finals only."""
    check_shared_games(loaded)
    rows = []
    for own, other in pairs(loaded):
        if len({epoch for m, epoch in own.labels if m == "finetune"}) < 2:
            continue  # no curve to score
        reference = other.interactions_of("finetune")
        for model in REPLICATED:
            for m, epoch in own.labels:
                if m != model:
                    continue
                values = knowledge.weighted_jaccard(own.interactions_of(model, epoch),
                                                    reference, empty_set)
                rows += [dict(seed=own.seed, partner=other.seed, model=model, epoch=epoch,
                              sample=sid, value=float(v))
                         for sid, v in zip(own.sample_ids, values.tolist())]
    out = pd.DataFrame(rows, columns=["seed", "partner", "model", "epoch", "sample", "value"])
    epochs = out.groupby(["seed", "model"])["epoch"].nunique()
    return out if len(epochs) and (epochs > 1).all() else out.iloc[:0]
