"""ImageNet EfficientNet-Lite0 on the digits: accuracy against resolution, and masking speed.

    PYTHONPATH=lib .venv/bin/python benchmarks/imagenet.py accuracy --resolution 32 64 --seeds 0
    PYTHONPATH=lib .venv/bin/python benchmarks/imagenet.py masking --resolution 32 64

``accuracy`` trains the ``imagenet-uci`` preset (or ``--preset``) at each resolution and seed in
a scratch workdir and prints the final test accuracy of probe, fine-tuned and scratch models
with the wall time of each run. ``masking`` times ``masking.evaluate`` (the masked inputs of
samples through the model) against plain batched inference of the same inputs, built
beforehand, for the CPU levers (channels_last, batch size, inference mode). Results:
benchmarks/imagenet.md.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from whypretrain.train import data, models, loops
from whypretrain.engine import masking
from whypretrain import presets


def accuracy(args) -> None:
    workdir = args.workdir or tempfile.mkdtemp(prefix="imagenet-acc-")
    overrides = dict(kv.split("=", 1) for kv in args.set)
    for res in args.resolution:
        params = presets.resolve(args.preset, {**overrides, "resolution": res,
                                               "workdir": workdir})
        ds = data.load_datasets(params)
        finals: dict[str, list[float]] = {"probe": [], "finetune": [], "scratch": []}
        for seed in args.seeds:
            times = {}
            specs = loops.run_specs(params, seed, ds)
            from whypretrain.train.runs import Run
            runs = {k: Run.create(workdir, s) for k, s in specs.items()}
            if not runs["pretrain"].done:
                runs["pretrain"].mark_done()
            for kind, loop in (("probe", loops.probe), ("finetune", loops.finetune),
                               ("scratch", loops.scratch)):
                start = time.perf_counter()
                if not runs[kind].done:
                    if kind == "scratch":
                        loop(runs[kind], ds, params, progress=False)
                    else:
                        loop(runs[kind], runs["pretrain"], ds, params, progress=False)
                times[kind] = time.perf_counter() - start
                acc = runs[kind].metrics.test_acc.tolist()
                finals[kind].append(acc[-1])
                curve = " ".join(f"{a:.2f}" for a in acc)
                print(f"res {res} seed {seed} {kind:8s} final {acc[-1]:.3f} "
                      f"({times[kind]:.0f} s)  curve {curve}", flush=True)
        for kind, accs in finals.items():
            sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
            print(f"res {res} {kind:8s} {statistics.mean(accs):.3f} ± {sd:.3f}  {accs}",
                  flush=True)
        gap = [f - s for f, s in zip(finals["finetune"], finals["scratch"])]
        print(f"res {res} finetune - scratch {statistics.mean(gap):+.3f}  {gap}", flush=True)


def _best(fn, reps: int) -> float:
    fn()  # warm-up: first-call allocations and kernel choice
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def masking_speed(args) -> None:
    params = presets.resolve(args.preset)
    ds = data.load_datasets(params)
    torch.set_num_threads(args.threads)
    x, y = ds.target_test.images[:args.samples], ds.target_test.labels[:args.samples]
    players = torch.stack([masking.choose_players(img, params["n"], params["patch"], i)
                           for i, img in enumerate(x)])
    size = 1 << params["n"]
    for res in args.resolution:
        for channels_last in (False, True):
            models.CHANNELS_LAST = channels_last
            torch.manual_seed(0)
            model = models.build({**params, "resolution": res}, ds.num_target_classes,
                                 ds.target_stats).eval()
            for batch in args.batch:
                # the same masked inputs, built before timing: plain batched inference
                pm = masking.player_masks(players, (28, 28), params["patch"]).flatten(-2)
                inputs = masking.masked_inputs(x, pm.float(), torch.zeros_like(x),
                                               torch.arange(size)).flatten(0, 1)

                def plain(mode=torch.inference_mode):
                    with mode():
                        for i in range(0, len(inputs), batch):
                            model(inputs[i:i + batch])

                def masked():
                    masking.evaluate(model, x, y, players, batch_size=batch,
                                     patch=params["patch"])

                t_plain = _best(plain, args.reps)
                t_nograd = _best(lambda: plain(torch.no_grad), args.reps)
                t_masked = _best(masked, args.reps)
                per = 1000 * t_plain / len(inputs)
                print(f"res {res:3d} channels_last {channels_last!s:5} batch {batch:5d}: "
                      f"plain {t_plain:6.2f} s ({per:.2f} ms/input), no_grad {t_nograd:6.2f} s, "
                      f"masked {t_masked:6.2f} s, overhead {t_masked / t_plain - 1:+.1%}",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--preset", default="imagenet-uci")
    acc.add_argument("--resolution", type=int, nargs="+", default=[32])
    acc.add_argument("--seeds", type=int, nargs="+", default=[0])
    acc.add_argument("--set", nargs="*", default=[], help="key=value overrides")
    acc.add_argument("--workdir", default="")
    speed = sub.add_parser("masking")
    speed.add_argument("--preset", default="imagenet-uci")
    speed.add_argument("--resolution", type=int, nargs="+", default=[32])
    speed.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    speed.add_argument("--samples", type=int, default=4)
    speed.add_argument("--threads", type=int, default=1)
    speed.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    accuracy(args) if args.command == "accuracy" else masking_speed(args)


if __name__ == "__main__":
    main()
