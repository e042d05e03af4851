"""A neuron fused with its pre-synaptic op, with the lean backward of the neuron core.

``linear_lif`` and ``conv_lif`` are :func:`revsnn_jax.neurons.lean.lean_pre_multistep` with
``pre_fn`` a matmul (:func:`revsnn_jax.neurons.kernels.cpu.dense`) or a convolution
(:func:`revsnn_jax.neurons.kernels.cpu.conv_nhwc`) applied chunk by chunk in time:
``S = neuron(inputs @ W + b)`` or ``S = neuron(conv(inputs, K) + b)``.
"""

from __future__ import annotations

import functools

import jax

from revsnn_jax.neurons.kernels.cpu import conv_nhwc, dense
from revsnn_jax.neurons.lean import DEFAULT_CONFIG, lean_pre_multistep
from revsnn_jax.neurons.multistep import NeuronConfig

__all__ = ["conv_lif", "linear_lif"]

Array = jax.Array


def _linear_pre(params, inputs):
    weight, bias = params
    y = dense(inputs, weight)
    return y if bias is None else y + bias


def linear_lif(
    weight: Array,
    bias: Array | None,
    inputs: Array,
    config: NeuronConfig = DEFAULT_CONFIG,
    *,
    v_init: Array | None = None,
    chunk: int | None = None,
    recompute_pre: bool = False,
) -> tuple[Array, Array]:
    """``neuron(inputs @ weight + bias)`` over time (``inputs [T, ..., in]``, ``weight
    [in, out]``), lean: the backward keeps ``inputs``, the weights, ``T / chunk`` potentials
    per neuron and the matmul's output ``X`` -- or, with ``recompute_pre=True``, not ``X``:
    it recomputes the matmul chunk by chunk (see :func:`lean_pre_multistep`). Returns
    ``(spikes, v_final)``."""
    if inputs.shape[-1] != weight.shape[0]:
        raise ValueError(
            f"inputs have {inputs.shape[-1]} features but weight is {weight.shape} "
            "(expected [in_features, out_features])"
        )
    return lean_pre_multistep(_linear_pre, (weight, bias), inputs, config,
                              v_init=v_init, chunk=chunk, recompute_pre=recompute_pre)


def _conv_pre(stride, pads, params, inputs):
    kernel, bias = params
    t, b = inputs.shape[:2]
    y = conv_nhwc(inputs.reshape((t * b, *inputs.shape[2:])), kernel, stride, pads)
    y = y.reshape((t, b, *y.shape[1:]))
    return y if bias is None else y + bias


def conv_lif(
    kernel: Array,
    bias: Array | None,
    inputs: Array,
    config: NeuronConfig = DEFAULT_CONFIG,
    *,
    stride: int = 1,
    padding: str | tuple = "SAME",
    v_init: Array | None = None,
    chunk: int | None = None,
    recompute_pre: bool = False,
) -> tuple[Array, Array]:
    """``neuron(conv(inputs, kernel) + bias)`` over time, lean. ``inputs [T, B, H, W, C_in]``
    (NHWC per step), ``kernel [kh, kw, C_in, C_out]`` (HWIO), ``padding`` ``"SAME"``,
    ``"VALID"`` or ``((top, bottom), (left, right))``. The convolution is :func:`conv_nhwc`
    (on CPU at stride 1: forward and gradients each one matmul over rows). The backward keeps
    ``X`` unless ``recompute_pre=True`` (see :func:`lean_pre_multistep`). Returns
    ``(spikes, v_final)``."""
    if inputs.ndim != 5 or kernel.ndim != 4 or inputs.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"conv_lif needs inputs [T, B, H, W, C_in] and kernel [kh, kw, C_in, C_out], got "
            f"{inputs.shape} and {kernel.shape}"
        )
    if isinstance(padding, str):
        pads = tuple(jax.lax.padtype_to_pads(inputs.shape[2:4], kernel.shape[:2],
                                             (stride, stride), padding))
    else:
        pads = tuple(map(tuple, padding))
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    pre = functools.partial(_conv_pre, int(stride), pads)
    return lean_pre_multistep(pre, (kernel, bias), inputs, config, v_init=v_init, chunk=chunk,
                              recompute_pre=recompute_pre)
