"""The paper's claims as data, judged on our results against their nulls.

Each claim is one ``Claim`` record: the paper's statement, our measure (a number per seed), its
null (what the same measure gives between models that should not differ, ``nulls``; 0 for the
claims that compare two runs of one seed), its smallest effect of interest (``sesoi``), its
measure beyond the floor and the paper's threshold or range (``Rule``) judged on it. The effect
is our value minus its null, per seed; every interval is a crossed jackknife of the whole
statistic over seeds (nulls recomputed without the left-out seed) and samples (``infer``), and
the verdict (``verdict``, ``decide``) says whether the effect exceeds the null, is equivalent
to it (within the SESOI) or is inconclusive, after Holm's correction over a setting's claims
(book/method.md, section 7). ``judge(result)`` reads one setting's results and returns one row
per claim; ``transfer_table(result)`` does it for the near, disjoint and far settings side by
side. Reads the study result only (``study_result``): the verdicts are functions of its tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from whypretrain.measures import curves, knowledge, sparsity
from whypretrain.errors import MissingResults
from whypretrain.provenance import attach, combine, sources_of
from whypretrain.study.games import MODELS
from whypretrain.study.settings import DISJOINT, FAR_PRESET, FAR_PRESETS, TRANSFER_SETTINGS
from whypretrain.measures import stats
from whypretrain.measures.stats import CONFIDENCE, Estimate, Inference
from whypretrain.study.catalogue import StudyResult

LEARNABLE_RANGE = (0.13, 0.45)  # the paper's range of the learnable share (Figure 3)
ACCURACY_FRACTION = curves.ACCURACY_FRACTION
REACH_LEVEL = curves.REACH_LEVEL
NOT_RUN = "not run"
EXCEEDS, BELOW, EQUIVALENT = "exceeds the null", "below the null", "equivalent to the null"
INCONCLUSIVE, UNDEFINED = "inconclusive", "n/a"
PREMISE_FAILS = "premise fails"  # a model the claim reads is not sparse (with_premise)
VERDICTS = (EXCEEDS, EQUIVALENT, BELOW, INCONCLUSIVE, UNDEFINED, PREMISE_FAILS, NOT_RUN)
DECIDED = (EXCEEDS, EQUIVALENT, BELOW)
AGREES, DISAGREES, UNDECIDED = "agrees", "disagrees", "undecided"
PAPER_VERDICTS = (AGREES, DISAGREES, UNDECIDED, UNDEFINED, NOT_RUN)
ALPHA = 1 - CONFIDENCE   # each test's level; the 90% interval is the equivalence test's


# --- rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """The paper's threshold or range, [low, high], judged by one interval rule on a measure
    of what fine-tuning does beyond its floor (``Claim.floor``): *agrees* when the whole 95%
    interval lies inside the range, *disagrees* when it lies wholly outside, *undecided* when
    it straddles an edge or has width 0, *n/a* without an interval."""
    text: str
    low: float
    high: float

    def judge(self, e: Inference) -> str:
        if not e.defined:
            return UNDEFINED
        lo, hi = e.interval()
        if e.zero_width:
            return UNDECIDED
        if self.low < lo and hi < self.high:
            return AGREES
        if hi <= self.low or lo >= self.high:
            return DISAGREES
        return UNDECIDED


def above(threshold: float, pct: bool = False) -> Rule:
    """The paper's "more than ``threshold``"."""
    t = f"{threshold:.0%}" if pct else f"{threshold:g}"
    return Rule(f"above {t}", threshold, np.inf)


def inside(low: float, high: float) -> Rule:
    """The paper's range [low, high]."""
    return Rule(f"inside {low:.0%}-{high:.0%}", low, high)


RULE_TEXT = ("agrees when the whole 95% interval lies inside the paper's range (above its "
             "threshold), disagrees when it lies wholly outside, undecided when it straddles "
             "an edge or has width 0")


# --- the measures (one number per seed) ------------------------------------------------------

@dataclass
class Inputs:
    """What the claims of one setting read: training metrics, the knowledge table and the
    cross-seed comparisons (``nulls.comparison_table``; empty with one seed) and the
    comparisons of each seed's models with themselves under another optimal solution
    (``nulls.face_table``; None where the study did not extract other rules)."""
    metrics: pd.DataFrame
    table: pd.DataFrame
    comparisons: pd.DataFrame | None = None
    replicates: pd.DataFrame | None = None
    face: pd.DataFrame | None = None  # nulls.face_table: the same seed under another rule
    crossed: pd.DataFrame | None = None  # nulls.crossed_table (convergence against other seeds)
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # per-table results


def accuracy_gap(x: Inputs) -> pd.Series:
    final = curves.final_accuracy(x.metrics)
    return final["finetune"] - final["scratch"]


def accuracy_speed(x: Inputs) -> pd.Series:
    e = curves.accuracy_epochs(x.metrics)
    return e["scratch"] - e["finetune"]


def _final_measure(t: pd.DataFrame, measure: str) -> pd.Series:
    rows = t[(t["measure"] == measure) & (t["order"] == knowledge.ALL_ORDERS)]
    return rows.groupby("seed")["value"].mean()  # NaN ratios (undefined) are left out


def mean_order(t: pd.DataFrame, measure: str) -> pd.Series:
    """Per seed: the mean order |S| of the items of ``measure`` (count_*), items pooled."""
    rows = t[(t["measure"] == measure) & (t["order"] >= 0)]
    counts = rows.groupby(["seed", "order"])["value"].sum().reset_index()
    weighted = (counts["order"] * counts["value"]).groupby(counts["seed"]).sum()
    total = counts.groupby("seed")["value"].sum()
    return (weighted / total.where(total > 0)).astype(float)


def order_gap_of(discard: str, preserve: str) -> Callable[[pd.DataFrame], pd.Series]:
    """Per seed: the mean order of ``discard`` minus that of ``preserve`` (counts, expected
    counts or strengths by order, pooled over samples)."""
    return lambda t: mean_order(t, discard) - mean_order(t, preserve)


def share_of(measure: str) -> Callable[[pd.DataFrame], pd.Series]:
    """Per seed: the mean over samples of ``measure`` over all orders."""
    return lambda t: _final_measure(t, measure)


def _convergence(x: Inputs, measure: str) -> pd.DataFrame:
    if "convergence" not in x.memo:   # the area and the reach claims read the same table
        x.memo["convergence"] = curves.convergence_measures(x.table, REACH_LEVEL)
    c = x.memo["convergence"]
    if c.empty:
        raise MissingResults("convergence measures (results of every epoch)",
                             "whypretrain analyze --preset ... --set checkpoints=all")
    return c[c["measure"] == measure].pivot(index="seed", columns="model", values="value")


def area_gap(x: Inputs) -> pd.Series:
    a = _convergence(x, "area")
    return a["finetune"] - a["scratch"]


def reach_gap(x: Inputs) -> pd.Series:
    r = _convergence(x, "reach")
    return r["scratch"] - r["finetune"]


# --- the claims ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Knowledge:
    """How a knowledge claim reads its tables: ``items`` (the claim's measure on a knowledge
    table), its ``null`` (a comparison of ``nulls.COMPARISONS``, or ``"chance"``: ``chance``
    on the same seed's table), a ``reference`` comparison shown beside it, the ``chance``
    level, and the ``weighted`` measure (no tau) with its own null comparison (None: none; the
    learnable share has no weighted chance, and another seed's scratch model, which it read
    before, is a reference, not a null)."""
    items: Callable[[pd.DataFrame], pd.Series]
    null: str
    reference: str
    chance: Callable[[pd.DataFrame], pd.Series]
    weighted: Callable[[pd.DataFrame], pd.Series]
    weighted_null: str | None  # None: the weighted measure has no null (no weighted chance)


def difference(value: pd.Series, null: pd.Series) -> pd.Series:
    """Beyond the floor as the effect itself: value minus null."""
    return value - null


def beyond_retention(value: pd.Series, null: pd.Series) -> pd.Series:
    """A share lost beyond what a replicate loses: 1 - retention / the null's retention,
    (1 - value) / (1 - null); 0 when fine-tuning keeps as much as a replicate does, 0.5 when it
    keeps half of that."""
    return 1 - (1 - value) / (1 - null).where(null < 1)


def beyond_chance(value: pd.Series, null: pd.Series) -> pd.Series:
    """A share beyond chance, (value - chance) / (1 - chance): 0 at chance, 1 at all."""
    return (value - null) / (1 - null).where(null < 1)


@dataclass(frozen=True)
class Claim:
    key: str
    paper: str            # the paper's statement
    measure: str          # our measure, one number per seed
    value: Callable[[Inputs], pd.Series]
    rule: Rule            # the paper's threshold or range, judged on ``floor``
    pct: bool = False     # a share: shown as a percentage, its intervals kept in [0, 1]
    knowledge: Knowledge | None = None  # None: the null is 0 (two runs of one seed compared)
    null_text: str = "0 (two runs of the same seed compared)"
    sesoi: float = np.nan  # smallest effect of interest, in the effect's units (method, 7)
    floor: Callable[[pd.Series, pd.Series], pd.Series] = difference
    floor_text: str = "the effect (value minus null)"


def _knowledge_claim(key: str, paper: str, measure: str, rule: Rule, pct: bool,
                     k: Knowledge, null_text: str, sesoi: float,
                     floor: tuple[Callable, str] = (difference, "the effect (value minus null)")
                     ) -> Claim:
    return Claim(key, paper, measure, lambda x: k.items(x.table), rule, pct, k, null_text,
                 sesoi, *floor)


REPLICATION = ("a fine-tuned model of another seed: the share of a fine-tuned model's items "
               "that it lacks (two runs of one recipe)")
# smallest effects of interest, in each effect's units; book/method.md (section 7) gives the
# reason for each
SESOI = dict(accuracy_gap=0.01, accuracy_speed=1.0, share_discarded=0.05, share_new=0.05,
             learnable=0.05, discard_order=0.25, convergence_area=0.05, convergence_reach=1.0)
RETENTION = (beyond_retention, "1 - (1 - value) / (1 - null): the share lost beyond what a "
             "replicate loses")
FIGURE4 = "Fine-tuning reaches its final knowledge faster and more directly (Figure 4)"
CLAIMS: tuple[Claim, ...] = (
    Claim("accuracy_gap", "Fine-tuned models beat models trained from scratch on the target "
          "task (the paper's premise)", "final test accuracy, fine-tuned minus scratch",
          accuracy_gap, above(0.0), sesoi=SESOI["accuracy_gap"]),
    Claim("accuracy_speed", "Fine-tuning converges in fewer epochs",
          f"epochs to {ACCURACY_FRACTION:.0%} of the final test accuracy, scratch minus "
          "fine-tuned", accuracy_speed, above(0.0), sesoi=SESOI["accuracy_speed"]),
    _knowledge_claim(
        "share_discarded", "Most pre-trained knowledge is discarded by fine-tuning (only a "
        "small amount is preserved)", "share of K_probe (the paper's K_pretrain) discarded",
        above(0.5, pct=True), True,
        Knowledge(share_of("share_discarded"), "replication", "unrelated",
                  share_of("chance_share_discarded"), share_of("weighted_share_discarded"),
                  "replication"), REPLICATION, SESOI["share_discarded"], RETENTION),
    _knowledge_claim(
        "share_new", "Fine-tuning learns much new knowledge (Figure 2)",
        "share of K_finetune that is new", above(0.5, pct=True), True,
        Knowledge(share_of("share_new"), "replication", "unrelated",
                  share_of("chance_share_new"), share_of("weighted_share_new"), "replication"),
        REPLICATION, SESOI["share_new"], RETENTION),
    _knowledge_claim(
        "learnable", f"Only {LEARNABLE_RANGE[0]:.0%}-{LEARNABLE_RANGE[1]:.0%} of the "
        "preserved knowledge is learnable from scratch (Figure 3)",
        "share of K_preserve the scratch model also has", inside(*LEARNABLE_RANGE), True,
        Knowledge(share_of("ratio_learnable"), "chance", "scratch_other",
                  share_of("chance_ratio_learnable"), share_of("weighted_ratio_learnable"),
                  None),
        "chance: the scratch model's items on random subsets of the same kind and order",
        SESOI["learnable"], (beyond_chance, "(value - chance) / (1 - chance): the learnable "
                             "share beyond chance")),
    _knowledge_claim(
        "discard_order", "Discarded knowledge is mostly high-order",
        "mean order |S| of discarded minus preserved items", above(0.0), False,
        Knowledge(order_gap_of("count_discard", "count_preserve"), "replication", "unrelated",
                  order_gap_of("chance_count_discard", "chance_count_preserve"),
                  order_gap_of("weighted_discard", "weighted_preserve"), "replication"),
        "a fine-tuned model of another seed: the same gap between the items of a fine-tuned "
        "model it lacks and those it shares", SESOI["discard_order"]),
    Claim("convergence_area", FIGURE4,
          "area under the weighted-Jaccard curve to the run's own final model (epochs before "
          "the last), fine-tuned minus scratch", area_gap, above(0.0),
          sesoi=SESOI["convergence_area"]),
    Claim("convergence_reach", FIGURE4,
          f"first epoch at weighted Jaccard >= {REACH_LEVEL:g} to the final fine-tuned model "
          "(T + 1 if never), scratch minus fine-tuned", reach_gap, above(0.0),
          null_text="a fine-tuned run of another seed in the scratch run's place: its reach to "
          "this seed's final fine-tuned model minus this seed's fine-tuned run's (what a run "
          "gains by being scored against its own endpoint)", sesoi=SESOI["convergence_reach"]),
)
CLAIM_KEYS = tuple(c.key for c in CLAIMS)


def per_comparison(x: Inputs, name: str, measure: Callable[[pd.DataFrame], pd.Series]
                   ) -> pd.Series:
    """Per seed s: ``measure`` on comparison ``name`` (pooled over the partners s' != s);
    empty when there is no other seed."""
    c = x.face if name.startswith("face_") else x.comparisons
    if c is None or c.empty:
        return pd.Series(dtype=float)
    return measure(c[c["comparison"] == name])


def _crossed(x: Inputs) -> pd.DataFrame:
    """``curves.crossed_measures`` of ``x.crossed`` (empty without it)."""
    c = x.crossed
    if c is None or c.empty:
        return pd.DataFrame(columns=["seed", "partner", "model", "measure", "value"])
    return curves.crossed_measures(c, REACH_LEVEL)


def reach_null(x: Inputs) -> pd.Series:
    """Per seed s: the reach gap a fine-tuned run of another seed s' shows in the scratch run's
    place, against the final fine-tuned model of s: reach of fine-tuned(s') to it minus reach
    of fine-tuned(s) (its own endpoint), mean over s'. Empty with one seed."""
    c = _crossed(x)
    other = c[(c["model"] == "finetune") & (c["measure"] == "reach")]
    if other.empty:
        return pd.Series(dtype=float)
    against = other.groupby("partner")["value"].mean()  # indexed by the reference's seed
    own = _convergence(x, "reach")["finetune"]
    return (against - own).dropna()


def crossed_gap(x: Inputs, measure: str) -> pd.Series:
    """Per seed s: the convergence gap (area: fine-tuned minus scratch; reach: scratch minus
    fine-tuned) with both runs of s scored against another seed's final fine-tuned model,
    a model neither descends from (mean over the other seeds)."""
    c = _crossed(x)
    c = c[c["measure"] == measure]
    if c.empty:
        return pd.Series(dtype=float)
    per = c.groupby(["seed", "model"])["value"].mean().unstack("model")
    sign = 1.0 if measure == "area" else -1.0
    return sign * (per["finetune"] - per["scratch"])


# claims whose null is neither a comparison (``Knowledge``) nor 0
NULLS: dict[str, Callable[[Inputs], pd.Series]] = {"convergence_reach": reach_null}


def null_of(claim: Claim, x: Inputs, weighted: bool = False, value: pd.Series | None = None
            ) -> pd.Series:
    """Per seed: the claim's null (``Knowledge``, or ``NULLS``), or 0 for the claims without
    one (on the seeds of ``value``, the claim's value when given)."""
    k = claim.knowledge
    if k is None and claim.key in NULLS and not weighted:
        return NULLS[claim.key](x)
    if k is None:
        return pd.Series(0.0, index=(claim.value(x) if value is None else value).index)
    name = k.weighted_null if weighted else k.null
    if name is None:
        return pd.Series(dtype=float)
    if name == "chance":
        return k.chance(x.table)
    return per_comparison(x, name, k.weighted if weighted else k.items)


def effect_of(value: pd.Series, null: pd.Series) -> pd.Series:
    """Per seed: value minus null, on the seeds that have both."""
    both = value.index.intersection(null.index)
    return (value[both] - null[both]).dropna()


MAX_SEEDS = 100  # seeds_to_decide looks no further


# --- inference: the crossed jackknife (book/method.md, section 7) ---------------------------

def _drop(frame: pd.DataFrame | None, column: str, value, partner: bool = False):
    if frame is None or frame.empty or column not in frame:
        return frame
    keep = frame[column] != value
    if partner and "partner" in frame:
        keep &= frame["partner"] != value
    return frame[keep]


def _bare(x: Inputs) -> Inputs:
    """``x`` with its tables' metadata (sources) left out: pandas copies it on every step,
    which made the folds' many small steps several times slower."""
    def strip(frame):
        if frame is None:
            return None
        out = frame.copy(deep=False)
        out.attrs = {}
        return out
    return Inputs(strip(x.metrics), strip(x.table), strip(x.comparisons), strip(x.replicates),
                  strip(x.face), strip(x.crossed))


def _seeds_of(x: Inputs) -> list:
    """The seeds of ``x``, in the order of ``folds``' seed folds."""
    return sorted(set(x.table["seed"]) | set(x.metrics.get("seed", pd.Series(dtype=int))))


def folds(x: Inputs) -> tuple[list[Inputs], list[Inputs], str]:
    """The leave-one-seed-out and the leave-one-sample-out copies of ``x``. A seed's fold
    drops its runs and every comparison it takes part in (as seed or partner), so each
    remaining seed's null is recomputed from the remaining pairs; with 2 seeds no pair
    remains, and the seed's fold keeps the other seed's null as computed on all seeds (the
    method says so). A sample's fold drops that sample from every table."""
    x = _bare(x)
    seeds = _seeds_of(x)
    recompute = len(seeds) >= 3
    by_seed = [Inputs(_drop(x.metrics, "seed", s), _drop(x.table, "seed", s),
                      _drop(x.comparisons, "seed", s, recompute),
                      _drop(x.replicates, "seed", s, recompute), _drop(x.face, "seed", s),
                      _drop(x.crossed, "seed", s, recompute)) for s in seeds]
    samples = sorted(set(x.table["sample"])) if "sample" in x.table else []
    by_sample = [Inputs(x.metrics, _drop(x.table, "sample", i), _drop(x.comparisons, "sample", i),
                        _drop(x.replicates, "sample", i), _drop(x.face, "sample", i),
                        _drop(x.crossed, "sample", i)) for i in samples]
    method = "crossed jackknife" if recompute else "crossed jackknife, nulls kept (2 seeds)"
    return by_seed, by_sample, method


def per_seed(c: Claim, x: Inputs) -> dict[str, pd.Series]:
    """One claim's numbers per seed: ``value``, ``null``, ``effect`` (value minus null),
    ``floor`` (the claim's measure beyond its floor) and, for a knowledge claim, the weighted
    measure's effect ``weighted``."""
    value = c.value(x)
    null = null_of(c, x, value=value)
    both = value.index.intersection(null.index)
    out = dict(value=value, null=null, effect=effect_of(value, null),
               floor=c.floor(value[both], null[both]).dropna())
    if c.knowledge is not None:
        out["weighted"] = effect_of(c.knowledge.weighted(x.table), null_of(c, x, weighted=True))
    return out


def _mean(series: pd.Series) -> float:
    return float(series.mean()) if len(series.dropna()) else np.nan


def infer(c: Claim, x: Inputs, split: tuple[list[Inputs], list[Inputs], str] | None = None
          , seeds: dict[str, pd.Series] | None = None) -> dict[str, Inference]:
    """The crossed-jackknife ``Inference`` of each of the claim's statistics (``per_seed``'s
    keys but ``null``; ``seeds``: ``per_seed(c, x)`` when already computed): the mean over
    seeds, recomputed on every fold of ``folds(x)``. A share's value stays in [0, 1], its
    effect in [-1, 1], its floor measure at most 1."""
    by_seed, by_sample, method = split or folds(x)
    seeds = seeds or per_seed(c, x)
    full = {k: _mean(v) for k, v in seeds.items() if k != "null"}
    # the folds of the seeds the claim is measured on: a seed read at its final models only
    # (curve_seeds) has no convergence value, and its fold would count a seed the mean lacks;
    # none below 2 such seeds (no spread: the claim reads n/a)
    measured = set(seeds["value"].dropna().index)
    by_seed = [f for s, f in zip(_seeds_of(x), by_seed) if s in measured] \
        if len(measured) >= 2 else []
    at = [{k: _mean(v) for k, v in per_seed(c, f).items()} for f in by_seed + by_sample]
    n = len(by_seed)
    share = (0.0, 1.0) if c.pct else (-np.inf, np.inf)
    bounds = dict(value=share, effect=(-1.0, 1.0) if c.pct else share,
                  floor=(-np.inf, 1.0) if c.pct else share, weighted=(-1.0, 1.0))
    return {k: Inference.of(v, [f[k] for f in at[:n]], [f[k] for f in at[n:]], bounds[k],
                            method) for k, v in full.items()}


def seeds_to_decide(effect: Inference, sesoi: float, alpha: float = ALPHA) -> float:
    """The fewest seeds at which the study would decide this claim with 80% power either way
    (``stats.seeds_for_power``: a true effect of the SESOI found to exceed 0, a true effect
    of 0 found equivalent), at level ``alpha``, planned on the 80% upper confidence bound of
    each part of the effect's spread (``stats.sd_upper``): one seed's sd (the seed part of
    the jackknife variance times the seeds; seeds - 1 degrees of freedom) and the samples'
    part, which more seeds do not shrink. NaN without a spread; ``MAX_SEEDS + 1`` beyond."""
    if not effect.defined or effect.zero_width or not np.isfinite(sesoi):
        return np.nan
    sd_seed = stats.sd_upper(np.sqrt(effect.v_seed * effect.n_seeds), effect.n_seeds - 1)
    sd_sample = stats.sd_upper(np.sqrt(effect.v_sample), max(effect.n_samples - 1, 1)) \
        if effect.v_sample > 0 else 0.0
    return stats.seeds_for_power(sesoi, sd_seed, sd_sample, max(effect.n_samples, 1), alpha,
                                 max_seeds=MAX_SEEDS)


HEADLINE = ("share_discarded", "share_new", "learnable")  # the claims the seed count serves


def power_table(spreads: pd.DataFrame, families: int = len(CLAIMS)) -> pd.DataFrame:
    """How many seeds each claim needs to decide at 80% power (``stats.seeds_for_power``) for
    its SESOI, from ``spreads``: one row per (setting, claim) with ``sd_seed`` (one seed's sd
    of the effect), ``n_seeds`` (the seeds it was measured on) and optionally ``sd_sample``
    and ``n_samples`` (the samples' part, which more seeds do not shrink). Seeds at level 5%
    on the sd as measured (``seeds_point``) and on its 80% upper confidence bound
    (``seeds``), and the same bound at Holm's first step, 5% / ``families``
    (``seeds_holm``: what a claim needs when every other claim of its setting is null); and
    on the bound at 5% for the first test alone (``seeds_exceed``: an effect of the SESOI
    found, whatever a null effect would give)."""
    rows = []
    for r in spreads.to_dict("records"):
        sesoi = SESOI[r["claim"]]
        sd_sample, m = r.get("sd_sample", 0.0), int(r.get("n_samples", 1))
        upper = stats.sd_upper(r["sd_seed"], r["n_seeds"] - 1)
        rows.append(dict(r, sesoi=sesoi, sd_seed_upper=upper,
                         seeds_point=stats.seeds_for_power(sesoi, r["sd_seed"], sd_sample, m),
                         seeds=stats.seeds_for_power(sesoi, upper, sd_sample, m),
                         seeds_holm=stats.seeds_for_power(sesoi, upper, sd_sample, m,
                                                          ALPHA / families),
                         seeds_exceed=stats.seeds_for_power(sesoi, upper, sd_sample, m,
                                                            tests=("differs",))))
    return pd.DataFrame(rows)


def verdict(effect: Inference, sesoi: float, differs: bool | None = None,
            equivalent: bool | None = None) -> str:
    """The effect's verdict: *exceeds the null* (or *below the null*) when the test of effect
    0 rejects (its 95% interval lies above, or below, 0); else *equivalent to the null* when
    both one-sided tests at +-SESOI reject (its 90% interval lies inside +-SESOI); else
    *inconclusive*. *n/a* without an interval; an interval of width 0 decides nothing
    (*inconclusive*). ``differs``/``equivalent``: the decisions after Holm's correction
    (``decide``); None: each test alone at level 5%."""
    if not effect.defined or not np.isfinite(sesoi):
        return UNDEFINED
    if effect.zero_width:
        return INCONCLUSIVE
    p = effect.tests(sesoi)
    differs = p["differs"] < ALPHA if differs is None else differs
    equivalent = p["equivalent"] < ALPHA if equivalent is None else equivalent
    if differs:
        return EXCEEDS if effect.estimate > 0 else BELOW
    return EQUIVALENT if equivalent else INCONCLUSIVE


def decide(table: pd.DataFrame, effects: list[Inference]) -> pd.DataFrame:
    """Holm's correction over the claims of one setting (one ``judge_inputs`` table): the
    tests of effect 0 form one family, the equivalence tests another, each at family-wise
    5%. Adds ``verdict`` (corrected), ``verdict_uncorrected``, ``paper_verdict`` (left as is)
    and ``reproduces``: the corrected verdict *exceeds the null* and the paper's range
    agrees."""
    differs = stats.holm(table["p_differs"].to_numpy(float))
    equivalent = stats.holm(table["p_equivalent"].to_numpy(float))
    table["verdict_uncorrected"] = [verdict(e, s) for e, s in zip(effects, table["sesoi"])]
    table["verdict"] = [verdict(e, s, d, q) for e, s, d, q in
                        zip(effects, table["sesoi"], differs, equivalent)]
    table["reproduces"] = (table["verdict"] == EXCEEDS) & (table["paper_verdict"] == AGREES)
    return table


def _fmt(pct: bool):
    return (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.2f}")


def _effect_fmt(pct: bool):
    return (lambda v: f"{100 * v:+.1f} pts") if pct else (lambda v: f"{v:+.2f}")


def interval_text(e: Inference, pct: bool = False, effect: bool = False, sd: float = np.nan
                  ) -> str:
    """``mean [± sd] [low, high]`` of an ``Inference`` ("n/a" without a value)."""
    f = _effect_fmt(pct) if effect else _fmt(pct)
    if not np.isfinite(e.estimate):
        return UNDEFINED
    text = f(e.estimate) + (f" ± {_fmt(pct)(sd)}" if np.isfinite(sd) else "")
    if e.defined:
        lo, hi = e.interval()
        text += f" [{f(lo)}, {f(hi)}]"
    return text


def _claim_row(c: Claim, x: Inputs, setting: str, split, n_claims: int
               ) -> tuple[dict, Inference]:
    seeds = per_seed(c, x)
    i = infer(c, x, split, seeds)
    value, effect, floor = i["value"], i["effect"], i["floor"]
    p = effect.tests(c.sesoi)
    lo90, hi90 = effect.interval(1 - 2 * ALPHA)
    sd = Estimate.of(seeds["value"]).sd
    row = dict(setting=setting, claim=c.key, paper=c.paper, measure=c.measure,
               rule=c.rule.text, null_text=c.null_text, mean=value.estimate, sd=sd,
               ci_low=value.low, ci_high=value.high, n_seeds=int(seeds["value"].notna().sum()),
               n_samples=value.n_samples, ours=interval_text(value, c.pct, sd=sd),
               null=_mean(seeds["null"]), effect_mean=effect.estimate, effect_low=effect.low,
               effect_high=effect.high, effect_low90=lo90, effect_high90=hi90,
               effect_se=effect.se, effect_df=effect.df,
               effect=interval_text(effect, c.pct, effect=True), sesoi=c.sesoi,
               p_differs=p["differs"], p_equivalent=p["equivalent"],
               p_exceeds_sesoi=p["exceeds_sesoi"],
               min_effect=_min_effect(p["exceeds_sesoi"], effect),
               floor_text=c.floor_text, floor_mean=floor.estimate, floor_low=floor.low,
               floor_high=floor.high, floor=interval_text(floor, c.pct),
               paper_verdict=c.rule.judge(floor), interval_method=value.method,
               effect_sd_seed=np.sqrt(effect.v_seed * effect.n_seeds),
               effect_sd_sample=np.sqrt(effect.v_sample),
               seeds_to_decide=seeds_to_decide(effect, c.sesoi, ALPHA / n_claims),
               reference=np.nan, chance=np.nan, weighted=np.nan, weighted_null=np.nan,
               weighted_effect_mean=np.nan, weighted_effect_low=np.nan,
               weighted_effect_high=np.nan, weighted_effect="")
    k = c.knowledge
    if k is not None:
        reference = per_comparison(x, k.reference, k.items)
        w = i["weighted"]
        row.update(reference=_mean(reference), chance=_mean(k.chance(x.table)),
                   weighted=_mean(k.weighted(x.table)),
                   weighted_null=_mean(null_of(c, x, weighted=True)),
                   weighted_effect_mean=w.estimate, weighted_effect_low=w.low,
                   weighted_effect_high=w.high,
                   weighted_effect=interval_text(w, c.pct, effect=True))
    return row, effect


def _min_effect(p: float, effect: Inference) -> str:
    """The minimum-effect test beside the verdict: does the effect exceed its SESOI?"""
    if not np.isfinite(p):
        return UNDEFINED
    return "above the SESOI" if p < ALPHA / 2 else "not shown above the SESOI"


def judge_inputs(x: Inputs, setting: str = "near", claims: tuple[Claim, ...] = CLAIMS
                 ) -> pd.DataFrame:
    """One row per claim: setting, claim, paper, measure, rule, null_text; the value's mean,
    sd over seeds, 95% interval (ci_low, ci_high), n_seeds, n_samples and ``ours``
    (formatted); the null's mean (``null``); the effect (value minus null): ``effect_mean``,
    its 95% (``effect_low``, ``effect_high``) and 90% interval (``effect_low90``,
    ``effect_high90``), ``effect_se``, ``effect_df`` and ``effect`` (formatted); ``sesoi``
    and the tests' p-values (``p_differs``, ``p_equivalent``, ``p_exceeds_sesoi``,
    ``min_effect``); the measure beyond the floor (``floor_*``) and the paper's range judged
    on it (``paper_verdict``); ``interval_method``; ``seeds_to_decide``; the reference
    comparison and the chance level (means); the weighted measure (``weighted``,
    ``weighted_null``, ``weighted_effect*``); and the verdicts (``decide``). Every interval
    is the crossed jackknife's (book/method.md, section 7)."""
    split, x = folds(x), _bare(x)
    rows, effects = zip(*[_claim_row(c, x, setting, split, len(claims)) for c in claims])
    return decide(pd.DataFrame(list(rows)), list(effects))


def judge(result: StudyResult, setting: str = "near") -> pd.DataFrame:
    """``judge_inputs`` on one setting of the study result, with the null ladder's columns
    (``with_ladder``)."""
    x = inputs(result, setting)
    return attach(with_ladder(judge_inputs(x, setting), x), sources_of(x.table))


# --- the null ladder (book/method.md, section 6) ---------------------------------------------

@dataclass(frozen=True)
class Rung:
    """One rung of a claim's ladder: the claim's measure (``measure``) read on the comparison
    ``where`` (``nulls.COMPARISONS``, ``nulls.FACE_COMPARISONS``, or ``"table"``: the seed's
    own knowledge table)."""
    where: str
    measure: Callable[[pd.DataFrame], pd.Series]


# rung key -> what it is (the ladder chart's label), in the chart's order
RUNGS = {
    "null_face": "face: the same model under another optimal solution",
    "null": "the verdict's null (drawn as replication, or as chance for the learnable share)",
    "null_probe": "probe: two probes of different seeds",
    "null_unrelated": "unrelated: a probe against another seed's model",
    "ceiling_finetune": "ceiling: a fine-tuned model's items another seed's fine-tuned has",
    "ceiling_scratch": "ceiling: a scratch model's items another seed's scratch has",
    "comparator_new": "comparator: learnable share of K_new",
    "comparator_finetune": "comparator: learnable share of all of K_finetune",
}
_ORDER_GAP = order_gap_of("count_discard", "count_preserve")
LADDER: dict[str, dict[str, Rung]] = {
    "share_discarded": dict(null_face=Rung("face_probe", share_of("share_discarded")),
                            null_probe=Rung("probe_replication", share_of("share_discarded")),
                            null_unrelated=Rung("unrelated", share_of("share_discarded"))),
    "share_new": dict(null_face=Rung("face_finetune", share_of("share_new")),
                      null_probe=Rung("probe_replication", share_of("share_new")),
                      null_unrelated=Rung("unrelated", share_of("share_new"))),
    "discard_order": dict(null_face=Rung("face_probe", _ORDER_GAP),
                          null_probe=Rung("probe_replication", _ORDER_GAP),
                          null_unrelated=Rung("unrelated", _ORDER_GAP)),
    "learnable": dict(null_unrelated=Rung("scratch_other", share_of("ratio_learnable")),
                      ceiling_finetune=Rung("replication", share_of("share_preserved")),
                      ceiling_scratch=Rung("scratch_replication", share_of("share_preserved")),
                      comparator_new=Rung("table", share_of("ratio_learnable_new")),
                      comparator_finetune=Rung("table", share_of("ratio_learnable_finetune"))),
}
LADDER_KEYS = tuple(k for k in RUNGS if k != "null")
LADDER_EFFECTS = tuple(f"{k}_effect" for k in LADDER_KEYS)  # the table's effect per rung
# the columns each rung adds to a findings row: its value over seeds, and the claim's value
# minus it (per seed) with its 95% interval
RUNG_COLUMNS = ("", "_low", "_high", "_effect_mean", "_effect_low", "_effect_high")


# the convergence claims: the gap with both runs scored against another seed's final
# fine-tuned model (columns ``crossed``, ``crossed_low``, ``crossed_high``), and the names of
# the nulls that are not comparisons
CROSSED = {"convergence_area": "area", "convergence_reach": "reach"}
NULL_NAMES = {"convergence_reach": "unrelated fine-tuned run"}


def rung_values(x: Inputs, rung: Rung) -> pd.Series:
    """Per seed: the rung's measure (empty where its comparison is not in ``x``)."""
    if rung.where == "table":
        return rung.measure(x.table)
    return per_comparison(x, rung.where, rung.measure)


def ladder_row(claim: Claim, x: Inputs) -> dict:
    """A claim's ladder: per rung of ``LADDER_KEYS`` its mean and 95% interval over seeds
    and the effect (the claim's value minus the rung, per seed) with its interval; NaN where
    the claim has no such rung or the study has no data for it. ``verdict_null`` names what
    the verdict reads (a comparison, ``chance`` or ``0``); ``null_low``, ``null_high``,
    ``chance_low``, ``chance_high``: the intervals of the verdict's null and of chance."""
    value = claim.value(x)
    rungs = LADDER.get(claim.key, {})
    k = claim.knowledge
    null = null_of(claim, x)
    chance = k.chance(x.table) if k is not None else pd.Series(dtype=float)
    n, c = Estimate.of(null), Estimate.of(chance)
    row = {"verdict_null": k.null if k is not None else NULL_NAMES.get(claim.key, "0"),
           "null_low": n.low, "null_high": n.high, "chance_low": c.low, "chance_high": c.high}
    crossed = Estimate.of(crossed_gap(x, CROSSED[claim.key])) if claim.key in CROSSED \
        else Estimate.of(pd.Series(dtype=float))
    row.update(crossed=crossed.mean, crossed_low=crossed.low, crossed_high=crossed.high)
    for key in LADDER_KEYS:
        r = rung_values(x, rungs[key]) if key in rungs else pd.Series(dtype=float)
        e, eff = Estimate.of(r), Estimate.of(effect_of(value, r))
        row.update({key: e.mean, f"{key}_low": e.low, f"{key}_high": e.high,
                    f"{key}_effect_mean": eff.mean, f"{key}_effect_low": eff.low,
                    f"{key}_effect_high": eff.high,
                    f"{key}_effect": eff.text(claim.pct) if len(r) else ""})
    return row


def with_ladder(judged: pd.DataFrame, x: Inputs, claims: tuple[Claim, ...] = CLAIMS
                ) -> pd.DataFrame:
    """``judged`` (``judge_inputs``' rows, one per claim) with the ladder's columns
    (``ladder_row``) beside them; its own columns are left as they are."""
    by_key = {c.key: c for c in claims}
    extra = pd.DataFrame([ladder_row(by_key[k], x) for k in judged["claim"]],
                         index=judged.index)
    return pd.concat([judged, extra], axis=1)


def ladder_long(table: pd.DataFrame) -> pd.DataFrame:
    """The ladder of every knowledge claim and setting of a findings table (``judge``'s
    rows), one row per rung that has a value: ``setting, claim, rung, label, mean, low,
    high``; rungs: the claim itself, then ``RUNGS`` in order, the verdict's null among them
    (``replication``, or ``chance`` for the learnable share), and chance. What
    ``charts.ladder`` draws."""
    rows = []
    for r in table[table["claim"].isin(list(LADDER))].to_dict("records"):
        reads = r.get("verdict_null", "replication")
        rungs = [("claim", "the claim (our value)", r["mean"], r["ci_low"], r["ci_high"])]
        for key, label in RUNGS.items():
            if key == "null":
                if reads != "chance":
                    rungs.append((reads, f"{reads}: {REPLICATION.split(':')[0]} "
                                  "(the verdict's null)", r["null"], r.get("null_low"),
                                  r.get("null_high")))
                continue
            rungs.append((key, label, r.get(key, np.nan), r.get(f"{key}_low", np.nan),
                          r.get(f"{key}_high", np.nan)))
        rungs.append(("chance", "chance: items on random subsets of their kind and order"
                      + (" (the verdict's null)" if reads == "chance" else ""),
                      r["chance"], r.get("chance_low"), r.get("chance_high")))
        rows += [dict(setting=r["setting"], claim=r["claim"], rung=k, label=lab,
                      mean=float(m), low=float(lo), high=float(hi))
                 for k, lab, m, lo, hi in rungs if m is not None and np.isfinite(m)]
    out = pd.DataFrame(rows, columns=["setting", "claim", "rung", "label", "mean", "low",
                                      "high"])
    return attach(out, sources_of(table)) if "sources" in table.attrs else out


NOISE_FLOOR = {  # key -> (row label, where its share of lacking items is read)
    "claim": ("probe → fine-tuned, same seed (the claim)", "table", "share_discarded"),
    "replication": ("fine-tuned → fine-tuned of another seed (replication)", "replication",
                    "share_discarded"),
    "unrelated": ("probe → fine-tuned of another seed (unrelated pre-training)", "unrelated",
                  "share_discarded"),
    "chance": ("probe → fine-tuned's items on random subsets (chance)", "table",
               "chance_share_discarded"),
    "face": ("probe → the same probe under the optimal face's other rules (face)",
             "face_probe", "share_discarded"),
    "probe": ("probe → probe of another seed (another pre-training, no fine-tuning)",
              "probe_replication", "share_discarded"),
}


def noise_floor(x: Inputs, sample: int | None = None) -> pd.DataFrame:
    """The share of one model's items that another lacks, for the claim's pair and for pairs
    that should not differ (``NOISE_FLOOR``): mean, sd and 95% interval over seeds (over
    samples, then seeds; one ``sample`` only when given); "n/a" where the study has no such
    comparison (one seed; the face without the optimal face's other rules). Indexed by the
    keys of ``NOISE_FLOOR``."""
    def one(measure: str) -> Callable[[pd.DataFrame], pd.Series]:
        return lambda t: _final_measure(t if sample is None else t[t["sample"] == sample],
                                        measure)
    rows = {}
    for key, (label, where, measure) in NOISE_FLOOR.items():
        e = Estimate.of(one(measure)(x.table) if where == "table"
                        else per_comparison(x, where, one(measure)))
        rows[key] = dict(pair=label, mean=e.mean, sd=e.sd, ci_low=e.low, ci_high=e.high,
                         n_seeds=e.n_seeds, share=e.text(pct=True))
    return attach(pd.DataFrame.from_dict(rows, orient="index"), sources_of(x.table))


def replicate_level(x: Inputs, measure: str = "jaccard_weighted") -> pd.DataFrame:
    """Per run (fine-tuned, scratch): how similar the final models of two seeds are
    (``nulls.replicate_table``; mean over samples and partners per seed, then mean, sd and 95%
    interval over seeds): the level a convergence curve can be expected to reach against a
    model it does not descend from. "n/a" with one seed."""
    rows = {}
    r = x.replicates if x.replicates is not None else pd.DataFrame(
        columns=["seed", "model", "measure", "value"])
    for model in ("finetune", "scratch"):
        part = r[(r["model"] == model) & (r["measure"] == measure)]
        e = Estimate.of(part.groupby("seed")["value"].mean().astype(float))
        rows[model] = dict(mean=e.mean, sd=e.sd, ci_low=e.low, ci_high=e.high,
                           n_seeds=e.n_seeds, level=e.text())
    out = pd.DataFrame.from_dict(rows, orient="index",
                                 columns=["mean", "sd", "ci_low", "ci_high", "n_seeds", "level"])
    return attach(out, sources_of(x.table)) if "sources" in x.table.attrs else out


def inputs(result: StudyResult, setting: str = "near") -> Inputs:
    """What ``judge`` reads for one transfer setting of the study result, with the sources of
    all of it on ``table``."""
    face = result.part(f"{setting}/face") if result.has(f"{setting}/face") else None
    x = Inputs(result.part(f"{setting}/metrics"), result.part(f"{setting}/knowledge"),
               result.part(f"{setting}/comparisons"), result.part(f"{setting}/replicates"),
               face, result.part(f"{setting}/crossed"))
    attach(x.table, sources_of(x.metrics) + sources_of(x.table))
    return x


NUMBER_COLUMNS = ("mean", "sd", "ci_low", "ci_high", "null", "effect_mean", "effect_low",
                  "effect_high", "effect_low90", "effect_high90", "effect_se", "effect_df",
                  "p_differs", "p_equivalent", "p_exceeds_sesoi", "floor_mean", "floor_low",
                  "floor_high", "seeds_to_decide", "reference", "chance", "weighted",
                  "weighted_null", "weighted_effect_mean", "weighted_effect_low",
                  "weighted_effect_high", "effect_sd_seed", "effect_sd_sample")


def not_run(setting: str, command: str) -> pd.DataFrame:
    empty = dict({k: np.nan for k in NUMBER_COLUMNS}, n_seeds=0, n_samples=0, effect="",
                 weighted_effect="", floor="", min_effect="", interval_method="",
                 paper_verdict=NOT_RUN, verdict_uncorrected=NOT_RUN, reproduces=False)
    return pd.DataFrame([dict(setting=setting, claim=c.key, paper=c.paper, measure=c.measure,
                              rule=c.rule.text, null_text=c.null_text, sesoi=c.sesoi,
                              floor_text=c.floor_text, **empty, ours=f"not run: `{command}`",
                              verdict=NOT_RUN) for c in CLAIMS])


def transfer_table(result: StudyResult) -> pd.DataFrame:
    """``judge`` of the near, disjoint and far settings, stacked. The near setting must be in
    the study result (``MissingResults`` otherwise); a setting that is not gets verdict "not
    run" and the study result's note on why (the command that runs it)."""
    frames, sources = [], []
    for name in TRANSFER_SETTINGS:
        if name != "near" and not result.has(f"{name}/knowledge"):
            frames.append(not_run(name, result.note(name, "not computed")))
            continue
        frame = judge(result, name)
        frames.append(frame)
        sources.append(sources_of(frame))
    table = with_premise(pd.concat(frames, ignore_index=True), premise_inputs(result))
    return attach(table, combine(sources))


# --- the premise: sparse interactions (book/method.md, section 3, "Sparsity first") ---------

# the models whose interactions each claim reads as knowledge (the accuracy claims read none)
PREMISE_MODELS: dict[str, tuple[str, ...]] = {
    "share_discarded": ("probe", "finetune"), "share_new": ("probe", "finetune"),
    "learnable": MODELS, "discard_order": ("probe", "finetune"),
    "convergence_area": ("finetune", "scratch"), "convergence_reach": ("finetune", "scratch")}


def sparsity_of(result: StudyResult, setting: str = "near") -> pd.DataFrame:
    """Per model (index), the sparsity of its final models in one setting (``sparsity.summary``
    over samples, then seeds; part ``<setting>/sparsity``) and ``sparse``, the criterion
    (``sparsity.sparse_enough``) on the mean terms_90_share."""
    t = result.part(f"{setting}/sparsity")
    out = sparsity.summary(sparsity.finals(t), by=["model"]).set_index("model")
    out["sparse"] = out["terms_90_share"].map(sparsity.sparse_enough)
    return attach(out, sources_of(t))


def sparsity_by_setting(result: StudyResult) -> pd.DataFrame:
    """``sparsity_of`` of every transfer setting the study result holds, stacked: one row per
    (setting, model); a setting without its sparsity part is left out."""
    frames, sources = [], []
    for setting, table in premise_inputs(result).items():
        frames.append(table.reset_index().assign(setting=setting))
        sources.append(sources_of(table))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return attach(out, combine(sources))


def sparsity_shown(result: StudyResult) -> pd.DataFrame:
    """``sparsity_by_setting`` as the knowledge page shows it: per setting and model, the
    final models' salient items per sample, the share of sum |I| they hold, the share of terms
    that hold 90% of it (mean over seeds, lowest-highest seed in brackets), the share of
    samples that meet the lab's conditions, and whether the model passes the criterion."""
    s = sparsity_by_setting(result)
    if s.empty:
        return s

    def text(column: str, pct: bool):
        f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.1f}")
        return [f"{f(r[column])} [{f(r[column + '_low'])}-{f(r[column + '_high'])}]"
                for _, r in s.iterrows()]
    out = pd.DataFrame({
        "setting": s["setting"], "model": s["model"],
        "salient items per sample": text("items", False),
        "share of sum |I| they hold": text("items_mass", True),
        "terms holding 90% of sum |I|": text("terms_90_share", True),
        "samples meeting the lab's conditions": text("meets", True),
        "sparse enough": s["sparse"].map({True: "yes", False: "no"})})
    return attach(out, sources_of(s))


def lab_filter_text(result: StudyResult, setting: str = "near") -> str:
    """How many of a setting's explained samples the lab's filter keeps ("k of m samples")."""
    t = result.part(f"{setting}/sparsity")
    return f"{len(sparsity.lab_kept(t))} of {t['sample'].nunique()} samples"


def premise_inputs(result: StudyResult) -> dict[str, pd.DataFrame]:
    """``sparsity_of`` per transfer setting whose sparsity part is in the study result."""
    out = {}
    for setting in TRANSFER_SETTINGS:
        try:
            out[setting] = sparsity_of(result, setting)
        except MissingResults:
            continue
    return out


def with_premise(table: pd.DataFrame, sparse: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``table`` (claims judged, one row per setting and claim) with a ``premise`` column and
    the verdict ``PREMISE_FAILS`` wherever a model the claim reads (``PREMISE_MODELS``) fails
    the sparsity criterion in that setting (``sparse``: ``sparsity_of`` per setting). Applied
    after the verdicts: ``premise`` is "holds", "fails: <model> <terms_90_share>, ...", "n/a"
    (a claim on accuracy), or "not measured" (no sparsity part for the setting)."""
    out = table.copy()
    premise = []
    for r in out.itertuples():
        models = PREMISE_MODELS.get(r.claim, ())
        s = sparse.get(r.setting)
        if not models:
            premise.append("n/a")
        elif s is None or r.verdict == NOT_RUN:
            premise.append("not measured")
        else:
            failing = [f"{m} {s.loc[m, 'terms_90_share']:.1%}" for m in models
                       if m in s.index and not s.loc[m, "sparse"]]
            premise.append("fails: " + ", ".join(failing) if failing else "holds")
    out["premise"] = premise
    fails = out["premise"].str.startswith("fails")
    out.loc[fails, "verdict"] = PREMISE_FAILS
    if "reproduces" in out:  # the headline count reads it: a failed premise reproduces nothing
        out.loc[fails, "reproduces"] = False
    return out


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a bare ``|`` would end the cell)."""
    return str(text).replace("|", "\\|")


def _null_cell(r, pct: bool) -> str:
    if not np.isfinite(r["null"]):
        return "null: n/a (one seed)"
    return f"null {_fmt(pct)(r['null'])}, effect {r['effect']}"


def _sesoi_text(c: Claim) -> str:
    return _effect_fmt(c.pct)(c.sesoi).lstrip("+")


def _premise_cell(r) -> str:
    """Which models are not sparse, under a verdict the premise overrode."""
    if r["verdict"] != PREMISE_FAILS:
        return ""
    return f"<br>({_cell(r['premise'])} of terms hold 90% of sum \\|I\\|)"


def as_markdown(table: pd.DataFrame) -> str:
    """The claims (rows) by setting (columns): our value, its null, the effect (value minus
    null) with its 95% interval, the verdict and the paper's range judged beyond the floor;
    then each claim's measure, null, SESOI and paper's range; then the rules."""
    settings = list(dict.fromkeys(table["setting"]))
    wide = {s: table[table["setting"] == s].set_index("claim") for s in settings}
    lines = ["| claim (paper) | " + " | ".join(settings) + " |",
             "|---" * (len(settings) + 1) + "|"]
    for c in CLAIMS:
        cells = []
        for s in settings:
            r = wide[s].loc[c.key]
            cells.append(f"{r['ours']}<br>{_null_cell(r, c.pct)}<br>**{r['verdict']}**; "
                         f"paper's range: {r['paper_verdict']}" + _premise_cell(r)
                         if r["verdict"] != NOT_RUN else r["ours"])
        lines.append(f"| {_cell(c.paper)} | " + " | ".join(cells) + " |")
    lines += ["", "| claim | our measure (per seed) | null | SESOI | beyond the floor | "
              "paper's range |", "|---|---|---|---|---|---|"]
    lines += [f"| {c.key} | {_cell(c.measure)} | {_cell(c.null_text)} | {_sesoi_text(c)} | "
              f"{_cell(c.floor_text)} | {_cell(c.rule.text)} |" for c in CLAIMS]
    lines += ["", VERDICT_TEXT + f" A claim on interactions reads **{PREMISE_FAILS}** where a "
              f"model it reads is not sparse: more than {sparsity.SPARSE_BOUND:.0%} of its "
              f"terms are needed for 90% of its sum \\|I\\| (book/method.md, section 3)."]
    return "\n".join(lines)


VERDICT_TEXT = (
    f"Verdicts, on the effect (our value minus its null) and its crossed-jackknife interval "
    f"(method, section 7): **{EXCEEDS}** (or **{BELOW}**) when its 95% interval lies above (below) "
    f"0; else **{EQUIVALENT}** when its 90% interval lies inside ± the SESOI; else "
    f"**{INCONCLUSIVE}**; **{UNDEFINED}** without an interval. An interval of width 0 decides "
    f"nothing. Holm's correction over each setting's claims decides. The paper's range is judged "
    f"on the measure beyond the floor: {RULE_TEXT}. A claim reproduces when its effect "
    f"{EXCEEDS} and the paper's range agrees.")


def folded(markdown: str, summary: str) -> str:
    """``markdown`` folded under a one-line ``summary`` that a reader opens (HTML details)."""
    return f"<details><summary>{summary}</summary>\n\n{markdown}\n\n</details>"


def decision_lines(table: pd.DataFrame) -> str:
    """One Markdown line per claim and setting: value, null, effect with its 95% interval,
    SESOI, verdict (and the paper's range), grouped by setting."""
    by_key = {c.key: c for c in CLAIMS}
    lines = []
    counts = verdict_counts(table)
    for s, g in table.groupby("setting", sort=False):
        count = NOT_RUN if counts[s] == NOT_RUN else f"{counts[s]} claims reproduce"
        lines.append(f"**{s}** ({count})")
        lines.append("")
        for r in g.itertuples():
            c = by_key[r.claim]
            if r.verdict == NOT_RUN:
                lines.append(f"- {r.claim.replace('_', ' ')}: {r.ours}")
                continue
            lines.append(f"- {r.claim.replace('_', ' ')}: {r.ours}; "
                         f"{_null_cell(r._asdict(), c.pct)}; SESOI {_sesoi_text(c)}: "
                         f"**{r.verdict}**; paper's range {r.paper_verdict}")
        lines.append("")
    return "\n".join(lines)


def abstract(table: pd.DataFrame) -> str:
    """The study's answer in a few sentences, from the verdicts alone: per setting that ran,
    how many claims reproduce, and which claims exceed their null, are equivalent to it, or
    stay inconclusive."""
    names = {c.key: c.key.replace("_", " ") for c in CLAIMS}
    counts = verdict_counts(table)
    sentences = []
    for s, g in table.groupby("setting", sort=False):
        if counts[s] == NOT_RUN:
            sentences.append(f"The {s} setting did not run here.")
            continue
        parts = []
        for word in (EXCEEDS, EQUIVALENT, BELOW, INCONCLUSIVE, UNDEFINED, PREMISE_FAILS):
            claims = [names[k] for k in g.loc[g["verdict"] == word, "claim"]]
            if claims:
                parts.append(f"{word}: {', '.join(claims)}")
        sentences.append(f"**{s}**: {counts[s]} claims reproduce ({'; '.join(parts)}).")
    return " ".join(sentences)


def verdict_counts(table: pd.DataFrame) -> dict[str, str]:
    """Per setting: "k of m" claims that reproduce (Holm-corrected verdict *exceeds the null*
    and the paper's range agrees), or "not run"."""
    out = {}
    for s, g in table.groupby("setting", sort=False):
        out[s] = NOT_RUN if (g["verdict"] == NOT_RUN).all() else \
            f"{int(g['reproduces'].sum())} of {len(g)}"
    return out


KNOWLEDGE_CLAIMS = tuple(c for c in CLAIMS if c.knowledge is not None)
# the paper's line for each knowledge claim (low, high), drawn on the specification curve
PAPER_LINES = {"share_discarded": (0.5, 0.5), "share_new": (0.5, 0.5),
               "learnable": LEARNABLE_RANGE, "discard_order": (0.0, 0.0)}


RESAMPLING = ("player_seed", "samples_per_class")  # draws of players and samples, not choices
ABOVE_OPTIMUM = {("optimizer", "sgd"), ("optimizer", "adam")}  # stop above the LP's optimum


def _spec_inputs(result: StudyResult):
    tables = result.part("specifications/knowledge")
    comparisons = result.part("specifications/comparisons")
    metrics = result.part("near/metrics")
    for spec, t in tables.groupby("spec", sort=False):
        yield spec, t, Inputs(metrics, t, comparisons[comparisons["spec"] == spec])


def specification_kind(parameter: str, value) -> str:
    """*resampling* for a new draw of players or samples (it belongs in the inference, not in
    the count of specifications), *stops above the optimum* for a gradient optimiser,
    *specification* otherwise."""
    if parameter in RESAMPLING:
        return "resampling"
    if (parameter, str(value)) in ABOVE_OPTIMUM:
        return "stops above the optimum"
    return "specification"


def specification_table(result: StudyResult) -> pd.DataFrame:
    """Every knowledge claim under every specification the study computed: the preset's own
    (``spec = "preset"``) and each point of its sensitivity grid that differs from it
    (``settings.sensitivity_grid``: tau, n, baseline, optimiser, empty_set, or_merge,
    players, samples, the rule that picks the optimum, AND-only), each judged against its null
    as on the findings page. One row per (spec, claim): ``judge_inputs``' columns plus
    ``spec``, ``parameter``, ``value`` and ``kind`` (``specification_kind``)."""
    frames = []
    for spec, t, x in _spec_inputs(result):
        judged = judge_inputs(x, spec, KNOWLEDGE_CLAIMS).rename(columns={"setting": "spec"})
        judged.insert(1, "parameter", t["parameter"].iloc[0])
        judged.insert(2, "value", t["grid_value"].iloc[0])
        judged.insert(3, "kind", specification_kind(t["parameter"].iloc[0],
                                                    t["grid_value"].iloc[0]))
        frames.append(judged)
    out = pd.concat(frames, ignore_index=True)
    out["paper_low"] = out["claim"].map(lambda k: PAPER_LINES[k][0])
    out["paper_high"] = out["claim"].map(lambda k: PAPER_LINES[k][1])
    return attach(out, sources_of(result.part("specifications/knowledge")))


def specification_effects(result: StudyResult) -> pd.DataFrame:
    """Each seed's effect of each knowledge claim under each specification: columns spec,
    kind, claim, seed, effect."""
    rows = []
    for spec, t, x in _spec_inputs(result):
        kind = specification_kind(t["parameter"].iloc[0], t["grid_value"].iloc[0])
        for c in KNOWLEDGE_CLAIMS:
            rows += [dict(spec=spec, kind=kind, claim=c.key, seed=s, effect=float(v))
                     for s, v in per_seed(c, x)["effect"].items()]
    return pd.DataFrame(rows, columns=["spec", "kind", "claim", "seed", "effect"])


def joint_tests(effects: pd.DataFrame) -> pd.DataFrame:
    """Per knowledge claim, the sign-flip test over every specification at once
    (``stats.sign_flip_test``) on ``specification_effects``' rows of kind *specification*
    (resampling rows and gradient optimisers left out): the median effect, the share of
    specifications that reject effect 0, each with its p-value, and a sentence."""
    rows = {}
    for c in KNOWLEDGE_CLAIMS:
        e = effects[(effects["claim"] == c.key) & (effects["kind"] == "specification")]
        wide = e.pivot(index="spec", columns="seed", values="effect")
        r = stats.sign_flip_test(wide.to_numpy(float))
        f = _effect_fmt(c.pct)
        r["text"] = (f"median effect {f(r['median'])} over {r['specifications']} "
                     f"specifications (p = {r['p_median']:.3g}), {r['share']:.0%} of them "
                     f"reject 0 (p = {r['p_share']:.3g}; {r['patterns']} sign patterns of "
                     f"{r['seeds']} seeds)" if r["patterns"] else "n/a (fewer than 2 seeds)")
        rows[c.key] = r
    return pd.DataFrame.from_dict(rows, orient="index")


def robust_items(result: StudyResult, setting: str = "near") -> pd.DataFrame:
    """Per model: the share of its final items (canonical rule) that are salient with the same
    sign under every rule of the optimal face (book/method.md, section 2): mean, sd and 95%
    interval over the seeds whose model has items (a share of no items is undefined). ``setting``: near (the study result's ``robust`` part, from the
    sensitivity grid's rule points), disjoint or far (their ``<setting>/robust`` parts)."""
    counts = result.part("robust" if setting == "near" else f"{setting}/robust")
    rows = []
    for model in MODELS:
        c = counts[counts["model"] == model]
        # a seed whose model has no item has no robust share (NaN, left out), as in face.shares
        e = Estimate.of((c["robust"] / c["items"].where(c["items"] > 0)).reset_index(drop=True))
        rows.append(dict(model=model, rules=int(c["rules"].iloc[0]), mean=e.mean, sd=e.sd,
                         ci_low=e.low, ci_high=e.high, n_seeds=e.n_seeds,
                         robust=e.text(pct=True)))
    return attach(pd.DataFrame(rows).set_index("model"), sources_of(counts))


def robust_by_setting(result: StudyResult) -> pd.DataFrame:
    """``robust_items`` of every transfer setting the study result holds, one column per setting
    (the share's text) and one row per model; a setting that did not run is left out."""
    columns, sources = {}, []
    for setting in TRANSFER_SETTINGS:
        try:
            table = robust_items(result, setting)
        except MissingResults:
            continue
        columns[setting] = table["robust"]
        sources.append(sources_of(table))
    out = pd.DataFrame(columns)
    out.index.name = "model"
    return attach(out, combine(sources))


def agreement(spec: pd.DataFrame) -> pd.DataFrame:
    """Per claim, over the specifications of kind *specification*: how many there are, and the
    share whose claim reproduces (``reproduces``), whose effect is equivalent to the null, and
    that are inconclusive."""
    if "kind" in spec:
        spec = spec[spec["kind"] == "specification"]
    g = spec.groupby("claim", sort=False)
    out = pd.DataFrame({"specifications": g.size(),
                        "agree": g["reproduces"].mean(),
                        "equivalent": g["verdict"].apply(lambda v: (v == EQUIVALENT).mean()),
                        "inconclusive": g["verdict"].apply(
                            lambda v: (v == INCONCLUSIVE).mean())})
    out["text"] = [f"{r.agree:.0%} of {r.specifications} reproduce the paper, "
                   f"{r.equivalent:.0%} are equivalent to their null, {r.inconclusive:.0%} are "
                   f"inconclusive" for r in out.itertuples()]
    return out


def by_verdict(table: pd.DataFrame) -> dict[str, str]:
    """Per setting, the claims grouped by verdict in one sentence (or "not run")."""
    out = {}
    for s, g in table.groupby("setting", sort=False):
        if (g["verdict"] == NOT_RUN).all():
            out[s] = NOT_RUN
            continue
        parts = [f"*{v}*: " + ", ".join(g.loc[g["verdict"] == v, "claim"].str.replace("_", " "))
                 for v in VERDICTS if (g["verdict"] == v).any()]
        out[s] = "; ".join(parts)
    return out


def movement(table: pd.DataFrame) -> dict[str, str]:
    """Per claim, one sentence on how our value moves from the near setting to the others:
    higher / lower when the other setting's mean lies outside the near setting's 95% interval
    (outside its value, with one seed), about the same otherwise."""
    out = {}
    by = table.set_index(["setting", "claim"])
    for c in CLAIMS:
        near = by.loc[("near", c.key)]
        parts = []
        for other in [s for s in dict.fromkeys(table["setting"]) if s != "near"]:
            r = by.loc[(other, c.key)]
            if r["verdict"] == NOT_RUN:
                parts.append(f"{other}: not run")
                continue
            low, high = (near["ci_low"], near["ci_high"]) if np.isfinite(near["ci_low"]) \
                else (near["mean"], near["mean"])
            word = ("higher" if r["mean"] > high else "lower" if r["mean"] < low
                    else "about the same")
            parts.append(f"{other}: {word} ({r['ours']}, verdict {r['verdict']})")
        out[c.key] = f"near {near['ours']} (verdict {near['verdict']}); " + "; ".join(parts)
    return out


def narrative(table: pd.DataFrame, result: StudyResult | None = None) -> dict[str, str]:
    """The texts the findings page glues into its prose, by key: ``<setting>-<claim>`` (our
    value), ``<setting>-<claim>-verdict``, ``<setting>-<claim>-effect``, ``count-<setting>``
    (claims that reproduce), ``move-<claim>`` (``movement``), ``disjoint-setting`` and
    ``far-setting`` (what they are)."""
    out = {}
    for r in table.itertuples():
        out[f"{r.setting}-{r.claim}"] = r.ours
        out[f"{r.setting}-{r.claim}-verdict"] = r.verdict
        out[f"{r.setting}-{r.claim}-effect"] = r.effect or "n/a"
    for setting, text in verdict_counts(table).items():
        out[f"count-{setting}"] = text
    for setting, text in by_verdict(table).items():
        out[f"verdicts-{setting}"] = text
    for claim, text in movement(table).items():
        out[f"move-{claim}"] = text
    out["disjoint-setting"] = " → ".join(f"`{DISJOINT[k]}`" for k in ("source", "target"))
    preset = (result.params if result is not None else {}).get("preset", "default")
    out["far-setting"] = f"`{FAR_PRESETS.get(preset, FAR_PRESET)}`"
    return out


IDENTIFIED_CLAIMS = {"share_discarded": "share discarded", "share_new": "share new",
                     "ratio_learnable": "learnable share"}


def identified_items(result: StudyResult) -> pd.DataFrame:
    """Per model: the share of its final items (the extracted rule's) that are identified,
    salient with one sign at every optimum of the LP (``measures.identified``; book/method.md,
    section 2): mean, sd and 95% interval over seeds, from the study result's ``identified``
    part (near setting). Without rows where the study did not bound its faces (not the exact
    AND-OR extraction, or n above ``identified.MAX_N``)."""
    t = result.part("identified")
    rows = []
    for model in MODELS:
        c = t[t["model"] == model].pivot_table(index="seed", columns="measure", values="value")
        if c.empty:
            continue
        e = Estimate.of((c["identified"] / c["items"].clip(lower=1)).reset_index(drop=True))
        rows.append(dict(model=model, items=float(c["items"].mean()),
                         identified_items=float(c["identified"].mean()), mean=e.mean, sd=e.sd,
                         ci_low=e.low, ci_high=e.high, n_seeds=e.n_seeds,
                         identified=e.text(pct=True)))
    columns = ["model", "items", "identified_items", "mean", "sd", "ci_low", "ci_high",
               "n_seeds", "identified"]
    return attach(pd.DataFrame(rows, columns=columns).set_index("model"), sources_of(t))


def identified_claims(result: StudyResult) -> pd.DataFrame:
    """Per headline claim (share discarded, share new, learnable share): its value read on all
    salient items (the preset's specification) beside its value read on identified items only,
    each the mean over seeds of the per-seed mean over samples, with sd and 95% interval."""
    t = result.part("identified")
    table = result.part("specifications/knowledge")
    spec = table[(table["spec"] == "preset") & (table["order"] == knowledge.ALL_ORDERS)]
    rows = []
    for measure, name in IDENTIFIED_CLAIMS.items():
        ours = t[t["measure"] == measure].set_index("seed")["value"]
        everything = spec[spec["measure"] == measure].groupby("seed")["value"].mean()
        e_all, e_id = Estimate.of(everything.reset_index(drop=True)), Estimate.of(
            ours.reset_index(drop=True))
        rows.append(dict(claim=name, measure=measure, all_items=e_all.text(pct=True),
                         identified_items=e_id.text(pct=True), all_mean=e_all.mean,
                         identified_mean=e_id.mean, n_seeds=e_id.n_seeds))
    return attach(pd.DataFrame(rows).set_index("claim"), combine([sources_of(t),
                                                                   sources_of(table)]))


def and_only_claims(spec: pd.DataFrame) -> pd.DataFrame:
    """Each headline knowledge claim read two ways side by side: AND-OR (the preset's own
    specification) and AND-only (``mode=and``: Harsanyi dividends, unique, no optimal face to
    choose from), each with our value over seeds, its effect over its null and its verdict, from
    ``specification_table``'s ``spec``. Empty where the grid has no ``mode=and`` point."""
    own = spec[spec["spec"] == "preset"].set_index("claim")
    and_ = spec[(spec["parameter"] == "mode") & (spec["value"] == "and")].set_index("claim")
    if own["measure"].empty or and_.empty:
        return attach(pd.DataFrame(), sources_of(spec))
    out = pd.DataFrame({"paper": own["paper"], "and_or": own["ours"],
                        "and_or_effect": own["effect"], "and_or_verdict": own["verdict"]})
    for column, source in (("and_only", "ours"), ("and_only_effect", "effect"),
                           ("and_only_verdict", "verdict")):
        out[column] = and_[source].reindex(out.index)
    return attach(out, sources_of(spec))
