"""The engine benchmark's reversible stage, for the benchmark, the notebooks and the tests.

F and G are RevSResNet's spiking branch written with plain ``jax.lax`` ops,
``IF -> conv3x3 -> BN -> IF -> conv3x3 -> BN`` on ``[T, B, H, W, C/2]`` (IF neuron with the
ATan(2) surrogate; BatchNorm on batch statistics, running statistics
``r' = m r + (1 - m) b`` with ``m = 0.9`` in the state). :func:`init_stage` stacks ``N`` blocks'
parameters and state, :func:`make_train_step` is one SGD step on ``mean(y ** 2)`` of the stage
(``experiments/bench_engine.py`` measures it; ``notebooks/02_memory.ipynb`` compiles it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax import neurons
from revsnn_jax.core.conv import conv2d
from revsnn_jax.reversible.engine import reversible_stage

__all__ = ["batch_norm", "conv3x3", "init_stage", "make_train_step", "spiking_branch"]

MOMENTUM = 0.9


def conv3x3(x, w):
    """3x3 'same' convolution over ``[T, B, H, W, C]``, time folded into the batch."""
    t, b = x.shape[:2]
    same = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in w.shape[:2]]
    y = conv2d(x.reshape(t * b, *x.shape[2:]), w, 1, same)
    return y.reshape(t, b, *y.shape[1:])


def batch_norm(h, scale, bias, eps=1e-5):
    """Batch statistics over every axis but channels; returns them for the running update."""
    axes = tuple(range(h.ndim - 1))
    stats_dtype = jnp.promote_types(h.dtype, jnp.float32)
    mean = h.astype(stats_dtype).mean(axes)
    var = h.astype(stats_dtype).var(axes)
    out = (h - mean.astype(h.dtype)) * jax.lax.rsqrt(var + eps).astype(h.dtype)
    return out * scale + bias, mean, var


def spiking_branch(p, s, x, key):
    """RevSResNet's branch: IF -> conv3x3 -> BN -> IF -> conv3x3 -> BN."""
    del key
    h = conv3x3(neurons.if_multistep(x, surrogate="atan")[0], p["w1"])
    h, m1, v1 = batch_norm(h, p["scale1"], p["bias1"])
    h = conv3x3(neurons.if_multistep(h, surrogate="atan")[0], p["w2"])
    h, m2, v2 = batch_norm(h, p["scale2"], p["bias2"])
    new_s = {"mean1": MOMENTUM * s["mean1"] + (1 - MOMENTUM) * m1,
             "var1": MOMENTUM * s["var1"] + (1 - MOMENTUM) * v1,
             "mean2": MOMENTUM * s["mean2"] + (1 - MOMENTUM) * m2,
             "var2": MOMENTUM * s["var2"] + (1 - MOMENTUM) * v2}
    return h.astype(x.dtype), new_s


def init_stage(key, num_blocks, half, dtype=jnp.float32, live_blocks=None):
    """Stacked params and state. Blocks past ``live_blocks`` output zeros (exact identities)."""

    def branch(k):
        k1, k2 = jax.random.split(k)
        fan_in = 9 * half
        p = {"w1": jax.random.normal(k1, (num_blocks, 3, 3, half, half), jnp.float32)
             * float(2 / np.sqrt(fan_in)),
             "w2": jax.random.normal(k2, (num_blocks, 3, 3, half, half), jnp.float32)
             * float(2 / np.sqrt(fan_in)),
             "scale1": jnp.ones((num_blocks, half), jnp.float32),
             "bias1": jnp.zeros((num_blocks, half), jnp.float32),
             "scale2": jnp.full((num_blocks, half), 0.5, jnp.float32),
             "bias2": jnp.zeros((num_blocks, half), jnp.float32)}
        if live_blocks is not None:
            p["scale2"] = p["scale2"].at[live_blocks:].set(0)
        s = {"mean1": jnp.zeros((num_blocks, half), jnp.float32),
             "var1": jnp.ones((num_blocks, half), jnp.float32),
             "mean2": jnp.zeros((num_blocks, half), jnp.float32),
             "var2": jnp.ones((num_blocks, half), jnp.float32)}
        return jax.tree.map(lambda a: a.astype(dtype), p), s

    kf, kg = jax.random.split(key)
    (pf, sf), (pg, sg) = branch(kf), branch(kg)
    return (pf, pg), (sf, sg)


def make_train_step(mode, lr=0.05, branch=spiking_branch):
    """``step(params, state, x) -> (params, state, loss)``: SGD at ``lr`` on ``mean(y ** 2)`` of
    a stage whose F and G are ``branch`` (default :func:`spiking_branch`)."""

    def step(params, state, x):
        def loss(params):
            y, new_state = reversible_stage(branch, branch, params, state, x, memory_mode=mode)
            return jnp.mean(y**2), new_state

        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return params, new_state, value

    return step
