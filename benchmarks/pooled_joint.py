"""The joint point of a preset whose specification grid leaves it out (n > JOINT_MAX_N), judged
as the grid judges its points: the final models of every seed extracted in one program per
sample, beside the independent extraction of the same final-model games.

    .venv/bin/python benchmarks/pooled_joint.py [--preset default] [--set KEY=VALUE ...]

Trains nothing that the preset's study has not trained (it reads the study's runs; missing ones
are trained); computes finals-only results for both extractions (reused on a second call) and
prints each claim's value, null, effect and verdict, and the joint program's seconds. The
default preset's numbers (2026-11-30, 31 min) are in book/method.md, section 2.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from whypretrain.train import data
from whypretrain.report import findings
from whypretrain.measures import nulls
from whypretrain import presets
from whypretrain.study import seed_results, pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    pd.set_option("display.width", 200)
    params = presets.resolve(args.preset, presets.parse_sets(args.set))
    ds = data.load_datasets(params)
    metrics, _ = pipeline.training_table(params, ds)
    tau, empty_set = params["tau"], params["empty_set"]
    for extraction in ("independent", "joint"):
        start = time.perf_counter()
        loaded = seed_results.compute_seeds({**params, "extraction": extraction},
                                       list(params["seeds"]), True, ds, finals_only=True)
        seconds = time.perf_counter() - start
        table = pd.concat([r.table(tau, empty_set) for r in loaded], ignore_index=True)
        x = findings.Inputs(metrics, table, nulls.comparison_table(loaded, tau, empty_set))
        judged = findings.judge_inputs(x, extraction, findings.KNOWLEDGE_CLAIMS)
        print(f"\n{extraction} ({seconds:.0f} s, reused results count as 0):")
        print(judged[["claim", "ours", "null", "effect", "verdict"]].to_string(index=False))
        engine = loaded[0].result.params
        print({k: engine[k] for k in ("gap", "joint_models", "rounds_mean", "samples_whole")
               if k in engine})


if __name__ == "__main__":
    main()
