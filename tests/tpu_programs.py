"""Step builders for tests/memory/test_tpu_plan.py, importable by the TPU compile worker (a subprocess:
:class:`revsnn_jax.memory.StepProgram` names them as ``"tpu_programs:stage_step"``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from revsnn_jax import neurons
from revsnn_jax.reversible import reversible_stage


def _branch(p, s, x, key):
    """A spiking half-branch on dense features: IF neuron over T, then a linear layer."""
    del key
    return neurons.if_multistep(x, surrogate="atan")[0] @ p["w"], s


def stage_step(depth: int, memory_mode: str, half: int = 128, time_steps: int = 4,
               length: int = 64):
    """A training step (gradient of a loss through ``depth`` coupling blocks, SGD update; the
    parameters donated) of a reversible stage on ``[T, B, L, 2 * half]``. ``half = 128`` fills
    the TPU's 128 lanes, so no padding blurs the activations' size; ``L = 64`` makes one
    example's activations large (128 KiB per half-tensor) so that they live in HBM, which the
    plan counts, and not in the chip's on-core memory, which it does not."""
    params = tuple({"w": jax.ShapeDtypeStruct((depth, half, half), jnp.float32)}
                   for _ in range(2))

    def step(params, x):
        def loss(params):
            y, _ = reversible_stage(_branch, _branch, params, None, x, memory_mode=memory_mode)
            return jnp.mean(y ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), value

    def make_args(batch: int):
        return params, jax.ShapeDtypeStruct((time_steps, batch, length, 2 * half),
                                            jnp.float32)

    return jax.jit(step, donate_argnums=(0,)), make_args


def wide_step(width: int = 2 ** 26):
    """A step whose temporaries grow by ``width`` float32 (256 MiB) per example: a sine of the
    input broadcast to ``[B, width]``, kept in HBM by an optimisation barrier, then summed. It
    compiles in seconds at any batch, and from about 60 examples on a 16 GiB v5e chip the TPU
    compiler refuses it (RESOURCE_EXHAUSTED): a refusal without a big model."""

    def step(x):
        wide = jnp.sin(jnp.broadcast_to(x[:, None], (x.shape[0], width)))
        wide = jax.lax.optimization_barrier(wide)
        return jnp.sum(wide * wide, axis=1)

    def make_args(batch: int):
        return (jax.ShapeDtypeStruct((batch,), jnp.float32),)

    return jax.jit(step), make_args
