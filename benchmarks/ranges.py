"""The cost of the ranges over the optimal face (issue 31), per game at n = 8 and n = 10, with and
without the candidates mask, side by side in one run.

    .venv/bin/python benchmarks/ranges.py [--preset classroom] [--set workdir=DIR] [--samples 2]
        [--full 1]

Games: the first seed's three final models (``whypretrain analyze`` first) on its first
``--samples`` explained samples: at the preset's n (8 for classroom) as stored, and at n = 10
(the same models evaluated again with 10 players, ``face.n10_games``). Per game, in CPU seconds
of this process (one thread; CPU time is what a shared machine's load changes least):
- the canonical extraction (``exact.solve``), the reference the ratios divide by;
- ``item_ranges`` with the candidates mask (``identified.candidates``: the terms salient at 0.9
  tau under the canonical rule, both raw parts of a merged term);
- ``item_ranges`` with every term (at n = 10 on the first ``--full`` games only: up to 4,094
  bounding LPs a game);
and the bounding LPs solved, the tight terms, and whether both readings give the same identified
items. Prints a table and writes benchmarks/out/ranges.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from face import n10_games  # benchmarks/face.py: the final models evaluated with 10 players
from whypretrain import presets
from whypretrain.engine import exact
from whypretrain.engine.sparsify import sparsify
from whypretrain.measures import identified, knowledge
from whypretrain.study import extraction, seed_results
from whypretrain.study.games import MODELS

OUT = Path(__file__).resolve().parent / "out"


def cpu(fn):
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def game_rows(v: torch.Tensor, params: dict, full: bool) -> dict:
    """One game ``[2**n]``: seconds and LPs of the extraction and of both readings."""
    v = v[None]
    merge = params["or_merge"] == "and"
    b = params["q_bound"] * (v[..., -1] - v[..., 0]).abs()
    _, t_extract = cpu(lambda: exact.solve(v, b))
    x = sparsify(v, q_bound=params["q_bound"], merge_low_or=merge)
    args = (v, x.stacked(), params["tau"], params["empty_set"], params["q_bound"], merge)
    (ids, masked), t_masked = cpu(lambda: identified.face_items(*args, mask=True))
    row = dict(n=v.shape[-1].bit_length() - 1, extract_s=t_extract, masked_s=t_masked,
               masked_lps=int(masked.lps.sum()), candidates=int(torch.isfinite(masked.low).sum()),
               identified=int((ids != 0).sum()),
               items=int((knowledge.salient_items(x.stacked(), params["tau"],
                                                  params["empty_set"]) != 0).sum()))
    if full:
        (ids_full, every), t_full = cpu(lambda: identified.face_items(*args, mask=False))
        row.update(full_s=t_full, full_lps=int(every.lps.sum()),
                   same_identified=bool(torch.equal(ids, ids_full)),
                   wide_terms=int((every.width > 1e-6 * float(v.abs().max())).sum()))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="classroom")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--full", type=int, default=1, help="games read with every term at n = 10")
    args = ap.parse_args()
    params = presets.resolve(args.preset, presets.parse_sets(args.set))
    torch.set_num_threads(1)
    seed = params["seeds"][0]
    r = seed_results.load(params, seed)
    stored = r.result.values[extraction.final_rows(len(r.labels))][:, :args.samples]
    rows = []
    n10 = n10_games(params, seed, args.samples)
    for games, full in ((stored, stored.shape[0] * stored.shape[1]), (n10, args.full)):
        for s in range(games.shape[1]):
            for m, model in enumerate(MODELS):
                row = game_rows(games[m, s], params, s * len(MODELS) + m < full)
                rows.append(dict(model=model, sample=s, **row))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["masked_over_extract"] = table["masked_s"] / table["extract_s"]
    if "full_s" in table:
        table["full_over_masked"] = table["full_s"] / table["masked_s"]
    print(table.to_markdown(index=False, floatfmt=".3g"))
    print(table.groupby("n").mean(numeric_only=True).to_markdown(floatfmt=".3g"))
    OUT.mkdir(exist_ok=True)
    (OUT / "ranges.json").write_text(json.dumps(dict(preset=args.preset, seed=seed, rows=rows),
                                                indent=1, default=str))


if __name__ == "__main__":
    main()
