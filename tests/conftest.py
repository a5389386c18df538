"""Fixtures shared across test modules."""
import pytest
import torch

from whypretrain import data, models, presets


@pytest.fixture(scope="session")
def cnn_and_samples():
    """The project's small CNN, trained briefly on real target digits, and 4 test samples."""
    params = presets.resolve("ci")
    sets = data.load_datasets(params)
    torch.manual_seed(0)
    model = models.build(params, sets.num_target_classes)
    loader = torch.utils.data.DataLoader(sets.target_train, batch_size=32, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    xs, ys = zip(*(sets.target_test[i] for i in range(4)))
    return model, torch.stack(xs), torch.tensor(ys)
