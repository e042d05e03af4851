"""Integrated event frames cached on disk, once per (data set, split, T, split method).

``<data_dir>/<name>/frames/<split>-T<T>-<split_by>.npy`` (``$REVSNN_FRAME_CACHE`` in place of
``<data_dir>`` when set) holds the event counts of every recording of the split,
``[N, T, 2, H, W]`` (uint16, or uint32 where a count exceeds 65,535: lossless, the frames of
:func:`~revsnn_jax.data.integrate.integrate_counts`), memory-mapped when read. Beside it, ``...json`` holds the labels, the shape, the fingerprint of the
recordings it was built from and the SHA-256 of the ``.npy`` file.

* Built once, with a progress bar, then reused; written atomically (a temporary file renamed
  into place, the ``.json`` last), so a killed build leaves no half-written cache behind.
* Verified on every read: the ``.json`` must parse and describe this request, the ``.npy``
  must hash to its recorded SHA-256 and have its shape. A cache that fails is rebuilt with a
  :class:`CorruptFrameCacheWarning` (never trained on); one built from other recordings
  (files added, removed or changed size) is rebuilt too.
* Several hosts on one shared file system may each build it: the bytes are the same, and the
  last rename wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import warnings
from collections.abc import Callable

import numpy as np

from revsnn_jax.data.integrate import integrate_counts

__all__ = ["CACHE_FORMAT", "CorruptFrameCacheWarning", "NoRecordingsError", "cache_paths",
           "load_or_build"]

CACHE_FORMAT = 1


class NoRecordingsError(FileNotFoundError):
    """No usable cache and no recordings to build one from."""


class CorruptFrameCacheWarning(UserWarning):
    """A frame cache failed verification (or was built from other recordings) and is rebuilt."""


def cache_paths(data_dir: str | os.PathLike, name: str, split: str, time_steps: int,
                split_by: str) -> tuple[pathlib.Path, pathlib.Path]:
    """``(frames .npy, metadata .json)`` of one cache entry, under ``data_dir`` or, when set,
    ``$REVSNN_FRAME_CACHE`` (for a data directory that is read-only)."""
    base = os.environ.get("REVSNN_FRAME_CACHE") or data_dir
    stem = pathlib.Path(base) / name / "frames" / f"{split}-T{time_steps}-{split_by}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(npy: pathlib.Path, meta_path: pathlib.Path, want: dict, fingerprint: str | None
            ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """``(frames, labels, None)`` from a good cache, else ``(None, None, why)``; ``why`` is
    ``None`` when there is no cache at all."""
    if not meta_path.exists() and not npy.exists():
        return None, None, None
    try:
        meta = json.loads(meta_path.read_text())
        for key, value in want.items():
            if meta[key] != value:
                return None, None, f"it records {key} {meta[key]!r}, not {value!r}"
        if fingerprint is not None and meta["recordings"] != fingerprint:
            return None, None, "the recordings on disk changed since it was built"
        if _sha256(npy) != meta["sha256"]:
            return None, None, "its frames file does not match its SHA-256 checksum"
        frames = np.load(npy, mmap_mode="r")
        labels = np.asarray(meta["labels"], np.int32)
        if list(frames.shape) != meta["shape"] or len(labels) != frames.shape[0]:
            return None, None, f"its frames have shape {list(frames.shape)}, not {meta['shape']}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, None, f"it cannot be read ({type(err).__name__}: {err})"
    return frames, labels, None


def _write_atomic(path: pathlib.Path, text: str, suffix: str) -> None:
    tmp = path.with_name(f".{path.name}.{suffix}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _build(npy: pathlib.Path, meta_path: pathlib.Path, want: dict, items: list,
           read: Callable, height: int, width: int, fingerprint: str | None,
           progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    t, split_by = want["time_steps"], want["split_by"]
    suffix = f"{socket.gethostname()}-{os.getpid()}.tmp"
    tmp = npy.with_name(f".{npy.name}.{suffix}")
    shape = (len(items), t, 2, height, width)
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint16, shape=shape)
    except OSError as err:
        raise ValueError(f"cannot write the frame cache in {npy.parent} ({type(err).__name__}: "
                         f"{err}); make it writable, or set REVSNN_FRAME_CACHE to a writable "
                         "directory") from None
    try:
        bar = tqdm(items, desc=f"{want['dataset']}/{want['split']}: T={t} frames "
                   f"(split_by={split_by})", unit="rec", disable=not progress,
                   dynamic_ncols=True)
        labels = []
        for i, (path, label) in enumerate(bar):
            counts = integrate_counts(read(path), t, split_by, height, width)
            if counts.max(initial=0) > np.iinfo(frames.dtype).max:  # widen, losslessly
                if frames.dtype == np.uint32:
                    raise ValueError(f"{path}: more than 2**32 events in one pixel")
                wide = np.lib.format.open_memmap(tmp.with_suffix(".wide"), mode="w+",
                                                 dtype=np.uint32, shape=shape)
                wide[:i] = frames[:i]
                del frames
                os.replace(tmp.with_suffix(".wide"), tmp)
                frames = wide
            frames[i] = counts
            labels.append(int(label))
        frames.flush()
        del frames
        digest = _sha256(tmp)
        meta_path.unlink(missing_ok=True)  # no old metadata beside the new frames
        os.replace(tmp, npy)
    finally:
        for leftover in (tmp, tmp.with_suffix(".wide")):
            leftover.unlink(missing_ok=True)
    meta = {**want, "format": CACHE_FORMAT, "shape": list(shape), "labels": labels,
            "recordings": fingerprint, "sha256": digest}
    _write_atomic(meta_path, json.dumps(meta), suffix)
    return np.load(npy, mmap_mode="r"), np.asarray(labels, np.int32)


def load_or_build(data_dir: str | os.PathLike, name: str, split: str, time_steps: int,
                  split_by: str, *, items: list | None, read: Callable, height: int,
                  width: int, fingerprint: str | None, progress: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The cached frames ``[N, T, 2, H, W]`` (memory-mapped) and labels ``[N]`` of a split.

    ``items``: ``(path, label)`` of every recording, in order (``None``: the recordings are not
    on disk; a verified cache is then used as it is); ``read(path)`` returns a recording's
    events; ``fingerprint`` identifies the recordings (a cache built from others is rebuilt).
    """
    npy, meta_path = cache_paths(data_dir, name, split, time_steps, split_by)
    want = {"format": CACHE_FORMAT, "dataset": name, "split": split, "time_steps": time_steps,
            "split_by": split_by, "height": height, "width": width}
    frames, labels, why = _verify(npy, meta_path, want, fingerprint if items else None)
    if frames is not None:
        return frames, labels
    if why is not None:
        warnings.warn(CorruptFrameCacheWarning(
            f"frame cache {npy} is not used: {why}; rebuilding it from the recordings"),
            stacklevel=2)
    if not items:
        raise NoRecordingsError(f"no recordings to rebuild the frame cache {npy} from")
    return _build(npy, meta_path, want, items, read, height, width, fingerprint, progress)
