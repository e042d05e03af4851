"""``backward="lean"`` of the multi-step neurons: a hand-written backward over the time scan that
keeps none of the neuron's per-step state, with gradients equal to autodiff of the plain scan.

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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax.core.remat import tree_add
from revsnn_jax.neurons import surrogate as surrogate_lib
from revsnn_jax.neurons.dynamics import (
    NeuronConfig,
    _check_sequence,
    _fire_and_reset,
    _lif_charge,
    scan_unroll,
)

__all__ = ["default_chunk", "lean_multistep", "lean_pre_multistep"]

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
            f"backward={config.backward!r} supports kind 'if' and 'lif', got {config.kind!r} "
            "(the stateless 'quant' neuron needs no scan: use neurons.quantize_spike)"
        )
    for name in ("tau", "v_threshold") + (() if config.v_reset is None else ("v_reset",)):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(
                f"backward={config.backward!r} takes {name} as a finite Python number, got "
                f"{value!r}; use backward='autodiff' for array-valued or learnable constants"
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
            return _lif_charge(x_t, v, inv_tau, v_reset, config.decay_input)
    else:
        def charge(x_t, v):
            return v + x_t

    def step(v, x_t):
        s, v_next = _fire_and_reset(charge(x_t, v), v_th, v_reset,
                                            config.detach_reset, spike_fn)
        return v_next, s

    return step


def _chunk_unroll(config: NeuronConfig, k: int) -> int | bool:
    """The lean scans run chunk by chunk; ``unroll=None`` keeps a chunk's loop rolled (``1``),
    any other value is :func:`revsnn_jax.neurons.dynamics.scan_unroll`'s over the chunk."""
    return 1 if config.unroll is None else scan_unroll(k, config.unroll)


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


# --------------------------------------------------------------------------- the lean core
def _neuron_chunk(config: NeuronConfig, x_c: Array, v0: Array) -> tuple[Array, Array]:
    """The plain scan of ``config`` over one chunk's input ``x_c``: ``(spikes, v_end)``."""
    v_end, s_c = jax.lax.scan(_step_fn(config, v0.dtype), v0, x_c,
                              unroll=_chunk_unroll(config, x_c.shape[0]))
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

    unroll = _chunk_unroll(config, x_c.shape[0])
    _, v_entering = jax.lax.scan(forward, v_start, x_c, unroll=unroll)

    def backward(g_v, xs):
        v, x_t, g_s = xs
        _, vjp = jax.vjp(step, v, x_t)
        g_v_prev, g_x = vjp((g_v, g_s))
        return g_v_prev, g_x

    g_v_start, g_x_c = jax.lax.scan(backward, g_v_end, (v_entering, x_c, g_s_c), reverse=True,
                                    unroll=unroll)
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
        return (tree_add(g_params_acc, g_p), g_v_start), g_i

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
    x, _ = _check_sequence(x, None)
    # X is the caller's x, kept anyway: "recomputing" it is free, keeping a copy is not
    return lean_pre_multistep(_identity_pre, (), x, config, v_init=v_init, chunk=chunk,
                              recompute_pre=True)
