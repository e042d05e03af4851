"""Layer 9, training and evaluation: optax, orbax checkpoints, metrics, data-parallel sharding.

The top of the library (commands and the CLI sit on it); imports every layer below.
:func:`train` runs a :class:`~revsnn_jax.training.config.TrainConfig` in a work directory::

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
  (:mod:`revsnn_jax.training.checkpoint`).
* SIGTERM (preemption) finishes the current step, saves a checkpoint and returns
  ``{"preempted": True, ...}``; ``revsnn train`` then exits with :data:`EXIT_PREEMPTED` (75).
* a non-finite loss or gradient raises :class:`NonFiniteError` naming the step; with
  ``skip_nonfinite: true`` such a batch's update is suppressed inside the jitted step instead.
* ``drift_check_every: K`` compares, every K steps, the gradients of the reversible backward
  with plain autodiff and warns (:class:`ReconstructionDriftWarning`) above
  ``drift_threshold``.
* every batch is checked (shape, dtype, label range) before it reaches the device, and a model
  that cannot take the data set's examples fails when the :class:`Trainer` is built.

The parts, one job per module:

* :mod:`~revsnn_jax.training.state`: the :class:`~revsnn_jax.training.state.Trainer` (config
  checks, data sources, the model, optimizer and compiled steps on a device mesh);
* :mod:`~revsnn_jax.training.objective`: what one step computes from a batch (host-drawn mixup,
  time-major events, the loss);
* :mod:`~revsnn_jax.training.optim`: the optax optimizer and learning-rate schedule of a recipe;
* :mod:`~revsnn_jax.training.evaluation`: test loss and accuracy, firing rate, compile-only
  memory per image;
* :mod:`~revsnn_jax.training.resume`: orbax checkpoints of a trainer (save, verified
  restore, resume from the newest good one, the data-iterator position);
* :mod:`~revsnn_jax.training.guards`: non-finite stop, preemption (SIGTERM), reconstruction
  drift;
* :mod:`~revsnn_jax.training.workdir`: the work directory (config on resume, metrics log);
* :mod:`~revsnn_jax.training.loop`: the training loop :func:`~revsnn_jax.training.loop.train`
  and its summary;
* :mod:`~revsnn_jax.training.config`: the experiment configuration (:class:`TrainConfig`,
  packaged YAML configs);
* :mod:`~revsnn_jax.training.checkpoint`: the verified orbax checkpoint store (checksums,
  setting a corrupt checkpoint aside, the newest good one).
"""

from __future__ import annotations

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
from revsnn_jax.training.resume import evaluate, restore
from revsnn_jax.training.state import Trainer, maybe_initialize_distributed
from revsnn_jax.training.workdir import load_workdir_config

__all__ = ["EXIT_NONFINITE", "EXIT_PREEMPTED", "DriftReport", "NonFiniteError",
           "ReconstructionDriftWarning", "Trainer", "evaluate", "format_summary",
           "load_workdir_config", "make_optimizer", "maybe_initialize_distributed", "mixup",
           "mixup_lambda", "restore", "train"]
