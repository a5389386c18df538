"""Damaged files are noticed and computed again: every stored file is recorded with its size
and sha256 when written (``integrity``), checked when read or reused; a write that fails leaves
the previous file; ``whypretrain verify`` checks a workdir; an unwritable workdir stops at once.

The study's files come from a real `ci` study of one seed and one epoch (runs, games,
interactions, tables, study parts); each test damages a copy of its workdir."""
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from whypretrain import errors, integrity, presets
from whypretrain.study import catalogue, extraction, pipeline, seed_results
from whypretrain.train import loops, runs

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
SMALL = {"epochs": 1, "seeds": (0,), "only_correct": False}


# --------------------------------------------------------------------------------------------
# the record itself, on hand-made files
# --------------------------------------------------------------------------------------------
def test_a_written_file_is_recorded_and_a_truncated_or_flipped_one_is_damaged(tmp_path):
    payload = os.urandom(5000)
    integrity.write(tmp_path / "a.bin", payload)
    rec = json.loads((tmp_path / "manifest.json").read_text())["a.bin"]
    assert rec == {"size": 5000, "sha256": hashlib.sha256(payload).hexdigest()}
    assert integrity.read_bytes(tmp_path / "a.bin") == payload
    (tmp_path / "a.bin").write_bytes(payload[:1000])
    with pytest.raises(integrity.Damaged, match="1000 bytes, recorded 5000"):
        integrity.read_bytes(tmp_path / "a.bin")
    flipped = bytearray(payload)
    flipped[4321] ^= 1
    (tmp_path / "a.bin").write_bytes(bytes(flipped))  # same size: only the sha256 tells
    assert not integrity.intact(tmp_path / "a.bin")
    err = pytest.raises(integrity.Damaged, integrity.check, tmp_path / "a.bin", "whypretrain x")
    assert "sha256" in str(err.value) and "`whypretrain x`" in str(err.value)
    assert isinstance(err.value, errors.UserError)  # the CLI's one line, exit 2


def test_unrecorded_and_unreadable_manifest_files_are_damaged_and_old_folders_adopted(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "games.pt").write_bytes(b"written before records existed")
    assert integrity.problems(old) == [] and integrity.intact(old / "games.pt")
    integrity.write(old / "new.pt", b"new")  # the first record adopts what is there
    assert set(integrity.records(old)) == {"games.pt", "new.pt"}
    (old / "stray.pt").write_bytes(b"copied in by hand")
    assert [(p.path.name, "not recorded" in p.why) for p in integrity.problems(old)] == \
        [("stray.pt", True)]
    (old / "manifest.json").write_text('{"games.pt": {"si')
    assert {p.path.name for p in integrity.problems(old)} == {"games.pt", "new.pt", "stray.pt"}


def test_a_failed_write_leaves_the_previous_file_and_its_record(tmp_path, monkeypatch):
    """A full disk: ENOSPC on the new bytes' sync, or on the manifest's, leaves the old file
    recorded and intact, and no temporary file."""
    integrity.write(tmp_path / "f.pt", b"old bytes")
    real_fsync = os.fsync
    for fail_at in (1, 2):  # 1: the file's sync, 2: the manifest's
        calls = []

        def fsync(fd):
            calls.append(fd)
            if len(calls) == fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(integrity.os, "fsync", fsync)
        with pytest.raises(integrity.WriteFailed, match="No space left.*run the same command"):
            integrity.write(tmp_path / "f.pt", b"new bytes, longer")
        monkeypatch.setattr(integrity.os, "fsync", real_fsync)
        assert (tmp_path / "f.pt").read_bytes() == b"old bytes"
        assert integrity.problems(tmp_path) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == [".manifest.lock", "f.pt",
                                                              "manifest.json"]


# --------------------------------------------------------------------------------------------
# every kind of file of a real study: truncated, detected, computed again
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    params = presets.resolve("ci", {**SMALL, "workdir": str(tmp_path_factory.mktemp("w"))})
    pipeline.compute(params, progress=False)
    return params


def _copy(params, tmp_path) -> dict:
    shutil.copytree(params["workdir"], tmp_path / "w")
    return {**params, "workdir": str(tmp_path / "w")}


def _folders(params):
    workdir = Path(params["workdir"])
    ds = loops.data.load_datasets(params)
    run_of = {kind: workdir / "runs" / runs.run_hash(spec)
              for kind, spec in loops.run_specs(params, 0, ds).items()}
    (results,) = (workdir / "results").iterdir()
    return run_of, results, catalogue.folder(params)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000] if path.stat().st_size > 1000
                     else path.read_bytes()[:-3])


def _tensors_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else True for k in a)


RUN_FILES = ["epoch-001.safetensors", "epoch-000.safetensors", "resume.pt", "metrics.csv",
             "done"]


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_damaged_run_file_is_found_and_the_run_trained_again_to_the_same_bytes(
        study, tmp_path, name):
    params = _copy(study, tmp_path)
    run_of, _, _ = _folders(params)
    folder = run_of["finetune"]
    before = {e: runs.Run(folder).load_state(e) for e in (0, 1)}
    _truncate(folder / name)
    run = runs.Run(folder)
    assert not run.done and [p.path.name for p in integrity.problems(folder)] == [name]
    pipeline.compute(params, progress=False)
    assert runs.Run(folder).done and integrity.problems(folder) == []
    # training is deterministic: the retrained checkpoints hold the same numbers
    for epoch, state in before.items():
        assert _tensors_equal(runs.Run(folder).load_state(epoch), state)


def test_a_damaged_run_params_file_is_written_again_and_the_run_kept(study, tmp_path):
    params = _copy(study, tmp_path)
    folder = _folders(params)[0]["scratch"]
    checkpoint = (folder / "epoch-001.safetensors").stat().st_mtime_ns
    _truncate(folder / "params.json")
    with pytest.raises(integrity.Damaged, match="params.json"):
        runs.Run(folder)
    pipeline.compute(params, progress=False)
    assert runs.Run(folder).done and runs.Run(folder).params["kind"] == "scratch"
    assert (folder / "epoch-001.safetensors").stat().st_mtime_ns == checkpoint  # not retrained


@pytest.mark.parametrize("kind", ["games", "interactions"])
def test_damaged_games_or_interactions_are_named_by_a_read_and_computed_again(
        study, tmp_path, kind):
    params = _copy(study, tmp_path)
    _, results, _ = _folders(params)
    (file,) = results.glob("games.pt" if kind == "games" else "interactions-*.pt")
    before = torch.load(file, weights_only=True)
    _truncate(file)
    # a read that cannot compute names the file and the command (the issue: torch's
    # "PytorchStreamReader failed reading zip archive", or nothing at all)
    with pytest.raises(integrity.Damaged, match=f"{file}.*whypretrain analyze --preset ci"):
        seed_results.load(params, 0)
    assert not catalogue.StudyResult.read(params).current("near")  # its input is damaged
    with pytest.raises(errors.MissingResults, match="computed from holds a damaged file"):
        catalogue.StudyResult.read(params).part("near/knowledge")
    pipeline.compute(params, progress=False)
    assert integrity.problems(results) == []
    assert _tensors_equal(torch.load(file, weights_only=True), before)
    assert catalogue.StudyResult.read(params).current("near")


def test_a_damaged_table_is_rebuilt_the_same(study, tmp_path):
    params = _copy(study, tmp_path)
    _, results, _ = _folders(params)
    (file,) = results.glob("table*.csv")
    before = file.read_bytes()
    _truncate(file)
    assert not integrity.intact(file)
    # a read builds it in memory (reading never writes), the same table
    pd.testing.assert_frame_equal(seed_results.load(params, 0).table(),
                                  pd.read_csv(io.BytesIO(before)), check_dtype=False)
    pipeline.compute(params, progress=False)
    assert file.read_bytes() == before


def test_a_damaged_chunk_is_solved_again_to_the_same_numbers(study, tmp_path, monkeypatch):
    r = seed_results.load(study, 0)
    values = r.result.values[:, :4]  # every model x 4 samples
    monkeypatch.setattr(extraction, "CHUNK_OUTPUTS", 4 << study["n"])  # 4 games a chunk
    partial = tmp_path / "partial"
    whole = extraction.extract_in_chunks(values, study, "cpu", False, partial)
    games = values.shape[0] * 4
    chunks = sorted(partial.glob("*.pt"))
    assert len(chunks) == games // 4 and integrity.problems(partial) == []
    _truncate(chunks[1])
    assert extraction._kept_chunks(partial, games) == \
        [(0, 4)] + [(i, i + 4) for i in range(8, games, 4)]
    again = extraction.extract_in_chunks(values, study, "cpu", False, partial)
    assert integrity.problems(partial) == []
    for key in ("I_and", "I_or", "loss"):
        assert torch.equal(getattr(again, key), getattr(whole, key))


@pytest.mark.parametrize("name", ["near/knowledge.parquet", "study.json"])
def test_a_damaged_study_part_is_named_by_the_book_and_computed_again(study, tmp_path, name):
    params = _copy(study, tmp_path)
    folder = catalogue.folder(params)
    before = catalogue.StudyResult.read(params).part("near/knowledge")
    _truncate(folder / name)
    with pytest.raises(errors.MissingResults, match="whypretrain analyze --preset ci"):
        catalogue.StudyResult.read(params).part("near/knowledge")
    pipeline.compute(params, progress=False)
    after = catalogue.StudyResult.read(params).part("near/knowledge")
    pd.testing.assert_frame_equal(after, before)
    assert all(integrity.problems(f) == [] for f in integrity.folders(folder))


def test_damaged_timings_are_found_and_a_new_step_starts_them_again(study, tmp_path):
    params = _copy(study, tmp_path)
    _, results, _ = _folders(params)
    _truncate(results / "timings.json")
    assert [p.path.name for p in integrity.problems(results)] == ["timings.json"]
    # nothing is computed from the timings: the study stays current
    assert catalogue.StudyResult.read(params).current("near")
    seed_results._record_time(results, 0, torch.zeros(2, 3, 4), masking_s=1.5)
    assert json.loads((results / "timings.json").read_text()) == \
        {"seed": 0, "games": 6, "masking_s": 1.5}
    assert integrity.problems(results) == []


# --------------------------------------------------------------------------------------------
# a full disk during training; the command line
# --------------------------------------------------------------------------------------------
def test_a_full_disk_during_training_leaves_the_run_resumable_to_the_same_bytes(
        study, tmp_path, monkeypatch):
    params = _copy(study, tmp_path)
    folder = _folders(params)[0]["scratch"]
    final = runs.Run(folder).load_state(1)
    runs.Run(folder).reset()
    real_write = integrity.write

    def full(path, payload, record=True):
        if Path(path).name == "epoch-001.safetensors":
            raise integrity.WriteFailed("no space")  # as write raises it on ENOSPC
        real_write(path, payload, record)

    monkeypatch.setattr(integrity, "write", full)
    with pytest.raises(integrity.WriteFailed):
        loops.train_study(params, progress=False)
    monkeypatch.setattr(integrity, "write", real_write)
    run = runs.Run(folder)
    assert not run.done and run.epochs() == [0] and integrity.problems(folder) == []
    loops.train_study(params, progress=False)  # resumes from epoch 0
    assert runs.Run(folder).done and _tensors_equal(runs.Run(folder).load_state(1), final)


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "whypretrain", *args], env=ENV,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_verify_passes_a_clean_workdir_names_a_damaged_file_and_repairs(study, tmp_path):
    params = _copy(study, tmp_path)
    workdir = f"workdir={params['workdir']}"
    code, out, err = _cli("verify", "--set", workdir)
    assert code == 0 and "all as recorded" in out and err == ""
    _, results, _ = _folders(params)
    (file,) = results.glob("interactions-*.pt")
    size = file.stat().st_size
    _truncate(file)
    part = catalogue.folder(params) / "near" / "summary.parquet"
    _truncate(part)
    code, out, err = _cli("verify", "--set", workdir)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 3
    assert lines[0].startswith(f"damaged: {file} (1000 bytes, recorded {size}); remade by "
                               f"`whypretrain analyze --preset ci --set {workdir} ")
    assert lines[1].startswith(f"damaged: {part} (1000 bytes") and \
        lines[1].endswith(f"remade by `whypretrain study --preset ci --set {workdir} "
                          "--set epochs=1 --set seeds=0`")
    assert "2 of the" in lines[2] and "--repair" in lines[2]
    code, out, err = _cli("verify", "--repair", "--set", workdir)
    assert code == 0 and not file.exists() and "removed 2 damaged files" in out
    assert _cli("verify", "--set", workdir)[0] == 0


def test_an_unwritable_workdir_stops_at_once_with_one_line(tmp_path):
    (tmp_path / "file").write_text("a regular file")
    for command in ("train", "analyze"):
        code, out, err = _cli(command, "--preset", "ci", "--set",
                              f"workdir={tmp_path / 'file' / 'w'}")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "cannot be created or written" in err and str(tmp_path / "file") in err
