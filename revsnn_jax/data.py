"""Data sources.

The bundled data set is real and offline: scikit-learn's handwritten digits (UCI ML optical
recognition of handwritten digits, 1,797 grey-scale 8x8 images of 10 classes, shipped inside the
scikit-learn wheel). It is split once, stratified, with a fixed seed: 1,437 training and 360
test images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["ArrayDataset", "load_digits"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


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


def load_digits(split: str = "train") -> ArrayDataset:
    """The bundled handwritten digits, ``split`` ``"train"`` (1,437) or ``"test"`` (360)."""
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    digits = _sk_load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    if split == "train":
        return ArrayDataset(x_tr, y_tr, 10, "digits/train")
    return ArrayDataset(x_te, y_te, 10, "digits/test")
