"""Checkpoints of a :class:`~revsnn_jax.training.state.Trainer`: save, verified restore, resume.

A checkpoint holds the parameters, optimizer state and model state (BatchNorm statistics) as
host arrays, one replica (every device holds the same values, so saving and restoring need no
sharding support from orbax and work for any device count), and its metadata: the step, the
data-iterator position, the training seconds, the config and the run's counters. Storage and
verification (SHA-256 of every array and of the metadata) are :mod:`revsnn_jax.training.checkpoint`'s;
this module maps a trainer onto them.

Orbax writes a checkpoint into ``checkpoints/<step>.orbax-checkpoint-tmp*`` and renames it only
once it is complete, so a half-written checkpoint is never loaded. :func:`resume` loads the
newest checkpoint that verifies and sets every newer, failing one aside.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from revsnn_jax.training import checkpoint as checkpointing
from revsnn_jax.training.state import Trainer, maybe_initialize_distributed
from revsnn_jax.training.workdir import CHECKPOINT_IDENTITY, load_workdir_config


# --------------------------------------------------------------------------- host copies
def _pure_dict(state: Any) -> Any:
    # flax >= 0.11: nnx.to_pure_dict; flax 0.10: State.to_pure_dict
    return nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()


def _replace_by_pure_dict(state: Any, pure: Any) -> None:
    if hasattr(nnx, "replace_by_pure_dict"):
        nnx.replace_by_pure_dict(state, pure)
    else:
        state.replace_by_pure_dict(pure)


def to_saveable(tree: Any) -> Any:
    """Host NumPy copies of a replicated pytree, one replica (PRNG keys as their raw data)."""
    def conv(leaf):
        if isinstance(leaf, jax.Array):
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)
    return jax.tree.map(conv, _pure_dict(tree) if isinstance(tree, nnx.State) else tree)


def from_saved(template: Any, saved: Any, sharding: NamedSharding) -> Any:
    """Put ``saved`` (host arrays) back into ``template``'s structure, replicated by
    ``sharding`` (PRNG keys re-wrapped)."""
    pure_template = _pure_dict(template) if isinstance(template, nnx.State) else template

    def back(t, s):
        s = np.asarray(s)
        arr = jax.make_array_from_callback(s.shape, sharding, lambda index: s[index])
        if isinstance(t, jax.Array) and jnp.issubdtype(t.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(t))
        return arr

    restored = jax.tree.map(back, pure_template, saved)
    if isinstance(template, nnx.State):
        template = jax.tree.map(lambda v: v, template)  # a copy
        _replace_by_pure_dict(template, restored)
        return template
    return restored


def saveable_model(trainer: Trainer) -> dict[str, Any]:
    """What a checkpoint's ``model`` item holds: parameters, model and optimizer state."""
    return {"params": to_saveable(trainer.params), "state": to_saveable(trainer.state),
            "opt_state": to_saveable(trainer.opt_state)}


# --------------------------------------------------------------------------- save / restore
def save(manager: Any, trainer: Trainer, step: int, iterator: Any, train_seconds: float,
         counters: dict[str, Any] | None = None) -> None:
    """Checkpoint ``step`` of ``trainer`` with the iterator's position (asynchronous)."""
    meta = {"step": step, "data_iterator": iterator.get_state() if iterator else None,
            "train_seconds": train_seconds, "config": trainer.cfg.to_dict(), **(counters or {})}
    checkpointing.save(manager, step, saveable_model(trainer), meta)


def _same_model(trainer: Trainer, directory: pathlib.Path) -> Callable[[dict[str, Any]], None]:
    """``check_meta`` for :func:`checkpointing.restore`: the checkpoint's own config names the
    same model (even where ``config.yaml`` is gone)."""
    def check(meta: dict[str, Any]) -> None:
        saved, now = meta.get("config") or {}, trainer.cfg.to_dict()
        clash = [k for k in CHECKPOINT_IDENTITY if k in saved and saved[k] != now[k]]
        if clash:
            raise ValueError(
                f"the checkpoints in {directory} hold another model ({', '.join(clash)} differ: "
                f"{clash[0]} = {saved[clash[0]]!r} there, {now[clash[0]]!r} now); use a new "
                f"--workdir, or remove {directory} to start this run from scratch")
    return check


def restore_into(manager: Any, trainer: Trainer, step: int, *,
                 with_optimizer: bool = True) -> dict[str, Any]:
    """Load verified checkpoint ``step`` into ``trainer``; its metadata
    (:class:`checkpointing.CorruptCheckpointError` if it fails verification)."""
    model, meta = checkpointing.restore(
        manager, step, saveable_model(trainer), what=repr(trainer.cfg.model),
        check_meta=_same_model(trainer, pathlib.Path(str(manager.directory))))
    trainer.params = from_saved(trainer.params, model["params"], trainer.replicated)
    trainer.state = from_saved(trainer.state, model["state"], trainer.replicated)
    if with_optimizer:
        trainer.opt_state = from_saved(trainer.opt_state, model["opt_state"],
                                       trainer.replicated)
    return meta


def resume(manager: Any, trainer: Trainer) -> dict[str, Any] | None:
    """Restore the newest checkpoint that verifies (its metadata; ``None``: none to resume),
    setting aside, with a warning, every newer one that fails."""
    aside = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore_into(manager, trainer, step)
        except checkpointing.CorruptCheckpointError as err:
            aside.append(str(checkpointing.set_aside(manager, err)))
    if aside:
        raise ValueError(f"no checkpoint in {manager.directory} verifies (all moved aside: "
                         f"{', '.join(aside)}); run again to start from scratch")
    return None


def last_good(manager: Any, trainer: Trainer, at_most: int) -> int | None:
    """The newest checkpoint ``<= at_most`` that verifies (waits for pending saves)."""
    manager.wait_until_finished()
    target = saveable_model(trainer)
    return checkpointing.newest_good(
        manager, lambda s: checkpointing.restore(manager, s, target), below=at_most)[0]


def _corrupt_hint(err: checkpointing.CorruptCheckpointError,
                  good: int | None) -> checkpointing.CorruptCheckpointError:
    return checkpointing.CorruptCheckpointError(
        err.step, err.directory, err.what, err.reason, hint=(
            f"the newest checkpoint that verifies is step {good}: evaluate it with "
            f"`revsnn eval --step {good}`; `revsnn train` on this directory sets the bad one "
            f"aside and resumes" if good is not None else "no older checkpoint verifies either"))


# --------------------------------------------------------------------------- entry points
def restore(workdir: str | os.PathLike, overrides: dict[str, Any] | None = None,
            step: int | None = None, *, with_optimizer: bool = True) -> tuple[Trainer, int]:
    """A :class:`Trainer` for ``workdir``'s run holding its latest (or ``step``'s) checkpoint."""
    maybe_initialize_distributed()
    workdir = pathlib.Path(workdir)
    cfg = load_workdir_config(workdir)
    if overrides:
        cfg = cfg.replace(**overrides)
    trainer = Trainer(cfg, workdir)
    manager = checkpointing.manager(workdir, None, read_only=True)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
        try:
            restore_into(manager, trainer, step, with_optimizer=with_optimizer)
        except checkpointing.CorruptCheckpointError as err:
            raise _corrupt_hint(err, last_good(manager, trainer, step - 1)) from err
    finally:
        manager.close()
    return trainer, step


def evaluate(workdir: str | os.PathLike, overrides: dict[str, Any] | None = None,
             step: int | None = None) -> dict[str, Any]:
    """Score the latest (or ``step``'s) checkpoint in ``workdir`` on the test split."""
    trainer, step = restore(workdir, overrides, step, with_optimizer=False)
    cfg = trainer.cfg
    return {"model": cfg.model, "dataset": cfg.dataset, "step": step, **trainer.evaluate(),
            "firing_rate": trainer.firing_rate()}
