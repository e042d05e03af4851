"""Matmul and convolution laid out for XLA:CPU, with the values and gradients of the usual ops.

* :func:`dense` -- ``inputs @ weight`` whose weight gradient is ``einsum("...i,...o->io")``.
* :func:`conv_nhwc` -- a 2-D convolution (NHWC x HWIO) whose forward, input gradient and
  kernel gradient at stride 1 are each one matmul over rows on CPU; on GPU and TPU it is
  ``lax.conv_general_dilated`` and its autodiff.

Both are used by the fused neuron layers of :mod:`revsnn_jax.neurons.kernels.fused` (the benchmark's
``linear_lif`` / ``conv_lif``); the models' convolutions use
:func:`revsnn_jax.core.conv.conv2d` (XLA's convolutions, gradients in XLA:CPU's canonical form).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["ROWS_GROUP_BYTES", "UNROLLED_GROUPS_MAX", "conv_nhwc", "dense"]

Array = jax.Array


@jax.custom_vjp
def dense(inputs: Array, weight: Array) -> Array:
    """``inputs [..., in] @ weight [in, out]``, same value and gradients as the matmul (to
    rounding), whose backward computes the weight gradient as ``einsum("...i,...o->io")``
    (all leading axes contracted at once), a form XLA:CPU runs faster than the one autodiff's
    transpose rule emits (a dot, then a transpose; docs/benchmarks.md has the measurement)."""
    return jnp.einsum("...i,io->...o", inputs, weight)


def _dense_fwd(inputs, weight):
    return dense(inputs, weight), (inputs, weight)


def _dense_bwd(residuals, g):
    inputs, weight = residuals
    return (jnp.einsum("...o,io->...i", g, weight),
            jnp.einsum("...i,...o->io", inputs, g).astype(weight.dtype))


dense.defvjp(_dense_fwd, _dense_bwd)


def _lax_conv(x: Array, kernel: Array, stride: int, pads: tuple) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


#: The row-matmul convolution builds ``kw`` (forward) or ``kw + kh`` (kernel gradient) shifted
#: copies of its operand; a batch whose operand (the input for the forward, the padded input
#: for the kernel gradient) exceeds this many bytes runs in groups of images, which bounds that
#: transient to a few times this size (the choice is measured in docs/benchmarks.md).
ROWS_GROUP_BYTES = 4 * 2**20
#: The kernel gradient sums its groups in an unrolled loop of static slices up to this many
#: groups (XLA:CPU then fuses each slice into the shift construction and overlaps one group's
#: copies with another's matmul); beyond it, ``lax.map`` keeps the transient bounded (XLA may
#: keep several unrolled groups' copies live at once) and the program small.
UNROLLED_GROUPS_MAX = 8


def _image_groups(array: Array) -> tuple[int, int]:
    """``(groups, images per group)`` for a batch ``array`` (axis 0) split into groups of at
    most ``ROWS_GROUP_BYTES``."""
    n = array.shape[0]
    image_bytes = math.prod(array.shape[1:]) * array.dtype.itemsize
    groups = max(1, math.ceil(n * image_bytes / ROWS_GROUP_BYTES))
    return groups, math.ceil(n / groups)


def _in_image_groups(fn: Callable[..., Array], *arrays: Array) -> Array:
    """``fn(*arrays)`` for arrays batched on axis 0, applied to groups of at most
    ``ROWS_GROUP_BYTES`` of the first array (``lax.map``; batch zero-padded to a whole number
    of equal groups); returns the per-group results stacked on a new axis 0 (one group: no
    map)."""
    n = arrays[0].shape[0]
    groups, size = _image_groups(arrays[0])
    if groups == 1:
        return fn(*arrays)[None]
    padded = [jnp.pad(a, ((0, groups * size - n),) + ((0, 0),) * (a.ndim - 1)).reshape(
        (groups, size, *a.shape[1:])) for a in arrays]
    return jax.lax.map(lambda xs: fn(*xs), tuple(padded))


def _pad_hw(x: Array, pads: tuple) -> Array:
    """``x [N, H, W, C]`` padded with zeros by ``pads = ((top, bottom), (left, right))``;
    negative pads crop (as in ``lax.conv_general_dilated``)."""
    zero = jnp.zeros((), x.dtype)
    return jax.lax.pad(x, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


def _width_shifts(xp: Array, kw: int) -> Array:
    """The padded images ``xp [N, H_pad, W_pad, C]`` and their ``kw`` width shifts side by
    side, ``Xw[n, h, w] = (xp[n, h, w], xp[n, h, w + 1], ..., xp[n, h, w + kw - 1])`` for
    ``w < W_pad - kw + 1``, flattened to rows ``[N H_pad (W_pad - kw + 1), kw C]``. Stacked on
    a new axis rather than concatenated on the last: XLA:CPU then writes it in one loop
    fusion (its standalone concatenate first copies every slice)."""
    n, h_pad, w_pad, c = xp.shape
    out_w = w_pad - kw + 1
    shifts = jnp.stack([xp[:, :, b: b + out_w] for b in range(kw)], axis=3)
    return shifts.reshape((n * h_pad * out_w, kw * c))


def _conv_rows_group(x: Array, kernel: Array, pads: tuple) -> Array:
    """Stride-1 convolution as one matmul over rows (what XLA:CPU runs fastest).

    Pad ``x`` by ``pads`` (negative pads crop) to ``Xp [N, H_pad, W_pad, C_in]``; output pixel
    ``(n, h, w)`` is ``sum_{a,b} Xp[n, h + a, w + b] K[a, b]``. Build the width shifts
    ``Xw[n, h', w] = (Xp[n, h', w], ..., Xp[n, h', w + kw - 1])`` for every padded row ``h'``
    (``[N H_pad out_w, kw C_in]``), multiply once by ``K`` laid out ``[(b, C_in), (a, C_out)]``
    to get ``Z[n, h', w, a] = sum_b Xp[n, h', w + b] K[a, b]``, and sum the height shifts
    ``Y[n, h, w] = sum_a Z[n, h + a, w, a]``. The ``kh - 1`` rows per image past ``out_h``
    are computed and not used (``(kh - 1) / H_pad`` of the work)."""
    kh, kw, c_in, c_out = kernel.shape
    xp = _pad_hw(x, pads)
    n, h_pad, w_pad, _ = xp.shape
    out_h, out_w = h_pad - kh + 1, w_pad - kw + 1
    k_blocks = kernel.transpose((1, 2, 0, 3)).reshape((kw * c_in, kh * c_out))
    z = jnp.dot(_width_shifts(xp, kw), k_blocks).reshape((n, h_pad, out_w, kh, c_out))
    y = z[:, :out_h, :, 0]
    for a in range(1, kh):
        y = y + z[:, a: a + out_h, :, a]
    return y


def _conv_rows(x: Array, kernel: Array, pads: tuple) -> Array:
    """:func:`_conv_rows_group` over groups of images (see ``ROWS_GROUP_BYTES``)."""
    n = x.shape[0]
    y = _in_image_groups(lambda xs: _conv_rows_group(xs, kernel, pads), x)
    return y.reshape((-1, *y.shape[2:]))[:n]


def _conv_forward(x: Array, kernel: Array, stride: int, pads: tuple) -> Array:
    if stride != 1:
        return _lax_conv(x, kernel, stride, pads)
    return jax.lax.platform_dependent(
        x, kernel, cpu=lambda x, k: _conv_rows(x, k, pads),
        default=lambda x, k: _lax_conv(x, k, 1, pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x: Array, kernel: Array, stride: int, pads: tuple) -> Array:
    """A 2-D convolution ``x [N, H, W, C_in]`` * ``kernel [kh, kw, C_in, C_out]`` (NHWC x
    HWIO), stride ``stride``, ``pads = ((top, bottom), (left, right))``, with the same value
    and gradients as ``lax.conv_general_dilated`` (to rounding), laid out for XLA:CPU.

    On CPU at stride 1 the forward, the input gradient (the same convolution of ``dY`` with
    the flipped, transposed kernel) and the kernel gradient
    ``dK[a, b] = sum_{n,h,w} Xpad[n, h + a, w + b, :]^T dY[n, h, w, :]`` are each one matmul
    over rows (:func:`_conv_rows`, :func:`_kernel_grad_flat`), which XLA:CPU runs faster
    than its own convolutions (docs/benchmarks.md).
    At stride > 1 the kernel gradient is ``kh * kw`` matmuls of strided windows. On other
    platforms (GPU, TPU) everything is ``lax.conv_general_dilated`` and its autodiff."""
    return _conv_forward(x, kernel, stride, pads)


def conv_nhwc_fwd(x, kernel, stride, pads):
    return conv_nhwc(x, kernel, stride, pads), (x, kernel)


def _kernel_grad_group(xp: Array, g: Array, kernel_shape: tuple) -> Array:
    """Stride-1 kernel gradient ``dK[a, b] = sum_{n,h,w} Xp[n, h + a, w + b]^T dY[n, h, w]``
    as **one** matmul, without copying ``kh * kw`` strided windows and without ``kh * kw``
    skinny ``C_in x C_out`` matmuls (both slow on XLA:CPU).

    With the width shifts ``Xw[n, h', w] = (Xp[n, h', w], ..., Xp[n, h', w + kw - 1])`` of
    every padded row ``h' < H_pad = out_h + kh - 1`` (:func:`_width_shifts`, ``[rows, kw
    C_in]``) and the height shifts of ``dY``, ``Gh[n, h', w] = (dY[n, h', w], dY[n, h' - 1, w],
    ..., dY[n, h' - kh + 1, w])`` (zeros outside ``[0, out_h)``; ``[rows, kh C_out]``), block
    ``(b, a)`` of ``Xw^T Gh`` is ``sum_{n,h',w} Xp[n, h', w + b]^T dY[n, h' - a, w] = dK[a,
    b]``: every block of the ``kw C_in x kh C_out`` product is a wanted tap, so the FLOPs are
    those of the ``kh * kw`` taps (plus ``(kh - 1) / H_pad`` for the rows where only some
    ``Gh`` blocks are non-zero). Transient memory: ``kw`` copies of the padded input and
    ``kh`` of ``dY``."""
    kh, kw, c_in, c_out = kernel_shape
    n, h_pad = xp.shape[:2]
    out_w = g.shape[2]
    g_pad = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (0, 0), (0, 0)))
    g_shifts = jnp.stack([g_pad[:, kh - 1 - a: kh - 1 - a + h_pad] for a in range(kh)], axis=3)
    g_shifts = g_shifts.reshape((n * h_pad * out_w, kh * c_out))
    blocks = jax.lax.dot_general(_width_shifts(xp, kw), g_shifts, (((0,), (0,)), ((), ())))
    return blocks.reshape((kw, c_in, kh, c_out)).transpose((2, 0, 1, 3))


def _kernel_grad_flat(xp: Array, g: Array, kernel_shape: tuple) -> Array:
    """:func:`_kernel_grad_group` summed over groups of images (see ``ROWS_GROUP_BYTES``): an
    unrolled loop over static slices (the last group may be smaller) up to
    ``UNROLLED_GROUPS_MAX`` groups, else ``lax.map`` over zero-padded equal groups (padded
    images add nothing)."""
    groups, size = _image_groups(xp)
    if groups > UNROLLED_GROUPS_MAX:
        return _in_image_groups(lambda a, b: _kernel_grad_group(a, b, kernel_shape),
                                xp, g).sum(0)
    total = None
    for start in range(0, xp.shape[0], size):
        part = _kernel_grad_group(xp[start: start + size], g[start: start + size], kernel_shape)
        total = part if total is None else total + part
    return total


def _grads_cpu(stride, pads, x, kernel, g):
    kh, kw = kernel.shape[:2]
    xp = _pad_hw(x, pads)
    if stride == 1:
        flipped = kernel[::-1, ::-1].transpose((0, 1, 3, 2))
        back = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]),
                (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
        g_x = _conv_rows(g, flipped, back)
        return g_x, _kernel_grad_flat(xp, g, kernel.shape).astype(kernel.dtype)
    (g_x,) = jax.vjp(lambda x: _lax_conv(x, kernel, stride, pads), x)[1](g)
    out_h, out_w = g.shape[1:3]
    rows = []
    for a in range(kh):
        cols = []
        for b in range(kw):
            window = xp[:, a: a + stride * (out_h - 1) + 1: stride,
                        b: b + stride * (out_w - 1) + 1: stride]
            cols.append(jnp.einsum("nhwi,nhwo->io", window, g))
        rows.append(jnp.stack(cols))
    return g_x, jnp.stack(rows).astype(kernel.dtype)


def conv_nhwc_bwd(stride, pads, residuals, g):
    x, kernel = residuals

    def native(x, kernel, g):
        return jax.vjp(lambda x, k: _lax_conv(x, k, stride, pads), x, kernel)[1](g)

    return jax.lax.platform_dependent(
        x, kernel, g, cpu=functools.partial(_grads_cpu, stride, pads), default=native)


conv_nhwc.defvjp(conv_nhwc_fwd, conv_nhwc_bwd)
