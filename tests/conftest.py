"""Fixtures shared by test files: a small trained CNN, and the `ci` study built once per
test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from whypretrain.train import data, models
from whypretrain import presets

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ci_study(tmp_path_factory):
    """The whole `ci` preset, as `make study PRESET=ci` runs it, on a copy of the repository's
    book and notebooks (its own runs/ and results/): (root, overrides, exit status)."""
    from whypretrain.book import assets
    from whypretrain import cli

    root = tmp_path_factory.mktemp("study")
    assets.ensure_assets(REPO, quiet=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(REPO / "book", root / "book",
                    ignore=shutil.ignore_patterns("_assets", "experiments", "status.md",
                                                 "status-time.png", ".*"))
    (root / "book" / "_assets").symlink_to(REPO / "book" / "_assets", target_is_directory=True)
    overrides = {"workdir": str(root / "work")}
    code = cli.study("ci", overrides, root=root)
    return root, overrides, code


def _trained_cnn(sets, params, seed: int, epochs: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = models.build(params, sets.num_target_classes)
    loader = torch.utils.data.DataLoader(sets.target_train, batch_size=32, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def cnn_and_samples():
    """The project's small CNN, trained briefly on real target digits, and 4 test samples."""
    params = presets.resolve("ci")
    sets = data.load_datasets(params)
    model = _trained_cnn(sets, params, seed=0, epochs=3)
    xs, ys = zip(*(sets.target_test[i] for i in range(4)))
    return model, torch.stack(xs), torch.tensor(ys)


@pytest.fixture(scope="session")
def three_cnns(cnn_and_samples):
    """Three real models to compare on the same samples: ``cnn_and_samples``'s, and two more
    trained from other seeds for 2 and 6 epochs."""
    params = presets.resolve("ci")
    sets = data.load_datasets(params)
    others = [_trained_cnn(sets, params, seed, epochs) for seed, epochs in ((1, 2), (2, 6))]
    model, xs, ys = cnn_and_samples
    return [model] + others, xs, ys
