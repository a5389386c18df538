"""Joint extraction (issue 22): column and row generation against the whole LP, side by side on
the same samples, with the three independent solves for scale.

    .venv/bin/python benchmarks/joint.py --games FILE [--samples K] [--whole K] [--n N]
    .venv/bin/python benchmarks/joint.py --preset classroom --set workdir=DIR [--samples K]

``--games``: torch files, each holding one seed's final models' games ``[3, G, 2**n]`` (probe,
fine-tuned, scratch; e.g. rows 0, 21 and 42 of a default results folder's ``games.pt``), else the
first seed's stored final-model games of ``--preset``. ``--n N`` keeps the first ``N`` players
(the masks below ``2**N``: the same game with the other players absent). Per sample, on one
thread: the seconds of ``columns="generated"`` and, for the first ``--whole`` samples, of
``columns="all"`` (interior point with crossover, every interaction at once), the largest
relative difference of their losses and splits, the certified gaps, LP rounds, the sample's
spread (``exact.spread``; above ``exact.DENSE_SPREAD`` ``auto`` takes the whole LP) and the
three independent solves' seconds. Prints the table and writes benchmarks/out/joint.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from whypretrain.engine import exact, joint
from whypretrain import presets
from whypretrain.study import seed_results
from whypretrain.study import extraction

OUT = Path(__file__).resolve().parent / "out"


def games(args) -> torch.Tensor:
    if args.games:  # several files: their models stacked, as the seeds' in one pooled program
        v = torch.cat([torch.load(f).double() for f in args.games])
    else:
        params = presets.resolve(args.preset, presets.parse_sets(args.set))
        r = seed_results.load(params, params["seeds"][0])
        v = r.result.values[extraction.final_rows(len(r.labels))].double()
    if args.n:
        v = v[..., : 1 << args.n].contiguous()
    return v[:, : args.samples]


def row(v: torch.Tensor, s: int, whole: bool) -> dict:
    one = v[:, s:s + 1]
    b = 0.04 * (one[..., -1] - one[..., 0]).abs()
    out = dict(sample=s, spread=float(exact.spread(one).max()))
    start = time.perf_counter()
    gen = joint.solve(one, b, columns="generated")
    out.update(generated_s=time.perf_counter() - start, rounds=int(gen.rounds[0]),
               gap_generated=float(gen.gap[0]))
    if whole:
        start = time.perf_counter()
        full = joint.solve(one, b, columns="all")
        out.update(whole_s=time.perf_counter() - start, gap_whole=float(full.gap[0]))
        out.update(whole_over_generated=out["whole_s"] / out["generated_s"],
                   loss_rel_diff=float(((full.loss - gen.loss) / full.loss).abs().max()),
                   p_diff=float((full.p - gen.p).abs().max() / one.abs().max()))
    start = time.perf_counter()
    for i in range(0, len(one), 3):  # each file's (seed's) three models in a program of their own
        if len(one) > 3:
            joint.solve(one[i:i + 3], b[i:i + 3], columns="generated")
    out["per_seed_s"] = time.perf_counter() - start if len(one) > 3 else None
    start = time.perf_counter()
    exact.solve(one[:, 0], b[:, 0])
    out["independent_s"] = time.perf_counter() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", nargs="+",
                    help="torch files of games [3, G, 2**n] (several: one program over all)")
    ap.add_argument("--preset", default="classroom")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--whole", type=int, default=3, help="samples also solved as one LP")
    ap.add_argument("--n", type=int, default=0, help="keep the first N players")
    args = ap.parse_args()
    torch.set_num_threads(1)
    v = games(args)
    n = v.shape[-1].bit_length() - 1
    rows = []
    for s in range(v.shape[1]):
        rows.append(row(v, s, s < args.whole))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\njoint extraction, n = {n}, {v.shape[1]} samples of {len(v)} models (one thread):")
    print(table.to_markdown(index=False, floatfmt=".3g"))
    dense = table.spread > exact.DENSE_SPREAD
    print(f"\ngenerated: {table.generated_s.sum():.1f} s in all, median "
          f"{table.generated_s.median():.2f} s; on the {int((~dense).sum())} samples with "
          f"spread <= {exact.DENSE_SPREAD:g}: {table.generated_s[~dense].sum():.1f} s; "
          f"independent (3 solves): {table.independent_s.sum():.1f} s")
    OUT.mkdir(exist_ok=True)
    (OUT / "joint.json").write_text(json.dumps(dict(n=n, rows=rows), indent=1))


if __name__ == "__main__":
    main()
