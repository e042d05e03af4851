"""Neuromorphic recordings where tonic keeps them: DVS128 Gesture, CIFAR10-DVS and N-MNIST.

``tonic.datasets.X(save_to=ROOT, ...)`` downloads and extracts data set ``X`` into ``ROOT/X/``.
This module reads that directory as it is (nothing is downloaded, nothing converted):

=================  ======================================================  ==============
data set           tonic's layout under ``ROOT``                            recordings
=================  ======================================================  ==============
``dvs128_gesture`` ``DVSGesture/ibmGestureTrain/<user>_<lighting>/<c>.npy``  1,077 / 264
                   and ``DVSGesture/ibmGestureTest/...``; ``<c>`` is the
                   class, 0-10; each file an ``[N, 4]`` array of columns
                   x, y, p, t (milliseconds; read as microseconds, x1000)
``cifar10_dvs``    ``CIFAR10DVS/<class name>/*.aedat4`` (AEDAT 4.0, read     10,000
                   with tonic's ``read_aedat4``, which needs ``aedat``);
                   no split on disk: the first 90% of each class in file
                   name order train, the rest test (SpikingJelly's
                   ``split_to_train_test_set(0.9, ...)``, RevSNN's split)
``nmnist``         ``NMNIST/Train/<digit>/*.bin`` and ``NMNIST/Test/...``     60,000 / 10,000
                   (ATIS 5-byte events, read with tonic's
                   ``read_mnist_file``, which drops timestamp-overflow
                   markers)
=================  ======================================================  ==============

Events come out as tonic yields them: arrays ``t`` (microseconds), ``x``, ``y``, ``p``.
Recordings are listed in a fixed order (class folder, then file name), independent of the
file system. DVS128 Gesture as tonic ships it is not SpikingJelly's: tonic's preprocessed copy
has 1,077 / 264 samples with millisecond timestamps, SpikingJelly cuts 1,176 / 288 samples
from the original AEDAT files with microsecond timestamps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
import warnings
from collections.abc import Callable

import numpy as np

from revsnn_jax.data.bundled import DataNotFoundError

__all__ = ["EVENT_DATASETS", "EventDataset", "IncompleteDataWarning", "Recording",
           "find_recordings", "read_events"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR10_DVS_TRAIN_FRACTION = 0.9


class IncompleteDataWarning(UserWarning):
    """Fewer recordings on disk than a complete download has (training goes on with them)."""


@dataclasses.dataclass(frozen=True)
class Recording:
    path: pathlib.Path
    label: int


@dataclasses.dataclass(frozen=True)
class EventDataset:
    """How one data set lies in tonic's folder and how its recordings are read."""

    name: str  # ours, e.g. "dvs128_gesture"
    tonic_class: str  # tonic's class, also its folder under ROOT
    height: int
    width: int
    num_classes: int
    complete: dict  # split -> recordings in a complete download
    pattern: dict  # split -> files expected (for messages), relative to ROOT
    archives: tuple[str, ...]  # what tonic downloads into ROOT/<tonic_class>/
    fetch: str  # the Python that fetches it with tonic (ROOT as the placeholder)


def _gesture_files(folder: pathlib.Path, split: str) -> list[Recording]:
    sub = folder / ("ibmGestureTrain" if split == "train" else "ibmGestureTest")
    found = []
    for trial in sorted(p for p in sub.glob("*_*") if p.is_dir()):
        for file in trial.glob("*.npy"):
            try:
                label = int(file.stem)
            except ValueError:
                raise ValueError(f"{file}: DVS128 Gesture recordings are named <class>.npy "
                                 "(class 0-10), as tonic extracts them") from None
            found.append(Recording(file, label))
    return sorted(found, key=lambda r: (r.path.parent.name, r.label))


def _nmnist_files(folder: pathlib.Path, split: str) -> list[Recording]:
    sub = folder / ("Train" if split == "train" else "Test")
    return [Recording(file, digit) for digit in range(10)
            for file in sorted((sub / str(digit)).glob("*.bin"))]


def _cifar10_dvs_all(folder: pathlib.Path) -> list[list[Recording]]:
    per_class = [[] for _ in CIFAR10_CLASSES]
    for file in folder.rglob("*.aedat4"):
        if file.parent.name in CIFAR10_CLASSES:
            per_class[CIFAR10_CLASSES.index(file.parent.name)].append(file)
    return [[Recording(f, c) for f in sorted(files, key=lambda f: f.name)]
            for c, files in enumerate(per_class)]


def _cifar10_dvs_files(folder: pathlib.Path, split: str) -> list[Recording]:
    found = []
    for recordings in _cifar10_dvs_all(folder):
        cut = math.ceil(len(recordings) * CIFAR10_DVS_TRAIN_FRACTION)
        found += recordings[:cut] if split == "train" else recordings[cut:]
    return found


_LISTERS: dict[str, Callable[[pathlib.Path, str], list[Recording]]] = {
    "dvs128_gesture": _gesture_files, "cifar10_dvs": _cifar10_dvs_files, "nmnist": _nmnist_files,
}

EVENT_DATASETS: dict[str, EventDataset] = {
    "dvs128_gesture": EventDataset(
        "dvs128_gesture", "DVSGesture", 128, 128, 11, {"train": 1077, "test": 264},
        {"train": "DVSGesture/ibmGestureTrain/<user>_<lighting>/<class>.npy",
         "test": "DVSGesture/ibmGestureTest/<user>_<lighting>/<class>.npy"},
        ("ibmGestureTrain.tar.gz", "ibmGestureTest.tar.gz"),
        "import tonic; tonic.datasets.DVSGesture('ROOT', train=True); "
        "tonic.datasets.DVSGesture('ROOT', train=False)"),
    "cifar10_dvs": EventDataset(
        "cifar10_dvs", "CIFAR10DVS", 128, 128, 10, {"train": 9000, "test": 1000},
        {"train": "CIFAR10DVS/<class name>/*.aedat4 (the first 90% of each class)",
         "test": "CIFAR10DVS/<class name>/*.aedat4 (the last 10% of each class)"},
        ("CIFAR10DVS.zip",),
        "import tonic; tonic.datasets.CIFAR10DVS('ROOT')"),
    "nmnist": EventDataset(
        "nmnist", "NMNIST", 34, 34, 10, {"train": 60000, "test": 10000},
        {"train": "NMNIST/Train/<digit>/*.bin", "test": "NMNIST/Test/<digit>/*.bin"},
        ("train.zip", "test.zip"),
        "import tonic; tonic.datasets.NMNIST('ROOT', train=True); "
        "tonic.datasets.NMNIST('ROOT', train=False)"),
}


def how_to_fetch(name: str, root: str | os.PathLike) -> str:
    """One sentence: the files expected under ``root`` and the tonic command that fetches them."""
    ds = EVENT_DATASETS[name]
    root = str(root)
    expected = "; ".join(f"{split}: {os.path.join(root, ds.pattern[split])} "
                         f"({ds.complete[split]:,} recordings)" for split in ("train", "test"))
    fetch = ds.fetch.replace("ROOT", root)
    return (f"expected tonic's {ds.tonic_class} download ({expected}); fetch it on a machine "
            f"with internet access with `pip install tonic && python -c \"{fetch}\"`, copy "
            f"{os.path.join(root, ds.tonic_class)} here and pass --data-dir {root}")


def _fingerprint(recordings: list[Recording], root: pathlib.Path) -> str:
    h = hashlib.sha256()
    for r in recordings:
        h.update(f"{r.path.relative_to(root)}\t{r.path.stat().st_size}\t{r.label}\n".encode())
    return h.hexdigest()


def find_recordings(name: str, split: str, root: str | os.PathLike
                    ) -> tuple[list[Recording], str] | None:
    """The recordings of ``split`` under ``root`` in tonic's layout and their fingerprint
    (relative paths, sizes and labels hashed), or ``None`` when the data set's folder is absent.

    Raises :class:`DataNotFoundError` when the folder is there but the split has no recordings
    or a class has none (an unextracted or partial download), and warns
    (:class:`IncompleteDataWarning`) when there are fewer than a complete download has.
    """
    ds = EVENT_DATASETS[name]
    root = pathlib.Path(root)
    folder = root / ds.tonic_class
    if not folder.is_dir():
        return None
    recordings = _LISTERS[name](folder, split)
    if not recordings:
        archives = [a for a in ds.archives if (folder / a).exists()]
        extra = (f" (found {', '.join(str(folder / a) for a in archives)} but not its "
                 "extracted files: rerun the tonic command, which extracts them)"
                 if archives else "")
        raise DataNotFoundError(f"{name} ({split} split): no recordings under {folder}{extra}; "
                                f"{how_to_fetch(name, root)}")
    classes = {r.label for r in recordings}
    missing = sorted(set(range(ds.num_classes)) - classes)
    bad = sorted(c for c in classes if not 0 <= c < ds.num_classes)
    if bad:
        raise ValueError(f"{name} ({split} split): class labels {bad} out of range 0.."
                         f"{ds.num_classes - 1} under {folder}")
    if missing:
        raise DataNotFoundError(f"{name} ({split} split): no recordings of class(es) "
                                f"{', '.join(map(str, missing))} under {folder} (a partial "
                                f"download?); {how_to_fetch(name, root)}")
    if len(recordings) < ds.complete[split]:
        warnings.warn(IncompleteDataWarning(
            f"{name} ({split} split): {len(recordings):,} recordings under {folder}, a "
            f"complete download has {ds.complete[split]:,}; using those found"),
            stacklevel=2)
    return recordings, _fingerprint(recordings, root)


def _tonic_io(name: str):
    """``tonic.io`` (and, for CIFAR10-DVS, the ``aedat`` package its AEDAT 4 reader imports)."""
    try:
        import tonic.io

        if name == "cifar10_dvs":
            import aedat  # noqa: F401
    except ImportError as err:
        raise DataNotFoundError(
            f"reading {name}'s recordings needs tonic and aedat ({err}); install them with "
            "`pip install 'revsnn-jax[events]'`") from None
    return tonic.io


def _read_gesture(path: pathlib.Path) -> dict[str, np.ndarray]:
    # as tonic.datasets.DVSGesture.__getitem__: columns x, y, p, t (ms), times scaled in place
    events = np.load(path)
    if events.ndim != 2 or events.shape[1] != 4:
        raise ValueError(f"{path}: expected an [N, 4] array (x, y, p, t), got {events.shape}")
    events[:, 3] *= 1000
    return {"t": events[:, 3].astype(np.int64), "x": events[:, 0].astype(np.int16),
            "y": events[:, 1].astype(np.int16), "p": events[:, 2].astype(bool)}


def _read_nmnist(path: pathlib.Path) -> dict[str, np.ndarray]:
    tio = _tonic_io("nmnist")
    import tonic.datasets

    events = tio.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    return {key: events[key] for key in ("t", "x", "y", "p")}


def _read_aedat4(path: pathlib.Path) -> dict[str, np.ndarray]:
    events = _tonic_io("cifar10_dvs").read_aedat4(str(path))
    t, x, y, p = (events[field] for field in events.dtype.names)  # t, x, y, on
    return {"t": t, "x": x, "y": y, "p": p}


_READERS = {"dvs128_gesture": _read_gesture, "cifar10_dvs": _read_aedat4, "nmnist": _read_nmnist}


def read_events(name: str, path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One recording of data set ``name`` as arrays ``t`` (microseconds), ``x``, ``y``, ``p``."""
    path = pathlib.Path(path)
    try:
        return _READERS[name](path)
    except DataNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"cannot read {name} recording {path}: {type(err).__name__}: "
                         f"{err}") from err
