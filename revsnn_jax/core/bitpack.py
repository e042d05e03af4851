"""Spikes stored as bits: a convolution over a 0/1 spike tensor that keeps its input packed.

A convolution's weight gradient needs its input, so autodiff keeps the spikes that enter every
convolution of a spiking network, in float32: 32 bits for one bit of information. A narrower
copy (bool, int8, bfloat16) does not help: XLA fuses the widening cast back into the float32
source and keeps that instead. Packing does: :func:`pack_bits` reduces 8 spikes into one byte
(a reduction XLA must materialise), and the backward unpacks them, tied to the cotangent
(:mod:`revsnn_jax.core.ties`) so the unpacked copy exists only while the gradient is computed::

    forward:   y = conv(s, k)                          residuals: pack_bits(s) (1 bit / spike), k
    backward:  s = unpack_bits(packed) tied to dy
               ds, dk = pullback of conv at (s, k), applied to dy

The values are exact for a 0/1 input: ``unpack_bits(pack_bits(s)) == s``. For any other input
the weight gradient would be computed from ``s != 0`` instead of ``s``: use it only on spikes
(:class:`revsnn_jax.layers.Conv2d` with ``spike_input=True`` after a spiking neuron).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from revsnn_jax.core.conv import conv2d
from revsnn_jax.core.ties import tie

__all__ = ["pack_bits", "spike_conv", "spike_dense", "unpack_bits"]

_BITS = 8


def pack_bits(s: jax.Array) -> jax.Array:
    """0/1 values ``[..., C]`` -> ``uint8 [..., ceil(C / 8)]``, 8 per byte along the last axis.

    Bit ``j`` of byte ``i`` holds channel ``8 * i + j``; channels are zero-padded to a multiple
    of 8. Any non-zero value counts as 1.
    """
    channels = s.shape[-1]
    pad = (-channels) % _BITS
    bits = (s != 0).astype(jnp.uint8)
    if pad:
        bits = jnp.pad(bits, [(0, 0)] * (s.ndim - 1) + [(0, pad)])
    bits = bits.reshape((*s.shape[:-1], (channels + pad) // _BITS, _BITS))
    shifts = jnp.arange(_BITS, dtype=jnp.uint8)
    return jnp.sum(jnp.left_shift(bits, shifts), axis=-1, dtype=jnp.uint8)


def unpack_bits(packed: jax.Array, channels: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Inverse of :func:`pack_bits`: ``uint8 [..., ceil(C / 8)]`` -> 0/1 ``[..., C]`` in ``dtype``."""
    if packed.dtype != jnp.uint8:
        raise TypeError(f"packed spikes must be uint8, got {packed.dtype}")
    if not 0 < channels <= packed.shape[-1] * _BITS:
        raise ValueError(f"{channels} channels do not fit {packed.shape[-1]} packed bytes")
    shifts = jnp.arange(_BITS, dtype=jnp.uint8)
    bits = jnp.bitwise_and(jnp.right_shift(packed[..., None], shifts), jnp.uint8(1))
    bits = bits.reshape((*packed.shape[:-1], packed.shape[-1] * _BITS))[..., :channels]
    return bits.astype(dtype)


def _conv(s, kernel, strides, padding):
    return conv2d(s, kernel, strides, padding)


def _dense(s, kernel):
    return jnp.matmul(s, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _spike_apply(op, s, kernel):
    return op(s, kernel)


def _spike_apply_fwd(op, s, kernel):
    return op(s, kernel), (pack_bits(s), kernel, jnp.zeros((0, s.shape[-1]), jnp.uint8))


def _spike_apply_bwd(op, residuals, dy):
    packed, kernel, channels = residuals  # ``channels``: an empty array that carries C
    s = tie(unpack_bits(packed, channels.shape[-1], dy.dtype), dy)
    _, pullback = jax.vjp(op, s, kernel)
    return pullback(dy)


_spike_apply.defvjp(_spike_apply_fwd, _spike_apply_bwd)


def spike_conv(s: jax.Array, kernel: jax.Array, strides: tuple[int, int],
               padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """``conv(s, kernel)`` over 0/1 spikes ``s [N, H, W, C_in]`` (kernel ``HWIO``), NHWC out.

    Same values and gradients as ``jax.lax.conv_general_dilated`` for 0/1 inputs; the backward
    keeps ``s`` as bits (module docstring). ``s`` is cast to the kernel's dtype.
    """
    if s.ndim != 4 or kernel.ndim != 4 or s.shape[-1] != kernel.shape[2]:
        raise ValueError(f"spike_conv expects s [N, H, W, C] and kernel [kh, kw, C, out], got "
                         f"{s.shape} and {kernel.shape}")
    strides = tuple(int(v) for v in strides)
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    op = functools.partial(_conv, strides=strides, padding=padding)
    return _spike_apply(op, s.astype(kernel.dtype), kernel)


def spike_dense(s: jax.Array, kernel: jax.Array) -> jax.Array:
    """``s @ kernel`` over 0/1 spikes ``s [..., C_in]`` (kernel ``[C_in, C_out]``); the backward
    keeps ``s`` as bits. Add a bias outside: its gradient does not need ``s``."""
    if kernel.ndim != 2 or s.shape[-1] != kernel.shape[0]:
        raise ValueError(f"spike_dense expects s [..., C] and kernel [C, out], got {s.shape} "
                         f"and {kernel.shape}")
    return _spike_apply(_dense, s.astype(kernel.dtype), kernel)
