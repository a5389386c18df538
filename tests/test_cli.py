"""The `whypretrain` command's errors: what a user can fix is one line that says what to do,
exit status 2, no traceback (unless --debug); a bug keeps its traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from whypretrain import cli
from whypretrain.errors import MissingResults, ParameterError, UserError

REPO = Path(__file__).resolve().parents[1]


def _one_line(err: str) -> str:
    """The error: one line, the last one (progress bars may come before it), no traceback."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("whypretrain ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


@pytest.mark.slow
def test_missing_data_folder_is_one_line_and_exit_2(tmp_path):
    """Through the real command in its own process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    args = [sys.executable, "-m", "whypretrain.cli", "train", "--preset", "ci",
            "--set", "source=cifar10", "--set", "target=cifar10",
            "--set", f"data_root={tmp_path / 'nowhere'}",
            "--set", f"workdir={tmp_path / 'work'}"]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith("whypretrain train: ")
    assert "cifar-10-batches-py" in line and "--set download=true" in line  # what to do
    assert not (tmp_path / "work").exists()  # nothing written
    # --debug: the same error with its traceback, and Python's exit status
    proc = subprocess.run(args[:3] + ["--debug"] + args[3:], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "FileNotFoundError" in proc.stderr


@pytest.mark.parametrize("content", [None, b"not a state dict"])
def test_missing_or_corrupt_weights_file_is_one_line(tmp_path, capsys, content):
    weights = tmp_path / "lite0.pth"
    if content is not None:
        weights.write_bytes(content)
    # efficientnet_lite0: a paper-scale arch that takes the ci preset's 1-channel digits
    argv = ["train", "--preset", "ci", "--set", "arch=efficientnet_lite0",
            "--set", f"weights={weights}",
            "--set", f"workdir={tmp_path / 'work'}"]
    assert cli.main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(weights) in line
    assert ("does not exist" in line and "--set weights=PATH" in line) if content is None \
        else "corrupt" in line
    with pytest.raises(FileNotFoundError if content is None else ValueError):
        cli.main(["--debug", *argv])


def test_parameter_error_is_one_line(capsys):
    assert cli.main(["analyze", "--set", "tau=3"]) == 2
    assert "'tau' = 3.0 is outside its range" in _one_line(capsys.readouterr().err)
    assert cli.main(["book", "--set", "tua=0.1"]) == 2
    assert "'tua'" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("sets, words", [
    (["tau=nan"], ["'tau'", "nan", "finite", "(0.0, 1.0)"]),
    (["lr=1e999"], ["'lr'", "inf", "finite"]),
    (["patch=256"], ["patch=256", "28x28", "1..28"]),
    (["n=12", "patch=14"], ["n=12", "4 patches", "patch=14", "n <= 4", "patch <= 7"]),
    (["n=16", "patch=9"], ["n=16", "9 patches", "patch <= 7"]),
    (["source=mnist", "target=cifar10"], ["source=mnist", "target=cifar10", "channels"]),
    (["seeds=0,0"], ["'seeds'", "distinct", "(0, 0)"]),
    (["device=gpu"], ["'device'", "'gpu'", "cuda"]),
    (["workdir=f"], ["workdir='f'", "folder"]),  # a file that the test writes
    (["checkpoints=0"], ["'checkpoints'", "checkpoints=all"]),  # 0 meant every epoch before
])
def test_bad_parameters_stop_at_once_with_one_line(tmp_path, monkeypatch, capsys, sets, words):
    """Through `main` in an empty working directory without --set workdir: exit 2, one line
    naming the parameters, and nothing read or written (the data loader is never called)."""
    from whypretrain.train import data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "load_datasets", lambda *a, **k: pytest.fail("read data"))
    if "workdir=f" in sets:
        (tmp_path / "f").write_text("")
    for command in ("train", "analyze", "study"):
        argv = [command, "--preset", "ci"] + [a for s in sets for a in ("--set", s)]
        assert cli.main(argv) == 2
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"whypretrain {command}: ")
        assert all(word in line for word in words), line
    assert [p.name for p in tmp_path.iterdir()] == (["f"] if "workdir=f" in sets else [])


def test_study_checks_the_settings_it_derives_at_once(tmp_path, monkeypatch, capsys):
    """n=1 on one 20-pixel patch is a valid preset, but the study's sensitivity grid also
    explains n=4: `study` says so before it trains (`analyze` would run the preset alone)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["study", "--preset", "ci", "--set", "n=1", "--set", "patch=20"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "sensitivity grid" in line and "n=4" in line and "1 patches" in line
    assert list(tmp_path.iterdir()) == []


def test_missing_results_name_the_command_that_makes_them(monkeypatch, capsys):
    def read(params):  # a reading function that finds nothing on disk
        raise MissingResults("the runs of preset ci, seed 0", "whypretrain train --preset ci")

    monkeypatch.setattr(cli, "analyze", read)
    assert cli.main(["analyze", "--preset", "ci"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == ("whypretrain analyze: the runs of preset ci, seed 0: not computed yet; run "
                    "`whypretrain train --preset ci`")
    err = MissingResults("x", "whypretrain study --preset ci")
    assert isinstance(err, UserError) and isinstance(err, FileNotFoundError)
    assert err.command == "whypretrain study --preset ci"


def test_a_bug_keeps_its_traceback(monkeypatch):
    """A ValueError from a module whose messages are not written for the user is a bug: it is
    not turned into a one-line message."""
    def broken(params):
        return int("not a number")  # raised in this test module, not a user-facing one

    monkeypatch.setattr(cli, "analyze", broken)
    with pytest.raises(ValueError, match="invalid literal"):
        cli.main(["analyze", "--preset", "ci"])


def test_no_repository_is_one_line(tmp_path, capsys):
    assert cli.main(["book", "--root", str(tmp_path)]) == 2
    assert "_toc.yml" in _one_line(capsys.readouterr().err)
    assert issubclass(ParameterError, UserError) and issubclass(ParameterError, ValueError)
