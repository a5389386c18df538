"""The study's findings with the exact extraction against the SGD reference (issue 8's "before
and after"), on one preset's trained runs.

    .venv/bin/python benchmarks/extraction_findings.py [--preset default] [--set workdir=DIR]

After: ``findings.judge`` on the preset's stored results (exact, every epoch: run
``whypretrain analyze`` first). Before: the same runs and games, extracted with
``optimizer=sgd`` (10,000 steps at the study's lr): every epoch where
``whypretrain analyze --set optimizer=sgd`` has stored them, else the final models only
(``finals_only``: what the knowledge claims read; the convergence claims are then not
recomputed).
Also per game on the final models: SGD's objective over the optimum, and the Jaccard of the
two salient sets. Prints markdown and writes benchmarks/out/extraction-findings.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from whypretrain.train import data
from whypretrain.report import findings
from whypretrain import presets
from whypretrain.study import extraction, pipeline, seed_results
from whypretrain.errors import MissingResults

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    params = presets.resolve(args.preset, presets.parse_sets(args.sets))
    ds = data.load_datasets(params)
    after = findings.judge(pipeline.compute(params, progress=False))
    sgd = presets.resolve(args.preset, {**presets.parse_sets(args.sets), "optimizer": "sgd"})
    start = time.perf_counter()
    tables, compared = [], []
    for seed in sgd["seeds"]:
        r = seed_results.compute(sgd, seed, progress=False, datasets=ds, finals_only=True)
        tables.append(r.table())
        exact = seed_results.load(params, seed, ds)
        c = extraction.compare_with_sgd(exact)
        c.insert(0, "seed", seed)
        compared.append(c)
    seconds = time.perf_counter() - start
    metrics, _ = pipeline.training_table(sgd, ds)
    try:  # every epoch extracted with SGD too (`whypretrain analyze ... --set optimizer=sgd`)
        x = findings.Inputs(metrics, pipeline.read(sgd).part("near/knowledge"))
    except MissingResults:
        x = findings.Inputs(metrics, pd.concat(tables, ignore_index=True))
    rows = []
    for c in findings.CLAIMS:
        try:
            e = findings.infer(c, x)["value"]
            rows.append(dict(claim=c.key, sgd=findings.interval_text(e, c.pct),
                             sgd_verdict=c.rule.judge(e)))
        except MissingResults:
            rows.append(dict(claim=c.key, sgd="not recomputed (every epoch)", sgd_verdict="-"))
    before = pd.DataFrame(rows)
    table = after[["claim", "ours", "verdict"]].rename(
        columns={"ours": "exact", "verdict": "exact_verdict"}).merge(before, on="claim")
    comp = pd.concat(compared, ignore_index=True)
    summary = dict(games=len(comp), sgd_over_exact_median=float(comp["ratio"].median()),
                   sgd_over_exact_min=float(comp["ratio"].min()),
                   sgd_over_exact_max=float(comp["ratio"].max()),
                   jaccard_mean=float(comp["jaccard"].mean()),
                   jaccard_median=float(comp["jaccard"].median()), sgd_seconds=seconds,
                   seeds=list(params["seeds"]), preset=args.preset)
    print(table.to_markdown(index=False))
    print(json.dumps(summary, indent=1))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "extraction-findings.json").write_text(json.dumps(
        dict(summary=summary, table=table.to_dict("records")), indent=1))


if __name__ == "__main__":
    main()
