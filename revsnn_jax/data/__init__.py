"""Layer 8, data: the data sets and the input pipeline; imports nothing from the package.

* :mod:`~revsnn_jax.data.datasets` -- the named data sets (TFDS, bundled, prepared
  neuromorphic frames), their specs, the seeded training iterator with augmentation and the
  evaluation batches;
* :mod:`~revsnn_jax.data.bundled` -- the real data sets that ship inside installed wheels
  (``digits``, ``mnist5k``), so the main job and the tests need no download.
"""

from revsnn_jax.data.datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    CIFAR_STD_RESNET,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrayDataset,
    DataNotFoundError,
    DatasetSpec,
    Normalization,
    eval_batches,
    get_spec,
    load_digits,
    load_mnist5k,
    load_source,
    make_augment,
    make_train_iterator,
    mnist5k_split,
)

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "CIFAR_STD_RESNET", "DATASETS", "IMAGENET_MEAN",
           "IMAGENET_STD", "ArrayDataset", "DataNotFoundError", "DatasetSpec", "Normalization",
           "eval_batches", "get_spec", "load_digits", "load_mnist5k", "load_source",
           "make_augment", "make_train_iterator", "mnist5k_split"]
