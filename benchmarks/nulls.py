"""The findings with their nulls, beside the verdicts the threshold alone gave, for one
setting's stored results (nothing is computed: run `whypretrain analyze` first).

    python benchmarks/nulls.py --preset classroom --set seeds=0,1,2 --set workdir=/tmp/w

Prints one row per claim: our value, its null, the effect with its 95% interval over seeds, the
reference comparison and chance, the weighted (no tau) value, null and effect, the verdict by
the threshold alone (before the nulls) and with the null, and the seconds the null tables took
to read and compute.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from whypretrain.report import findings
from whypretrain import presets
from whypretrain.study import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="classroom")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    params = presets.resolve(args.preset, presets.parse_sets(args.set))
    start = time.perf_counter()
    result = pipeline.compute(params, progress=False)   # the nulls are part of the study result
    null_seconds = time.perf_counter() - start
    x = findings.inputs(result)
    table = findings.judge_inputs(x)
    # the paper's line on our value alone, by the findings' interval rule
    table["threshold_only"] = [c.rule.judge(findings.infer(c, x)["value"])
                               for c in findings.CLAIMS]
    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 30)
    print(table[["claim", "ours", "null", "effect", "reference", "chance"]].round(3)
          .to_string(index=False))
    print()
    print(table[["claim", "weighted", "weighted_null", "weighted_effect", "seeds_to_decide",
                 "threshold_only", "verdict"]].round(3).to_string(index=False))
    print()
    print(findings.noise_floor(x)[["pair", "share"]].to_string(index=False))
    print(f"\nstudy result (near): {null_seconds:.1f} s for {len(params['seeds'])} seeds")


if __name__ == "__main__":
    main()
