"""The paper's claims as data, judged on our results against their nulls.

Each claim is one ``Claim`` record: the paper's statement, our measure (a number per seed), its
null (what the same measure gives between models that should not differ, ``nulls``; 0 for the
claims that compare two runs of one seed), the rule that turns the mean and 95% interval over
seeds into a verdict, and the paper's range when it gives one. The effect is our value minus
its null, per seed; a verdict of "yes" needs the effect's interval above 0 as well as the
paper's threshold, and where the effect's interval contains 0 the verdict is
``INDISTINCT``: the data cannot tell the claim from its null. ``judge(params)`` reads one
setting's results and returns one row per claim; ``transfer_table(params)`` does it for the
near, disjoint and far transfer settings side by side. Reads the study result only
(``study_result``): the verdicts are functions of its tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from whypretrain.measures import curves, knowledge
from whypretrain.errors import MissingResults
from whypretrain.provenance import attach, combine, sources_of
from whypretrain.study.seed_results import MODELS
from whypretrain.study.settings import DISJOINT, FAR_PRESET, FAR_PRESETS, TRANSFER_SETTINGS
from whypretrain.measures.stats import Estimate
from whypretrain.study.catalogue import StudyResult

LEARNABLE_RANGE = (0.13, 0.45)  # the paper's range of the learnable share (Figure 3)
ACCURACY_FRACTION = curves.ACCURACY_FRACTION
REACH_LEVEL = curves.REACH_LEVEL
NOT_RUN = "not run"
INDISTINCT = "cannot tell from null"
VERDICTS = ("yes", "partly", "no", INDISTINCT, NOT_RUN)


# --- rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    text: str
    judge: Callable[[Estimate], str]


def above(threshold: float, pct: bool = False) -> Rule:
    """yes: the 95% interval lies above ``threshold``; no: it lies at or below; partly: it
    contains it. With one seed (no interval) the mean decides."""
    t = f"{threshold:.0%}" if pct else f"{threshold:g}"

    def judge(e: Estimate) -> str:
        if not np.isfinite(e.mean):
            return "no"
        if not e.has_interval:
            return "yes" if e.mean > threshold else "no"
        if e.low > threshold:
            return "yes"
        if e.high <= threshold:
            return "no"
        return "partly"
    return Rule(f"yes when the 95% interval over seeds lies above {t}, no when it lies at or "
                f"below {t}, partly when it contains {t} (one seed: the mean decides)", judge)


def inside(low: float, high: float) -> Rule:
    """yes: the mean lies in [low, high]; partly: only the 95% interval overlaps it; no: not."""
    def judge(e: Estimate) -> str:
        if not np.isfinite(e.mean):
            return "no"
        if low <= e.mean <= high:
            return "yes"
        if e.has_interval and e.low <= high and e.high >= low:
            return "partly"
        return "no"
    return Rule(f"yes when the mean lies in {low:.0%}-{high:.0%}, partly when only its 95% "
                f"interval overlaps that range, no otherwise", judge)


# --- the measures (one number per seed) ------------------------------------------------------

@dataclass
class Inputs:
    """What the claims of one setting read: training metrics, the knowledge table and the
    cross-seed comparisons (``nulls.comparison_table``; empty with one seed)."""
    metrics: pd.DataFrame
    table: pd.DataFrame
    comparisons: pd.DataFrame | None = None
    replicates: pd.DataFrame | None = None


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
    c = curves.convergence_measures(x.table, REACH_LEVEL)
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
    level, and the ``weighted`` measure (no tau) with its own null comparison."""
    items: Callable[[pd.DataFrame], pd.Series]
    null: str
    reference: str
    chance: Callable[[pd.DataFrame], pd.Series]
    weighted: Callable[[pd.DataFrame], pd.Series]
    weighted_null: str


@dataclass(frozen=True)
class Claim:
    key: str
    paper: str            # the paper's statement
    measure: str          # our measure, one number per seed
    value: Callable[[Inputs], pd.Series]
    rule: Rule
    pct: bool = False     # shown as a percentage
    knowledge: Knowledge | None = None  # None: the null is 0 (two runs of one seed compared)
    null_text: str = "0 (two runs of the same seed compared)"


def _knowledge_claim(key: str, paper: str, measure: str, rule: Rule, pct: bool,
                     k: Knowledge, null_text: str) -> Claim:
    return Claim(key, paper, measure, lambda x: k.items(x.table), rule, pct, k, null_text)


REPLICATION = ("a fine-tuned model of another seed: the share of a fine-tuned model's items "
               "that it lacks (two runs of one recipe)")
FIGURE4 = "Fine-tuning reaches its final knowledge faster and more directly (Figure 4)"
CLAIMS: tuple[Claim, ...] = (
    Claim("accuracy_gap", "Fine-tuned models beat models trained from scratch on the target "
          "task (the paper's premise)", "final test accuracy, fine-tuned minus scratch",
          accuracy_gap, above(0.0)),
    Claim("accuracy_speed", "Fine-tuning converges in fewer epochs",
          f"epochs to {ACCURACY_FRACTION:.0%} of the final test accuracy, scratch minus "
          "fine-tuned", accuracy_speed, above(0.0)),
    _knowledge_claim(
        "share_discarded", "Most pre-trained knowledge is discarded by fine-tuning (only a "
        "small amount is preserved)", "share of K_probe (the paper's K_pretrain) discarded",
        above(0.5, pct=True), True,
        Knowledge(share_of("share_discarded"), "replication", "unrelated",
                  share_of("chance_share_discarded"), share_of("weighted_share_discarded"),
                  "replication"), REPLICATION),
    _knowledge_claim(
        "share_new", "Fine-tuning learns much new knowledge (Figure 2)",
        "share of K_finetune that is new", above(0.5, pct=True), True,
        Knowledge(share_of("share_new"), "replication", "unrelated",
                  share_of("chance_share_new"), share_of("weighted_share_new"), "replication"),
        REPLICATION),
    _knowledge_claim(
        "learnable", f"Only {LEARNABLE_RANGE[0]:.0%}-{LEARNABLE_RANGE[1]:.0%} of the "
        "preserved knowledge is learnable from scratch (Figure 3)",
        "share of K_preserve the scratch model also has", inside(*LEARNABLE_RANGE), True,
        Knowledge(share_of("ratio_learnable"), "chance", "scratch_other",
                  share_of("chance_ratio_learnable"), share_of("weighted_ratio_learnable"),
                  "scratch_other"),
        "chance: the scratch model's items on random subsets of the same kind and order"),
    _knowledge_claim(
        "discard_order", "Discarded knowledge is mostly high-order",
        "mean order |S| of discarded minus preserved items", above(0.0), False,
        Knowledge(order_gap_of("count_discard", "count_preserve"), "replication", "unrelated",
                  order_gap_of("chance_count_discard", "chance_count_preserve"),
                  order_gap_of("weighted_discard", "weighted_preserve"), "replication"),
        "a fine-tuned model of another seed: the same gap between the items of a fine-tuned "
        "model it lacks and those it shares"),
    Claim("convergence_area", FIGURE4,
          "area under the weighted-Jaccard curve to the run's own final model (epochs before "
          "the last), fine-tuned minus scratch", area_gap, above(0.0)),
    Claim("convergence_reach", FIGURE4,
          f"first epoch at weighted Jaccard >= {REACH_LEVEL:g} to the final fine-tuned model "
          "(T + 1 if never), scratch minus fine-tuned", reach_gap, above(0.0)),
)
CLAIM_KEYS = tuple(c.key for c in CLAIMS)


def per_comparison(x: Inputs, name: str, measure: Callable[[pd.DataFrame], pd.Series]
                   ) -> pd.Series:
    """Per seed s: ``measure`` on comparison ``name`` (pooled over the partners s' != s);
    empty when there is no other seed."""
    c = x.comparisons
    if c is None or c.empty:
        return pd.Series(dtype=float)
    return measure(c[c["comparison"] == name])


def null_of(claim: Claim, x: Inputs, weighted: bool = False) -> pd.Series:
    """Per seed: the claim's null (``Knowledge``), or 0 for the claims without one."""
    k = claim.knowledge
    if k is None:
        return pd.Series(0.0, index=claim.value(x).index)
    name = k.weighted_null if weighted else k.null
    if name == "chance":
        return k.chance(x.table)
    return per_comparison(x, name, k.weighted if weighted else k.items)


def effect_of(value: pd.Series, null: pd.Series) -> pd.Series:
    """Per seed: value minus null, on the seeds that have both."""
    both = value.index.intersection(null.index)
    return (value[both] - null[both]).dropna()


MAX_SEEDS = 100  # seeds_to_decide looks no further


def seeds_to_decide(effect: Estimate) -> float:
    """The fewest seeds whose 95% interval would exclude 0 if the effect's mean and sd over
    seeds stayed what they are now: the smallest k >= 2 with t(k - 1) sd / sqrt(k) < |mean|.
    NaN without an sd (one seed) or when the mean is 0; ``MAX_SEEDS + 1`` beyond that."""
    from scipy import stats
    if not (np.isfinite(effect.sd) and np.isfinite(effect.mean)) or effect.mean == 0:
        return np.nan
    for k in range(2, MAX_SEEDS + 1):
        if stats.t.ppf(0.975, k - 1) * effect.sd / np.sqrt(k) < abs(effect.mean):
            return float(k)
    return float(MAX_SEEDS + 1)


def verdict(claim: Claim, value: Estimate, effect: Estimate) -> str:
    """The claim's rule on ``value``, once the effect (value minus null) is on the claimed side
    (above 0): ``INDISTINCT`` where its 95% interval contains 0, "no" where it lies below.
    Without an interval (one seed) the effect's sign decides; without a null (no other seed
    to compare with) the rule alone."""
    if not np.isfinite(value.mean):
        return "no"
    if effect.has_interval:
        if effect.low <= 0.0 <= effect.high:
            return INDISTINCT
        if effect.high < 0.0:
            return "no"
    elif np.isfinite(effect.mean) and effect.mean <= 0.0:
        return "no"
    return claim.rule.judge(value)


def judge_inputs(x: Inputs, setting: str = "near", claims: tuple[Claim, ...] = CLAIMS
                 ) -> pd.DataFrame:
    """One row per claim: setting, claim, paper, measure, rule, null_text; the value's mean,
    sd, ci_low, ci_high, n_seeds and ``ours`` (formatted); the null's mean (``null``), the
    effect's (``effect_mean``, ``effect_low``, ``effect_high``, ``effect``: formatted), the
    reference comparison and the chance level (means); the weighted measure (``weighted``,
    ``weighted_null``, ``weighted_effect*``); ``seeds_to_decide``; and the verdict."""
    rows = []
    for c in claims:
        value = c.value(x)
        e = Estimate.of(value)
        null = null_of(c, x)
        effect = Estimate.of(effect_of(value, null))
        row = dict(setting=setting, claim=c.key, paper=c.paper, measure=c.measure,
                   rule=c.rule.text, null_text=c.null_text, mean=e.mean, sd=e.sd,
                   ci_low=e.low, ci_high=e.high, n_seeds=e.n_seeds, ours=e.text(c.pct),
                   null=float(null.mean()) if len(null) else np.nan,
                   effect_mean=effect.mean, effect_low=effect.low, effect_high=effect.high,
                   effect=effect.text(c.pct), seeds_to_decide=seeds_to_decide(effect),
                   reference=np.nan, chance=np.nan,
                   weighted=np.nan, weighted_null=np.nan, weighted_effect_mean=np.nan,
                   weighted_effect_low=np.nan, weighted_effect_high=np.nan,
                   weighted_effect="", verdict=verdict(c, e, effect))
        k = c.knowledge
        if k is not None:
            reference = per_comparison(x, k.reference, k.items)
            w_value, w_null = k.weighted(x.table), null_of(c, x, weighted=True)
            w_effect = Estimate.of(effect_of(w_value, w_null))
            row.update(reference=float(reference.mean()) if len(reference) else np.nan,
                       chance=float(k.chance(x.table).mean()),
                       weighted=float(w_value.mean()),
                       weighted_null=float(w_null.mean()) if len(w_null) else np.nan,
                       weighted_effect_mean=w_effect.mean, weighted_effect_low=w_effect.low,
                       weighted_effect_high=w_effect.high,
                       weighted_effect=w_effect.text(c.pct))
        rows.append(row)
    return pd.DataFrame(rows)


def judge(result: StudyResult, setting: str = "near") -> pd.DataFrame:
    """``judge_inputs`` on one setting of the study result."""
    x = inputs(result, setting)
    return attach(judge_inputs(x, setting), sources_of(x.table))


NOISE_FLOOR = {  # key -> (row label, where its share of lacking items is read)
    "claim": ("probe → fine-tuned, same seed (the claim)", "table", "share_discarded"),
    "replication": ("fine-tuned → fine-tuned of another seed (replication)", "replication",
                    "share_discarded"),
    "unrelated": ("probe → fine-tuned of another seed (unrelated pre-training)", "unrelated",
                  "share_discarded"),
    "chance": ("probe → fine-tuned's items on random subsets (chance)", "table",
               "chance_share_discarded"),
}


def noise_floor(x: Inputs, sample: int | None = None) -> pd.DataFrame:
    """The share of one model's items that another lacks, for the claim's pair and for pairs
    that should not differ (``NOISE_FLOOR``): mean, sd and 95% interval over seeds (over
    samples, then seeds; one ``sample`` only when given). Indexed by the keys of
    ``NOISE_FLOOR``."""
    rows = {}
    for key, (label, where, measure) in NOISE_FLOOR.items():
        t = x.table if where == "table" else x.comparisons[x.comparisons["comparison"] == where]
        if sample is not None:
            t = t[t["sample"] == sample]
        e = Estimate.of(_final_measure(t, measure))
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
    x = Inputs(result.part(f"{setting}/metrics"), result.part(f"{setting}/knowledge"),
               result.part(f"{setting}/comparisons"), result.part(f"{setting}/replicates"))
    attach(x.table, sources_of(x.metrics) + sources_of(x.table))
    return x


def not_run(setting: str, command: str) -> pd.DataFrame:
    empty = dict(mean=np.nan, sd=np.nan, ci_low=np.nan, ci_high=np.nan, n_seeds=0, null=np.nan,
                 effect_mean=np.nan, effect_low=np.nan, effect_high=np.nan, effect="",
                 seeds_to_decide=np.nan,
                 reference=np.nan, chance=np.nan, weighted=np.nan, weighted_null=np.nan,
                 weighted_effect_mean=np.nan, weighted_effect_low=np.nan,
                 weighted_effect_high=np.nan, weighted_effect="")
    return pd.DataFrame([dict(setting=setting, claim=c.key, paper=c.paper, measure=c.measure,
                              rule=c.rule.text, null_text=c.null_text, **empty,
                              ours=f"not run: `{command}`", verdict=NOT_RUN) for c in CLAIMS])


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
    return attach(pd.concat(frames, ignore_index=True), combine(sources))


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a bare ``|`` would end the cell)."""
    return str(text).replace("|", "\\|")


def _null_cell(r, pct: bool) -> str:
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.2f}")
    if not np.isfinite(r["null"]):
        return "null: n/a (one seed)"
    return f"null {f(r['null'])}, effect {r['effect']}"


def as_markdown(table: pd.DataFrame) -> str:
    """The claims (rows) by setting (columns): our value, its null and the effect (value minus
    null) with its 95% interval, and the verdict; then each claim's measure, null and rule."""
    settings = list(dict.fromkeys(table["setting"]))
    wide = {s: table[table["setting"] == s].set_index("claim") for s in settings}
    lines = ["| claim (paper) | " + " | ".join(settings) + " |",
             "|---" * (len(settings) + 1) + "|"]
    for c in CLAIMS:
        cells = []
        for s in settings:
            r = wide[s].loc[c.key]
            cells.append(f"{r['ours']}<br>{_null_cell(r, c.pct)}<br>**{r['verdict']}**"
                         if r["verdict"] != NOT_RUN else r["ours"])
        lines.append(f"| {_cell(c.paper)} | " + " | ".join(cells) + " |")
    lines += ["", "| claim | our measure (per seed) | null | verdict rule |",
              "|---|---|---|---|"]
    lines += [f"| {c.key} | {_cell(c.measure)} | {_cell(c.null_text)} | {_cell(c.rule.text)}"
              f" |" for c in CLAIMS]
    lines += ["", f"Every rule applies once the effect (our value minus its null, per seed) is "
              f"on the claimed side: where the effect's 95% interval over seeds contains 0 the "
              f"verdict is **{INDISTINCT}**, where it lies below 0 it is **no**."]
    return "\n".join(lines)


def verdict_counts(table: pd.DataFrame) -> dict[str, str]:
    """Per setting: "k of m claims reproduce" (or "not run")."""
    out = {}
    for s, g in table.groupby("setting", sort=False):
        out[s] = NOT_RUN if (g["verdict"] == NOT_RUN).all() else \
            f"{(g['verdict'] == 'yes').sum()} of {len(g)}"
    return out


KNOWLEDGE_CLAIMS = tuple(c for c in CLAIMS if c.knowledge is not None)
# the paper's line for each knowledge claim (low, high), drawn on the specification curve
PAPER_LINES = {"share_discarded": (0.5, 0.5), "share_new": (0.5, 0.5),
               "learnable": LEARNABLE_RANGE, "discard_order": (0.0, 0.0)}


def specification_table(result: StudyResult) -> pd.DataFrame:
    """Every knowledge claim under every specification the study computed: the preset's own
    (``spec = "preset"``) and each point of its sensitivity grid that differs from it
    (``specifications.sensitivity_grid``: tau, n, baseline, optimiser, empty_set, or_merge,
    players, samples, the rule that picks the optimum, AND-only), each judged against its null
    as on the findings page. One row per (spec, claim): ``judge_inputs``' columns plus
    ``spec``, ``parameter`` and ``value``."""
    tables = result.part("specifications/knowledge")
    comparisons = result.part("specifications/comparisons")
    metrics = result.part("near/metrics")
    frames = []
    for spec, t in tables.groupby("spec", sort=False):
        x = Inputs(metrics, t, comparisons[comparisons["spec"] == spec])
        judged = judge_inputs(x, spec, KNOWLEDGE_CLAIMS).rename(columns={"setting": "spec"})
        judged.insert(1, "parameter", t["parameter"].iloc[0])
        judged.insert(2, "value", t["grid_value"].iloc[0])
        frames.append(judged)
    out = pd.concat(frames, ignore_index=True)
    out["paper_low"] = out["claim"].map(lambda k: PAPER_LINES[k][0])
    out["paper_high"] = out["claim"].map(lambda k: PAPER_LINES[k][1])
    return attach(out, sources_of(tables))


def robust_items(result: StudyResult, setting: str = "near") -> pd.DataFrame:
    """Per model: the share of its final items (canonical rule) that are salient with the same
    sign under every rule of the optimal face (book/method.md, section 2): mean, sd and 95%
    interval over seeds. ``setting``: near (the study result's ``robust`` part, from the
    sensitivity grid's rule points), disjoint or far (their ``<setting>/robust`` parts)."""
    counts = result.part("robust" if setting == "near" else f"{setting}/robust")
    rows = []
    for model in MODELS:
        c = counts[counts["model"] == model]
        e = Estimate.of((c["robust"] / c["items"].clip(lower=1)).reset_index(drop=True))
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
    """Per claim: how many specifications there are, and the share whose verdict agrees with
    the paper ("yes") or cannot tell the claim from its null."""
    g = spec.groupby("claim", sort=False)
    out = pd.DataFrame({"specifications": g.size(),
                        "agree": g["verdict"].apply(lambda v: (v == "yes").mean()),
                        "cannot_tell": g["verdict"].apply(lambda v: (v == INDISTINCT).mean())})
    out["text"] = [f"{r.agree:.0%} of {r.specifications} agree with the paper, "
                   f"{r.cannot_tell:.0%} cannot be told from their null"
                   for r in out.itertuples()]
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
