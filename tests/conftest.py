"""Fixtures shared by test files: the `ci` study built once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ci_study(tmp_path_factory):
    """The whole `ci` preset, as `make study PRESET=ci` runs it, on a copy of the repository's
    book and notebooks (its own runs/ and results/): (root, overrides, exit status)."""
    from whypretrain import assets, cli

    root = tmp_path_factory.mktemp("study")
    assets.ensure_assets(REPO, quiet=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(REPO / "book", root / "book",
                    ignore=shutil.ignore_patterns("_assets", "experiments", "status.md", ".*"))
    (root / "book" / "_assets").symlink_to(REPO / "book" / "_assets", target_is_directory=True)
    overrides = {"workdir": str(root / "work")}
    code = cli.study("ci", overrides, root=root)
    return root, overrides, code
