"""Training and evaluation: optax, orbax checkpoints, metrics, data-parallel sharding.

:func:`train` runs a :class:`~revsnn_jax.config.TrainConfig` in a work directory::

    DIR/config.yaml      the resolved configuration
    DIR/checkpoints/     orbax checkpoints: params, optimizer state, model state (BatchNorm
                         statistics), step, data-iterator position, training seconds
    DIR/metrics.jsonl    one JSON record per log interval and per evaluation
    DIR/tb/              TensorBoard event files (tensorboardX)
    DIR/summary.json     the final summary (see :func:`train`)

Running it again on the same directory resumes from the latest checkpoint, mid-epoch, with the
same batches an uninterrupted run would have seen. :func:`evaluate` scores the latest
checkpoint on the test split.

Failures (README "Resuming and failures"):

* a killed run loses at most the steps since its last checkpoint. Orbax writes a checkpoint
  into ``checkpoints/<step>.orbax-checkpoint-tmp*`` and renames it to ``checkpoints/<step>``
  only once it is complete, so a half-written checkpoint is never loaded (leftover temporary
  directories are deleted when training starts). On resume, ``metrics.jsonl`` records after
  the restored step (work that was lost) are dropped, so the file reads like an uninterrupted
  run's. Every checkpoint is verified (SHA-256 of its arrays and metadata) when it is restored; a
  bad one is set aside and the newest good one resumed (:mod:`revsnn_jax.checkpointing`).
* SIGTERM (preemption) finishes the current step, saves a checkpoint and returns
  ``{"preempted": True, ...}``; ``revsnn train`` then exits with :data:`EXIT_PREEMPTED` (75).
  On several hosts JAX's preemption service (``jax.distributed``) decides the common step.
* a non-finite loss or gradient raises :class:`NonFiniteError` naming the step (checked at every
  log and before every checkpoint, so a bad state is never saved); with
  ``skip_nonfinite: true`` the update of such a batch is suppressed inside the jitted step
  instead and counted (``skipped_batches``).
* ``drift_check_every: K`` compares, every K steps, the gradients of the reversible backward
  (reconstructed activations) with plain autodiff (stored activations) on the current batch
  and warns (:class:`ReconstructionDriftWarning`) above ``drift_threshold``.
* every batch is checked (shape, dtype, label range) before it reaches the device, and a model
  that cannot take the data set's examples fails when the :class:`Trainer` is built.

Test-only hooks (environment variables, never needed for training):
``REVSNN_TEST_PAUSE_IN_SAVE=STEP`` holds the checkpoint of step ``STEP`` after its files are
written and before its commit (rename), printing ``REVSNN_TEST paused in save of step STEP``,
so a test can kill the process in the middle of a checkpoint write;
``REVSNN_TEST_STEP_DELAY=SECONDS`` sleeps after every training step, so a test can signal the
process at a chosen step.

Parallelism: one :class:`jax.sharding.Mesh` over every device (axis ``"data"``); the batch is
sharded along it and parameters, optimizer and model state are replicated, so XLA inserts the
gradient all-reduce (and BatchNorm computes its statistics over the global batch: the math is
that of one device). On several hosts set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID`` (or ``REVSNN_DISTRIBUTED=1`` where JAX detects the cluster itself, e.g.
Cloud TPU pods, SLURM): :func:`maybe_initialize_distributed` calls
:func:`jax.distributed.initialize`, every process reads its slice of each global batch, and only
process 0 writes logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import signal
import sys
import threading
import time
import warnings
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from revsnn_jax import checkpointing, data, losses, models, steps
from revsnn_jax.config import TrainConfig, from_dict
from revsnn_jax.nnx_utils import mean_of_sown

__all__ = ["EXIT_NONFINITE", "EXIT_PREEMPTED", "DriftReport", "NonFiniteError",
           "ReconstructionDriftWarning", "Trainer", "evaluate", "make_optimizer",
           "maybe_initialize_distributed", "restore", "train"]

_ALLOWED_ON_RESUME = {
    "description", "steps", "epochs", "data_dir", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "measure_memory", "memory_batch", "num_threads", "prefetch",
    "eval_batch_size", "skip_nonfinite", "drift_check_every", "drift_threshold",
}
# what a checkpoint's arrays depend on: a checkpoint written with other values is another model
_CHECKPOINT_IDENTITY = ("model", "model_overrides", "dataset", "input_channels")

EXIT_PREEMPTED = 75  # `revsnn train` exit status after SIGTERM: checkpoint saved, run it again
EXIT_NONFINITE = 3  # `revsnn train` exit status after a non-finite loss/gradient stopped it


class NonFiniteError(FloatingPointError):
    """Training met a NaN or Inf in the loss or the gradients (``skip_nonfinite`` is off).

    ``step`` is the 1-based step whose batch produced it; ``last_checkpoint`` the last good
    checkpoint's step (``None``: none written yet). Nothing after it was saved.
    """

    def __init__(self, message: str, step: int, last_checkpoint: int | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint


class ReconstructionDriftWarning(UserWarning):
    """The reversible backward's gradients drifted from plain autodiff beyond the threshold."""


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Reversible backward against plain autodiff on one batch (see
    :meth:`Trainer.reconstruction_drift`).

    ``*_max_abs`` are ``max |g_rev - g_none|`` over the parameter gradients and the input
    gradient; ``*_rel`` divide them by ``max |g_none|`` (the quantities of
    :func:`revsnn_jax.reversible.check_reversible`'s gradient rows, for the whole model).
    ``exceeded``: ``max(grad_params_rel, grad_input_rel) > threshold`` (or not finite).
    """

    step: int
    grad_params_max_abs: float
    grad_params_rel: float
    grad_input_max_abs: float
    grad_input_rel: float
    threshold: float

    @property
    def rel(self) -> float:
        return max(self.grad_params_rel, self.grad_input_rel)

    @property
    def exceeded(self) -> bool:
        return not (self.rel <= self.threshold)  # NaN counts as exceeded

    def record(self) -> dict[str, Any]:
        """The metrics record (``metrics.jsonl``)."""
        return {"drift_grad_params_rel": self.grad_params_rel,
                "drift_grad_input_rel": self.grad_input_rel,
                "drift_threshold": self.threshold, "drift_exceeded": self.exceeded}


# --------------------------------------------------------------------------- distributed
def maybe_initialize_distributed() -> None:
    """Call :func:`jax.distributed.initialize` when the environment asks for several hosts."""
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    wanted = os.environ.get("REVSNN_DISTRIBUTED", "") in ("1", "true", "yes")
    if not (coordinator or wanted):
        return
    if jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if coordinator:
        kwargs["coordinator_address"] = coordinator
        if "JAX_NUM_PROCESSES" in os.environ:
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in os.environ:
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


# --------------------------------------------------------------------------- optimiser
def make_optimizer(cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
    """``(optimizer, schedule)`` of the recipe; epoch-valued settings become step counts."""
    lr = cfg.learning_rate
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "multistep":
        boundaries = {round(m * steps_per_epoch): cfg.gamma for m in cfg.milestones}
        schedule = optax.piecewise_constant_schedule(lr, boundaries)
    elif cfg.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1),
                                               alpha=cfg.min_lr / lr if lr else 0.0)
    elif cfg.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose multistep, cosine or constant")
    if warmup:
        schedule = optax.join_schedules(
            [optax.linear_schedule(cfg.warmup_lr, lr, warmup), schedule], [warmup])
    if cfg.optimizer == "sgd":
        # PyTorch SGD: weight decay is added to the gradient before momentum (coupled L2)
        optimizer = optax.chain(
            optax.add_decayed_weights(cfg.weight_decay) if cfg.weight_decay else optax.identity(),
            optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
        )
    elif cfg.optimizer in ("adamw", "lamb"):
        # timm: no decay (and, for Lamb, no trust ratio) on biases and other 1-D parameters
        mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
        make = optax.adamw if cfg.optimizer == "adamw" else optax.lamb
        optimizer = make(schedule, weight_decay=cfg.weight_decay, mask=mask)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adamw or lamb")
    clipping = []
    if cfg.adaptive_clip:
        clipping.append(optax.adaptive_grad_clip(cfg.adaptive_clip, eps=1e-3))
    if cfg.clip_grad_norm:
        clipping.append(optax.clip_by_global_norm(cfg.clip_grad_norm))
    if clipping:
        optimizer = optax.chain(*clipping, optimizer)
    return optimizer, schedule


# --------------------------------------------------------------------------- helpers
def mixup_lambda(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The mixup weight of ``step`` (1.0: no mixing), a pure function of ``(seed, step)``.

    Drawn on the host, as timm does, so a resumed run mixes exactly as an uninterrupted one:
    ``lam ~ Beta(alpha, alpha)`` with probability ``mixup_prob``, never from
    ``mixup_off_epoch`` on.
    """
    if cfg.mixup_alpha <= 0:
        return 1.0
    if cfg.mixup_off_epoch is not None and step >= round(cfg.mixup_off_epoch * steps_per_epoch):
        return 1.0
    rng = np.random.default_rng((cfg.seed, 0x6D6978, step))
    if rng.random() >= cfg.mixup_prob:
        return 1.0
    return float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))


def _mixup(x, y, lam, num_classes: int):
    """Batch mixup (timm mode "batch"): mix with the reversed batch; soft targets."""
    lam = jnp.asarray(lam, x.dtype)
    targets = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
    return lam * x + (1 - lam) * x[::-1], lam * targets + (1 - lam) * targets[::-1]


def _time_major(x: jax.Array, spec: data.DatasetSpec) -> jax.Array:
    # event batches arrive [B, T, H, W, C]; models take [T, B, H, W, C]
    return jnp.swapaxes(x, 0, 1) if spec.kind == "events" else x


def _pure_dict(state: Any) -> Any:
    # flax >= 0.11: nnx.to_pure_dict; flax 0.10: State.to_pure_dict
    return nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()


def _replace_by_pure_dict(state: Any, pure: Any) -> None:
    if hasattr(nnx, "replace_by_pure_dict"):
        nnx.replace_by_pure_dict(state, pure)
    else:
        state.replace_by_pure_dict(pure)


def _to_saveable(tree: Any) -> Any:
    """Host NumPy copies of a replicated pytree (PRNG keys as their raw data).

    Checkpoints hold plain arrays, one replica (every device holds the same values), so saving
    and restoring need no sharding support from orbax and work for any device count.
    """
    def conv(leaf):
        if isinstance(leaf, jax.Array):
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)
    return jax.tree.map(conv, _pure_dict(tree) if isinstance(tree, nnx.State) else tree)


def _from_saved(template: Any, saved: Any, sharding: NamedSharding) -> Any:
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


def _fail(msg: str) -> ValueError:
    return ValueError(msg)


# --------------------------------------------------------------------------- the trainer
@dataclasses.dataclass
class Trainer:
    """Everything a run needs, built (and validated) from a config before any training."""

    cfg: TrainConfig
    workdir: pathlib.Path | None = None
    devices: list | None = None  # default: every device (jax.devices())

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.spec = data.get_spec(cfg.dataset)
        self.info = models.get_info(cfg.model)  # unknown model: clear error here
        self.devices = list(self.devices or jax.devices())
        n = len(self.devices)
        if cfg.batch_size < 1 or cfg.batch_size % n:
            raise _fail(
                f"batch_size {cfg.batch_size} is not divisible by the {n} devices; the batch is "
                f"split evenly across devices (use a multiple of {n}, e.g. "
                f"{max(n, cfg.batch_size // n * n)})")
        self.eval_batch_size = cfg.eval_batch_size or cfg.batch_size
        if self.eval_batch_size % n:
            raise _fail(f"eval_batch_size {self.eval_batch_size} is not divisible by the {n} "
                        "devices")
        if cfg.memory_mode not in ("reversible", "checkpoint", "none"):
            raise _fail(f"memory_mode {cfg.memory_mode!r}: choose reversible, checkpoint or none")
        if cfg.loss not in losses.LOSSES:
            raise _fail(f"loss {cfg.loss!r}: choose one of {', '.join(losses.LOSSES)}")
        if cfg.drift_check_every < 0 or not cfg.drift_threshold >= 0:
            raise _fail(f"drift_check_every ({cfg.drift_check_every}) and drift_threshold "
                        f"({cfg.drift_threshold}) must be >= 0 (drift_check_every 0: no check)")
        if cfg.drift_check_every and cfg.memory_mode != "reversible":
            raise _fail(
                f"drift_check_every compares the reversible backward with plain autodiff, but "
                f"memory_mode is {cfg.memory_mode!r}: set memory_mode: reversible (a reversible "
                f"model such as revsresnet37), or drift_check_every: 0")
        # data first: a missing data set fails before anything is compiled
        self.train_source = data.load_source(cfg.dataset, "train", cfg.data_dir)
        self.test_source = data.load_source(cfg.dataset, "test", cfg.data_dir)
        for split, source in (("train", self.train_source), ("test", self.test_source)):
            if len(source) == 0:
                raise _fail(
                    f"the {split} split of dataset {cfg.dataset!r} is empty (0 examples, "
                    f"{getattr(source, 'name', '')}); rebuild its files (see "
                    f"revsnn_jax.data) or point data_dir at a complete copy")
        self.steps_per_epoch = len(self.train_source) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise _fail(f"batch_size {cfg.batch_size} exceeds the {len(self.train_source)} "
                        "training examples")
        self.total_steps = cfg.steps or round(cfg.epochs * self.steps_per_epoch)
        if self.total_steps < 1:
            raise _fail(f"epochs {cfg.epochs} of {self.steps_per_epoch} steps make no training "
                        f"step; set steps >= 1 or more epochs")
        self.num_classes = self.spec.num_classes
        # one preprocessed example: [H, W, C], events [T, H, W, C]
        self.example_shape = tuple(
            data.make_augment(self.spec, train=False, channels=cfg.input_channels)(
                self.train_source[0])[0].shape)
        self.local_batch_size = cfg.batch_size // jax.process_count()
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))

        model = self.build_model(cfg.memory_mode)
        self.fns, params, state = steps.split_model(model)
        self._check_model_takes_the_data(params, state)
        self.optimizer, self.schedule = make_optimizer(cfg, self.steps_per_epoch,
                                                       self.total_steps)
        opt_state = self.optimizer.init(params)
        self.params, self.state, self.opt_state = jax.device_put(
            (params, state, opt_state), self.replicated)
        self._train_step = self._build_train_step()
        self._eval_step = self._build_eval_step()
        self._drift_step = None  # built on first use (reconstruction_drift)

    def _check_model_takes_the_data(self, params: Any, state: Any) -> None:
        """Trace the forward pass on one abstract batch: a model that cannot take the data
        set's examples (e.g. an RGB stem fed grey images) fails here, with the fix."""
        x = jax.ShapeDtypeStruct((2, *self.example_shape), jnp.float32)
        try:
            jax.eval_shape(lambda p, s, x: self.fns.apply(p, s, _time_major(x, self.spec),
                                                          train=False)[0], params, state, x)
        except (TypeError, ValueError) as err:
            cfg = self.cfg
            hint = ("set input_channels: 3 to tile grey images for an RGB stem"
                    if self.example_shape[-1] == 1 else
                    "choose a model/dataset pair whose shapes match, or adjust model_overrides "
                    "(e.g. in_channels)")
            raise _fail(
                f"model {cfg.model!r} cannot take the examples of dataset {cfg.dataset!r}: one "
                f"example has shape {self.example_shape} (input_channels {cfg.input_channels}); "
                f"fix: {hint}. The model said: {err}") from err

    # ---------------------------------------------------------------- building
    def build_model(self, memory_mode: str, *, abstract: bool = False) -> nnx.Module:
        """The configured model; ``abstract``: shapes only (nothing computed).

        Parameters are initialised by one compiled program (eager initialisation would compile
        every initializer for every parameter shape): the same values, much faster to build.
        """
        overrides = dict(self.cfg.model_overrides)
        if self.info.family == "mlp":
            overrides.setdefault("input_shape", self.example_shape[-3:])

        def make():
            return models.create(self.cfg.model, num_classes=self.num_classes,
                                 time_steps=self.cfg.time_steps, memory_mode=memory_mode,
                                 rngs=nnx.Rngs(self.cfg.seed), **overrides)

        try:
            shapes = nnx.eval_shape(make)
        except TypeError as err:
            raise _fail(f"model {self.cfg.model!r} rejected model_overrides "
                        f"{self.cfg.model_overrides}: {err}") from err
        if abstract:
            return shapes
        graphdef, _ = nnx.split(shapes)
        return nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())

    def _loss_step(self, fns: steps.ModelFns, optimizer):
        cfg, spec, k = self.cfg, self.spec, self.num_classes
        base = steps.make_train_step(fns, optimizer, label_smoothing=cfg.label_smoothing,
                                     loss=cfg.loss, check_finite=True,
                                     skip_nonfinite=cfg.skip_nonfinite)

        def step(params, state, opt_state, x, y, lam):
            if cfg.mixup_alpha > 0:  # on [B, ...] before events go time-major
                x, y = _mixup(x, y, lam, k)
            return base(params, state, opt_state, _time_major(x, spec), y)

        return step

    def _build_train_step(self):
        r, b = self.replicated, self.batch_sharding
        return jax.jit(self._loss_step(self.fns, self.optimizer),
                       in_shardings=(r, r, r, b, b, r), out_shardings=(r, r, r, r),
                       donate_argnums=(0, 1, 2))

    def _build_eval_step(self):
        fns, spec = self.fns, self.spec

        def step(params, state, x, y, mask):
            logits, _ = fns.apply(params, state, _time_major(x, spec), train=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            correct = (logits.argmax(-1) == y).astype(jnp.float32)
            return {"loss_sum": (loss * mask).sum(), "correct": (correct * mask).sum(),
                    "count": mask.sum()}

        r, b = self.replicated, self.batch_sharding
        return jax.jit(step, in_shardings=(r, r, b, b, b), out_shardings=r)

    # ---------------------------------------------------------------- data
    def train_iterator(self):
        cfg = self.cfg
        augment = data.make_augment(self.spec, train=True, crop_padding=cfg.crop_padding,
                                    hflip=cfg.hflip, mean=cfg.mean, std=cfg.std,
                                    channels=cfg.input_channels)
        return data.make_train_iterator(self.train_source, self.spec, batch_size=cfg.batch_size,
                                        seed=cfg.seed, augment=augment,
                                        num_threads=cfg.num_threads, prefetch=cfg.prefetch)

    def _global(self, *arrays: np.ndarray):
        return tuple(jax.make_array_from_process_local_data(self.batch_sharding, a)
                     for a in arrays)

    def check_batch(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fail fast on a malformed training batch (this process's part of it).

        ``x`` must be float32 ``[local_batch_size, *example_shape]`` (the shape of the data
        set's first preprocessed example), ``y`` integer ``[local_batch_size]`` with values in
        ``[0, num_classes)``. Host-side checks of NumPy arrays: no device synchronisation.
        """
        cfg, b = self.cfg, self.local_batch_size
        expected = (b, *self.example_shape)
        chex.assert_shape(
            x, expected, exception_type=ValueError,
            custom_message=(
                f"images of dataset {cfg.dataset!r} must all have the shape of its first "
                f"example, {self.example_shape} (batch {b}); fix: resize or crop every example "
                f"to {self.example_shape} in the data files or pass one consistent data set"))
        chex.assert_type(
            x, np.float32, exception_type=ValueError,
            custom_message=("images must be float32 (the pipeline's make_augment converts uint8 "
                            "and other real dtypes); fix: x.astype(np.float32)"))
        chex.assert_shape(y, (b,), exception_type=ValueError,
                          custom_message="labels must be integer class indices [batch]")
        chex.assert_type(
            y, int, exception_type=ValueError,
            custom_message="labels must be integer class indices; fix: y.astype(np.int32)")
        y = np.asarray(y)
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= self.num_classes:
            raise _fail(
                f"labels out of range: found {low}..{high} but dataset {cfg.dataset!r} has "
                f"{self.num_classes} classes (labels 0..{self.num_classes - 1}); fix the labels "
                "of the data files, or use the dataset entry whose num_classes matches them")

    def train_step(self, x: np.ndarray, y: np.ndarray, step: int) -> dict[str, jax.Array]:
        """Check one batch (:meth:`check_batch`) and apply one training step in place.

        ``step`` is the 0-based index of this step (it seeds the host-drawn mixup weight).
        Returns the step's metrics as device scalars (``loss``, ``accuracy``, ``finite``);
        nothing is synchronised with the host.
        """
        self.check_batch(x, y)
        xg, yg = self._global(x, y)
        self.params, self.state, self.opt_state, metrics = self._train_step(
            self.params, self.state, self.opt_state, xg, yg,
            np.float32(mixup_lambda(self.cfg, step, self.steps_per_epoch)))
        return metrics

    def reconstruction_drift(self, x: np.ndarray, y: np.ndarray, step: int) -> DriftReport:
        """Gradients of the reversible backward against plain autodiff on one batch.

        With ``memory_mode="reversible"`` the backward pass rebuilds every block's input from
        its output (``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``) instead of storing it. This
        differentiates the training objective of ``(x, y)`` twice at the current parameters,
        once through the reconstruction and once through the plain-autodiff twin
        (``memory_mode="none"``, stored activations), and compares:

            grad_params_rel = max |dL/dθ_rev - dL/dθ_none| / max |dL/dθ_none|
            grad_input_rel  = max |dL/dx_rev - dL/dx_none| / max |dL/dx_none|

        float32 gives ~1e-7; bfloat16 coupling streams or blocks whose outputs swamp the stream
        give orders of magnitude more. Synchronises with the host (call it every K steps).
        """
        self.check_batch(x, y)
        if self.cfg.memory_mode != "reversible":
            raise _fail("reconstruction_drift needs memory_mode: reversible, got "
                        f"{self.cfg.memory_mode!r}")
        if self._drift_step is None:
            self._drift_step = self._build_drift_step()
        xg, yg = self._global(x, y)
        out = jax.device_get(self._drift_step(
            self.params, self.state, xg, yg,
            np.float32(mixup_lambda(self.cfg, step, self.steps_per_epoch))))
        from revsnn_jax.reversible import _rel

        gp, gp_ref, gx, gx_ref = (float(v) for v in out)
        return DriftReport(step=step + 1, grad_params_max_abs=gp, grad_params_rel=_rel(gp, gp_ref),
                           grad_input_max_abs=gx, grad_input_rel=_rel(gx, gx_ref),
                           threshold=float(self.cfg.drift_threshold))

    def _build_drift_step(self):
        cfg, spec, k = self.cfg, self.spec, self.num_classes
        plain, _, _ = steps.split_model(self.build_model("none", abstract=True))
        loss_fn, method, _ = losses.LOSSES[cfg.loss]

        def grads(fns, params, state, x, y):
            def objective(params, x):
                outputs, _ = fns.apply(params, state, _time_major(x, spec), train=True,
                                       method=method)
                return loss_fn(outputs, y, cfg.label_smoothing)

            return jax.grad(objective, argnums=(0, 1))(params, x)

        def max_abs(tree):
            return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf.astype(jnp.float32)))
                                      for leaf in jax.tree.leaves(tree) if leaf.size]))

        def drift(params, state, x, y, lam):
            if cfg.mixup_alpha > 0:
                x, y = _mixup(x, y, lam, k)
            gp_rev, gx_rev = grads(self.fns, params, state, x, y)
            gp_ref, gx_ref = grads(plain, params, state, x, y)
            diff = jax.tree.map(lambda a, b: a.astype(jnp.float32) - b.astype(jnp.float32),
                                gp_rev, gp_ref)
            return (max_abs(diff), max_abs(gp_ref),
                    max_abs(gx_rev.astype(jnp.float32) - gx_ref.astype(jnp.float32)),
                    max_abs(gx_ref))

        r, b = self.replicated, self.batch_sharding
        return jax.jit(drift, in_shardings=(r, r, b, b, r), out_shardings=r)

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy over the whole test split (BatchNorm on running statistics)."""
        cfg = self.cfg
        augment = data.make_augment(self.spec, train=False, mean=cfg.mean, std=cfg.std,
                                    channels=cfg.input_channels)
        totals = None
        for x, y, mask in data.eval_batches(self.test_source, self.spec,
                                            batch_size=self.eval_batch_size, augment=augment,
                                            num_threads=cfg.num_threads, prefetch=cfg.prefetch):
            out = self._eval_step(self.params, self.state, *self._global(x, y, mask))
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        count = float(totals["count"])
        return {"test_loss": float(totals["loss_sum"]) / count,
                "test_accuracy": float(totals["correct"]) / count, "test_examples": int(count)}

    def firing_rate(self) -> float | None:
        """Average firing rate of the spiking neurons on the first test batch (eval mode)."""
        cfg = self.cfg
        augment = data.make_augment(self.spec, train=False, mean=cfg.mean, std=cfg.std,
                                    channels=cfg.input_channels)
        x, _, _ = next(iter(data.eval_batches(self.test_source, self.spec,
                                              batch_size=self.eval_batch_size, augment=augment,
                                              num_threads=cfg.num_threads)))
        fns, spec = self.fns, self.spec

        def rate(params, state, x):
            _, sown = fns.intermediates(params, state, _time_major(x, spec), train=False)
            return mean_of_sown(sown, "firing_rate")

        (xg,) = self._global(x)
        value = jax.jit(rate)(self.params, self.state, xg)
        return None if value is None else float(value)

    def memory_per_image(self) -> dict[str, Any]:
        """Compile-only memory per image of the train step: this model and its plain twin."""
        cfg = self.cfg
        batch = cfg.memory_batch or cfg.batch_size // len(self.devices)
        shape = self.example_shape

        def measure(memory_mode: str):
            model = self.build_model(memory_mode, abstract=True)
            fns, params, state = steps.split_model(model)
            optimizer, _ = make_optimizer(cfg, self.steps_per_epoch, self.total_steps)
            abstract = jax.eval_shape(lambda: (params, state, optimizer.init(params)))
            step = self._loss_step(fns, optimizer)

            def make_args(b):
                return (*abstract, jax.ShapeDtypeStruct((b, *shape), jnp.float32),
                        jax.ShapeDtypeStruct((b,), jnp.int32),
                        jax.ShapeDtypeStruct((), jnp.float32))

            from revsnn_jax import memory

            # The one compile path (revsnn_jax.memory.compile_step), for this run's device.
            at_b, at_2b = memory.compile_step(
                memory.StepProgram(lambda: (jax.jit(step), make_args)), (batch, 2 * batch),
                target=None)
            return memory.PerExampleMemory(batch=batch, at_batch=at_b.memory,
                                           at_double_batch=at_2b.memory)

        this = measure(cfg.memory_mode)
        plain = this if cfg.memory_mode == "none" else measure("none")
        return {
            "memory_batch": batch,
            "bytes_per_image": this.bytes_per_example,
            "plain_bytes_per_image": plain.bytes_per_example,
            "memory_ratio_plain_over_model": (plain.bytes_per_example / this.bytes_per_example
                                              if this.bytes_per_example else None),
            "peak_bytes": this.at_batch.peak_bytes,
            "plain_peak_bytes": plain.at_batch.peak_bytes,
            "static_bytes": this.static_bytes,
            "peak_bytes_per_image": this.at_batch.peak_bytes / batch,
            "plain_peak_bytes_per_image": plain.at_batch.peak_bytes / batch,
        }


# --------------------------------------------------------------------------- checkpoints
def _saveable_model(trainer: Trainer) -> dict[str, Any]:
    return {"params": _to_saveable(trainer.params), "state": _to_saveable(trainer.state),
            "opt_state": _to_saveable(trainer.opt_state)}


def _save(manager, trainer: Trainer, step: int, iterator, train_seconds: float,
          counters: dict[str, Any] | None = None) -> None:
    meta = {"step": step, "data_iterator": iterator.get_state() if iterator else None,
            "train_seconds": train_seconds, "config": trainer.cfg.to_dict(), **(counters or {})}
    checkpointing.save(manager, step, _saveable_model(trainer), meta)


def _same_model(trainer: Trainer, directory: pathlib.Path):
    """``check_meta`` for :func:`checkpointing.restore`: the checkpoint's own config names the
    same model (even where ``config.yaml`` is gone)."""
    def check(meta: dict[str, Any]) -> None:
        saved, now = meta.get("config") or {}, trainer.cfg.to_dict()
        clash = [k for k in _CHECKPOINT_IDENTITY if k in saved and saved[k] != now[k]]
        if clash:
            raise _fail(
                f"the checkpoints in {directory} hold another model ({', '.join(clash)} differ: "
                f"{clash[0]} = {saved[clash[0]]!r} there, {now[clash[0]]!r} now); use a new "
                f"--workdir, or remove {directory} to start this run from scratch")
    return check


def _restore(manager, trainer: Trainer, step: int, *, with_optimizer: bool = True):
    """Load verified checkpoint ``step`` into ``trainer``; its metadata
    (:class:`checkpointing.CorruptCheckpointError` if it fails verification)."""
    model, meta = checkpointing.restore(
        manager, step, _saveable_model(trainer), what=repr(trainer.cfg.model),
        check_meta=_same_model(trainer, pathlib.Path(str(manager.directory))))
    trainer.params = _from_saved(trainer.params, model["params"], trainer.replicated)
    trainer.state = _from_saved(trainer.state, model["state"], trainer.replicated)
    if with_optimizer:
        trainer.opt_state = _from_saved(trainer.opt_state, model["opt_state"],
                                        trainer.replicated)
    return meta


def _resume(manager, trainer: Trainer) -> dict[str, Any] | None:
    """Restore the newest checkpoint that verifies (its metadata; ``None``: none to resume),
    setting aside, with a warning, every newer one that fails."""
    aside = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return _restore(manager, trainer, step)
        except checkpointing.CorruptCheckpointError as err:
            aside.append(str(checkpointing.set_aside(manager, err)))
    if aside:
        raise _fail(f"no checkpoint in {manager.directory} verifies (all moved aside: "
                    f"{', '.join(aside)}); run again to start from scratch")
    return None


def _last_good(manager, trainer: Trainer, at_most: int) -> int | None:
    """The newest checkpoint ``<= at_most`` that verifies (waits for pending saves)."""
    manager.wait_until_finished()
    target = _saveable_model(trainer)
    return checkpointing.newest_good(
        manager, lambda s: checkpointing.restore(manager, s, target), below=at_most)[0]


# --------------------------------------------------------------------------- logging
class _Logger:
    """JSON lines + TensorBoard (tensorboardX), written by process 0 only."""

    def __init__(self, workdir: pathlib.Path, keep_until: int | None = None):
        self.active = jax.process_index() == 0
        self._file = None
        self._tb = None
        if self.active:
            path = workdir / "metrics.jsonl"
            if keep_until is not None and path.exists():
                _truncate_metrics(path, keep_until)
            self._file = open(path, "a")  # noqa: SIM115
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(workdir / "tb"))
            except ImportError:  # pragma: no cover - tensorboardX is a dependency
                self._tb = None

    def write(self, step: int, record: dict[str, Any]) -> None:
        if not self.active:
            return
        self._file.write(json.dumps({"step": step, **record}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def _truncate_metrics(path: pathlib.Path, keep_until: int) -> None:
    """Drop the records after step ``keep_until`` (work a killed run lost; the resumed run
    writes them again) and a torn last line; atomically (write, then rename)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(record, dict) and int(record.get("step", 0)) <= keep_until:
            kept.append(line)
    _write_atomic(path, "".join(line + "\n" for line in kept))


def _print(*args: Any) -> None:
    if jax.process_index() == 0:
        print(*args, flush=True)


# --------------------------------------------------------------------------- failures
def _json_float(value: Any) -> float | None:
    """A float for ``metrics.jsonl``; NaN/Inf become ``null`` (strict JSON)."""
    value = float(value)
    return value if math.isfinite(value) else None


class _PreemptionWatch:
    """SIGTERM sets a flag that the training loop reads after each step (one process). On
    several processes JAX's preemption service (``jax.distributed``) catches the signal and
    :meth:`requested` asks for its common sync step instead."""

    def __init__(self) -> None:
        self._flag = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _PreemptionWatch:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self._flag = True

    def requested(self, manager: Any, step: int) -> bool:
        if jax.process_count() > 1:
            return bool(manager.reached_preemption(step))
        return self._flag

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None
                          else signal.SIG_DFL)


def _drift_check(trainer: Trainer, x: np.ndarray, y: np.ndarray, step: int, logger: _Logger,
                 counters: dict[str, Any]) -> DriftReport:
    """One reconstruction-drift check (before the update of 0-based ``step``): log it, warn."""
    report = trainer.reconstruction_drift(x, y, step)
    counters["drift_checks"] += 1
    rel = report.rel if math.isfinite(report.rel) else float("inf")
    counters["drift_max_rel"] = max(rel, counters["drift_max_rel"] or 0.0)
    logger.write(report.step, report.record())
    if report.exceeded:
        counters["drift_warnings"] += 1
        warnings.warn(ReconstructionDriftWarning(
            f"reconstruction drift at step {report.step}: the reversible backward's gradients "
            f"differ from plain autodiff by {report.grad_params_rel:.2e} (parameters) and "
            f"{report.grad_input_rel:.2e} (input), relative, above drift_threshold "
            f"{report.threshold:.1e}. Reconstructed activations are no longer faithful: keep "
            f"the coupling streams in float32 (bfloat16 only inside F/G), avoid tiny scales "
            f"(e.g. T-RevSNN alpha), or train with memory_mode: checkpoint"), stacklevel=2)
        _print(f"warning: reconstruction drift {rel:.2e} > {report.threshold:.1e} at step "
               f"{report.step}")
    return report


# --------------------------------------------------------------------------- entry points
def _prepare_workdir(cfg: TrainConfig, workdir: pathlib.Path) -> TrainConfig:
    saved_path = workdir / "config.yaml"
    if saved_path.exists():
        saved = from_dict(yaml.safe_load(saved_path.read_text()) or {}, str(saved_path))
        changed = {k for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v}
        first = {k: i for i, k in enumerate(_CHECKPOINT_IDENTITY)}  # the model first
        clash = sorted(changed - _ALLOWED_ON_RESUME, key=lambda k: (first.get(k, len(first)), k))
        if clash:
            raise _fail(
                f"{workdir} holds a run with a different configuration ({', '.join(clash)} "
                f"differ: e.g. {clash[0]} = {saved.to_dict()[clash[0]]!r} there, "
                f"{cfg.to_dict()[clash[0]]!r} now); use a new --workdir, or pass the same "
                f"settings (only {', '.join(sorted(_ALLOWED_ON_RESUME))} may change on resume)")
    return cfg


def _write_atomic(path: pathlib.Path, text: str) -> None:
    """Write, then rename: a kill never leaves a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_config(cfg: TrainConfig, workdir: pathlib.Path) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        _write_atomic(workdir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def train(cfg: TrainConfig, workdir: str | os.PathLike, *, progress: bool = True,
          max_steps_this_run: int | None = None, devices: list | None = None) -> dict[str, Any]:
    """Train (or resume) ``cfg`` in ``workdir``; returns the summary also written to
    ``workdir/summary.json``:

    ``model``, ``dataset``, ``memory_mode``, ``steps``, ``epochs`` (completed, fractional),
    ``batch_size``, ``devices``, ``test_accuracy`` (fraction), ``test_loss``,
    ``final_train_loss``, ``final_train_accuracy``, ``train_seconds`` (cumulative over resumes),
    ``images_per_second``, ``firing_rate`` (mean of the spiking layers' recorded firing rates on
    a test batch; ``None`` if the model records none), and the compile-only memory of the
    training step from :func:`revsnn_jax.memory.per_example_memory`: ``bytes_per_image`` (this
    model), ``plain_bytes_per_image`` (its plain twin, ``memory_mode="none"``),
    ``memory_ratio_plain_over_model``, ``peak_bytes``/``plain_peak_bytes`` at ``memory_batch``
    and the papers' ``peak_bytes_per_image`` (peak divided by the batch); ``skipped_batches``
    (non-finite batches skipped under ``skip_nonfinite``, over resumes) and, with
    ``drift_check_every``, ``drift_checks``, ``drift_warnings`` and ``drift_max_rel``.

    ``max_steps_this_run`` stops early (for tests of resuming); the checkpoint is still saved.
    ``devices`` restricts the mesh (default: every device of every process).

    Failures: SIGTERM saves a checkpoint of the current step and returns
    ``{"steps": N, "stopped_early": True, "preempted": True}``; a non-finite loss or gradient
    raises :class:`NonFiniteError` (unless ``skip_nonfinite``) without saving anything after the
    last good checkpoint; a checkpoint of another model raises ``ValueError``; one that fails
    verification is set aside (``CorruptCheckpointWarning``) for the newest one that verifies.
    """
    from tqdm import tqdm

    maybe_initialize_distributed()
    workdir = pathlib.Path(workdir)
    cfg = _prepare_workdir(cfg, workdir)
    trainer = Trainer(cfg, workdir, devices)  # validates: nothing is written for a bad config
    manager = checkpointing.manager(workdir, cfg.keep_checkpoints)
    iterator = trainer.train_iterator()
    start, train_seconds = 0, 0.0
    counters = {"skipped_batches": 0, "drift_checks": 0, "drift_warnings": 0,
                "drift_max_rel": None}
    try:
        meta = _resume(manager, trainer)
        if meta is not None:
            start, train_seconds = int(meta["step"]), float(meta.get("train_seconds", 0.0))
            counters.update({k: meta[k] for k in counters if k in meta})
            if meta.get("data_iterator") is not None:
                iterator.set_state(meta["data_iterator"])
            _print(f"resuming {workdir} from step {start}")
    except BaseException:
        manager.close()
        raise
    _write_config(cfg, workdir)  # after the checkpoint is known to fit
    total = trainer.total_steps
    stop = total if max_steps_this_run is None else min(total, start + max_steps_this_run)
    logger = _Logger(workdir, keep_until=start)
    _print(f"{cfg.model} ({cfg.memory_mode}) on {cfg.dataset}: {len(trainer.train_source)} train /"
           f" {len(trainer.test_source)} test examples, batch {cfg.batch_size} over "
           f"{len(trainer.devices)} device(s), {total} steps ({trainer.steps_per_epoch}/epoch)")

    bar = tqdm(total=total, initial=start, disable=not progress or jax.process_index() != 0,
               dynamic_ncols=True, file=sys.stdout, mininterval=1.0)
    window: list[tuple[int, dict[str, jax.Array]]] = []  # (1-based step, its metrics)
    last = {"loss": float("nan"), "accuracy": float("nan")}
    t_run = time.perf_counter()
    t_window, n_window = time.perf_counter(), 0
    step = last_saved = start
    saved_any = meta is not None
    preempted = False
    step_delay = float(os.environ.get("REVSNN_TEST_STEP_DELAY") or 0.0)  # test-only hook

    def check_finite(entries) -> list[tuple[int, dict[str, Any]]]:
        """Host copies of ``entries``; without ``skip_nonfinite``, stop at a non-finite one."""
        host = jax.device_get(entries)
        if not cfg.skip_nonfinite:
            for s, m in host:
                if not bool(m["finite"]):
                    logger.write(s, {"event": "nonfinite", "train_loss": _json_float(m["loss"])})
                    good = _last_good(manager, trainer, last_saved) if saved_any else None
                    where = (f"the last good checkpoint is step {good} in "
                             f"{workdir / 'checkpoints'} (verified; rerunning resumes from it)"
                             if good is not None else "no checkpoint that verifies was written")
                    raise NonFiniteError(
                        f"non-finite loss or gradients at step {s} (loss {float(m['loss'])}): "
                        f"training stopped and nothing after step {last_saved} was saved; "
                        f"{where}. Fix: lower learning_rate, set clip_grad_norm, check the "
                        f"data for NaN/Inf, or set skip_nonfinite: true to skip such batches",
                        step=s, last_checkpoint=good)
        return host

    def save(at: int) -> None:
        nonlocal last_saved, saved_any
        check_finite(window)  # never save a state that came from a non-finite step
        _save(manager, trainer, at, iterator, train_seconds + time.perf_counter() - t_run,
              counters)
        last_saved, saved_any = at, True

    try:
        with _PreemptionWatch() as preemption:
            while step < stop:
                x, y = next(iterator)
                if cfg.drift_check_every and (step + 1) % cfg.drift_check_every == 0:
                    _drift_check(trainer, x, y, step, logger, counters)
                metrics = trainer.train_step(x, y, step)
                step += 1
                window.append((step, metrics))
                n_window += 1
                if step_delay:
                    time.sleep(step_delay)
                if step % cfg.log_every == 0 or step == stop:
                    host = check_finite(window)
                    now = time.perf_counter()
                    rate = n_window * cfg.batch_size / max(now - t_window, 1e-9)
                    good = [m for _, m in host if bool(m["finite"])]
                    counters["skipped_batches"] += len(host) - len(good)
                    last = {k: float(np.mean([m[k] for m in good])) if good else float("nan")
                            for k in ("loss", "accuracy")}
                    record = {"epoch": step / trainer.steps_per_epoch,
                              "train_loss": _json_float(last["loss"]),
                              "train_accuracy": _json_float(last["accuracy"]),
                              "learning_rate": float(trainer.schedule(step - 1)),
                              "images_per_second": rate}
                    if cfg.skip_nonfinite:
                        record["skipped_batches"] = counters["skipped_batches"]
                    logger.write(step, record)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.3f}",
                                    img_s=f"{rate:.0f}")
                    bar.update(n_window)
                    window, n_window, t_window = [], 0, now
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                    logger.write(step, trainer.evaluate())
                if step % cfg.checkpoint_every == 0 and step < stop:
                    save(step)
                if step < stop and preemption.requested(manager, step):
                    preempted = True
                    break
            jax.block_until_ready(trainer.params)
            train_seconds += time.perf_counter() - t_run
            t_run = time.perf_counter()
            if last_saved != step or not saved_any:
                save(step)
            manager.wait_until_finished()
    finally:
        bar.close()
        manager.close()
    if preempted:
        logger.write(step, {"event": "preempted", "checkpoint": step})
        logger.close()
        _print(f"preempted (SIGTERM): checkpoint of step {step} saved in "
               f"{workdir / 'checkpoints'}; run the same command again to resume")
        return {"steps": step, "stopped_early": True, "preempted": True}
    if step < total:  # stopped early on purpose
        logger.close()
        return {"steps": step, "stopped_early": True}

    result = trainer.evaluate()
    logger.write(step, result)
    summary: dict[str, Any] = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "memory_mode": cfg.memory_mode,
        "time_steps": cfg.time_steps,
        "steps": step,
        "epochs": step / trainer.steps_per_epoch,
        "batch_size": cfg.batch_size,
        "devices": len(trainer.devices),
        "test_accuracy": result["test_accuracy"],
        "test_loss": result["test_loss"],
        "final_train_loss": last["loss"],
        "final_train_accuracy": last["accuracy"],
        "train_seconds": train_seconds,
        "images_per_second": step * cfg.batch_size / train_seconds if train_seconds else None,
        "firing_rate": trainer.firing_rate(),
        "parameters": int(sum(np.size(p) for p in jax.tree.leaves(trainer.params))),
        "skipped_batches": counters["skipped_batches"],
    }
    if cfg.drift_check_every:
        summary.update({k: counters[k] for k in ("drift_checks", "drift_warnings",
                                                 "drift_max_rel")})
    if cfg.measure_memory:
        summary.update(trainer.memory_per_image())
    logger.close()
    if jax.process_index() == 0:
        _write_atomic(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def load_workdir_config(workdir: str | os.PathLike) -> TrainConfig:
    path = pathlib.Path(workdir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{workdir} holds no run (no config.yaml); train one first with "
                                f"`revsnn train --config NAME --workdir {workdir}`")
    return from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


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
            _restore(manager, trainer, step, with_optimizer=with_optimizer)
        except checkpointing.CorruptCheckpointError as err:
            good = _last_good(manager, trainer, step - 1)
            raise checkpointing.CorruptCheckpointError(
                err.step, err.directory, err.what, err.reason, hint=(
                    f"the newest checkpoint that verifies is step {good}: evaluate it with "
                    f"`revsnn eval --step {good}`; `revsnn train` on this directory sets the bad "
                    f"one aside and resumes" if good is not None else
                    "no older checkpoint verifies either")) from err
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


@contextlib.contextmanager
def _quiet_absl():
    """Keep orbax/absl INFO chatter off the console."""
    try:
        from absl import logging as absl_logging

        old = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.WARNING)
        yield
        absl_logging.set_verbosity(old)
    except ImportError:  # pragma: no cover
        yield


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['model']} on {summary['dataset']}: test accuracy "
             f"{100 * summary['test_accuracy']:.2f}% after {summary['steps']} steps "
             f"({summary['epochs']:.1f} epochs) in {summary['train_seconds']:.1f} s"]
    if summary.get("firing_rate") is not None:
        lines.append(f"  firing rate {summary['firing_rate']:.4f}")
    if "bytes_per_image" in summary:
        mib = 2 ** 20
        ratio = summary.get("memory_ratio_plain_over_model")
        lines.append(
            f"  training memory per image ({summary['memory_mode']}): "
            f"{summary['bytes_per_image'] / mib:.3f} MiB vs plain twin "
            f"{summary['plain_bytes_per_image'] / mib:.3f} MiB"
            + (f", plain / model = {ratio:.2f}x" if ratio and math.isfinite(ratio) else "")
            + f" [compiled, batch {summary['memory_batch']} vs {2 * summary['memory_batch']}]")
    return "\n".join(lines)
