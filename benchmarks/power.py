"""How many seeds the headline claims need: the power analysis of book/method.md, section 7.

One seed's sd of each headline claim's effect (share discarded, share new, learnable) is read
off the 95% Student-t intervals over 3 seeds that the study reported before the crossed
jackknife (sd = half-width * sqrt(3) / t_{0.975, 2}): the default study of 2026-12-04 (issue
30, near share discarded only) and the classroom studies of benchmarks/nulls.md (near, disjoint,
far). Those intervals hold the seeds' part of the spread only; the samples' part of the
standard error, which more seeds do not shrink, is taken from the ci study's crossed jackknife
(``CI_SAMPLE_SE``) and scaled to 20, 40 and 80 samples. Then
``findings.power_table``: the seeds at which a true effect of the SESOI is found to exceed 0
and a true effect of 0 is found equivalent, each with 80% power, on the sd as measured, on its
80% upper confidence bound, and on that bound at Holm's first step (5% / 8).

    .venv/bin/python benchmarks/power.py [--sample-se POINTS]

With ``--workdir W`` it reads instead the spreads a computed study measured itself (its stored
findings, ``findings/claims``: one seed's sd of the effect, ``effect_sd_seed``, and the
samples' part of its standard error, ``effect_sd_sample``, from the crossed jackknife), for
the headline claims of every setting, and plans at the study's samples and at 2, 4 and 8 times
as many (the samples' part shrinks as 1 / sqrt(samples)):

    .venv/bin/python benchmarks/power.py --workdir W [--preset default]
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import stats

from whypretrain.report import findings

# (setting, claim, effect's 95% interval over 3 seeds, in percentage points)
REPORTED = [
    ("default near", "share_discarded", -4.0, 7.9),     # issue 30
    ("classroom near", "share_discarded", 2.6, 24.8),   # benchmarks/nulls.md
    ("classroom near", "share_new", -13.4, 23.7),
    ("classroom near", "learnable", 18.6, 48.7),
    ("classroom disjoint", "share_discarded", 2.1, 42.8),
    ("classroom disjoint", "share_new", 8.5, 12.2),
    ("classroom disjoint", "learnable", 21.2, 45.6),
    ("classroom far", "share_discarded", -9.0, 13.6),
    ("classroom far", "share_new", -1.5, 11.2),
    ("classroom far", "learnable", -15.2, 17.5),
]


# the samples' part of the effect's standard error measured on the ci study (2 seeds, 10
# samples, crossed jackknife, 2026-12-04), shares' effects, percentage points: near, disjoint
# and far for share discarded, share new, learnable; their median
CI_SAMPLE_SE = dict(share_discarded=(6.1, 3.1, 2.2), share_new=(4.7, 3.6, 2.3),
                    learnable=(8.8, 11.3, 2.7))
CI_SAMPLES = 10


def spreads(sample_se: float = 0.0, samples: int = 20) -> pd.DataFrame:
    """One seed's sd of each reported effect (a share, not points) and the samples' part of
    the standard error, ``sample_se`` points at ``CI_SAMPLES`` samples scaled to ``samples``
    (it shrinks as 1 / sqrt(samples); more seeds do not shrink it)."""
    t = stats.t.ppf(0.975, 2)
    rows = []
    for setting, claim, low, high in REPORTED:
        sd = (high - low) / 2 * np.sqrt(3) / t / 100
        rows.append(dict(setting=setting, claim=claim, sd_seed=sd, n_seeds=3,
                         sd_sample=sample_se / 100 * np.sqrt(CI_SAMPLES / samples),
                         n_samples=samples))
    return pd.DataFrame(rows)


def study_spreads(workdir: str, preset: str = "default", scale: int = 1) -> pd.DataFrame:
    """The headline claims' spreads as the study of ``preset`` in ``workdir`` measured them,
    with the samples' part scaled to ``scale`` times the study's samples."""
    from whypretrain import presets
    from whypretrain.study import pipeline

    params = presets.resolve(preset, {"workdir": workdir})
    claims = pipeline.read(params).part("findings/claims")
    rows = []
    for r in claims[claims["claim"].isin(findings.HEADLINE)].to_dict("records"):
        samples = int(r["n_samples"])   # the samples every seed reads
        rows.append(dict(setting=f"{preset} {r['setting']}", claim=r["claim"],
                         sd_seed=r["effect_sd_seed"], n_seeds=int(r["n_seeds"]),
                         sd_sample=r["effect_sd_sample"] / np.sqrt(scale),
                         n_samples=samples * scale))
    return pd.DataFrame(rows)


def _print(title: str, table: pd.DataFrame) -> None:
    for column in ("sd_seed", "sd_seed_upper", "sd_sample", "sesoi"):
        table[column] = (100 * table[column]).round(1)
    print(f"\n{title}\n")
    columns = ["setting", "claim", "n_seeds", "n_samples", "sd_seed", "sd_seed_upper",
               "sd_sample", "sesoi", "seeds_point", "seeds", "seeds_holm", "seeds_exceed"]
    print(table[columns].to_markdown(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample-se", type=float, default=None,
                        help="the samples' part of the standard error at 10 samples, in points "
                             "(default: none, then the ci study's median)")
    parser.add_argument("--workdir", default=None,
                        help="read the spreads a computed study measured (its findings)")
    parser.add_argument("--preset", default="default", help="the study's preset (--workdir)")
    args = parser.parse_args()
    if args.workdir is not None:
        for scale in (1, 2, 4, 8):
            spreads_ = study_spreads(args.workdir, args.preset, scale)
            samples = int(spreads_["n_samples"].max()) if len(spreads_) else 0
            _print(f"{args.preset} study in {args.workdir}: its own spreads, the samples' part "
                   f"at {samples} samples", findings.power_table(spreads_))
        return
    median = float(np.median([v for values in CI_SAMPLE_SE.values() for v in values]))
    scenarios = [("seeds only (no samples' part)", 0.0, 20)] + [
        (f"samples' part {median:.1f} pts at 10 samples (ci median), {m} samples", median, m)
        for m in (20, 40, 80)] if args.sample_se is None else [
        (f"samples' part {args.sample_se} pts at 10 samples, 20 samples", args.sample_se, 20)]
    for title, se, m in scenarios:
        _print(title, findings.power_table(spreads(se, m)))


if __name__ == "__main__":
    main()
