"""The study: computing it, into one study result (``study_result``) that everything else reads.

``compute(params, groups)`` trains and analyses what is missing for each group of the study
result (``study_result.GROUPS``: the preset itself, ``near``; the transfer settings
``disjoint`` and ``far``; the ``sensitivity`` grid of specifications), reuses what is on disk,
and writes the group's tables with their provenance. It returns the study result, from which
the findings, the charts and the notebooks select (``StudyResult.part``); ``read(params)``
returns it without computing anything. The far setting's games are computed by ``compute_all``
(``whypretrain study``) and otherwise only when asked (``far=True``, or ``whypretrain analyze``
on its preset); a far setting that cannot run here (its weights or data missing) is left out
with a note that says how to make it.

Callers: the CLI (``whypretrain analyze`` = ``compute(params)``, ``whypretrain study`` =
``compute_all``), and the one visible call at the top of each notebook.
"""
from __future__ import annotations

import pandas as pd
import torch

from whypretrain.measures import curves, face, identified, knowledge, nulls, sparsity, stats
from whypretrain.train import data
from whypretrain import distributed, presets
from whypretrain.engine import interactions
from whypretrain.study import extraction, games, seed_results
from whypretrain.errors import MissingResults, UserError
from whypretrain.provenance import Sources, combine, command
from whypretrain.study.settings import (
    DISJOINT, FAR_PRESET, TABLE_ONLY, TRANSFER_SETTINGS, far_command, finals_only_seeds,
    game_counts, results_key, sensitivity_grid, sensitivity_settings, transfer_settings,
    unavailable)
from whypretrain.study.catalogue import DERIVED_FROM, GROUPS, StudyResult, write, write_note

ALL_GROUPS = tuple(GROUPS)
COMPUTED = tuple(g for g in GROUPS if g not in DERIVED_FROM)  # from results folders


def _progress(progress: bool | None) -> bool:
    """Progress bars unless asked otherwise; not in the book's kernels (the runner computed
    everything before executing the notebooks, and a bar is no content for a reader), and not
    on a rank other than 0 under torchrun."""
    if progress is None:
        progress = not distributed.in_book()
    return progress and distributed.is_main()


def read(params: dict) -> StudyResult:
    """The study result of ``params`` as it is on disk; computes nothing."""
    return StudyResult.read(params)


def compute(params: dict, groups: tuple[str, ...] = ("near",), progress: bool | None = None,
            far: bool = False) -> StudyResult:
    """Every group in ``groups`` of the study result of ``params``: each one not current on
    disk is computed (training and analysing what is missing, reusing every run and result)
    and written. ``far``: compute the far setting's games when they are missing (else that
    group is written only when its results exist, with a note otherwise)."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"groups of a study result: {', '.join(GROUPS)}; not {sorted(unknown)}")
    progress = _progress(progress)
    result = read(params)
    for group in COMPUTED:  # in this order: the sensitivity grid reads the preset's results
        if group in groups and not result.current(group):
            result = _GROUP_STEPS[group](params, progress, far)
    return result


def compute_all(params: dict, progress: bool | None = None, far: bool = True) -> StudyResult:
    """Everything the book reads, the far setting's games included (unless ``far=False``):
    what ``whypretrain study`` computes before it executes the notebooks."""
    return compute(params, ALL_GROUPS, progress, far)


# --------------------------------------------------------------------------------------------
# one setting: its seeds' results and tables
# --------------------------------------------------------------------------------------------
def _seeds(setting: dict, progress: bool, ds: data.Datasets, make: bool = True,
           finals_only: bool = False) -> list[seed_results.SeedResults]:
    """The results of every seed of ``setting``, in order: the first ``curve_seeds`` at every
    analysed checkpoint, the others at their final models (``finals_only_seeds``), all of them
    at their final models with ``finals_only``."""
    by_seed = {}
    for only in (False, True):
        seeds = [s for s, final in finals_only_seeds(setting) if (final or finals_only) == only]
        if seeds and make:
            by_seed.update(zip(seeds, seed_results.compute_seeds(setting, seeds, progress,
                                                                 datasets=ds, finals_only=only)))
        elif seeds:
            by_seed.update((s, seed_results.load(setting, s, ds, only)) for s in seeds)
    return [by_seed[s] for s in setting["seeds"]]


def _knowledge(loaded: list[seed_results.SeedResults], tau: float, empty_set: str) -> pd.DataFrame:
    for r in loaded:
        r.write_table(tau, empty_set)
    return pd.concat([r.table(tau, empty_set) for r in loaded], ignore_index=True)


def training_table(params: dict, ds: data.Datasets) -> tuple[pd.DataFrame, Sources]:
    """Per-epoch metrics of the three target runs of every seed: columns ``seed, model, epoch,
    train_loss, train_acc, test_loss, test_acc`` (model ``probe``: the linear probe)."""
    frames, hashes = [], []
    for seed in params["seeds"]:
        runs = seed_results.find_runs(params, seed, ds)
        for kind in games.MODELS:
            m = runs[kind].metrics.copy()
            m.insert(0, "model", kind)
            m.insert(0, "seed", seed)
            frames.append(m)
        hashes += [r.path.name for r in runs.values()]
    return (pd.concat(frames, ignore_index=True),
            Sources(runs=tuple(hashes), commands=(command("train", params),)))


def _setting_parts(name: str, setting: dict, progress: bool, make: bool = True
                   ) -> tuple[dict[str, pd.DataFrame], dict[str, Sources], list] | None:
    """The ``SETTING_PARTS`` of one transfer setting (``name``), and its loaded results; None
    on a rank other than 0 under torchrun (every rank computes the seeds' results, rank 0
    alone the tables of the study result)."""
    ds = data.load_datasets(setting)
    loaded = _seeds(setting, progress, ds, make)
    if not distributed.is_main():
        return None
    tau, empty_set = setting["tau"], setting["empty_set"]
    metrics, metric_sources = training_table(setting, ds)
    seeds = combine(r.sources() for r in loaded)
    kept = kept_samples(loaded, setting)
    parts = {f"{name}/metrics": metrics,
             f"{name}/knowledge": kept(_knowledge(loaded, tau, empty_set)),
             f"{name}/comparisons": kept(nulls.comparison_table(loaded, tau, empty_set)),
             f"{name}/replicates": kept(nulls.replicate_table(loaded, tau, empty_set)),
             f"{name}/crossed": nulls.crossed_table(loaded, empty_set),
             f"{name}/sparsity": sparsity_table(loaded, tau, empty_set)}
    sources = {p: seeds for p in parts}
    sources[f"{name}/metrics"] = metric_sources
    return parts, sources, loaded


# --------------------------------------------------------------------------------------------
# the groups
# --------------------------------------------------------------------------------------------
def near_group(params: dict, progress: bool, far: bool) -> StudyResult:
    made = _setting_parts("near", params, progress)
    if made is None:
        return read(params)
    parts, sources, loaded = made
    table, metrics = parts["near/knowledge"], parts["near/metrics"]
    first = loaded[0]
    solves = pd.concat([r.extraction().assign(seed=r.seed) for r in loaded],
                       ignore_index=True)
    learnable = table[(table["measure"] == "ratio_learnable")
                      & (table["order"] == knowledge.ALL_ORDERS)]
    parts.update({
        "near/summary": stats.with_text(stats.summarize(table), _is_share),
        "near/training": curves.training_summary(metrics),
        "near/accuracy": stats.with_text(curves.accuracy_summary(metrics),
                                         lambda r: r["measure"] == "final test accuracy"),
        "near/learnable": stats.aggregate(learnable, by=["seed"]),
        "near/convergence": stats.with_text(stats.over_seeds(
            curves.convergence_measures(table), by=["model", "measure"])),
        "near/extraction": solves,
        "near/engine": engine_check(first),
        "near/sgd": extraction.compare_with_sgd(first),
        "near/ranks": strength_by_rank(first),
        "near/items": salient_item_list(first),
    })
    seeds = sources["near/knowledge"]
    for p in ("near/summary", "near/learnable", "near/convergence", "near/extraction"):
        sources[p] = seeds
    sources["near/accuracy"] = sources["near/training"] = sources["near/metrics"]
    for p in ("near/engine", "near/sgd", "near/ranks", "near/items"):
        sources[p] = first.sources()
    return write(params, "near", parts, sources)


def transfer_group(name: str):
    def step(params: dict, progress: bool, far: bool) -> StudyResult:
        setting = transfer_settings(params)[name]
        if setting is None:
            return _skip(params, name, unavailable(name, params), "not defined here", progress)
        make = name != "far" or far
        try:
            made = _setting_parts(name, setting, progress, make)
        except MissingResults:
            if name != "far":
                raise
            return _skip(params, name, far_command(params), "computed only when asked", progress)
        except (UserError, OSError, ValueError, RuntimeError) as err:
            if name != "far":  # far: missing weights or data are "not run", never a failure
                raise
            return _skip(params, name, far_command(params), f"not run: {err}", progress)
        if made is None:
            return read(params)
        parts, sources, loaded = made
        # the robust items of the optimal face, as the sensitivity group has them for near
        ds = data.load_datasets(setting) if other_rules(setting) else None
        rules = [_seeds({**setting, "rule": rule}, progress, ds, make, finals_only=True)
                 for rule in other_rules(setting)]
        parts[f"{name}/robust"] = robust_counts(setting, loaded, rules)
        parts[f"{name}/face"] = nulls.face_table(loaded, dict(zip(other_rules(setting), rules)),
                                                 setting["tau"], setting["empty_set"])
        sources[f"{name}/robust"] = sources[f"{name}/face"] = combine(
            r.sources() for r in loaded + sum(rules, []))
        return write(params, name, parts, sources, notes={name: "computed"})
    return step


def other_rules(setting: dict) -> list[str]:
    """The rules of the optimal face other than the setting's own (none but for the exact
    AND-OR extraction, whose optimum is a face)."""
    if setting["optimizer"] != "exact" or setting["mode"] != "and-or":
        return []
    return [r for r in presets.PARAMS["rule"].choices if r != setting["rule"]]


def _skip(params: dict, name: str, command_: str, why: str, progress: bool) -> StudyResult:
    """A setting that did not run: its note is the command that runs it; its parts stay
    missing."""
    if progress:
        print(f"transfer setting {name}: {why or command_}; run `{command_}`")
    return write_note(params, name, command_)


def sensitivity_group(params: dict, progress: bool, far: bool) -> StudyResult:
    """Every point of the sensitivity grid: the knowledge table of its final models, its
    comparisons across seeds, and the robust items of the optimal face's rules."""
    ds = data.load_datasets(params)
    frames, comparisons, rows, srcs, by_spec = [], [], [], [], {}
    canonical = _seeds(params, progress, ds)
    # the preset's own values and the table-only points read the same results: load once
    by_results = {(results_key(params), False): canonical}
    rules: dict[str, list] = {}
    for key, value, setting, finals_only in sensitivity_settings(params):
        own = value == params[key]
        spec = "preset" if own else f"{key}={value}"
        which = (results_key(setting), finals_only)
        if which not in by_results:
            by_results[which] = _seeds(setting, progress, ds, finals_only=finals_only)
        loaded = by_results[which]
        if not distributed.is_main():
            continue
        srcs += [r.sources() for r in loaded]
        if key == "rule" and finals_only:
            rules[value] = loaded
        if spec not in by_spec:
            label = dict(spec=spec, parameter="preset" if own else key,
                         grid_value="" if own else str(value))
            kept = kept_samples(loaded, setting)
            by_spec[spec] = t = kept(_knowledge(loaded, setting["tau"], setting["empty_set"]))
            frames.append(t.assign(**label))
            comparisons.append(kept(nulls.comparison_table(
                loaded, setting["tau"], setting["empty_set"],
                nulls.VERDICT_COMPARISONS)).assign(**label))
        t = by_spec[spec]
        finals = t[(t["order"] == knowledge.ALL_ORDERS)
                   & t["measure"].isin(list(knowledge.KNOWLEDGE_MEASURES))]
        means = finals.groupby(["seed", "model", "measure"])["value"].mean()
        rows += [dict(parameter=key, value=str(value), seed=seed, model=model, measure=measure,
                      mean=mean) for (seed, model, measure), mean in means.items()]
    sources = combine(srcs).rebuilt_by(command("study", params))
    if not distributed.is_main():
        return read(params)
    per_seed = pd.DataFrame(rows)
    sensitivity = per_seed.groupby(["parameter", "value", "model", "measure"], sort=False)[
        "mean"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    parts = {"sensitivity": sensitivity,
             "specifications/knowledge": pd.concat(frames, ignore_index=True),
             "specifications/comparisons": pd.concat(comparisons, ignore_index=True),
             "robust": robust_counts(params, canonical, list(rules.values())),
             "identified": identified_counts(params, canonical),
             "near/face": nulls.face_table(canonical, rules, params["tau"],
                                           params["empty_set"])}
    return write(params, "sensitivity", parts, {p: sources for p in parts})


def _is_share(row) -> bool:
    """Measures written as percentages: shares and ratios of item sets."""
    return "share" in row["measure"] or "ratio" in row["measure"]


_GROUP_STEPS = {"near": near_group, "disjoint": transfer_group("disjoint"),
                "far": transfer_group("far"), "sensitivity": sensitivity_group}


# --------------------------------------------------------------------------------------------
# tables of one seed's results that the pages draw
# --------------------------------------------------------------------------------------------
def engine_check(r: seed_results.SeedResults) -> pd.DataFrame:
    """How exactly the interactions of ``r`` explain its games: the largest error of the
    AND-only (Harsanyi) and of the AND-OR interactions, the q bound the AND-OR split may
    use, the objective after and before sparsifying, and the engine's parameters."""
    values = r.result.values
    and_only = interactions.and_only(values)
    bound = r.params["q_bound"] * (values[..., -1] - values[..., 0]).abs()
    return pd.DataFrame([dict(
        error_and=(and_only.reconstruct() - values).abs().max().item(),
        error_andor=(r.result.reconstruct() - values).abs().max().item(),
        q_bound=bound.max().item(), objective=float(r.result.loss.sum()),
        objective_start=float(r.result.loss_start.sum()),
        engine=", ".join(f"{k} {v}" for k, v in r.result.params.items()))])


def strength_by_rank(r: seed_results.SeedResults, sample: int = 0) -> pd.DataFrame:
    """|I| of one sample's final fine-tuned model, sorted from the strongest down, for the
    AND-only (Harsanyi) and the AND-OR (sparsified) interactions: ``method, rank, strength``."""
    row = r.row_of("finetune")
    curves_ = {"AND only (Harsanyi)": interactions.and_only(r.result.values[row, sample]).I_and,
               "AND-OR (sparsified)": r.interactions_of("finetune")[sample]}
    frames = []
    for method, I in curves_.items():
        strength = torch.sort(I.abs().flatten(), descending=True).values
        strength = strength[strength > 0].double().numpy()
        frames.append(pd.DataFrame({"method": method, "rank": range(1, len(strength) + 1),
                                    "strength": strength}))
    return pd.concat(frames, ignore_index=True)


def salient_item_list(r: seed_results.SeedResults, sample: int = 0) -> pd.DataFrame:
    """The salient items of one sample's final fine-tuned model at the preset's tau, strongest
    first: ``kind, players, sign, strength`` (|I| / max |I|)."""
    I = knowledge.without_empty_set(r.interactions_of("finetune")[sample],
                                    r.params["empty_set"])
    items = knowledge.salient_items(I, r.params["tau"], r.params["empty_set"])
    top = I.abs().max().clamp_min(1e-12)
    rows = [dict(kind=kind, players=str(S), sign="+" if sign > 0 else "-",
                 strength=float(I[("AND", "OR").index(kind), sum(1 << i for i in S)].abs() / top))
            for kind, S, sign in interactions.item_list(items)]
    out = pd.DataFrame(rows, columns=["kind", "players", "sign", "strength"])
    return out.sort_values("strength", ascending=False, kind="stable").reset_index(drop=True)


def sparsity_table(loaded: list[seed_results.SeedResults], tau: float, empty_set: str
                   ) -> pd.DataFrame:
    """Per seed, analysed model (probe; every analysed epoch of fine-tuning and scratch
    training) and sample: ``seed, model, epoch`` and ``sparsity.table``'s columns."""
    frames = []
    for r in loaded:
        stacked = r.result.stacked()
        for row, (model, epoch) in enumerate(r.labels):
            t = sparsity.table(stacked[row], r.result.values[row], tau, r.sample_ids, empty_set)
            t.insert(0, "epoch", int(epoch))
            t.insert(0, "model", model)
            t.insert(0, "seed", r.seed)
            frames.append(t)
    return pd.concat(frames, ignore_index=True)


def lab_samples(loaded: list[seed_results.SeedResults]) -> set[int]:
    """The samples on which every final model (probe, fine-tuned, scratch) of every seed meets
    the lab's conditions (``sparsity.conditions``). The seeds share their samples."""
    keep = None
    for r in loaded:
        rows = [r.row_of(m) for m in games.MODELS]
        meets = sparsity.conditions(r.result.values[rows])["meets"].all(0)
        ids = {int(i) for i, ok in zip(r.sample_ids, meets.tolist()) if ok}
        keep = ids if keep is None else keep & ids
    return keep or set()


def kept_samples(loaded: list[seed_results.SeedResults], setting: dict):
    """A function that keeps the rows of a per-sample table that ``setting["sample_filter"]``
    keeps: every row (``all``), or those of ``lab_samples`` (``lab``)."""
    if setting.get("sample_filter", "all") == "all":
        return lambda table: table
    keep = lab_samples(loaded)
    return lambda table: table[table["sample"].isin(keep)].reset_index(drop=True)


def robust_counts(params: dict, canonical: list[seed_results.SeedResults],
                  rules: list[list[seed_results.SeedResults]]) -> pd.DataFrame:
    """Per seed and model: the final items under the canonical rule, and those salient with
    the same sign under every rule of the optimal face (``face.classify``; book/method.md,
    section 2). ``rules``: the other rules' finals-only results, one list of seeds each."""
    tau, empty_set = params["tau"], params["empty_set"]
    rows = []
    for model in games.MODELS:
        for i, r in enumerate(canonical):
            items = [r.items_of(model, tau, empty_set=empty_set)]
            items += [rule[i].items_of(model, tau, empty_set=empty_set) for rule in rules]
            robust, _ = face.classify(items)
            rows.append(dict(seed=r.seed, model=model, rules=1 + len(rules),
                             items=int((items[0] != 0).sum()), robust=int(robust.sum())))
    return pd.DataFrame(rows)


def identified_counts(params: dict, canonical: list[seed_results.SeedResults]) -> pd.DataFrame:
    """Per seed: each final model's items (extracted rule) and identified items (salient with one
    sign at every optimum: ``identified.face_items``, the candidates mask), and the headline
    claims' shares read on identified items only (mean over samples, NaN-skipping), plus the
    CPU seconds the ranges took; long: ``seed, model, measure, value``. No rows where the
    extraction has no optimal face to bound (``other_rules``: exact AND-OR only) or where
    ``n > identified.MAX_N`` (book/method.md, section 2)."""
    import time

    tau, empty_set = params["tau"], params["empty_set"]
    rows = []
    if not other_rules(params) or params["n"] > identified.MAX_N:
        return pd.DataFrame(rows, columns=["seed", "model", "measure", "value"])
    for r in canonical:
        start, ids = time.process_time(), {}
        for model in games.MODELS:
            ids[model], _ = identified.face_items(
                r.result.values[r.row_of(model)], r.interactions_of(model), tau, empty_set,
                r.params["q_bound"], r.params["or_merge"] == "and")
            items = r.items_of(model, tau, empty_set=empty_set)
            rows += [dict(seed=r.seed, model=model, measure="items", value=int((items != 0).sum())),
                     dict(seed=r.seed, model=model, measure="identified",
                          value=int((ids[model] != 0).sum()))]
        shares = identified.claim_shares(*(ids[m] for m in games.MODELS))
        for measure, x in shares.items():
            model = knowledge.TRIPLE if measure == "ratio_learnable" else knowledge.PAIR
            rows.append(dict(seed=r.seed, model=model, measure=measure,
                             value=float(x.nanmean()) if bool(torch.isfinite(x).any())
                             else float("nan")))
        rows.append(dict(seed=r.seed, model="all", measure="seconds",
                         value=time.process_time() - start))
    return pd.DataFrame(rows)


__all__ = ["MissingResults", "StudyResult", "read", "compute", "compute_all", "ALL_GROUPS",
           "TRANSFER_SETTINGS", "DISJOINT", "FAR_PRESET", "TABLE_ONLY", "game_counts",
           "finals_only_seeds",
           "sensitivity_grid", "sensitivity_settings", "transfer_settings", "unavailable",
           "far_command", "training_table", "engine_check", "strength_by_rank",
           "salient_item_list", "robust_counts", "other_rules", "identified_counts",
           "sparsity_table", "lab_samples", "kept_samples"]
