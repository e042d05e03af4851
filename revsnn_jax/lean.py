"""Lean multi-step IF / LIF neurons: a hand-written backward over the time scan that keeps none
of the neuron's per-step state, with gradients equal to autodiff of the plain scan.

**What autodiff of the plain scan keeps.** Differentiating :func:`revsnn_jax.neurons.lif_multistep`
(``jax.lax.scan`` over ``T`` steps) makes JAX save, for every time step, the intermediates of the
step's linearisation (the charged potential ``H[t]``, the surrogate's inputs, the spike used in the
reset, ...): several floats per neuron and time step, on top of whatever produced the input
``X`` (for a ``Linear``, the layer's input, kept anyway for the weight gradient).

**What the lean scan keeps.** The backward of step ``t`` needs ``H[t]`` (through the surrogate
derivative ``g'(H[t] - V_th)``), and ``H[t]`` depends on the input ``X[t]``: the potential cannot be
rebuilt from the spikes alone. The lean scan therefore uses *time-chunked recomputation*:

* forward: the ``T`` steps run as ``T / K`` chunks of ``K`` steps (default ``K`` ~ ``sqrt(T)``, a
  divisor of ``T`` when one is close). Only the potential at the start of each chunk,
  ``V[cK - 1]`` (``c = 0 .. T/K - 1``), is stored: ``T / K`` floats per neuron;
* backward, chunk by chunk from the last: re-run the chunk's ``K`` steps from its stored start
  potential keeping the potential *entering* each step (``K`` floats per neuron, the backward's
  working set), then walk the steps in reverse taking at each the vector-Jacobian product of
  the very same step function as the plain scan (:mod:`revsnn_jax.neurons` charge / fire /
  reset, so lean and plain cannot diverge) at its stored entering potential -- one fused
  re-evaluation + VJP per step, one stored array read where autodiff of the whole scan reads
  the step's linearisation -- and hand ``dV`` at the chunk's start to the previous chunk.

Per step (LIF, ``a = 1 / tau``; IF is ``a = 0`` on the leak and ``1`` on the input), with
``S[t] = Heaviside(H[t] - V_th)`` and hard reset ``V[t] = H[t] (1 - S[t]) + V_reset S[t]``:

* ``dH[t] = dS[t] g'(H[t] - V_th) + dV[t] dV[t]/dH[t]``, where ``dV[t]/dH[t] = 1 - S[t]`` plus,
  unless ``detach_reset``, ``(V_reset - H[t]) g'(H[t] - V_th)`` (soft reset: ``1`` and
  ``- V_th g'(H[t] - V_th)``);
* ``dX[t] = a dH[t]`` (``decay_input=True``) or ``dH[t]`` (``False``); ``dV[t-1] = (1 - a) dH[t]``.

Two entry points:

* :func:`lean_multistep` -- the neuron alone on an input ``x`` (``[T, ...]``). The backward
  needs ``x`` (for ``H``), so it keeps a reference to it (shared with the caller, no copy) plus
  the ``T / K`` chunk-start potentials: nothing else of the sequence's size;
* :func:`lean_pre_multistep` (and its shortcuts :func:`linear_lif`, :func:`conv_lif`) -- the
  neuron fused with the pre-synaptic op ``X = pre_fn(params, inputs)`` applied per time step,
  chunk by chunk; the backward applies ``pre_fn``'s VJP to each chunk's ``dX`` (parameter
  gradients accumulated over chunks, ``dX`` never held for the whole sequence). It keeps
  ``params``, ``inputs`` (which the weight gradient needs anyway) and the chunk-start
  potentials, and either ``X`` itself (``recompute_pre=False``, the default: one float per
  neuron-step, no extra ``pre_fn``) or nothing more (``recompute_pre=True``: ``X`` is recomputed
  chunk by chunk, the node adds only ``T / K`` floats per neuron, at the price of one more
  evaluation of ``pre_fn``).

Gradients equal autodiff of the plain scan (the per-chunk backward *is* autodiff of the same
steps; float64 to rounding, tested for IF and LIF, hard and soft reset, ``detach_reset`` on and
off, ``decay_input`` on and off and several surrogates). Neuron constants are Python floats
(:class:`revsnn_jax.neurons.NeuronConfig`), not differentiated; PLIF's learnable ``tau`` and
per-channel constants are not supported here (use :mod:`revsnn_jax.neurons`).

**Parallel in time.** With a threshold reset the spike at ``t`` depends on ``V[t-1]``, so the
recursion is not linear and no associative scan reproduces it exactly. Without reset it is
linear, ``V[t] = (1 - a) V[t-1] + b X[t]``, and :func:`leaky_integrate_associative` computes it
with ``jax.lax.associative_scan`` (``O(log T)`` depth) over the pairs ``(A, B)`` composed as
``(A2, B2) o (A1, B1) = (A1 A2, A2 B1 + B2)``; :func:`lif_no_reset_associative` fires on it
(``S[t] = Heaviside(V[t] - V_th)``, no reset: a non-resetting LIF readout). That is exact for the
no-reset neuron only; a soft or hard reset needs the sequential scan.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax import neurons
from revsnn_jax import surrogate as surrogate_lib
from revsnn_jax.neurons import NeuronConfig

__all__ = [
    "conv_lif",
    "conv_nhwc",
    "default_chunk",
    "dense",
    "leaky_integrate_associative",
    "lean_multistep",
    "lean_pre_multistep",
    "lif_no_reset_associative",
    "linear_lif",
]

Array = jax.Array
PyTree = Any
DEFAULT_CONFIG = NeuronConfig()  # LIF, tau 2, hard reset to 0, sigmoid(4) (SpikingJelly's)


# --------------------------------------------------------------------------- configuration
def _check_config(config: NeuronConfig) -> None:
    if not isinstance(config, NeuronConfig):
        raise TypeError(
            f"config must be a revsnn_jax.neurons.NeuronConfig, got {type(config).__name__}"
        )
    if config.kind not in ("if", "lif"):
        raise ValueError(
            f"the lean scan supports kind 'if' and 'lif', got {config.kind!r} "
            "(the stateless 'quant' neuron needs no scan: use neurons.quantize_spike)"
        )
    for name in ("tau", "v_threshold") + (() if config.v_reset is None else ("v_reset",)):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(
                f"the lean scan takes {name} as a finite Python number, got {value!r}; "
                "use revsnn_jax.neurons for array-valued or learnable constants"
            )
    if config.kind == "lif" and not config.tau > 0:
        raise ValueError(f"tau must be positive, got {config.tau}")


def default_chunk(time_steps: int) -> int:
    """The chunk length ``K`` used when none is given: the divisor of ``T`` closest to
    ``sqrt(T)`` if one lies within a factor 2 of it, else ``round(sqrt(T))`` (the last chunk is
    then shorter). Memory of the backward is about ``K + T / K`` potentials per neuron."""
    if time_steps < 1:
        raise ValueError(f"need T >= 1 time steps, got {time_steps}")
    root = math.sqrt(time_steps)
    divisors = [k for k in range(1, time_steps + 1) if time_steps % k == 0
                and root / 2 <= k <= 2 * root]
    if divisors:
        return min(divisors, key=lambda k: (k + time_steps / k, k))
    return max(1, round(root))


def _step_fn(config: NeuronConfig, dtype: Any) -> Callable[[Array, Array], tuple[Array, Array]]:
    """``(v, x_t) -> (v_next, s_t)``: one step built from the same charge / fire / reset
    functions as :mod:`revsnn_jax.neurons`, constants cast to ``dtype`` as there."""
    spike_fn = surrogate_lib.get(config.surrogate)
    v_th = jnp.asarray(config.v_threshold).astype(dtype)
    v_reset = None if config.v_reset is None else jnp.asarray(config.v_reset).astype(dtype)
    if config.kind == "lif":
        inv_tau = 1 / jnp.asarray(config.tau).astype(dtype)

        def charge(x_t, v):
            return neurons._lif_charge(x_t, v, inv_tau, v_reset, config.decay_input)
    else:
        def charge(x_t, v):
            return v + x_t

    def step(v, x_t):
        s, v_next = neurons._fire_and_reset(charge(x_t, v), v_th, v_reset,
                                            config.detach_reset, spike_fn)
        return v_next, s

    return step


def _time_steps(inputs: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves(inputs)
    if not leaves:
        raise ValueError("inputs is empty; need at least one array with a leading time axis")
    sizes = {leaf.shape[0] if getattr(leaf, "ndim", 0) >= 1 else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        shapes = [getattr(leaf, "shape", ()) for leaf in leaves]
        raise ValueError(
            f"every input leaf needs the same leading time axis T, got shapes {shapes}"
        )
    (t,) = sizes
    if t == 0:
        raise ValueError("inputs have an empty time axis; need T >= 1 at axis 0")
    return int(t)


def _split(tree: PyTree, k: int, n: int) -> tuple[PyTree, PyTree | None]:
    """Leading axis ``T = n K + r`` -> ``([n, K, ...] part, [r, ...] tail or None)``."""
    main = jax.tree_util.tree_map(lambda a: a[: n * k].reshape((n, k, *a.shape[1:])), tree)
    if n * k == _time_steps(tree):
        return main, None
    return main, jax.tree_util.tree_map(lambda a: a[n * k:], tree)


def _join(main: Array, tail: Array | None) -> Array:
    flat = main.reshape((-1, *main.shape[2:]))
    return flat if tail is None else jnp.concatenate([flat, tail], axis=0)


def _tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.add, a, b)


# --------------------------------------------------------------------------- the lean core
def _neuron_chunk(config: NeuronConfig, x_c: Array, v0: Array) -> tuple[Array, Array]:
    """The plain scan of ``config`` over one chunk's input ``x_c``: ``(spikes, v_end)``."""
    v_end, s_c = jax.lax.scan(_step_fn(config, v0.dtype), v0, x_c)
    return s_c, v_end


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _lean(config, pre_fn, chunk, recompute_pre, params, inputs, v0):
    return _lean_fwd(config, pre_fn, chunk, recompute_pre, params, inputs, v0)[0]


def _lean_fwd(config, pre_fn, chunk, recompute_pre, params, inputs, v0):
    t = _time_steps(inputs)
    n = t // chunk
    main, tail = _split(inputs, chunk, n)

    def run(inputs_c, v):
        x_c = pre_fn(params, inputs_c)
        s_c, v_end = _neuron_chunk(config, x_c, v)
        return s_c, v_end, (None if recompute_pre else x_c)

    def body(v, inputs_c):
        s_c, v_end, x_c = run(inputs_c, v)
        return v_end, (s_c, v, x_c)

    v, (s_main, starts, x_main) = jax.lax.scan(body, v0, main)
    tail_start = v
    s_tail = x_tail = None
    if tail is not None:
        s_tail, v, x_tail = run(tail, v)
    spikes = _join(s_main, s_tail)
    kept_x = None if recompute_pre else (x_main, x_tail)
    return (spikes, v), (params, inputs, starts, tail_start, kept_x)


def _neuron_chunk_vjp(config: NeuronConfig, x_c: Array, v_start: Array, g_s_c: Array,
                      g_v_end: Array) -> tuple[Array, Array]:
    """``(dX, dV_start)`` of one chunk of the neuron, by autodiff of each step.

    A forward pass re-runs the chunk's ``K`` steps and keeps the potential entering each
    (``K`` floats per neuron); the reverse pass takes, at each step, the vector-Jacobian
    product of that very step function (:func:`_step_fn`, the plain scan's) at its stored
    entering potential. One array per step is kept, where autodiff of the whole scan keeps the
    step's linearisation (several); each reverse step is one fused re-evaluation + VJP."""
    step = _step_fn(config, v_start.dtype)

    def forward(v, x_t):
        v_next, _ = step(v, x_t)
        return v_next, v

    _, v_entering = jax.lax.scan(forward, v_start, x_c)

    def backward(g_v, xs):
        v, x_t, g_s = xs
        _, vjp = jax.vjp(step, v, x_t)
        g_v_prev, g_x = vjp((g_v, g_s))
        return g_v_prev, g_x

    g_v_start, g_x_c = jax.lax.scan(backward, g_v_end, (v_entering, x_c, g_s_c), reverse=True)
    return g_x_c, g_v_start


def _chunk_vjp(config, pre_fn, params, inputs_c, x_c, v_start, g_s_c, g_v_end):
    """``(g_params, g_inputs_c, g_v_start)`` of one chunk: the neuron's backward
    (:func:`_neuron_chunk_vjp`) on ``X`` -- kept by the forward, or (``x_c=None``) recomputed
    from ``params, inputs_c`` -- then ``pre_fn``'s vector-Jacobian product on its ``dX``."""
    if x_c is None:
        x_c, pre_vjp = jax.vjp(pre_fn, params, inputs_c)
    else:
        pre_vjp = jax.vjp(pre_fn, params, inputs_c)[1]
    g_x_c, g_v_start = _neuron_chunk_vjp(config, x_c, v_start, g_s_c, g_v_end)
    g_p, g_i = pre_vjp(g_x_c)
    return g_p, g_i, g_v_start


def _lean_bwd(config, pre_fn, chunk, recompute_pre, residuals, cotangents):
    params, inputs, starts, tail_start, kept_x = residuals
    x_main, x_tail = (None, None) if kept_x is None else kept_x
    g_spikes, g_v = cotangents
    t = _time_steps(inputs)
    n = t // chunk
    main, tail = _split(inputs, chunk, n)
    g_main, g_tail = _split(g_spikes, chunk, n)
    vjp_chunk = functools.partial(_chunk_vjp, config, pre_fn, params)
    g_params = jax.tree_util.tree_map(jnp.zeros_like, params)
    g_inputs_tail = None
    if tail is not None:
        g_params, g_inputs_tail, g_v = vjp_chunk(tail, x_tail, tail_start, g_tail, g_v)

    def body(carry, xs):
        g_params_acc, g_v_end = carry
        inputs_c, x_c, v_start, g_s_c = xs
        g_p, g_i, g_v_start = vjp_chunk(inputs_c, x_c, v_start, g_s_c, g_v_end)
        return (_tree_add(g_params_acc, g_p), g_v_start), g_i

    (g_params, g_v0), g_inputs_main = jax.lax.scan(
        body, (g_params, g_v), (main, x_main, starts, g_main), reverse=True)
    if g_inputs_tail is None:
        g_inputs = jax.tree_util.tree_map(lambda a: a.reshape((-1, *a.shape[2:])),
                                          g_inputs_main)
    else:
        g_inputs = jax.tree_util.tree_map(_join, g_inputs_main, g_inputs_tail)
    return g_params, g_inputs, g_v0


_lean.defvjp(_lean_fwd, _lean_bwd)


# --------------------------------------------------------------------------- public functions
def _identity_pre(params: PyTree, x: Array) -> Array:
    del params
    return x


def _resolve_chunk(chunk: int | None, t: int) -> int:
    if chunk is None:
        return default_chunk(t)
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer number of time steps, got {chunk!r}")
    return int(min(chunk, t))


def lean_pre_multistep(
    pre_fn: Callable[[PyTree, PyTree], Array],
    params: PyTree,
    inputs: PyTree,
    config: NeuronConfig = DEFAULT_CONFIG,
    *,
    v_init: Array | None = None,
    chunk: int | None = None,
    recompute_pre: bool = False,
) -> tuple[Array, Array]:
    """Spikes of ``neuron(pre_fn(params, inputs))`` over time, with the lean backward.

    ``inputs`` is a pytree whose leaves are time-major ``[T, ...]``; ``pre_fn(params,
    inputs_c)`` maps any run of ``k`` steps (leaves ``[k, ...]``) to the neurons' input
    ``X`` shaped ``[k, ...]``, acting on each step independently (a ``Linear`` or a conv applied
    to the merged ``[k * B, ...]`` batch, a bias, a normalisation with fixed statistics). It is
    applied chunk by chunk in the forward; the backward applies its vector-Jacobian product
    chunk by chunk (and re-evaluates it only with ``recompute_pre=True``). Returns
    ``(spikes [T, ...], v_final)`` and differentiates ``params``, ``inputs`` and ``v_init``.

    What the backward keeps besides ``params``, ``inputs`` and the ``T / chunk`` chunk-start
    potentials: with ``recompute_pre=False`` (default) the neurons' input ``X`` (one float per
    neuron-step; the backward re-runs only the neuron, chunk by chunk, and applies ``pre_fn``'s
    vector-Jacobian product to each chunk's ``dX``); with ``recompute_pre=True`` nothing more:
    ``X`` is recomputed chunk by chunk (the leanest, at the price of a second ``pre_fn``).
    """
    _check_config(config)
    if not isinstance(recompute_pre, bool):
        raise TypeError(f"recompute_pre must be a bool, got {recompute_pre!r}")
    t = _time_steps(inputs)
    chunk = _resolve_chunk(chunk, t)
    probe = jax.eval_shape(pre_fn, params,
                           jax.tree_util.tree_map(lambda a: a[:1], inputs))
    if probe.shape[:1] != (1,) or not jnp.issubdtype(probe.dtype, jnp.floating):
        raise ValueError(
            f"pre_fn must map a [k, ...] run of inputs to a floating [k, ...] array, got "
            f"{probe.dtype}{tuple(probe.shape)} for k = 1"
        )
    step_shape = probe.shape[1:]
    if v_init is None:  # SpikingJelly's start: v_reset (hard reset) or 0 (soft reset)
        v0 = jnp.full(step_shape, 0.0 if config.v_reset is None else config.v_reset,
                      probe.dtype)
    else:
        v_init = jnp.asarray(v_init)
        if v_init.shape not in ((), step_shape):
            raise ValueError(
                f"v_init has shape {v_init.shape}, expected one time step's shape {step_shape}"
            )
        v0 = jnp.broadcast_to(v_init, step_shape).astype(probe.dtype)
    return _lean(config, pre_fn, chunk, recompute_pre, params, inputs, v0)


def lean_multistep(
    x: Array,
    config: NeuronConfig = DEFAULT_CONFIG,
    *,
    v_init: Array | None = None,
    chunk: int | None = None,
) -> tuple[Array, Array]:
    """The neuron of ``config`` over ``x`` (``[T, ...]``) with the lean backward.

    Same values and gradients as :func:`revsnn_jax.neurons.lif_multistep` /
    :func:`~revsnn_jax.neurons.if_multistep` with the same settings; returns
    ``(spikes, v_final)``. The backward keeps ``x`` (shared with the caller) and ``T / chunk``
    chunk-start potentials.
    """
    x, _ = neurons._check_sequence(x, None)
    # X is the caller's x, kept anyway: "recomputing" it is free, keeping a copy is not
    return lean_pre_multistep(_identity_pre, (), x, config, v_init=v_init, chunk=chunk,
                              recompute_pre=True)


@jax.custom_vjp
def dense(inputs: Array, weight: Array) -> Array:
    """``inputs [..., in] @ weight [in, out]``, same value and gradients as the matmul (to
    rounding), whose backward computes the weight gradient as ``einsum("...i,...o->io")``
    (all leading axes contracted at once): XLA:CPU runs the form that autodiff's transpose
    rule emits (a dot, then a transpose) 2-4x slower (measured on the benchmark's Linear,
    8,000 x 512 inputs into 16,384 outputs: 1.1 s against 2.0-3.6 s)."""
    return jnp.einsum("...i,io->...o", inputs, weight)


def _dense_fwd(inputs, weight):
    return dense(inputs, weight), (inputs, weight)


def _dense_bwd(residuals, g):
    inputs, weight = residuals
    return (jnp.einsum("...o,io->...i", g, weight),
            jnp.einsum("...i,...o->io", inputs, g).astype(weight.dtype))


dense.defvjp(_dense_fwd, _dense_bwd)


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


def _lax_conv(x: Array, kernel: Array, stride: int, pads: tuple) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


# The row-matmul convolution builds ``kw`` (forward) or ``kw + kh`` (kernel gradient) shifted
# copies of its operand; a batch whose operand (the input for the forward, the padded input
# for the kernel gradient) exceeds this many bytes runs in groups of images, which bounds that
# transient to a few times this size. At the benchmark's shape, 1-32 MiB ran equally fast
# (within the machine's noise) and 4 MiB kept XLA's plan 49 MiB below 32 MiB (a group's
# shifted copies then stay within the L3 cache).
ROWS_GROUP_BYTES = 4 * 2**20
# The kernel gradient sums its groups in an unrolled loop of static slices up to this many
# groups (XLA:CPU then fuses each slice into the shift construction and overlaps one group's
# copies with another's matmul: the benchmark's lean conv step, 4-5 groups per time chunk, ran
# 6-10% faster than with ``lax.map``, with the same memory plan); beyond it, ``lax.map`` keeps
# the transient bounded (XLA may keep several unrolled groups' copies live at once: 37 unrolled
# groups raised the plain conv step's plan from 1,184 to 1,440 MiB) and the program small.
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
    fusion (its standalone concatenate first copies every slice, ~2x slower here)."""
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
    over rows (:func:`_conv_rows`, :func:`_kernel_grad_flat`): XLA:CPU runs its
    own kernel-gradient convolution ~30x slower, its input-gradient convolution ~3x and its
    forward convolution 1.1-1.2x slower.
    At stride > 1 the kernel gradient is ``kh * kw`` matmuls of strided windows. On other
    platforms (GPU, TPU) everything is ``lax.conv_general_dilated`` and its autodiff."""
    return _conv_forward(x, kernel, stride, pads)


def conv_nhwc_fwd(x, kernel, stride, pads):
    return conv_nhwc(x, kernel, stride, pads), (x, kernel)


def _kernel_grad_group(xp: Array, g: Array, kernel_shape: tuple) -> Array:
    """Stride-1 kernel gradient ``dK[a, b] = sum_{n,h,w} Xp[n, h + a, w + b]^T dY[n, h, w]``
    as **one** matmul, without copying ``kh * kw`` strided windows (XLA:CPU copies those at
    ~1 GB/s) and without ``kh * kw`` skinny ``C_in x C_out`` matmuls (~40 GFLOP/s there).

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


# --------------------------------------------------------------------------- parallel in time
def leaky_integrate_associative(
    x: Array, *, tau: float | None = 2.0, decay_input: bool = True,
    v_init: Array | None = None,
) -> Array:
    """The potential of a non-resetting LIF (``tau``) or IF (``tau=None``) neuron over ``x``
    (``[T, ...]``), all ``T`` steps at once with ``jax.lax.associative_scan``.

    ``V[t] = (1 - a) V[t-1] + b X[t]`` with ``a = 1 / tau`` and ``b = a`` (``decay_input``) or
    ``1``; IF: ``a = 0``, ``b = 1``. Returns ``V`` shaped like ``x``. Exact up to floating-point
    reassociation (differentiable by autodiff).
    """
    x, v0 = neurons._check_sequence(x, v_init)
    if tau is None:
        decay = jnp.ones((), x.dtype)
        gain = jnp.ones((), x.dtype)
    else:
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        inv_tau = 1 / jnp.asarray(tau).astype(x.dtype)
        decay = 1 - inv_tau
        gain = inv_tau if decay_input else jnp.ones((), x.dtype)
    b = gain * x
    b = b.at[0].add(decay * v0)
    a = jnp.broadcast_to(decay, x.shape)

    def combine(first, second):
        a1, b1 = first
        a2, b2 = second
        return a1 * a2, a2 * b1 + b2

    _, v = jax.lax.associative_scan(combine, (a, b))
    return v


def lif_no_reset_associative(
    x: Array, *, tau: float | None = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
    surrogate: surrogate_lib.SurrogateLike = "sigmoid", v_init: Array | None = None,
) -> tuple[Array, Array]:
    """Spikes ``S[t] = Heaviside(V[t] - V_th)`` of a neuron that never resets, with ``V`` from
    :func:`leaky_integrate_associative` (parallel in ``T``). Returns ``(spikes, v_trace)``.
    Not a substitute for a resetting LIF: with a reset the recursion is nonlinear."""
    v = leaky_integrate_associative(x, tau=tau, decay_input=decay_input, v_init=v_init)
    spike_fn = surrogate_lib.get(surrogate)
    return spike_fn(v - jnp.asarray(v_threshold).astype(v.dtype)), v
