"""Orbax checkpoints of a training run, verified when they are restored.

A checkpoint ``checkpoints/<step>/`` holds three orbax items, committed together (orbax writes
``<step>.orbax-checkpoint-tmp*`` and renames it only when every item is complete):

* ``model``: the arrays (parameters, model state, optimizer state) as host NumPy arrays;
* ``meta``: JSON (step, data-iterator position, training seconds, the config, counters);
* ``integrity``: JSON, the SHA-256 of every array's bytes (with its dtype and shape, keyed by
  its path in the tree) and of ``meta`` (canonical JSON), computed from what was handed to orbax.

:func:`restore` reads ``meta`` and ``integrity`` first, checks ``meta`` against its checksum,
lets the caller check the run's identity, compares the record's shapes with the caller's
template (a different model is a :class:`ValueError`, not corruption), reads the arrays and
compares their checksums. Any failure of the storage itself (unreadable JSON, an OCDBT/zarr
read error, a checksum mismatch, a missing record) raises :class:`CorruptCheckpointError`.

Why our own checksums rather than the storage layer's: orbax 0.12 writes arrays through
TensorStore (zarr + OCDBT). OCDBT checksums its manifest and B-tree nodes (crc32c) and zarr3's
shard index carries a crc32c, but the chunk bytes themselves are not checksummed, and orbax does
not expose the codec chain to add zarr3's ``crc32c`` codec to the data; flipped bytes in an
array file restore silently. The record here checks what the training loop gets back, end to
end, whichever layer corrupted it.

A checkpoint that fails is never used: :func:`set_aside` renames it to
``checkpoints/<step>.corrupt-<what>`` (outside orbax's step naming, so orbax ignores it and
never deletes it) for inspection.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["CorruptCheckpointError", "CorruptCheckpointWarning", "array_checksums", "manager",
           "newest_good", "restore", "save", "set_aside"]

_FORMAT = 1  # version of the integrity record
# what a read of a damaged checkpoint raises (json: ValueError; tensorstore: ValueError with
# DATA_LOSS / decode messages; a missing file: OSError; valid JSON missing a key: KeyError).
# Anything else is a bug and propagates: it must not get good checkpoints set aside.
_READ_ERRORS = (ValueError, OSError, KeyError)


class CorruptCheckpointError(ValueError):
    """Checkpoint ``step`` in ``directory`` fails verification; ``what`` is the part that is bad
    (``"metadata"``, ``"arrays"`` or ``"record"``), ``reason`` the details."""

    def __init__(self, step: int, directory: pathlib.Path, what: str, reason: str,
                 hint: str = ""):
        self.step, self.directory, self.what, self.reason = step, directory, what, reason
        super().__init__(f"checkpoint {step} in {directory} fails verification: {reason}"
                         + (f"; {hint}" if hint else ""))


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint failed verification and was set aside (or cannot be verified)."""


# --------------------------------------------------------------------------- manager
def manager(workdir: pathlib.Path, keep: int | None, *, read_only: bool = False):
    """The orbax ``CheckpointManager`` of ``workdir/checkpoints`` (``keep``: max_to_keep)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, enable_async_checkpointing=True,
        # a run killed while writing leaves checkpoints/<step>.orbax-checkpoint-tmp*: never
        # loaded (not a finalised step), deleted when the next run opens the directory
        cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options,
                                 item_names=("model", "meta", "integrity"))


def _directory(mgr) -> pathlib.Path:
    return pathlib.Path(str(mgr.directory))


# --------------------------------------------------------------------------- checksums
def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8).reshape(-1)).hexdigest()


def array_checksums(tree: Any) -> dict[str, dict[str, Any]]:
    """``{path: {"sha256", "dtype", "shape"}}`` of every array leaf of ``tree`` (paths like
    ``params/layers/0/kernel``, the same for int and str keys)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        leaf = np.asarray(leaf)
        out[jax.tree_util.keystr(path, simple=True, separator="/")] = {
            "sha256": _sha256(leaf), "dtype": str(leaf.dtype), "shape": list(leaf.shape)}
    return out


def _canonical(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(meta))


def _meta_checksum(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- save / restore
def save(mgr, step: int, model: dict[str, Any], meta: dict[str, Any]) -> None:
    """Save ``model`` (host arrays) and ``meta`` (JSON) as checkpoint ``step`` with their
    integrity record (asynchronous: ``mgr.wait_until_finished()`` to wait)."""
    import orbax.checkpoint as ocp

    meta = _canonical({**meta, "integrity_format": _FORMAT})
    record = {"format": _FORMAT, "algorithm": "sha256", "meta_sha256": _meta_checksum(meta),
              "arrays": array_checksums(model)}
    mgr.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model),
                                            meta=ocp.args.JsonSave(meta),
                                            integrity=ocp.args.JsonSave(record)), force=True)


def _missing_step(mgr, step: int) -> FileNotFoundError:
    steps = mgr.all_steps()
    return FileNotFoundError(
        f"no checkpoint of step {step} in {_directory(mgr)}; its checkpoints: "
        f"{', '.join(map(str, steps)) or '(none)'}")


def _read_meta(mgr, step: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(meta, record)`` of ``step``, ``meta`` verified against the record; ``record`` is
    ``None`` for a checkpoint written before integrity records (warned: not verified)."""
    import orbax.checkpoint as ocp

    directory = _directory(mgr)
    has_record = (directory / str(step) / "integrity").exists()
    items = {"meta": ocp.args.JsonRestore()}
    if has_record:
        items["integrity"] = ocp.args.JsonRestore()
    try:
        restored = mgr.restore(step, args=ocp.args.Composite(**items))
        meta, record = restored["meta"], restored.get("integrity") if has_record else None
    except _READ_ERRORS as err:
        raise CorruptCheckpointError(step, directory, "metadata",
                                     f"its metadata cannot be read ({_short(err)})") from err
    if not isinstance(meta, dict) or (has_record and not isinstance(record, dict)):
        raise CorruptCheckpointError(step, directory, "metadata", "its metadata is not a "
                                     "JSON mapping")
    if record is None:
        if "integrity_format" in meta:
            raise CorruptCheckpointError(step, directory, "record",
                                         "its integrity record (integrity/) is missing")
        import warnings

        warnings.warn(CorruptCheckpointWarning(
            f"checkpoint {step} in {directory} was written without an integrity record (by an "
            f"older revsnn-jax): it is used unverified"), stacklevel=3)
        return meta, None
    if record.get("meta_sha256") != _meta_checksum(meta):
        raise CorruptCheckpointError(step, directory, "metadata",
                                     "its metadata (meta/) does not match its SHA-256 checksum")
    return meta, record


def _short(err: BaseException, limit: int = 300) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _check_fits(record: dict[str, Any], target: Any, step: int, directory: pathlib.Path,
                what: str) -> None:
    """The record's arrays against ``target``'s: other paths, shapes or dtypes are another
    model or optimizer (a configuration error), not corruption."""
    want = {k: (v["dtype"], v["shape"]) for k, v in record["arrays"].items()}
    have = {k: (str(np.asarray(v).dtype), list(np.shape(v)))
            for k, v in ((jax.tree_util.keystr(p, simple=True, separator="/"), leaf)
                         for p, leaf in jax.tree_util.tree_flatten_with_path(target)[0])}
    if want != have:
        diff = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        raise ValueError(
            f"checkpoint {step} in {directory} does not fit {what} as configured now (other "
            f"parameter shapes or optimizer; e.g. {diff[0]}); use a new --workdir or the "
            f"settings it was written with")


def _drop_closed_loop_callbacks() -> None:
    """After a failed array read, TensorStore still completes the other pending reads of that
    restore and calls back into orbax's event loop, already closed: each prints "Exception
    ignored ... RuntimeError: Event loop is closed" via ``sys.unraisablehook``, burying the
    one clear error. Drop exactly those; anything else reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_revsnn_drops_closed_loop", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook._revsnn_drops_closed_loop = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _read_arrays(mgr, step: int, target: Any, record: dict[str, Any] | None,
                 what: str) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    directory = _directory(mgr)
    try:
        model = mgr.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(target)))["model"]
    except (*_READ_ERRORS, TypeError) as err:
        if record is None:  # unverifiable: as before integrity records, a misfit
            raise ValueError(
                f"checkpoint {step} in {directory} does not fit {what} as configured now "
                f"(other parameter shapes or optimizer); use a new --workdir or the settings "
                f"it was written with. Orbax said: {err}") from err
        if isinstance(err, TypeError):
            raise
        _drop_closed_loop_callbacks()
        raise CorruptCheckpointError(step, directory, "arrays",
                                     f"its arrays cannot be read ({_short(err)})") from err
    if record is not None:
        got = array_checksums(model)
        bad = [k for k, v in record["arrays"].items() if got.get(k) != v]
        if bad:
            raise CorruptCheckpointError(
                step, directory, "arrays", f"{len(bad)} of {len(got)} arrays do not match "
                f"their SHA-256 checksums ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    return model


def restore(mgr, step: int, target: Any, *, what: str = "the model",
            check_meta: Callable[[dict[str, Any]], None] | None = None
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model, meta)`` of checkpoint ``step``, verified.

    ``target``: a tree of arrays like the saved ``model`` (its structure, shapes and dtypes);
    ``check_meta(meta)`` runs on the verified metadata before any array is read (e.g. "is this
    the same model?"). Raises :class:`CorruptCheckpointError` if the checkpoint fails
    verification, ``ValueError`` if it holds another model, ``FileNotFoundError`` if there is
    no such step.
    """
    if step not in mgr.all_steps():
        raise _missing_step(mgr, step)
    meta, record = _read_meta(mgr, step)
    if check_meta is not None:
        check_meta(meta)
    if record is not None:
        _check_fits(record, target, step, _directory(mgr), what)
    return _read_arrays(mgr, step, target, record, what), meta


def set_aside(mgr, err: CorruptCheckpointError) -> pathlib.Path:
    """Rename the checkpoint ``err`` is about to ``<step>.corrupt-<what>[-N]`` (kept for
    inspection, invisible to orbax), refresh ``mgr`` and warn; returns the new path."""
    import warnings

    source = err.directory / str(err.step)
    target = err.directory / f"{err.step}.corrupt-{err.what}"
    n = 1
    while target.exists():
        n += 1
        target = err.directory / f"{err.step}.corrupt-{err.what}-{n}"
    if jax.process_index() == 0:
        os.rename(source, target)
    mgr.reload()
    warnings.warn(CorruptCheckpointWarning(
        f"{err}. It is never used: moved aside to {target}"), stacklevel=3)
    return target


def newest_good(mgr, restore_one: Callable[[int], Any], *, below: int | None = None
                ) -> tuple[int | None, list[CorruptCheckpointError]]:
    """The newest step (``<= below``) for which ``restore_one(step)`` passes verification, and
    the failures of the newer ones; ``None`` if none passes. Nothing is renamed."""
    failures = []
    for step in sorted(mgr.all_steps(), reverse=True):
        if below is not None and step > below:
            continue
        try:
            restore_one(step)
            return step, failures
        except CorruptCheckpointError as err:
            failures.append(err)
    return None, failures
