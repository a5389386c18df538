"""Loaders: the shipped digits (shapes, labels, split sizes, determinism) and image folders."""
import numpy as np
import pytest
import torch
from PIL import Image

from whypretrain.train import data
from whypretrain import presets


@pytest.fixture(scope="module")
def digit_sets():
    return data.load_datasets(presets.resolve("default", {"target_per_class": 7}))


def test_digits_shapes_labels_and_sizes(digit_sets):
    ds = digit_sets
    for name in ("source_train", "source_test", "target_train", "target_test"):
        x, y = getattr(ds, name)[0]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    # MNIST: 5,000 digits, 500 per class, 20% of each class held out
    assert len(ds.source_train) == 4000 and len(ds.source_test) == 1000
    assert sorted(set(ds.source_train.labels.tolist())) == list(range(10))
    # UCI: 1,797 digits, half of each class held out, 7 labelled per class for training
    assert len(ds.target_train) == 70
    assert np.bincount(ds.target_train.labels.numpy()).tolist() == [7] * 10
    assert 895 <= len(ds.target_test) <= 902
    assert ds.num_source_classes == ds.num_target_classes == 10
    assert ds.target_class_names == [str(d) for d in range(10)]


def test_digits_are_normalised_to_zero_mean(digit_sets):
    for split in (digit_sets.source_train, data.load_datasets(
            presets.resolve("default", {"target_per_class": 85})).target_train):
        assert abs(float(split.images.mean())) < 0.05
        assert abs(float(split.images.std()) - 1.0) < 0.05


def test_uci_is_padded_like_mnist(digit_sets):
    # the 4-pixel frame around the 20x20 digit is background, i.e. the lowest value
    x = digit_sets.target_test.images
    assert torch.equal(x[:, :, :4, :], x.amin().expand_as(x[:, :, :4, :]))


def test_splits_are_fixed_and_disjoint(digit_sets):
    again = data.load_datasets(presets.resolve("default", {"target_per_class": 7}))
    assert torch.equal(again.target_train.images, digit_sets.target_train.images)
    assert torch.equal(again.source_test.labels, digit_sets.source_test.labels)
    # no target training image is also a test image
    train = {t.numpy().tobytes() for t in digit_sets.target_train.images}
    assert not train & {t.numpy().tobytes() for t in digit_sets.target_test.images}
    # more labels per class keep the same test set and grow the training set around the old one
    more = data.load_datasets(presets.resolve("default", {"target_per_class": 20}))
    assert torch.equal(more.target_test.images, digit_sets.target_test.images)
    more_train = {t.numpy().tobytes() for t in more.target_train.images}
    assert train <= more_train and len(more_train) == 200


def test_digit_subsets_are_relabelled():
    ds = data.load_datasets(presets.resolve("default", {"source": "mnist-0-4",
                                                        "target": "uci-5-9"}))
    assert ds.num_source_classes == ds.num_target_classes == 5
    assert ds.target_class_names == ["5", "6", "7", "8", "9"]
    assert sorted(set(ds.target_test.labels.tolist())) == [0, 1, 2, 3, 4]
    assert len(ds.source_train) == 2000


def test_what_presets_knows_of_the_data_is_true():
    """presets.DATASETS (what resolve checks players, channels and target_per_class against)
    says what the loaders give: 28x28 1-channel digits and their training images per class."""
    for name in ("uci", "mnist"):
        ds = data.load_datasets(presets.resolve("default", {"source": "mnist", "target": name,
                                                            "target_per_class": 1}))
        offer = presets.DATASETS[name]
        train = data._embedded(*(data._uci() if name == "uci" else data._mnist()),
                               list(range(10)), data.UCI_TEST_FRACTION if name == "uci"
                               else data.MNIST_TEST_FRACTION)[0]
        assert tuple(np.bincount(train.labels.numpy()).tolist()) == offer.train_per_class
        assert ds.target_test[0][0].shape == (offer.channels, offer.side, offer.side)
    big = presets.resolve("default", {"target_per_class": 87})  # the smallest UCI class: 87
    assert len(data.load_datasets(big).target_train) == 870


def test_too_many_per_class_is_an_error():
    with pytest.raises(ValueError, match="target_per_class=500"):
        data.load_datasets(presets.resolve("default", {"target_per_class": 500}))


def write_image_folder(root, classes=("ant", "bee", "cat"), per_class=6, size=12):
    gen = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = gen.integers(0, 80, (size, size, 3)) + 60 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def folder_params(tmp_path, **over):
    return presets.resolve("default", {"source": "folder", "target": "folder",
                                       "source_folder": str(tmp_path / "src"),
                                       "target_folder": str(tmp_path / "tgt"),
                                       "image_size": 8, "patch": 2, "target_per_class": 2,
                                       **over})


def test_image_folder_loader(tmp_path):
    write_image_folder(tmp_path / "src", classes=("a", "b"), per_class=5)
    write_image_folder(tmp_path / "tgt", per_class=6)
    ds = data.load_datasets(folder_params(tmp_path))
    assert ds.num_source_classes == 2 and ds.num_target_classes == 3
    assert ds.target_class_names == ["ant", "bee", "cat"]
    x, y = ds.target_train[0]
    assert x.shape == (3, 8, 8) and isinstance(y, int)
    assert len(ds.target_train) == 6  # 2 per class
    assert len(ds.target_test) == 6 and len(ds.source_test) == 4  # 30% of each class, rounded
    # normalised by the training images' own statistics: mean near 0
    stack = torch.stack([ds.source_train[i][0] for i in range(len(ds.source_train))])
    assert stack.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert data.channels(folder_params(tmp_path)) == 3


def test_image_folder_with_its_own_test_split(tmp_path):
    write_image_folder(tmp_path / "tgt" / "train", per_class=4)
    write_image_folder(tmp_path / "tgt" / "test", per_class=3)
    write_image_folder(tmp_path / "src", per_class=3)
    ds = data.load_datasets(folder_params(tmp_path))
    assert len(ds.target_test) == 9 and len(ds.target_train) == 6


def test_missing_folder_names_it_and_writes_nothing(tmp_path):
    params = folder_params(tmp_path, workdir=str(tmp_path / "work"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "src")) as err:
        data.load_datasets(params)
    assert "source_folder" in str(err.value)  # says how to fill it
    with pytest.raises(FileNotFoundError, match="needs target_folder"):
        data.load_datasets({**params, "source": "mnist", "target_folder": ""})
    assert not (tmp_path / "work").exists()


def test_missing_cifar10_says_how_to_fill_it(tmp_path):
    params = presets.resolve("default", {"source": "cifar10", "target": "cifar10",
                                         "data_root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as err:
        data.load_datasets(params)
    assert "download=true" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_normalisation_does_not_depend_on_the_thread_count():
    """The statistics that normalise every image (and so every model trained on them) are the
    same with 1 and 2 torch threads; torch's float32 reductions were not."""
    params = presets.resolve("ci")
    before = torch.get_num_threads()
    stats = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ds = data.load_datasets(params)
            stats.append((ds.source_stats, ds.target_stats))
    finally:
        torch.set_num_threads(before)
    assert stats[0] == stats[1]
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mean, std = data._moments(images)
    torch.testing.assert_close(mean, images.double().mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(std, images.double().std(dim=(0, 2, 3)).float())
