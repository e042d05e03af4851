"""Training and evaluation: optax, orbax checkpoints, metrics, data-parallel sharding.

The public API of the training pipeline, whose parts live in :mod:`revsnn_jax.training`
(``state``: the :class:`Trainer`; ``loop``: :func:`train`; ``checkpoint``: :func:`restore` and
:func:`evaluate`; ``guards``: non-finite stop, preemption, reconstruction drift; ``optim``,
``objective``, ``evaluation``, ``workdir``). :func:`train` runs a
:class:`~revsnn_jax.config.TrainConfig` in a work directory::

    DIR/config.yaml      the resolved configuration
    DIR/checkpoints/     orbax checkpoints: params, optimizer state, model state (BatchNorm
                         statistics), step, data-iterator position, training seconds
    DIR/metrics.jsonl    one JSON record per log interval and per evaluation
    DIR/tb/              TensorBoard event files (tensorboardX)
    DIR/summary.json     the final summary (see :func:`train`)

Running it again on the same directory resumes from the latest checkpoint, mid-epoch, with the
same batches an uninterrupted run would have seen. :func:`evaluate` scores the latest
checkpoint on the test split.

Failures (docs/training.md "Resuming and failures"):

* a killed run loses at most the steps since its last checkpoint; a half-written checkpoint is
  never loaded, and every checkpoint is verified (SHA-256 of its arrays and metadata) when it
  is restored: a bad one is set aside and the newest good one resumed
  (:mod:`revsnn_jax.checkpointing`).
* SIGTERM (preemption) finishes the current step, saves a checkpoint and returns
  ``{"preempted": True, ...}``; ``revsnn train`` then exits with :data:`EXIT_PREEMPTED` (75).
* a non-finite loss or gradient raises :class:`NonFiniteError` naming the step; with
  ``skip_nonfinite: true`` such a batch's update is suppressed inside the jitted step instead.
* ``drift_check_every: K`` compares, every K steps, the gradients of the reversible backward
  with plain autodiff and warns (:class:`ReconstructionDriftWarning`) above
  ``drift_threshold``.
* every batch is checked (shape, dtype, label range) before it reaches the device, and a model
  that cannot take the data set's examples fails when the :class:`Trainer` is built.
"""

from __future__ import annotations

from revsnn_jax.training.checkpoint import evaluate, restore
from revsnn_jax.training.guards import (
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    DriftReport,
    NonFiniteError,
    ReconstructionDriftWarning,
)
from revsnn_jax.training.loop import format_summary, train
from revsnn_jax.training.objective import mixup, mixup_lambda
from revsnn_jax.training.optim import make_optimizer
from revsnn_jax.training.state import Trainer, maybe_initialize_distributed
from revsnn_jax.training.workdir import load_workdir_config

__all__ = ["EXIT_NONFINITE", "EXIT_PREEMPTED", "DriftReport", "NonFiniteError",
           "ReconstructionDriftWarning", "Trainer", "evaluate", "format_summary",
           "load_workdir_config", "make_optimizer", "maybe_initialize_distributed", "mixup",
           "mixup_lambda", "restore", "train"]
