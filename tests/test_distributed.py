"""Several processes (torchrun) compute what one process computes: how work is split over ranks,
and the `ci` preset through `torchrun --standalone --nproc_per_node 2` (gloo, CPU) against one
process, bit for bit; a rank that fails stops the job and leaves no results marked complete."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from whypretrain import distributed
from whypretrain.engine import interactions, sparsify
from whypretrain.study import games

REPO = Path(__file__).resolve().parents[1]
# ci with one seed (one results folder), with 10 explained samples at 2 per forward pass: a
# model's batches then fall on both ranks, and so do its games in the engine
SETS = ["--set", "seeds=0", "--set", "samples_per_class=1", "--set", "only_correct=false",
        "--set", "mask_batch=128"]


# --- the split (fast) --------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
def test_shards_are_contiguous_balanced_and_cover_every_unit_once(world):
    for count in range(13):  # includes fewer units than ranks
        blocks = [distributed.shard(count, r, world) for r in range(world)]
        assert [i for b in blocks for i in b] == list(range(count))  # in order, each once
        assert all(b.step == 1 for b in blocks)
        sizes = [len(b) for b in blocks]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_one_process_is_rank_0_of_1_with_everything():
    assert (distributed.rank(), distributed.world(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard(7) == range(7)
    assert distributed.agree("x") == "x" and distributed.gather(torch.ones(1)) == [torch.ones(1)]
    distributed.barrier()  # returns at once
    with pytest.raises(ValueError):
        distributed.shard(3, 2, 2)


@pytest.mark.parametrize("n, mask_batch", [(6, 128), (6, 1024), (10, 1024), (11, 1024)])
def test_game_units_are_the_forward_batches_of_one_process(n, mask_batch):
    units = games.game_units(3, 7, n, mask_batch)
    per_batch = max(1, mask_batch // (1 << n))
    cover = [(m, s) for m, i, j in units for s in range(i, j)]
    assert cover == [(m, s) for m in range(3) for s in range(7)]
    assert all(j - i == min(per_batch, 7 - i) and i % per_batch == 0 for _, i, j in units)


def test_concatenated_blocks_equal_the_games_solved_together():
    torch.manual_seed(0)
    v = torch.randn(7, 32, dtype=torch.float64).cumsum(-1)
    whole = sparsify.sparsify(v)
    parts = [sparsify.sparsify(v[:3]), sparsify.sparsify(v[3:])]
    joined = interactions.concatenate(parts)
    for key in ("I_and", "I_or", "values", "p", "q", "loss", "loss_start", "loss_bound"):
        assert torch.equal(getattr(joined, key), getattr(whole, key)), key
    _same_params(joined.params, whole.params)


def _same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float):
            assert value == pytest.approx(b[key], rel=1e-12), key
        else:
            assert value == b[key], key


# --- torchrun end to end (slow) ----------------------------------------------------------------
def _env() -> dict[str, str]:
    # torchrun sets OMP_NUM_THREADS=1 in its workers while this process may use more threads:
    # results must not depend on that (the `threads` parameter fixes training and analysis,
    # data preparation is thread-independent)
    return {**os.environ, "PYTHONPATH": str(REPO / "lib")}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", *args]


def _analyze(workdir: Path) -> list[str]:
    return ["analyze", "--preset", "ci", *SETS, "--set", f"workdir={workdir}"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300,
                          cwd=REPO)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    """The same `analyze` (training included) by one process and by torchrun with 2."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    proc = _run([sys.executable, "-m", "whypretrain", *_analyze(one)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run(_torchrun("-m", "whypretrain", *_analyze(two)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return one, two


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_processes_train_the_same_runs(one_and_two):
    from safetensors.torch import load_file

    one, two = one_and_two
    assert _files(one / "runs") == _files(two / "runs")
    checkpoints = sorted((one / "runs").rglob("*.safetensors"))
    assert len(checkpoints) >= 4
    for path in checkpoints:
        a, b = load_file(path), load_file(two / path.relative_to(one))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), path
        metrics = path.parent / "metrics.csv"
        assert metrics.read_bytes() == (two / metrics.relative_to(one)).read_bytes()


@pytest.mark.slow
def test_two_processes_write_bit_identical_results(one_and_two):
    one, two = one_and_two
    assert _files(one / "results") == _files(two / "results")
    (folder,) = (one / "results").iterdir()
    other = two / "results" / folder.name
    # games, tables and parameters: the same bytes
    for name in ["games.pt", "params.json"] + [p.name for p in folder.glob("*.csv")] \
            + [p.name for p in folder.glob("engine-*.json")]:
        assert (folder / name).read_bytes() == (other / name).read_bytes(), name
    games = torch.load(folder / "games.pt", weights_only=True)
    assert games["values"].shape[1] == 10  # both ranks had batches of the same model
    (result,) = folder.glob("interactions-*.pt")
    a = torch.load(result, weights_only=True)
    b = torch.load(other / result.name, weights_only=True)
    for key, value in a.items():
        if torch.is_tensor(value):
            assert torch.equal(value, b[key]), key  # bit-identical, not merely close
    a["params"].pop("seconds"), b["params"].pop("seconds")
    _same_params(a["params"], b["params"])


@pytest.mark.slow
def test_a_failing_rank_stops_the_job_and_nothing_is_marked_complete(one_and_two, tmp_path):
    one, _ = one_and_two
    shutil.copytree(one / "runs", tmp_path / "runs")  # no training: straight to the games
    proc = _run(_torchrun(str(REPO / "tests" / "distributed_failing_rank.py"),
                          *_analyze(tmp_path)))
    assert proc.returncode != 0
    # rank 0 was waiting for rank 1's games; it stopped with rank 1's error
    assert "stopped: rank 1: RuntimeError: the engine failed on rank 1" in proc.stderr
    (folder,) = (tmp_path / "results").iterdir()
    assert (folder / "games.pt").is_file()  # the step before the failure is kept (resumable)
    assert not list(folder.glob("interactions-*.pt")) and not list(folder.glob("table*"))
    assert not list(folder.glob(".*tmp*"))  # no half-written file either
