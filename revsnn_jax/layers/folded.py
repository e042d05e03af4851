"""Time-folded layers for spiking networks over ``[T, B, H, W, C]`` tensors (channels last).

Convolution, BatchNorm and Linear carry no time dynamics, so they fold time into the batch: a
weight is applied once over the merged ``[T * B, ...]`` axis, never inside a loop over time
(docs/memory.md). Only the neurons scan over ``T``. Every layer here also accepts tensors
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
  ``MaxPool2d`` (padding never wins the max); :func:`lean_max_pool` is ``max_pool`` with a
  backward that keeps only its input (as bits for spikes).

The neurons between them are the NNX family of :mod:`revsnn_jax.neurons.modules`
(:func:`revsnn_jax.neurons.modules.from_config`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from revsnn_jax.core import bitpack, remat
from revsnn_jax.core.conv import apply_nnx_conv
from revsnn_jax.core.nnx_utils import sow_intermediate
from revsnn_jax.core.ties import tie

__all__ = [
    "BatchNorm",
    "Conv2d",
    "Linear",
    "avg_pool",
    "batch_norm_train",
    "global_avg_pool",
    "kaiming_normal_fan_out",
    "lean_max_pool",
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

    ``spike_input=True`` declares that the input is a 0/1 spike tensor (a spiking neuron's
    output): the backward then keeps it bit-packed, 1 bit per spike instead of 32
    (:func:`revsnn_jax.core.bitpack.spike_conv`); values and gradients are unchanged for 0/1 input
    and wrong for any other.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int],
                 *, stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 use_bias: bool = False, spike_input: bool = False,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        ph, pw = _pair(padding)
        if spike_input and use_bias:
            raise ValueError("spike_input=True supports convolutions without bias only")
        self.in_features = in_features
        self.out_features = out_features
        self.spike_input = spike_input
        self.conv = nnx.Conv(in_features, out_features, _pair(kernel_size), _pair(stride),
                             padding=((ph, ph), (pw, pw)), use_bias=use_bias,
                             kernel_init=kaiming_normal_fan_out, param_dtype=param_dtype,
                             rngs=rngs)

    def __call__(self, x: Array) -> Array:
        if x.ndim < 4:
            raise ValueError(f"Conv2d expects [..., H, W, C] with a batch axis, got {x.shape}")
        lead = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        if self.spike_input:
            conv = self.conv
            y = bitpack.spike_conv(x, conv.kernel[...], conv.strides, conv.padding)
        else:
            y = apply_nnx_conv(self.conv, x)
        return y.reshape((*lead, *y.shape[1:]))


class BatchNorm(nnx.Module):
    """BatchNorm over the last (channel) axis with PyTorch ``BatchNorm2d`` semantics.

    In training mode it normalises with the batch statistics over every other axis (for
    ``[T, B, H, W, C]``: over ``T * B * H * W``) and updates the running statistics as PyTorch
    does: ``running = (1 - momentum) * running + momentum * batch`` with ``momentum = 0.1`` and
    the *unbiased* batch variance. In evaluation mode (``use_running_average=True``, set by
    ``model.eval()``) it uses the running statistics. ``scale`` starts at 1, ``bias`` at 0.

    Training mode has a hand-written backward (:func:`batch_norm_train`) that keeps only the
    input and two per-channel vectors; autodiff of the formula keeps ``x - mean`` beside ``x``.
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
        scale = self.scale[...].astype(x.dtype)
        bias = self.bias[...].astype(x.dtype)
        if self.use_running_average:
            inv = jax.lax.rsqrt(self.var[...].astype(x.dtype) + self.epsilon) * scale
            return (x - self.mean[...].astype(x.dtype)) * inv + bias
        mean, var = _batch_stats(x)
        n = math.prod(x.shape[:-1])
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        stat_dtype = self.mean[...].dtype
        self.mean[...] = ((1 - m) * self.mean[...]
                          + m * jax.lax.stop_gradient(mean).astype(stat_dtype))
        self.var[...] = ((1 - m) * self.var[...]
                         + m * jax.lax.stop_gradient(unbiased).astype(stat_dtype))
        return batch_norm_train(x, scale, bias, self.epsilon)


def _batch_stats(x: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance over every axis but the last."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    return mean, jnp.mean(jnp.square(x - mean), axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` with the batch statistics of ``x``.

    Statistics run over every axis but the last (channels). The backward keeps ``x``, ``mean``
    and ``r = 1 / sqrt(var + eps)`` and rebuilds ``x_hat = (x - mean) * r`` (tied to the
    cotangent, :mod:`revsnn_jax.core.ties`), then, with ``n`` elements per channel and ``dy`` the
    output cotangent::

        d bias  = sum(dy)            d scale = sum(dy * x_hat)
        dx = r * (scale * dy - mean(scale * dy) - x_hat * mean(scale * dy * x_hat))
    """
    return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
    mean, var = _batch_stats(x)
    rstd = jax.lax.rsqrt(var + epsilon)
    return (x - mean) * (rstd * scale) + bias, (x, mean, rstd, scale)


def _batch_norm_train_bwd(epsilon, residuals, dy):
    del epsilon
    x, mean, rstd, scale = residuals
    axes = tuple(range(x.ndim - 1))
    x_hat = tie((x - mean) * rstd, dy)
    d_x_hat = dy * scale
    dx = rstd * (d_x_hat - jnp.mean(d_x_hat, axes)
                 - x_hat * jnp.mean(d_x_hat * x_hat, axes))
    return dx, jnp.sum(dy * x_hat, axes), jnp.sum(dy, axes)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


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


def _pool_windows(xp: Array, out_h: int, out_w: int, window: int, stride: int):
    """The ``window * window`` strided views of the padded ``xp``, in row-major window order."""
    for di in range(window):
        for dj in range(window):
            yield di, dj, xp[..., di:di + stride * (out_h - 1) + 1:stride,
                             dj:dj + stride * (out_w - 1) + 1:stride, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def lean_max_pool(x: Array, window: int = 3, stride: int = 2, padding: int = 1,
                  spike_input: bool = False) -> Array:
    """PyTorch ``MaxPool2d(window, stride, padding)`` over ``[..., H, W, C]`` with a lean backward.

    Same values and gradients as :func:`max_pool` (each window's gradient goes to its first
    maximum in row-major order, PyTorch's choice), but the backward is built from
    ``window * window`` strided slices instead of XLA's ``select_and_scatter``, which XLA:CPU
    expands into a scatter with five int32 index arrays of the padded input's size
    (docs/former.md has the measurement). Only ``x`` is kept for the backward, as bits
    (:mod:`revsnn_jax.core.bitpack`) when ``spike_input=True`` declares it a 0/1 spike tensor. The
    window contributions are summed one after another, each tied to the running sum
    (:mod:`revsnn_jax.core.ties`), so one padded gradient is live at a time, not ``window ** 2``.
    """
    return _max_pool_values(x, window, stride, padding)


def _max_pool_values(x, window, stride, padding):
    h, w = x.shape[-3], x.shape[-2]
    out_h = (h + 2 * padding - window) // stride + 1
    out_w = (w + 2 * padding - window) // stride + 1
    pads = [(0, 0)] * (x.ndim - 3) + [(padding, padding), (padding, padding), (0, 0)]
    xp = jnp.pad(x, pads, constant_values=-jnp.inf)
    out = None
    for _, _, view in _pool_windows(xp, out_h, out_w, window, stride):
        out = view if out is None else jnp.maximum(out, view)
    return out


def _lean_max_pool_fwd(x, window, stride, padding, spike_input):
    residual = bitpack.pack_bits(x) if spike_input else x
    return _max_pool_values(x, window, stride, padding), residual


def _lean_max_pool_bwd(window, stride, padding, spike_input, residual, g):
    if spike_input:
        channels = g.shape[-1]
        x = tie(bitpack.unpack_bits(residual, channels, g.dtype), g)
    else:
        x = tie(residual, g)
    out = _max_pool_values(x, window, stride, padding)
    out_h, out_w = out.shape[-3], out.shape[-2]
    pads = [(0, 0)] * (x.ndim - 3) + [(padding, padding), (padding, padding), (0, 0)]
    xp = jnp.pad(x, pads, constant_values=-jnp.inf)
    taken = jnp.zeros(out.shape, bool)
    zero = jnp.zeros((), g.dtype)
    contribs = {}
    for di, dj, view in _pool_windows(xp, out_h, out_w, window, stride):
        hit = (view == out) & ~taken  # the first maximum of each window takes the gradient
        taken = taken | hit
        contribs[di, dj] = jnp.where(hit, g, zero)
    # Padded row R = stride * q + rho receives window i = q - (d - rho) / stride's offset d for
    # every d = rho (mod stride): per residue class (rho_h, rho_w) a sum of shifted output-size
    # contributions, then the classes interleave to the padded grid. Nothing of the input's
    # size is built but the result.
    q_h, q_w = -(-xp.shape[-3] // stride), -(-xp.shape[-2] // stride)
    classes = []
    for rho_h in range(stride):
        row = []
        for rho_w in range(stride):
            total = jnp.zeros((*out.shape[:-3], q_h, q_w, out.shape[-1]), g.dtype)
            for dh in range(rho_h, window, stride):
                for dw in range(rho_w, window, stride):
                    total = total + _shift_to(contribs[dh, dw], (dh - rho_h) // stride,
                                              (dw - rho_w) // stride, q_h, q_w)
            row.append(total)
        classes.append(jnp.stack(row, axis=-2))  # [..., q_h, q_w, stride, C]
    grid = jnp.stack(classes, axis=-4)  # [..., q_h, stride, q_w, stride, C]
    grid = grid.reshape((*out.shape[:-3], q_h * stride, q_w * stride, out.shape[-1]))
    h, w = x.shape[-3], x.shape[-2]
    return (grid[..., padding:padding + h, padding:padding + w, :],)


def _shift_to(v: Array, k_h: int, k_w: int, q_h: int, q_w: int) -> Array:
    """``v [..., out_h, out_w, C]`` moved down by ``k_h`` rows and right by ``k_w`` columns,
    zero-filled and cut to ``[..., q_h, q_w, C]`` (``out[q] = v[q - k]``)."""
    out_h, out_w = v.shape[-3], v.shape[-2]
    lead = [(0, 0, 0)] * (v.ndim - 3)
    return jax.lax.pad(v, jnp.zeros((), v.dtype), [
        *lead, (k_h, q_h - out_h - k_h, 0), (k_w, q_w - out_w - k_w, 0), (0, 0, 0)])


lean_max_pool.defvjp(_lean_max_pool_fwd, _lean_max_pool_bwd)


def global_avg_pool(x: Array) -> Array:
    """Mean over the two spatial axes of ``[..., H, W, C]`` (``AdaptiveAvgPool2d(1)`` + flatten)."""
    return jnp.mean(x, axis=(-3, -2))


def run_blocks(blocks: Iterable[nnx.Module], x: Array, memory_mode: str) -> Array:
    """Apply ``blocks`` in order; ``memory_mode="checkpoint"`` rematerialises each block: the
    backward keeps each block's input and recomputes its inside (:mod:`revsnn_jax.core.remat`)."""
    for block in blocks:
        if memory_mode == "checkpoint":
            x, rates = remat.checkpoint_module(block, x)
            if rates is not None:  # one per spiking layer of the block
                sow_intermediate(block, "firing_rate", rates)
        else:
            x = block(x)
    return x
