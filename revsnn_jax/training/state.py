"""The :class:`Trainer`: everything a run needs, built and validated from a config.

Parallelism: one :class:`jax.sharding.Mesh` over every device (axis ``"data"``); the batch is
sharded along it and parameters, optimizer and model state are replicated, so XLA inserts the
gradient all-reduce (and BatchNorm computes its statistics over the global batch: the math is
that of one device). On several hosts set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID`` (or ``REVSNN_DISTRIBUTED=1`` where JAX detects the cluster itself, e.g.
Cloud TPU pods, SLURM): :func:`maybe_initialize_distributed` calls
:func:`jax.distributed.initialize` and every process reads its slice of each global batch.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from revsnn_jax import data, models, steps
from revsnn_jax.reversible import MEMORY_MODES
from revsnn_jax.steps import losses
from revsnn_jax.training import evaluation, guards
from revsnn_jax.training.config import TrainConfig
from revsnn_jax.training.objective import make_loss_step, mixup_lambda, time_major
from revsnn_jax.training.optim import make_optimizer


def maybe_initialize_distributed() -> None:
    """Call :func:`jax.distributed.initialize` when the environment asks for several hosts."""
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    wanted = os.environ.get("REVSNN_DISTRIBUTED", "") in ("1", "true", "yes")
    if not (coordinator or wanted) or jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if coordinator:
        kwargs["coordinator_address"] = coordinator
        if "JAX_NUM_PROCESSES" in os.environ:
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in os.environ:
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


# --------------------------------------------------------------------------- config checks
def _check_batch_sizes(cfg: TrainConfig, n: int) -> int:
    """The evaluation batch; both batches must split evenly over the ``n`` devices."""
    if cfg.batch_size < 1 or cfg.batch_size % n:
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by the {n} devices; the batch is "
            f"split evenly across devices (use a multiple of {n}, e.g. "
            f"{max(n, cfg.batch_size // n * n)})")
    eval_batch_size = cfg.eval_batch_size or cfg.batch_size
    if eval_batch_size % n:
        raise ValueError(f"eval_batch_size {eval_batch_size} is not divisible by the {n} devices")
    return eval_batch_size


def _check_modes(cfg: TrainConfig) -> None:
    if cfg.memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory_mode {cfg.memory_mode!r}: choose "
                         f"{', '.join(MEMORY_MODES[:-1])} or {MEMORY_MODES[-1]}")
    if cfg.split_by not in data.SPLIT_METHODS:
        raise ValueError(f"split_by {cfg.split_by!r}: choose {' or '.join(data.SPLIT_METHODS)} "
                         "(how event recordings are integrated into frames)")
    if cfg.loss not in losses.LOSSES:
        raise ValueError(f"loss {cfg.loss!r}: choose one of {', '.join(losses.LOSSES)}")
    if cfg.drift_check_every < 0 or not cfg.drift_threshold >= 0:
        raise ValueError(f"drift_check_every ({cfg.drift_check_every}) and drift_threshold "
                         f"({cfg.drift_threshold}) must be >= 0 (drift_check_every 0: no check)")
    if cfg.drift_check_every and cfg.memory_mode != "reversible":
        raise ValueError(
            f"drift_check_every compares the reversible backward with plain autodiff, but "
            f"memory_mode is {cfg.memory_mode!r}: set memory_mode: reversible (a reversible "
            f"model such as revsresnet37), or drift_check_every: 0")


def _load_sources(cfg: TrainConfig, progress: bool = True) -> tuple[Any, Any]:
    """The train and test splits (a missing or empty data set fails before any compile)."""
    sources = tuple(data.load_source(cfg.dataset, split, cfg.data_dir,
                                     time_steps=cfg.time_steps, split_by=cfg.split_by,
                                     progress=progress and jax.process_index() == 0)
                    for split in ("train", "test"))
    for split, source in zip(("train", "test"), sources, strict=True):
        if len(source) == 0:
            raise ValueError(
                f"the {split} split of dataset {cfg.dataset!r} is empty (0 examples, "
                f"{getattr(source, 'name', '')}); rebuild its files (see revsnn_jax.data) or "
                f"point data_dir at a complete copy")
    return sources


def _count_steps(cfg: TrainConfig, examples: int) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)``."""
    steps_per_epoch = examples // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {examples} training examples")
    total = cfg.steps or round(cfg.epochs * steps_per_epoch)
    if total < 1:
        raise ValueError(f"epochs {cfg.epochs} of {steps_per_epoch} steps make no training "
                         f"step; set steps >= 1 or more epochs")
    return steps_per_epoch, total


def _check_labels(y: np.ndarray, num_classes: int, dataset: str) -> None:
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels out of range: found {low}..{high} but dataset {dataset!r} has "
            f"{num_classes} classes (labels 0..{num_classes - 1}); fix the labels of the data "
            "files, or use the dataset entry whose num_classes matches them")


# --------------------------------------------------------------------------- the trainer
@dataclasses.dataclass
class Trainer:
    """Everything a run needs, built (and validated) from a config before any training."""

    cfg: TrainConfig
    workdir: pathlib.Path | None = None
    devices: list | None = None  # default: every device (jax.devices())
    progress: bool = True  # a progress bar while event frames are first integrated

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.spec = data.get_spec(cfg.dataset)
        self.info = models.get_info(cfg.model)  # unknown model: clear error here
        self.devices = list(self.devices or jax.devices())
        self.eval_batch_size = _check_batch_sizes(cfg, len(self.devices))
        _check_modes(cfg)
        self.train_source, self.test_source = _load_sources(cfg, self.progress)
        self.steps_per_epoch, self.total_steps = _count_steps(cfg, len(self.train_source))
        self.num_classes = self.spec.num_classes
        # one preprocessed example: [H, W, C], events [T, H, W, C]
        self.example_shape = tuple(
            data.make_augment(self.spec, train=False, channels=cfg.input_channels)(
                self.train_source[0])[0].shape)
        self.local_batch_size = cfg.batch_size // jax.process_count()
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self._build_state()

    def _build_state(self) -> None:
        """The model, its optimizer and state on the mesh, and the compiled steps."""
        self.fns, params, state = steps.split_model(self.build_model(self.cfg.memory_mode))
        self._check_model_takes_the_data(params, state)
        self.optimizer, self.schedule = make_optimizer(self.cfg, self.steps_per_epoch,
                                                       self.total_steps)
        opt_state = self.optimizer.init(params)
        self.params, self.state, self.opt_state = jax.device_put(
            (params, state, opt_state), self.replicated)
        r, b = self.replicated, self.batch_sharding
        self._train_step = jax.jit(self.loss_step(self.fns, self.optimizer),
                                   in_shardings=(r, r, r, b, b, r), out_shardings=(r, r, r, r),
                                   donate_argnums=(0, 1, 2))
        self._eval_step = evaluation.make_test_step(self)
        self._drift_step = None  # built on first use (reconstruction_drift)

    def _check_model_takes_the_data(self, params: Any, state: Any) -> None:
        """Trace the forward pass on one abstract batch: a model that cannot take the data
        set's examples (e.g. an RGB stem fed grey images) fails here, with the fix."""
        x = jax.ShapeDtypeStruct((2, *self.example_shape), jnp.float32)
        try:
            jax.eval_shape(lambda p, s, x: self.fns.apply(p, s, time_major(x, self.spec),
                                                          train=False)[0], params, state, x)
        except (TypeError, ValueError) as err:
            cfg = self.cfg
            hint = ("set input_channels: 3 to tile grey images for an RGB stem"
                    if self.example_shape[-1] == 1 else
                    "choose a model/dataset pair whose shapes match, or adjust model_overrides "
                    "(e.g. in_channels)")
            raise ValueError(
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
            raise ValueError(f"model {self.cfg.model!r} rejected model_overrides "
                             f"{self.cfg.model_overrides}: {err}") from err
        if abstract:
            return shapes
        graphdef, _ = nnx.split(shapes)
        return nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())

    def loss_step(self, fns: steps.ModelFns, optimizer: Any):
        """This run's training step (not jitted) for ``fns`` and ``optimizer``."""
        return make_loss_step(self.cfg, self.spec, self.num_classes, fns, optimizer)

    # ---------------------------------------------------------------- data
    def train_iterator(self):
        cfg = self.cfg
        augment = data.make_augment(self.spec, train=True, crop_padding=cfg.crop_padding,
                                    hflip=cfg.hflip, mean=cfg.mean, std=cfg.std,
                                    channels=cfg.input_channels)
        return data.make_train_iterator(self.train_source, self.spec, batch_size=cfg.batch_size,
                                        seed=cfg.seed, augment=augment,
                                        num_threads=cfg.num_threads, prefetch=cfg.prefetch)

    def global_arrays(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        """This process's parts of global batches, sharded along the mesh."""
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
        _check_labels(np.asarray(y), self.num_classes, cfg.dataset)

    # ---------------------------------------------------------------- running
    def mixup_weight(self, step: int) -> np.float32:
        """The mixup weight of 0-based ``step`` (see :func:`~.objective.mixup_lambda`)."""
        return np.float32(mixup_lambda(self.cfg, step, self.steps_per_epoch))

    def train_step(self, x: np.ndarray, y: np.ndarray, step: int) -> dict[str, jax.Array]:
        """Check one batch (:meth:`check_batch`) and apply one training step in place.

        ``step`` is the 0-based index of this step (it seeds the host-drawn mixup weight).
        Returns the step's metrics as device scalars (``loss``, ``accuracy``, ``finite``);
        nothing is synchronised with the host.
        """
        self.check_batch(x, y)
        xg, yg = self.global_arrays(x, y)
        self.params, self.state, self.opt_state, metrics = self._train_step(
            self.params, self.state, self.opt_state, xg, yg, self.mixup_weight(step))
        return metrics

    def reconstruction_drift(self, x: np.ndarray, y: np.ndarray, step: int
                             ) -> guards.DriftReport:
        """Gradients of the reversible backward against plain autodiff on one batch
        (:func:`revsnn_jax.training.guards.reconstruction_drift`)."""
        return guards.reconstruction_drift(self, x, y, step)

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy over the whole test split (BatchNorm on running statistics)."""
        return evaluation.evaluate_test_split(self)

    def firing_rate(self) -> float | None:
        """Average firing rate of the spiking neurons on the first test batch (eval mode)."""
        return evaluation.firing_rate(self)

    def memory_per_image(self) -> dict[str, Any]:
        """Compile-only memory per image of the train step: this model and its plain twin."""
        return evaluation.memory_per_image(self)
