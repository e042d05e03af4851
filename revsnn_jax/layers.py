"""Time-folded layers for spiking networks over ``[T, B, H, W, C]`` tensors (channels last).

Convolution, BatchNorm and Linear carry no time dynamics, so they fold time into the batch: a
weight is applied once over the merged ``[T * B, ...]`` axis, never inside a loop over time
(DESIGN.md §2, §8). Only the neurons scan over ``T``. Every layer here also accepts tensors
without a time axis (``[B, H, W, C]``, e.g. a static image before direct encoding): leading axes
are simply batch axes.

Defaults follow the PyTorch reference (mi804/RevSNN, SpikingJelly ``SeqToANNContainer``):

* :class:`Conv2d` -- no bias, explicit symmetric padding, ``kaiming_normal_(mode="fan_out",
  nonlinearity="relu")`` initialisation (an untruncated normal with ``std = sqrt(2 / fan_out)``).
* :class:`BatchNorm` -- statistics over every axis but channels (``T * B * H * W`` for a spike
  sequence: one BatchNorm shared by all time steps), ``eps = 1e-5``, PyTorch momentum 0.1,
  weight 1 and bias 0 at init, running variance updated with the unbiased batch variance.
* :class:`Linear` -- PyTorch's default ``nn.Linear`` initialisation,
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weight and bias.
* :func:`avg_pool` / :func:`max_pool` -- PyTorch ``AvgPool2d`` (``count_include_pad=True``) and
  ``MaxPool2d`` (padding never wins the max).
* :class:`SpikingNeuron` -- a multi-step neuron over ``[T, ...]`` from SpikingJelly's initial
  potential (``v_reset``, or 0 for a soft reset; no parameters).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from revsnn_jax import neurons
from revsnn_jax.nnx_utils import sow_intermediate

__all__ = [
    "BatchNorm",
    "Conv2d",
    "Linear",
    "SpikingNeuron",
    "avg_pool",
    "global_avg_pool",
    "kaiming_normal_fan_out",
    "max_pool",
    "run_blocks",
]

Array = jax.Array
Dtype = Any

#: PyTorch's ``nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`` for a kernel
#: ``[kh, kw, in, out]``: ``fan_out = kh * kw * out``, untruncated normal, ``std = sqrt(2/fan_out)``.
kaiming_normal_fan_out = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


class Conv2d(nnx.Module):
    """2-D convolution over ``[..., H, W, C_in]``; leading axes (time, batch) are folded.

    Mirrors ``torch.nn.Conv2d(in, out, kernel, stride, padding, bias=False)`` with the
    reference's kaiming-normal (fan_out) initialisation. ``padding`` is PyTorch's symmetric
    zero padding in pixels.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int],
                 *, stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 use_bias: bool = False, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        ph, pw = _pair(padding)
        self.in_features = in_features
        self.out_features = out_features
        self.conv = nnx.Conv(in_features, out_features, _pair(kernel_size), _pair(stride),
                             padding=((ph, ph), (pw, pw)), use_bias=use_bias,
                             kernel_init=kaiming_normal_fan_out, param_dtype=param_dtype,
                             rngs=rngs)

    def __call__(self, x: Array) -> Array:
        if x.ndim < 4:
            raise ValueError(f"Conv2d expects [..., H, W, C] with a batch axis, got {x.shape}")
        lead = x.shape[:-3]
        y = self.conv(x.reshape((-1, *x.shape[-3:])))
        return y.reshape((*lead, *y.shape[1:]))


class BatchNorm(nnx.Module):
    """BatchNorm over the last (channel) axis with PyTorch ``BatchNorm2d`` semantics.

    In training mode it normalises with the batch statistics over every other axis (for
    ``[T, B, H, W, C]``: over ``T * B * H * W``) and updates the running statistics as PyTorch
    does: ``running = (1 - momentum) * running + momentum * batch`` with ``momentum = 0.1`` and
    the *unbiased* batch variance. In evaluation mode (``use_running_average=True``, set by
    ``model.eval()``) it uses the running statistics. ``scale`` starts at 1, ``bias`` at 0.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.1, epsilon: float = 1e-5,
                 use_running_average: bool = False, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs | None = None) -> None:
        del rngs  # deterministic initialisation; accepted for a uniform layer signature
        self.num_features = num_features
        self.momentum = momentum
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((num_features,), param_dtype))

    def __call__(self, x: Array) -> Array:
        if x.shape[-1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) got {x.shape[-1]} channels "
                             f"(input {x.shape}); channels must be the last axis")
        axes = tuple(range(x.ndim - 1))
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            n = math.prod(x.shape[:-1])
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            stat_dtype = self.mean[...].dtype
            self.mean[...] = ((1 - m) * self.mean[...]
                              + m * jax.lax.stop_gradient(mean).astype(stat_dtype))
            self.var[...] = ((1 - m) * self.var[...]
                             + m * jax.lax.stop_gradient(unbiased).astype(stat_dtype))
        inv = jax.lax.rsqrt(var.astype(x.dtype) + self.epsilon) * self.scale[...].astype(x.dtype)
        return (x - mean.astype(x.dtype)) * inv + self.bias[...].astype(x.dtype)


def _torch_linear_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Linear(nnx.Module):
    """``y = x @ W + b`` over the last axis, with ``torch.nn.Linear``'s default initialisation."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        init = _torch_linear_init(in_features)
        self.linear = nnx.Linear(in_features, out_features, use_bias=use_bias,
                                 kernel_init=init, bias_init=init, param_dtype=param_dtype,
                                 rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.linear(x)


class SpikingNeuron(nnx.Module):
    """A multi-step spiking neuron layer: spikes of ``x`` (``[T, ...]``) from ``V = v_reset``
    (0 for a soft reset), SpikingJelly's initial potential.

    Wraps :func:`revsnn_jax.neurons.neuron_multistep`; no parameters, no hidden state. Records
    its firing rate (mean spike count per neuron and step) as ``nnx.Intermediate``
    ``firing_rate`` for :func:`revsnn_jax.nnx_utils.call_capturing` to collect.
    """

    def __init__(self, config: neurons.NeuronConfig) -> None:
        self.config = config

    def __call__(self, x: Array) -> Array:
        spikes = neurons.neuron_multistep(x, self.config)
        sow_intermediate(self, "firing_rate", jax.lax.stop_gradient(spikes).mean())
        return spikes


def _pool(x: Array, init: np.ndarray, op: Callable[[Array, Array], Array], window: int, stride: int, padding: int) -> Array:
    if x.ndim < 3:
        raise ValueError(f"pooling expects [..., H, W, C], got {x.shape}")
    lead = x.ndim - 3
    dims = (1,) * lead + (window, window, 1)
    strides = (1,) * lead + (stride, stride, 1)
    pads = ((0, 0),) * lead + ((padding, padding), (padding, padding), (0, 0))
    # ``init`` is a concrete NumPy scalar so JAX recognises the sum / max monoid (and can
    # differentiate it) even under ``jit``.
    return jax.lax.reduce_window(x, init, op, dims, strides, pads)


def avg_pool(x: Array, window: int = 3, stride: int = 2, padding: int = 1) -> Array:
    """PyTorch ``AvgPool2d(window, stride, padding)`` over ``[..., H, W, C]``.

    ``count_include_pad=True`` (PyTorch's default): every window is divided by
    ``window ** 2``, zeros of the padding included. Output size
    ``floor((H + 2 * padding - window) / stride) + 1``.
    """
    summed = _pool(x, np.zeros((), x.dtype), jax.lax.add, window, stride, padding)
    return summed / (window * window)


def max_pool(x: Array, window: int = 3, stride: int = 2, padding: int = 1) -> Array:
    """PyTorch ``MaxPool2d(window, stride, padding)`` over ``[..., H, W, C]`` (pads with -inf)."""
    return _pool(x, np.array(-np.inf, x.dtype), jax.lax.max, window, stride, padding)


def global_avg_pool(x: Array) -> Array:
    """Mean over the two spatial axes of ``[..., H, W, C]`` (``AdaptiveAvgPool2d(1)`` + flatten)."""
    return jnp.mean(x, axis=(-3, -2))


def _call_block(block: nnx.Module, x: Array) -> Array:
    return block(x)


def run_blocks(blocks: Iterable[nnx.Module], x: Array, memory_mode: str) -> Array:
    """Apply ``blocks`` in order; ``memory_mode="checkpoint"`` rematerialises each block
    (:func:`flax.nnx.remat`: keep the block's input, recompute its inside in the backward)."""
    for block in blocks:
        x = nnx.remat(_call_block)(block, x) if memory_mode == "checkpoint" else block(x)
    return x
