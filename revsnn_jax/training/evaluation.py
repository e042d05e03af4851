"""What a :class:`~revsnn_jax.training.state.Trainer` measures besides training: the test
split's loss and accuracy, the spiking layers' firing rate, and the compile-only memory per
image of its training step (via :func:`revsnn_jax.memory.compile_step`, the library's one
compile path).

Test metrics sum over every example (the last batch padded and masked):
``test_loss = sum(CE) / N``, ``test_accuracy = sum(argmax = y) / N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from revsnn_jax import data, steps
from revsnn_jax.core.nnx_utils import mean_of_sown
from revsnn_jax.training.objective import time_major
from revsnn_jax.training.optim import make_optimizer

# A revsnn_jax.training.state.Trainer: state.py builds its steps from this module, so this module
# does not import it back (no import cycle); the functions read the attributes they name.
Trainer = Any


def make_test_step(trainer: Trainer) -> Callable:
    """``step(params, state, x, y, mask) -> {"loss_sum", "correct", "count"}``, jitted on the
    trainer's mesh (BatchNorm on running statistics)."""
    fns, spec = trainer.fns, trainer.spec

    def step(params, state, x, y, mask):
        logits, _ = fns.apply(params, state, time_major(x, spec), train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (logits.argmax(-1) == y).astype(jnp.float32)
        return {"loss_sum": (loss * mask).sum(), "correct": (correct * mask).sum(),
                "count": mask.sum()}

    r, b = trainer.replicated, trainer.batch_sharding
    return jax.jit(step, in_shardings=(r, r, b, b, b), out_shardings=r)


def _test_batches(trainer: Trainer, prefetch: int | None = None):
    cfg = trainer.cfg
    augment = data.make_augment(trainer.spec, train=False, mean=cfg.mean, std=cfg.std,
                                channels=cfg.input_channels)
    extra = {} if prefetch is None else {"prefetch": prefetch}
    return data.eval_batches(trainer.test_source, trainer.spec,
                             batch_size=trainer.eval_batch_size, augment=augment,
                             num_threads=cfg.num_threads, **extra)


def evaluate_test_split(trainer: Trainer) -> dict[str, float]:
    """Loss and accuracy over the whole test split (BatchNorm on running statistics)."""
    totals = None
    for x, y, mask in _test_batches(trainer, trainer.cfg.prefetch):
        out = trainer._eval_step(trainer.params, trainer.state,
                                 *trainer.global_arrays(x, y, mask))
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"test_loss": float(totals["loss_sum"]) / count,
            "test_accuracy": float(totals["correct"]) / count, "test_examples": int(count)}


def firing_rate(trainer: Trainer) -> float | None:
    """Average firing rate of the spiking neurons on the first test batch (eval mode);
    ``None`` if the model records none."""
    x, _, _ = next(iter(_test_batches(trainer)))
    fns, spec = trainer.fns, trainer.spec

    def rate(params, state, x):
        _, sown = fns.intermediates(params, state, time_major(x, spec), train=False)
        return mean_of_sown(sown, "firing_rate")

    (xg,) = trainer.global_arrays(x)
    value = jax.jit(rate)(trainer.params, trainer.state, xg)
    return None if value is None else float(value)


def _step_memory(trainer: Trainer, memory_mode: str, batch: int):
    """Compile-only memory of the training step of ``memory_mode``'s model at ``batch`` and
    ``2 * batch`` (a :class:`revsnn_jax.memory.PerExampleMemory`)."""
    from revsnn_jax import memory

    cfg, shape = trainer.cfg, trainer.example_shape
    fns, params, state = steps.split_model(trainer.build_model(memory_mode, abstract=True))
    optimizer, _ = make_optimizer(cfg, trainer.steps_per_epoch, trainer.total_steps)
    abstract = jax.eval_shape(lambda: (params, state, optimizer.init(params)))
    step = trainer.loss_step(fns, optimizer)

    def make_args(b):
        return (*abstract, jax.ShapeDtypeStruct((b, *shape), jnp.float32),
                jax.ShapeDtypeStruct((b,), jnp.int32), jax.ShapeDtypeStruct((), jnp.float32))

    at_b, at_2b = memory.compile_step(
        memory.StepProgram(lambda: (jax.jit(step), make_args)), (batch, 2 * batch), target=None)
    return memory.PerExampleMemory(batch=batch, at_batch=at_b.memory,
                                   at_double_batch=at_2b.memory)


def memory_per_image(trainer: Trainer) -> dict[str, Any]:
    """Compile-only memory per image of the train step: this model and its plain twin
    (``memory_mode="none"``), at ``memory_batch`` (default: the per-device batch)."""
    cfg = trainer.cfg
    batch = cfg.memory_batch or cfg.batch_size // len(trainer.devices)
    this = _step_memory(trainer, cfg.memory_mode, batch)
    plain = this if cfg.memory_mode == "none" else _step_memory(trainer, "none", batch)
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
