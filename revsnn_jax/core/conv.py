"""The 2-D convolution of every model: NHWC x HWIO, with a backward XLA:CPU runs fast.

XLA:CPU runs a convolution through its fast (Eigen) path only in one canonical form: input
``[N, H, W, C]``, kernel ``[kh, kw, C_in, C_out]``, output ``[N, H, W, C]`` (``dim_labels``
``b01f_01io->b01f`` in the compiled HLO). Autodiff's transpose rules emit the input gradient as
``b01f_01oi->b01f`` and the weight gradient as ``f01b_i01o->01bf``; outside a loop XLA:CPU
lays them out canonically itself, but inside a ``lax.scan`` (the reversible stages, the neuron
and column loops) it does not, and runs them through a generic loop nest tens of times slower.

:func:`conv2d` has the value of ``lax.conv_general_dilated`` and a ``jax.custom_vjp`` whose
backward, on CPU, writes both gradients as canonical convolutions. With ``y = x * K`` (stride
``s``, padding ``(lo, hi)`` per spatial axis, ``G`` feature groups) and cotangent ``dY``:

* input gradient: ``dX = dY_s * K'``, ``dY`` dilated by ``s`` (zeros between its pixels,
  ``lhs_dilation``) convolved at stride 1 with padding ``(k - 1 - lo, H + k - 1 - (s (O - 1)
  + 1) - (k - 1 - lo))`` by ``K'[a, b, o, i] = K[k_h - 1 - a, k_w - 1 - b, i, o]`` (the kernel
  flipped in space, input and output features swapped within each group);
* weight gradient: ``dK[a, b, i, o] = sum_{n,h,w} Xpad[n, s h + a, s w + b, i] dY[n, h, w, o]``,
  a convolution with batch and feature swapped by explicit transposes: the input ``X`` laid
  out ``[C_in / G, H, W, G N]`` (batch = input feature, feature = group and image), the
  "kernel" ``dY`` laid out ``[O_h, O_w, N, C_out]`` with ``rhs_dilation = s``, the same
  padding and ``G`` groups, giving ``[C_in / G, k_h', k_w', C_out]``, cropped to ``k_h x
  k_w`` (``k' > k`` when the last stride leaves pixels unused) and transposed to HWIO.

The transposes are copies of ``X`` and ``dY`` that exist only while the gradient is computed
(``X`` is tied to the cotangent, :mod:`revsnn_jax.core.ties`, so XLA cannot make the copy in
the forward and keep it); for a large batch the weight gradient runs over groups of images of
at most ``GRAD_GROUP_BYTES`` in a loop, so the copies do not grow with the batch. On other
platforms (GPU, TPU) the backward is autodiff's: the gradients are one primitive with a
lowering per platform, so their compiled programs keep the same convolution calls. Values and
gradients equal ``lax.conv_general_dilated``'s (bitwise in the tests).

A stride-1 depthwise convolution's gradients are sums of shifted products on CPU
(:func:`_depthwise_grads`). A convolution whose input or output has fewer pixels than its kernel (a 3x3 kernel over a
2x2 map) is a matmul of patches instead: XLA would swap its operands into a non-canonical
form.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
from flax import nnx
from jax.interpreters import batching, mlir

from revsnn_jax.core.ties import anchor, tie

__all__ = ["CANONICAL_DIM_LABELS", "GRAD_GROUP_BYTES", "apply_nnx_conv", "conv2d", "normalize_padding"]

Array = jax.Array

#: XLA:CPU's canonical convolution form (its Eigen fast path), as the compiled HLO prints it.
CANONICAL_DIM_LABELS = "b01f_01io->b01f"
_DN = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x: Array, kernel: Array, strides: tuple, padding: tuple, groups: int,
              lhs_dilation: tuple = (1, 1), rhs_dilation: tuple = (1, 1)) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=_DN,
                                        feature_group_count=groups)


def normalize_padding(padding: int | Sequence[int] | Sequence[Sequence[int]]
                      ) -> tuple[tuple[int, int], tuple[int, int]]:
    """``p``, ``(ph, pw)`` or ``((top, bottom), (left, right))`` -> the last form."""
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    pads = tuple(padding)
    if len(pads) != 2:
        raise ValueError(f"padding must be an int or two entries (height, width), got {padding}")
    out = []
    for p in pads:
        if isinstance(p, int):
            out.append((int(p), int(p)))
        else:
            lo, hi = p
            out.append((int(lo), int(hi)))
    return tuple(out)


def conv2d(x: Array, kernel: Array, strides: int | Sequence[int] = 1,
           padding: int | Sequence[int] | Sequence[Sequence[int]] = 0,
           feature_group_count: int = 1) -> Array:
    """``x [N, H, W, C_in]`` convolved with ``kernel [kh, kw, C_in / G, C_out]`` (NHWC x HWIO),
    stride ``strides``, zero padding ``padding`` (module docstring for the backward).

    Same value and gradients as ``lax.conv_general_dilated(x, kernel, strides, padding,
    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=G)``; ``x`` and
    ``kernel`` must share a dtype.
    """
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"conv2d expects x [N, H, W, C] and kernel [kh, kw, C/G, out], got "
                         f"{x.shape} and {kernel.shape}")
    groups = int(feature_group_count)
    if groups < 1 or x.shape[-1] != kernel.shape[2] * groups or kernel.shape[3] % groups:
        raise ValueError(f"conv2d: {x.shape[-1]} input channels and kernel {kernel.shape} do "
                         f"not fit feature_group_count={feature_group_count}")
    if x.dtype != kernel.dtype:
        raise TypeError(f"conv2d: x is {x.dtype}, kernel {kernel.dtype}; cast one first")
    s = (strides, strides) if isinstance(strides, int) else tuple(int(v) for v in strides)
    if len(s) != 2 or min(s) < 1:
        raise ValueError(f"strides must be one or two positive ints, got {strides}")
    pads = normalize_padding(padding)
    kh, kw = kernel.shape[:2]
    out = [(size + lo + hi - k) // st + 1
           for size, k, st, (lo, hi) in zip(x.shape[1:3], (kh, kw), s, pads, strict=True)]
    if min(x.shape[1] * x.shape[2], out[0] * out[1]) < kh * kw:
        return _conv_patches(x, kernel, s, pads, groups)
    return _conv(x, kernel, s, pads, groups)


def _conv_patches(x: Array, kernel: Array, strides: tuple, padding: tuple, groups: int) -> Array:
    """A stride-1 depthwise convolution's gradients are sums of shifted products on CPU
(:func:`_depthwise_grads`). A convolution whose input or output has fewer pixels than its kernel, as patches times
    the kernel (a matmul; autodiff's gradients are matmuls too).

    ``Y[n, h, w, g, j] = sum_{a, b, i} Xpad[n, s h + a, s w + b, g, i] K[a, b, i, g, j]``.
    XLA would swap such a convolution's operands (a smaller "kernel") into a form outside the
    canonical one; these maps are a few pixels, so the copies of the patches are small."""
    kh, kw, c_in_group, c_out = kernel.shape
    zero = jnp.zeros((), x.dtype)
    xp = jax.lax.pad(x, zero, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
    out_h = (xp.shape[1] - kh) // strides[0] + 1
    out_w = (xp.shape[2] - kw) // strides[1] + 1
    patches = jnp.stack([
        xp[:, a: a + strides[0] * (out_h - 1) + 1: strides[0],
           b: b + strides[1] * (out_w - 1) + 1: strides[1]]
        for a in range(kh) for b in range(kw)], axis=3)  # [N, O_h, O_w, kh kw, C_in]
    patches = patches.reshape((*patches.shape[:4], groups, c_in_group))
    k = kernel.reshape((kh * kw, c_in_group, groups, c_out // groups))
    y = jnp.einsum("nhwkgi,kigj->nhwgj", patches, k)
    return y.reshape((*y.shape[:3], c_out))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, strides, padding, groups):
    return _lax_conv(x, kernel, strides, padding, groups)


def _conv_fwd(x, kernel, strides, padding, groups):
    return _lax_conv(x, kernel, strides, padding, groups), (x, kernel)


#: The weight gradient's transposed copies of ``X`` and ``dY`` are made for groups of images of
#: at most this many bytes (of the larger of the two per group), summed in a loop, so the
#: transient does not grow with the batch (one group: no loop).
GRAD_GROUP_BYTES = 16 * 2**20


def _group_size(n: int, image_bytes: int) -> int:
    """The largest divisor of ``n`` whose images fit ``GRAD_GROUP_BYTES`` (at least 1)."""
    most = max(1, GRAD_GROUP_BYTES // max(1, image_bytes))
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def _kernel_grad_group(strides, padding, groups, kernel_shape, x, dy):
    """``dK`` of the images ``x [n, H, W, C_in]``, ``dy [n, O_h, O_w, C_out]`` as one NHWC x HWIO
    convolution: input ``[C_in / G, H, W, G n]``, kernel ``dy`` as ``[O_h, O_w, n, C_out]``."""
    kh, kw, c_in_group, _ = kernel_shape
    n, h, w, _ = x.shape
    xs = x.reshape((n, h, w, groups, c_in_group)).transpose((4, 1, 2, 3, 0))
    xs = xs.reshape((c_in_group, h, w, groups * n))
    dk = _lax_conv(xs, dy.transpose((1, 2, 0, 3)), (1, 1), padding, groups,
                   rhs_dilation=strides)
    return dk[:, :kh, :kw].transpose((1, 2, 0, 3))


def _grads_canonical(x, kernel, dy, *, strides, padding, groups):
    """Both gradients as NHWC x HWIO convolutions (module docstring)."""
    kh, kw, c_in_group, c_out = kernel.shape
    n, h, w, c_in = x.shape
    out_h, out_w = dy.shape[1:3]
    flipped = kernel[::-1, ::-1].reshape((kh, kw, c_in_group, groups, c_out // groups))
    flipped = flipped.transpose((0, 1, 4, 3, 2)).reshape((kh, kw, c_out // groups, c_in))
    back = []
    for size, k, out, s, (lo, _) in ((h, kh, out_h, strides[0], padding[0]),
                                     (w, kw, out_w, strides[1], padding[1])):
        before = k - 1 - lo
        back.append((before, size + k - 1 - (s * (out - 1) + 1) - before))
    if groups == c_in == c_out and strides == (1, 1):
        return _depthwise_grads(x, kernel, dy, padding, tuple(back))
    dx = _lax_conv(dy, flipped, (1, 1), tuple(back), groups, lhs_dilation=strides)
    image_bytes = max(x[0].size, dy[0].size) * x.dtype.itemsize
    size = _group_size(n, image_bytes)
    one = functools.partial(_kernel_grad_group, strides, padding, groups, kernel.shape)
    if size == n:
        # tied to the cotangent: XLA must not transpose x in the forward and keep the copy
        # (inside the loop below the slices depend on the loop index, which orders them)
        return dx, one(tie(x, anchor(dy)), dy)

    def body(i, total):
        start = i * size
        xg = jax.lax.dynamic_slice_in_dim(x, start, size)
        dyg = jax.lax.dynamic_slice_in_dim(dy, start, size)
        return total + one(xg, dyg)

    dk = jax.lax.fori_loop(0, n // size, body, jnp.zeros(kernel.shape, kernel.dtype))
    return dx, dk


def _depthwise_grads(x, kernel, dy, padding, back):
    """Gradients of a stride-1 depthwise convolution (one kernel per channel) as sums of
    shifted products, which XLA fuses into a few passes (XLA:CPU runs a convolution with one
    group per channel as a loop over the channels):
    ``dX = sum_{a,b} dYpad[:, i + a, j + b] K[k_h - 1 - a, k_w - 1 - b]`` (``dY`` padded by
    the input gradient's pads) and ``dK[a, b] = sum_{n,h,w} Xpad[n, h + a, w + b] dY[n, h, w]``
    per channel."""
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    out_h, out_w = dy.shape[1:3]
    zero = jnp.zeros((), x.dtype)

    def pad(a, pads):
        return jax.lax.pad(a, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))

    dyp = pad(dy, back)
    flipped = kernel[::-1, ::-1, 0]
    dx = sum(dyp[:, a: a + h, b: b + w] * flipped[a, b] for a in range(kh) for b in range(kw))
    xp = pad(tie(x, anchor(dy)), padding)
    dk = jnp.stack([jnp.sum(xp[:, a: a + out_h, b: b + out_w] * dy, axis=(0, 1, 2))
                    for a in range(kh) for b in range(kw)])
    return dx, dk.reshape(kernel.shape)


def _grads_autodiff(x, kernel, dy, *, strides, padding, groups):
    return jax.vjp(lambda x, k: _lax_conv(x, k, strides, padding, groups), x, kernel)[1](dy)


# The backward is one primitive lowered per platform: the canonical form on CPU, autodiff's
# transpose rules elsewhere. (``lax.platform_dependent`` would do the same through a
# conditional that XLA removes only after it has planned around it.)
_grads_p = jax.extend.core.Primitive("conv2d_grads")
_grads_p.multiple_results = True
_grads_p.def_abstract_eval(
    lambda x, kernel, dy, **_: (jax.core.ShapedArray(x.shape, x.dtype),
                                jax.core.ShapedArray(kernel.shape, kernel.dtype)))
_grads_p.def_impl(lambda *args, **params: _grads_autodiff(*args, **params))
mlir.register_lowering(_grads_p, mlir.lower_fun(_grads_autodiff, multiple_results=True))
mlir.register_lowering(_grads_p, mlir.lower_fun(_grads_canonical, multiple_results=True),
                       platform="cpu")


def _grads_batched(args, dims, **params):
    args = [jnp.moveaxis(a, d, 0) if d is not batching.not_mapped else a
            for a, d in zip(args, dims, strict=True)]
    in_axes = [0 if d is not batching.not_mapped else None for d in dims]
    out = jax.vmap(functools.partial(_grads_autodiff, **params), in_axes=in_axes)(*args)
    return out, (0, 0)


batching.primitive_batchers[_grads_p] = _grads_batched


def _conv_bwd(strides, padding, groups, residuals, dy):
    x, kernel = residuals
    return tuple(_grads_p.bind(x, kernel, dy, strides=strides, padding=padding, groups=groups))


_conv.defvjp(_conv_fwd, _conv_bwd)


def apply_nnx_conv(conv: nnx.Conv, x: Array) -> Array:
    """``conv(x)`` for a 2-D ``flax.nnx.Conv`` over ``x [..., H, W, C]`` (leading axes folded
    into the batch), through :func:`conv2d`: same parameters, dtype promotion and bias."""
    if len(conv.kernel_size) != 2:
        raise ValueError(f"apply_nnx_conv takes 2-D convolutions, got kernel {conv.kernel_size}")
    for name in ("input_dilation", "kernel_dilation"):
        value = getattr(conv, name, 1)
        if value not in (1, None) and tuple(_as_pair(value)) != (1, 1):
            raise ValueError(f"apply_nnx_conv: {name}={value} is not supported")
    strides = _as_pair(conv.strides)
    padding = conv.padding
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"apply_nnx_conv: padding {padding!r} is not supported")
        padding = jax.lax.padtype_to_pads(x.shape[-3:-1], conv.kernel_size, strides,
                                          padding.upper())
    if getattr(conv, "mask", None) is not None:
        raise ValueError("apply_nnx_conv: masked convolutions are not supported")
    bias = conv.bias[...] if conv.bias is not None else None
    x, kernel, bias = conv.promote_dtype((x, conv.kernel[...], bias), dtype=conv.dtype)
    lead = x.shape[:-3]
    y = conv2d(x.reshape((-1, *x.shape[-3:])), kernel, strides, padding,
               conv.feature_group_count)
    if bias is not None:
        y = y + bias
    return y.reshape((*lead, *y.shape[1:]))


def _as_pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else (int(v[0]), int(v[1]))
