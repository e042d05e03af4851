"""Layer 8, data: the data sets and the input pipeline; imports nothing from the package.

* :mod:`~revsnn_jax.data.datasets` -- the named data sets (TFDS, bundled, neuromorphic event
  frames), their specs, the seeded training iterator with augmentation and the evaluation
  batches;
* :mod:`~revsnn_jax.data.bundled` -- the real data sets that ship inside installed wheels
  (``digits``, ``mnist5k``), so the main job and the tests need no download;
* :mod:`~revsnn_jax.data.recordings` -- the neuromorphic recordings (DVS128 Gesture,
  CIFAR10-DVS, N-MNIST) where tonic keeps them, read with tonic's readers;
* :mod:`~revsnn_jax.data.integrate` -- events integrated into frames exactly as SpikingJelly's
  ``split_by='number'`` and ``'time'``;
* :mod:`~revsnn_jax.data.frame_cache` -- the integrated frames cached on disk (atomic,
  checksummed, rebuilt when corrupt).
"""

from revsnn_jax.data.datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    CIFAR_STD_RESNET,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLIT_METHODS,
    ArrayDataset,
    CorruptFrameCacheWarning,
    DataNotFoundError,
    DatasetSpec,
    IncompleteDataWarning,
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
           "IMAGENET_STD", "SPLIT_METHODS", "ArrayDataset", "CorruptFrameCacheWarning",
           "DataNotFoundError", "DatasetSpec", "IncompleteDataWarning", "Normalization",
           "eval_batches", "get_spec", "load_digits", "load_mnist5k", "load_source",
           "make_augment", "make_train_iterator", "mnist5k_split"]
