"""The backward passes of the multi-step neurons, ``backward=`` of :mod:`revsnn_jax.neurons`.

Every choice runs the same forward dynamics (:mod:`revsnn_jax.neurons.dynamics`) and has the
same gradients (tested against autodiff to rounding); they differ in what the backward keeps.

* ``"autodiff"`` (:func:`autodiff_scan`): ``jax.lax.scan`` over time, differentiated by JAX.
* ``"recompute"`` (:func:`recompute_multistep`): a custom VJP that keeps only the input ``X``
  (usually an elementwise function of its producer's own residual, so XLA may keep that
  instead) and the initial potential when one is given. The backward reruns the forward
  recursion for ``H`` on ``X`` tied to the cotangent (:mod:`revsnn_jax.core.ties`), then walks the
  steps in reverse, with ``g' = g'(H[t] - V_th)`` the surrogate derivative:

  - ``dH[t] = dS[t] g' + dV[t] dV[t]/dH[t]``, where ``dV[t]/dH[t] = 1 - S[t]`` (hard reset) or
    ``1`` (soft), plus, unless ``detach_reset``, ``(V_reset - H[t]) g'`` (hard) or
    ``- V_th g'`` (soft);
  - LIF: ``dX[t] = dH[t] / tau`` (``decay_input=True``) or ``dH[t]``,
    ``dV[t-1] = dH[t] (1 - 1 / tau)``; IF: ``dX[t] = dV[t-1] = dH[t]``.
* ``"lean"`` (:mod:`revsnn_jax.neurons.lean`: :func:`lean_multistep`, and fused with a
  pre-synaptic op :func:`lean_pre_multistep`): time-chunked recomputation, ``T / K`` stored
  potentials per neuron.

The hand-written backward passes take the neuron constants as finite Python numbers
(:class:`revsnn_jax.neurons.NeuronConfig`), not differentiated; PLIF's learnable ``tau`` and
array-valued constants need ``"autodiff"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from revsnn_jax.core.ties import tie
from revsnn_jax.neurons import surrogate as surrogate_lib
from revsnn_jax.neurons.dynamics import (
    NeuronConfig,
    Unroll,
    _check_sequence,
    _fire_and_reset,
    scan_unroll,
)
from revsnn_jax.neurons.lean import (
    DEFAULT_CONFIG,
    _check_config,
    default_chunk,
    lean_multistep,
    lean_pre_multistep,
)

__all__ = [
    "BACKWARDS",
    "autodiff_scan",
    "default_chunk",
    "hand_written",
    "lean_multistep",
    "lean_pre_multistep",
    "recompute_multistep",
]

Array = jax.Array

#: The ``backward=`` choices of the multi-step neurons.
BACKWARDS = ("autodiff", "lean", "recompute")


# --------------------------------------------------------------------------- autodiff
def autodiff_scan(
    charge: Callable[[Array, Array], Array],
    x: Array,
    v0: Array,
    v_threshold: Any,
    v_reset: Any,
    detach_reset: bool,
    spike_fn: Callable[[Array], Array],
    return_trace: bool,
    unroll: Unroll,
):
    """``backward="autodiff"``: the plain scan of ``charge`` / fire / reset over ``x``.

    Returns ``(spikes, v_final)`` or, with ``return_trace``, ``(spikes, v_final, v_trace)``."""

    def step(v, x_t):
        s, v_next = _fire_and_reset(charge(x_t, v), v_threshold, v_reset, detach_reset, spike_fn)
        return v_next, ((s, v_next) if return_trace else s)

    v_final, out = jax.lax.scan(step, v0, x, unroll=scan_unroll(x.shape[0], unroll))
    if return_trace:
        spikes, trace = out
        return spikes, v_final, trace
    return out, v_final


# --------------------------------------------------------------------------- recompute
def _keep_h_scan(config: NeuronConfig, x: Array, v0: Array | None):
    """``(spikes, H, v_final)`` of the forward recursion (``H`` kept: the backward's pass)."""
    r = config.v_reset
    inv_tau = jnp.asarray(1.0 / config.tau, x.dtype) if config.kind == "lif" else None
    v_th = jnp.asarray(config.v_threshold, x.dtype)

    def step(v, x_t):
        if config.kind == "if":
            h = v + x_t
        else:
            leak = v if not r else v - r  # V - V_reset, V_reset read as 0 for a soft reset
            h = v + (x_t - leak) * inv_tau if config.decay_input else v - leak * inv_tau + x_t
        s = (h >= v_th).astype(x.dtype)
        if r is None:
            v_next = h - v_th * s
        elif r == 0:
            v_next = h * (1 - s)
        else:
            v_next = h * (1 - s) + r * s
        return v_next, (s, h)

    if v0 is None:  # SpikingJelly's start: v_reset (hard reset) or 0 (soft reset)
        v0 = jnp.full(x.shape[1:], r, x.dtype) if r else jnp.zeros(x.shape[1:], x.dtype)
    v_final, (spikes, h) = jax.lax.scan(step, v0, x, unroll=scan_unroll(x.shape[0],
                                                                        config.unroll))
    return spikes, h, v_final


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recompute(config: NeuronConfig, x: Array, v0: Array | None) -> tuple[Array, Array]:
    spikes, _, v_final = _keep_h_scan(config, x, v0)
    return spikes, v_final


def _recompute_fwd(config, x, v0):
    return _recompute(config, x, v0), (x, v0)


def _recompute_bwd(config, residuals, cotangents):
    x, v0 = residuals
    g, g_v = cotangents
    _, h, _ = _keep_h_scan(config, tie(x, g), v0)
    spike_fn = surrogate_lib.get(config.surrogate)
    r = config.v_reset
    inv_tau = jnp.asarray(1.0 / config.tau, h.dtype) if config.kind == "lif" else None
    v_th = jnp.asarray(config.v_threshold, h.dtype)

    def step(dv, inputs):
        h_t, g_t = inputs
        derivative = spike_fn.derivative(h_t - v_th)
        dv_dh = None if r is None else (h_t < v_th).astype(h.dtype)  # None: 1 (soft reset)
        if not config.detach_reset:
            through_spike = (-v_th if r is None else r - h_t) * derivative
            dv_dh = 1 + through_spike if dv_dh is None else dv_dh + through_spike
        dh = g_t * derivative + (dv if dv_dh is None else dv * dv_dh)
        if config.kind == "if":
            return dh, dh
        return dh * (1 - inv_tau), (dh * inv_tau if config.decay_input else dh)

    dv0, dx = jax.lax.scan(step, g_v, (h, g), reverse=True,
                           unroll=scan_unroll(h.shape[0], config.unroll))
    return dx, (None if v0 is None else dv0)


_recompute.defvjp(_recompute_fwd, _recompute_bwd)


def recompute_multistep(
    x: Array, config: NeuronConfig = DEFAULT_CONFIG, *, v_init: Array | None = None,
) -> tuple[Array, Array]:
    """The neuron of ``config`` over ``x`` (``[T, ...]``) with ``backward="recompute"``: the
    backward keeps ``x`` (shared with the caller) and reruns the forward for ``H`` (module
    docstring). Same values and gradients as autodiff of the plain scan; returns
    ``(spikes, v_final)``. Needs a :class:`revsnn_jax.neurons.surrogate.Surrogate` (its ``derivative``)."""
    _check_config(config)
    if not isinstance(surrogate_lib.get(config.surrogate), surrogate_lib.Surrogate):
        raise TypeError("backward='recompute' needs a named surrogate (a Surrogate with a "
                        "derivative), not a spike function")
    x, v0 = _check_sequence(x, v_init, config.v_reset)
    return _recompute(config, x, None if v_init is None else v0)


def hand_written(config: NeuronConfig, x: Array, *, v_init: Array | None, chunk: int | None,
                 return_trace: bool) -> tuple[Array, Array]:
    """``(spikes, v_final)`` with ``config.backward`` ``"lean"`` or ``"recompute"``."""
    if return_trace:
        raise ValueError(f"return_trace=True needs backward='autodiff' (got {config.backward!r})")
    if config.backward == "lean":
        return lean_multistep(x, config, v_init=v_init, chunk=chunk)
    if config.backward == "recompute":
        if chunk is not None:
            raise ValueError("chunk is the lean backward's; backward='recompute' takes none")
        return recompute_multistep(x, config, v_init=v_init)
    raise ValueError(f"unknown backward {config.backward!r}; choose one of "
                     f"{', '.join(BACKWARDS)}")
