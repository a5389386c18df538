"""One process against torchrun with 2 processes: the wall time of `whypretrain analyze` (fresh
results, the trained runs reused), as a user runs the command, start-up included.

    PYTHONPATH=lib .venv/bin/python benchmarks/distributed.py

Two sizes: the `ci` preset as it is (9 games of 2**6 outputs), and `ci` with more work
(10 samples, n = 8: 90 games of 2**8). Each is timed once per launcher, after checking that
both write the same interactions. Results in benchmarks/distributed.md.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    "ci": [],
    "ci, 10 samples, n=8": ["--set", "samples_per_class=1", "--set", "only_correct=false",
                            "--set", "n=8"],
}
ENV = {**os.environ, "PYTHONPATH": str(REPO / "lib")}


def analyze(workdir: Path, sets: list[str], processes: int) -> float:
    args = ["-m", "whypretrain", "analyze", "--preset", "ci", *sets, "--set", f"workdir={workdir}"]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(processes), *args]
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, env=ENV, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def interactions_of(workdir: Path) -> dict:
    (path,) = (workdir / "results").glob("*/interactions-*.pt")
    return torch.load(path, weights_only=True)


def main() -> None:
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / "trained"
        analyze(trained, [], 1)  # trains the ci runs once (every size reuses them)
        for name, sets in SIZES.items():
            times = {}
            for processes in (1, 2):
                work = Path(tmp) / f"{processes}"
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(trained / "runs", work / "runs")
                times[processes] = analyze(work, sets, processes)
            a, b = interactions_of(Path(tmp) / "1"), interactions_of(Path(tmp) / "2")
            same = all(torch.equal(v, b[k]) for k, v in a.items() if torch.is_tensor(v))
            games = tuple(a["values"].shape)
            print(f"{name}: games {games}; 1 process {times[1]:.1f} s, torchrun 2 processes "
                  f"{times[2]:.1f} s, ratio 2/1 = {times[2] / times[1]:.2f}; "
                  f"interactions bit-identical: {same}")


if __name__ == "__main__":
    main()
