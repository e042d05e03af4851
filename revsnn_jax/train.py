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
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from revsnn_jax import data, losses, models, steps
from revsnn_jax.config import TrainConfig, from_dict
from revsnn_jax.nnx_utils import mean_of_sown

__all__ = ["Trainer", "evaluate", "make_optimizer", "maybe_initialize_distributed", "restore",
           "train"]

_ALLOWED_ON_RESUME = {
    "description", "steps", "epochs", "data_dir", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "measure_memory", "memory_batch", "num_threads", "prefetch",
    "eval_batch_size",
}


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
        # data first: a missing data set fails before anything is compiled
        self.train_source = data.load_source(cfg.dataset, "train", cfg.data_dir)
        self.test_source = data.load_source(cfg.dataset, "test", cfg.data_dir)
        self.steps_per_epoch = len(self.train_source) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise _fail(f"batch_size {cfg.batch_size} exceeds the {len(self.train_source)} "
                        "training examples")
        self.total_steps = cfg.steps or round(cfg.epochs * self.steps_per_epoch)
        self.num_classes = self.spec.num_classes
        # one preprocessed example: [H, W, C], events [T, H, W, C]
        self.example_shape = tuple(
            data.make_augment(self.spec, train=False, channels=cfg.input_channels)(
                self.train_source[0])[0].shape)
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))

        model = self.build_model(cfg.memory_mode)
        self.fns, params, state = steps.split_model(model)
        self.optimizer, self.schedule = make_optimizer(cfg, self.steps_per_epoch,
                                                       self.total_steps)
        opt_state = self.optimizer.init(params)
        self.params, self.state, self.opt_state = jax.device_put(
            (params, state, opt_state), self.replicated)
        self._train_step = self._build_train_step()
        self._eval_step = self._build_eval_step()

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
                                     loss=cfg.loss)

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

            return memory.per_example_memory(make_args, jax.jit(step), batch)

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
def _checkpoint_manager(workdir: pathlib.Path, cfg: TrainConfig | None, *, read_only=False):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep_checkpoints if cfg else None, create=not read_only,
        enable_async_checkpointing=True)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options,
                                 item_names=("model", "meta"))


def _save(manager, trainer: Trainer, step: int, iterator, train_seconds: float) -> None:
    import orbax.checkpoint as ocp

    model = {"params": _to_saveable(trainer.params), "state": _to_saveable(trainer.state),
             "opt_state": _to_saveable(trainer.opt_state)}
    meta = {"step": step, "data_iterator": iterator.get_state() if iterator else None,
            "train_seconds": train_seconds, "config": trainer.cfg.to_dict()}
    manager.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model),
                                                meta=ocp.args.JsonSave(meta)), force=True)


def _restore(manager, trainer: Trainer, step: int, *, with_optimizer: bool = True):
    import orbax.checkpoint as ocp

    target = {"params": _to_saveable(trainer.params), "state": _to_saveable(trainer.state),
              "opt_state": _to_saveable(trainer.opt_state)}
    restored = manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    model, meta = restored["model"], restored["meta"]
    trainer.params = _from_saved(trainer.params, model["params"], trainer.replicated)
    trainer.state = _from_saved(trainer.state, model["state"], trainer.replicated)
    if with_optimizer:
        trainer.opt_state = _from_saved(trainer.opt_state, model["opt_state"],
                                        trainer.replicated)
    return meta


# --------------------------------------------------------------------------- logging
class _Logger:
    """JSON lines + TensorBoard (tensorboardX), written by process 0 only."""

    def __init__(self, workdir: pathlib.Path):
        self.active = jax.process_index() == 0
        self._file = None
        self._tb = None
        if self.active:
            self._file = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115
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


def _print(*args: Any) -> None:
    if jax.process_index() == 0:
        print(*args, flush=True)


# --------------------------------------------------------------------------- entry points
def _prepare_workdir(cfg: TrainConfig, workdir: pathlib.Path) -> TrainConfig:
    saved_path = workdir / "config.yaml"
    if saved_path.exists():
        saved = from_dict(yaml.safe_load(saved_path.read_text()) or {}, str(saved_path))
        changed = {k for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v}
        clash = sorted(changed - _ALLOWED_ON_RESUME)
        if clash:
            raise _fail(
                f"{workdir} holds a run with a different configuration ({', '.join(clash)} "
                f"differ: e.g. {clash[0]} = {saved.to_dict()[clash[0]]!r} there, "
                f"{cfg.to_dict()[clash[0]]!r} now); use a new --workdir, or pass the same "
                f"settings (only {', '.join(sorted(_ALLOWED_ON_RESUME))} may change on resume)")
    return cfg


def _write_config(cfg: TrainConfig, workdir: pathlib.Path) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


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
    and the papers' ``peak_bytes_per_image`` (peak divided by the batch).

    ``max_steps_this_run`` stops early (for tests of resuming); the checkpoint is still saved.
    ``devices`` restricts the mesh (default: every device of every process).
    """
    from tqdm import tqdm

    maybe_initialize_distributed()
    workdir = pathlib.Path(workdir)
    cfg = _prepare_workdir(cfg, workdir)
    trainer = Trainer(cfg, workdir, devices)  # validates: nothing is written for a bad config
    _write_config(cfg, workdir)
    manager = _checkpoint_manager(workdir, cfg)
    iterator = trainer.train_iterator()
    start, train_seconds = 0, 0.0
    latest = manager.latest_step()
    if latest is not None:
        meta = _restore(manager, trainer, latest)
        start, train_seconds = int(meta["step"]), float(meta.get("train_seconds", 0.0))
        if meta.get("data_iterator") is not None:
            iterator.set_state(meta["data_iterator"])
        _print(f"resuming {workdir} from step {start}")
    total = trainer.total_steps
    stop = total if max_steps_this_run is None else min(total, start + max_steps_this_run)
    logger = _Logger(workdir)
    _print(f"{cfg.model} ({cfg.memory_mode}) on {cfg.dataset}: {len(trainer.train_source)} train /"
           f" {len(trainer.test_source)} test examples, batch {cfg.batch_size} over "
           f"{len(trainer.devices)} device(s), {total} steps ({trainer.steps_per_epoch}/epoch)")

    bar = tqdm(total=total, initial=start, disable=not progress or jax.process_index() != 0,
               dynamic_ncols=True, file=sys.stdout, mininterval=1.0)
    window: list[dict[str, jax.Array]] = []
    last = {"loss": float("nan"), "accuracy": float("nan")}
    t_run = time.perf_counter()
    t_window, n_window = time.perf_counter(), 0
    step = start
    try:
        while step < stop:
            x, y = next(iterator)
            xg, yg = trainer._global(x, y)
            trainer.params, trainer.state, trainer.opt_state, metrics = trainer._train_step(
                trainer.params, trainer.state, trainer.opt_state, xg, yg,
                np.float32(mixup_lambda(cfg, step, trainer.steps_per_epoch)))
            window.append(metrics)
            step += 1
            n_window += 1
            if step % cfg.log_every == 0 or step == stop:
                host = jax.device_get(window)
                now = time.perf_counter()
                rate = n_window * cfg.batch_size / max(now - t_window, 1e-9)
                last = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                record = {"epoch": step / trainer.steps_per_epoch, "train_loss": last["loss"],
                          "train_accuracy": last["accuracy"],
                          "learning_rate": float(trainer.schedule(step - 1)),
                          "images_per_second": rate}
                logger.write(step, record)
                bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.3f}",
                                img_s=f"{rate:.0f}")
                bar.update(n_window)
                window, n_window, t_window = [], 0, now
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                logger.write(step, trainer.evaluate())
            if step % cfg.checkpoint_every == 0 and step < stop:
                _save(manager, trainer, step, iterator,
                      train_seconds + time.perf_counter() - t_run)
        jax.block_until_ready(trainer.params)
        train_seconds += time.perf_counter() - t_run
        if latest != step:
            _save(manager, trainer, step, iterator, train_seconds)
        manager.wait_until_finished()
    finally:
        bar.close()
        manager.close()
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
    }
    if cfg.measure_memory:
        summary.update(trainer.memory_per_image())
    logger.close()
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
    manager = _checkpoint_manager(workdir, cfg, read_only=True)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
        _restore(manager, trainer, step, with_optimizer=with_optimizer)
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
