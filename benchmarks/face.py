"""Which optimum (issue 22): the rules of the optimal face, the warm start, and joint extraction,
on one preset's stored final-model games.

    .venv/bin/python benchmarks/face.py [--preset classroom] [--set workdir=DIR] [--n10 2]

Per seed (``whypretrain analyze`` first; the final models' games are read, nothing is stored):
- every rule (``exact.RULES``): the largest relative difference of its objective from the
  canonical one, the mean Jaccard of its salient items with the canonical items per model, and
  the robust-item share per model (``face.sample``);
- the warm start: each rule's solve from the canonical support against a cold solve, side by
  side, alternating which runs first, best of ``--repeat`` in CPU seconds (``face.sample``), and
  the work that does not depend on the machine's load: LP rounds and interactions priced in;
- joint against independent extraction: per sample the joint loss of both solutions, the models'
  L1 losses, whether the independent splits are feasible for the joint program (a shared part
  exists with every own part within its bound), the Jaccard of the items per model, and the time
  per sample;
- ``--n10 K``: the joint extraction's time per sample at n = 10 on K samples (the seed's final
  models evaluated again with 10 players).
Prints tables and writes benchmarks/out/face.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from whypretrain.train import data
from whypretrain.engine import exact, joint, masking
from whypretrain.measures import face, knowledge
from whypretrain import presets
from whypretrain.study import extraction, games, seed_results
from whypretrain.engine import interactions as I

OUT = Path(__file__).resolve().parent / "out"
MODELS = list(games.MODELS)


def rules_table(v: torch.Tensor, tau: float, empty_set: str, repeat: int) -> tuple[list, list]:
    """The rules' objectives, items and robust shares; warm against cold seconds per rule."""
    best = {True: {}, False: {}}
    faces = {}
    for k in range(repeat):
        for warm in ((True, False) if k % 2 == 0 else (False, True)):
            f = face.sample(v, tau=tau, empty_set=empty_set, warm=warm)
            faces[warm] = f
            for rule, s in f.seconds.items():
                best[warm][rule] = min(best[warm].get(rule, float("inf")), s)
    f = faces[True]
    base = f.results["canonical"].loss
    shares = f.shares(MODELS)
    rows = []
    for rule in exact.RULES:
        diff = float(((f.results[rule].loss - base) / base).abs().max())
        cold = faces[False].results[rule]
        same = float((f.results[rule].I_and - cold.I_and).abs().max() / v.abs().max())
        rows.append(dict(rule=rule, objective_rel_diff_max=diff,
                         gap_max=float(f.results[rule].gap.max()),
                         warm_s=best[True][rule], cold_s=best[False][rule],
                         cold_over_warm=best[False][rule] / best[True][rule],
                         **{f"{what}_{arm}": faces[warm].results[rule].params[f"{what}_mean"]
                            for what in ("rounds", "columns")
                            for arm, warm in (("warm", True), ("cold", False))},
                         warm_vs_cold_max_diff=same,
                         **{f"jaccard_{m}": (1.0 if rule == "canonical" else
                                             float(shares.loc[i, f"jaccard_{rule}"]))
                            for i, m in enumerate(MODELS)}))
    return rows, shares.to_dict("records")


def joint_table(v: torch.Tensor, tau: float, empty_set: str) -> list[dict]:
    """Joint against independent extraction, sample by sample."""
    span = (v[..., -1] - v[..., 0]).abs()
    b = 0.04 * span
    start = time.perf_counter()
    alone = exact.solve(v.reshape(-1, v.shape[-1]), b.reshape(-1))
    alone_s = time.perf_counter() - start
    a_p, a_q = alone.p.reshape(v.shape), alone.q.reshape(v.shape)
    a_and, a_or = I.and_or(v, a_p, a_q)
    rows = []
    for s in range(v.shape[1]):
        start = time.perf_counter()
        sol = joint.solve(v[:, s:s + 1], b[:, s:s + 1])
        seconds = time.perf_counter() - start
        j_and, j_or = I.and_or(v[:, s:s + 1], sol.p, sol.q)
        own_lo = (a_p[:, s] - joint.P_BOUND * span[:, s, None]).amax(0)
        own_hi = (a_p[:, s] + joint.P_BOUND * span[:, s, None]).amin(0)
        k_alone = knowledge.salient_items(torch.stack([a_and[:, s], a_or[:, s]], -2), tau,
                                          empty_set)
        k_joint = knowledge.salient_items(torch.stack([j_and[:, 0], j_or[:, 0]], -2), tau,
                                          empty_set)
        jac = knowledge.set_jaccard(k_alone, k_joint).tolist()
        rows.append(dict(sample=s, joint_loss=float(sol.loss[0]),
                         joint_loss_of_independent=float(joint.joint_loss(a_and[:, s:s + 1],
                                                                          a_or[:, s:s + 1])[0]),
                         l1_sum_joint=float((j_and.abs().sum(-1) + j_or.abs().sum(-1)).sum()),
                         l1_sum_independent=float(alone.loss.reshape(v.shape[:2])[:, s].sum()),
                         independent_feasible=bool((own_lo <= own_hi + 1e-12).all()),
                         gap=float(sol.gap[0]), joint_s=seconds,
                         independent_s=alone_s / v.shape[1],
                         **{f"jaccard_{m}": jac[i] for i, m in enumerate(MODELS)}))
    return rows


def n10_games(params: dict, seed: int, count: int) -> torch.Tensor:
    """The seed's three final models on its first ``count`` explained samples, 10 players."""
    ds = data.load_datasets(params)
    r = seed_results.load(params, seed, ds)
    runs = seed_results.find_runs(params, seed, ds)
    nets = [runs[m].load_model() for m in MODELS]
    ids = r.sample_ids[:count]
    x = r.x[:count]
    y = r.y[:count]
    players = torch.stack([masking.choose_players(x[j], 10, params["patch"],
                                                  games.player_seed(seed, i))
                           for j, i in enumerate(ids)])
    return torch.stack([masking.evaluate(net, x, y, players, params["baseline"],
                                         batch_size=1024, patch=params["patch"])
                        for net in nets]).double()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="classroom")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--n10", type=int, default=2)
    ap.add_argument("--no-joint", action="store_true", help="rules and warm start only")
    args = ap.parse_args()
    params = presets.resolve(args.preset, presets.parse_sets(args.set))
    torch.set_num_threads(1)
    out = {"preset": args.preset, "seeds": {}}
    for seed in params["seeds"]:
        r = seed_results.load(params, seed)
        v = r.result.values[extraction.final_rows(len(r.labels))]
        rules, shares = rules_table(v, params["tau"], params["empty_set"], args.repeat)
        joint_rows = [] if args.no_joint else joint_table(v, params["tau"], params["empty_set"])
        out["seeds"][seed] = dict(rules=rules, shares=shares, joint=joint_rows)
        print(f"\nseed {seed}: {v.shape[1]} samples, n = {params['n']}")
        print(pd.DataFrame(rules).to_markdown(index=False, floatfmt=".3g"))
        print(pd.DataFrame(shares).to_markdown(index=False, floatfmt=".3g"))
        if joint_rows:
            print(pd.DataFrame(joint_rows).describe().T[["mean", "min", "max"]]
                  .to_markdown(floatfmt=".3g"))
    if args.n10 and not args.no_joint:
        seed = params["seeds"][0]
        v = n10_games(params, seed, args.n10)
        b = 0.04 * (v[..., -1] - v[..., 0]).abs()
        times = []
        for s in range(v.shape[1]):
            start = time.perf_counter()
            sol = joint.solve(v[:, s:s + 1], b[:, s:s + 1])
            times.append(dict(sample=s, seconds=time.perf_counter() - start,
                              gap=float(sol.gap[0])))
            start = time.perf_counter()
            exact.solve(v[:, s], b[:, s])
            times[-1]["independent_seconds"] = time.perf_counter() - start
        out["n10"] = times
        print("\njoint extraction at n = 10 (3 models, one sample):")
        print(pd.DataFrame(times).to_markdown(index=False, floatfmt=".3g"))
    OUT.mkdir(exist_ok=True)
    name = "face-rules.json" if args.no_joint else "face.json"
    (OUT / name).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
