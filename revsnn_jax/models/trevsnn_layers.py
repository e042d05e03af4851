"""Layers of T-RevSNN (Hu et al., ICML 2024): weight-standardised convs and spiking blocks.

Tensors are channels-last, ``[B, H, W, C]``: T-RevSNN's columns are its time steps, so inside a
column there is no time axis. Spikes come from the stateless quantizer
:class:`revsnn_jax.neurons.modules.Quantizer` (``S = floor(clip(V, 0, 1) + 0.5)``), which records
its firing rate (``nnx.Intermediate`` ``firing_rate``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.conv import apply_nnx_conv, conv2d
from revsnn_jax.neurons.modules import Quantizer

__all__ = ["ConvNeXtSpikeBlock", "DepthwiseConv", "DownSampling", "ScaledStdConv",
           "SharedConvs", "UpSampling", "trunc_normal"]

trunc_normal = nnx.initializers.truncated_normal(stddev=0.02)


def _pad(kernel: int, stride: int) -> int:
    """timm's "same"-style padding for ``ScaledStdConv2d``: ``((s - 1) + (k - 1)) // 2``."""
    return ((stride - 1) + (kernel - 1)) // 2


class ScaledStdConv(nnx.Module):
    """Weight-standardised convolution with a learnable gain (timm's ``ScaledStdConv2d``).

    ``W_hat = gain * (W - mean(W)) / sqrt(var(W) + eps) * fan_in^(-1/2)``, with the mean and
    (biased) variance over each output channel's ``kh * kw * C_in`` weights, ``eps = 1e-6``,
    ``gain`` initialised to 1; then ``y = conv(x, W_hat) + bias``.
    """

    def __init__(self, in_features: int, out_features: int, kernel: int, *, stride: int = 1,
                 padding: int | None = None, rngs: nnx.Rngs, eps: float = 1e-6) -> None:
        self.kernel = nnx.Param(trunc_normal(rngs.params(), (kernel, kernel, in_features,
                                                              out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.gain = nnx.Param(jnp.ones((out_features,)))
        self.stride = stride
        self.padding = _pad(kernel, stride) if padding is None else padding
        self.eps = eps

    def standardized_kernel(self) -> jax.Array:
        w = self.kernel[...]
        fan_in = w.shape[0] * w.shape[1] * w.shape[2]
        mean = w.mean(axis=(0, 1, 2), keepdims=True)
        var = w.var(axis=(0, 1, 2), keepdims=True)
        return (w - mean) / jnp.sqrt(var + self.eps) * (self.gain[...] * fan_in ** -0.5)

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        y = conv2d(x, self.standardized_kernel().astype(x.dtype), self.stride, p)
        return y + self.bias[...].astype(x.dtype)


class DepthwiseConv(nnx.Module):
    """Depthwise ``k x k`` convolution with bias, stride 1, padding ``k // 2``."""

    def __init__(self, channels: int, kernel: int, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(channels, channels, (kernel, kernel), padding=kernel // 2,
                             feature_group_count=channels, use_bias=True,
                             kernel_init=trunc_normal, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return apply_nnx_conv(self.conv, x)


def _batch_norm(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # PyTorch BatchNorm2d defaults: momentum 0.1 (flax 0.9), eps 1e-5.
    return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=rngs)


class DownSampling(nnx.Module):
    """``quantize -> conv(k, s, p, no bias) -> BatchNorm`` (the reference's ``DownSampling``)."""

    def __init__(self, in_features: int, out_features: int, kernel: int, stride: int,
                 padding: int, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(in_features, out_features, (kernel, kernel), strides=stride,
                             padding=padding, use_bias=False, kernel_init=trunc_normal,
                             rngs=rngs)
        self.bn = _batch_norm(out_features, rngs)
        self.spike = Quantizer()

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(apply_nnx_conv(self.conv, self.spike(x)))


class UpSampling(nnx.Module):
    """``quantize -> conv1x1(no bias) -> BatchNorm -> nearest-neighbour x2``."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(in_features, out_features, (1, 1), use_bias=False,
                             kernel_init=trunc_normal, rngs=rngs)
        self.bn = _batch_norm(out_features, rngs)
        self.spike = Quantizer()

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn(apply_nnx_conv(self.conv, self.spike(x)))
        return jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)


class SharedConvs(nnx.Module):
    """The second pointwise and depthwise convs of a stage, shared by every column."""

    def __init__(self, channels: int, kernel: int, *, rngs: nnx.Rngs) -> None:
        self.pwconv2 = ScaledStdConv(4 * channels, channels, 1, rngs=rngs)
        self.dwconv2 = DepthwiseConv(channels, kernel, rngs=rngs)

    def __call__(self, spikes: jax.Array) -> jax.Array:
        return self.dwconv2(self.pwconv2(spikes))


class ConvNeXtSpikeBlock(nnx.Module):
    """T-RevSNN's ConvNeXt-like spiking block with a membrane shortcut.

    ``z = dw2(pw2(Q(pw1(dw1(Q(x))))))`` with ``Q`` the quantizer, ``pw`` weight-standardised
    1x1 convs (``C -> 4C -> C``) and ``dw`` depthwise ``k x k`` convs; output ``x + gamma * z``
    with a per-channel layer scale ``gamma`` (init 1). With ``shared`` given (the reference's
    ``MS_SpikeConvNextBlock_Reuse``) ``pw2``/``dw2`` are the stage's shared convs and there is
    no layer scale: output ``x + z``.
    """

    def __init__(self, channels: int, kernel: int, *, reuse: bool, rngs: nnx.Rngs) -> None:
        self.reuse = reuse
        self.spike1 = Quantizer()  # on the block's input
        self.spike2 = Quantizer()  # on the hidden 4C activation
        self.dwconv1 = DepthwiseConv(channels, kernel, rngs=rngs)
        self.pwconv1 = ScaledStdConv(channels, 4 * channels, 1, rngs=rngs)
        if not reuse:
            self.second = SharedConvs(channels, kernel, rngs=rngs)
            self.gamma = nnx.Param(jnp.ones((channels,)))

    def __call__(self, x: jax.Array, shared: SharedConvs | None = None) -> jax.Array:
        hidden = self.spike2(self.pwconv1(self.dwconv1(self.spike1(x))))
        if self.reuse:
            if shared is None:
                raise ValueError("a reuse block needs the stage's shared convs")
            return x + shared(hidden)
        return x + self.gamma[...].astype(x.dtype) * self.second(hidden)
