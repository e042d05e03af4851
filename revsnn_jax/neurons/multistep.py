"""Spiking neurons as pure functions: a single-step function and a multi-step scan over time.

Inputs are time-major, ``x`` shaped ``[T, ...]`` (for a conv layer ``[T, B, H, W, C]``); the
membrane potential ``V`` has the shape of one step, ``x.shape[1:]``. Neuron state is explicit:
a multi-step call takes the initial potential ``v_init`` and returns the final one, so nothing is
hidden and nothing needs resetting. By default (``v_init=None``) the membrane starts where
SpikingJelly's does: at ``v_reset`` for a hard reset, at 0 for a soft reset (``v_reset=None``). Names and defaults follow SpikingJelly
(``tau=2.0``, ``v_threshold=1.0``, ``v_reset=0.0``, ``decay_input=True``, sigmoid surrogate with
alpha 4) so its users find what they know.

Dynamics of one step (SpikingJelly 0.0.0.0.12, ``clock_driven``):

* charge, IF:   ``H[t] = V[t-1] + X[t]``
* charge, LIF:  ``H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau``   (``decay_input=True``)
                ``H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]``     (``decay_input=False``)
  with ``V_reset`` read as 0 in the leak when the reset is soft (``v_reset=None``).
* charge, PLIF: as LIF with a learnable ``1 / tau = sigmoid(w)`` (Fang et al., 2021).
* fire:         ``S[t] = Heaviside(H[t] - V_th)``, ``Heaviside(0) = 1``; backward through the
                surrogate derivative (:mod:`revsnn_jax.neurons.surrogate`).
* reset, hard:  ``V[t] = H[t] * (1 - S[t]) + V_reset * S[t]``
* reset, soft:  ``V[t] = H[t] - V_th * S[t]``                           (``v_reset=None``)
* ``detach_reset=True`` stops the gradient of the spike inside the reset term.

T-RevSNN's stateless neuron (Hu et al., 2024) is :func:`quantize_spike`:
``S = floor(clip(V, 0, 1) + 0.5)`` with gradient 1 on ``[0, 1]`` and 0 elsewhere, the same formula
in training and evaluation.

Constants (``tau``, ``v_threshold``, ``v_reset``, PLIF's ``w``) are scalars or arrays that
broadcast to one step's shape (e.g. one value per channel); they are cast to ``x``'s dtype, so a
float32 input keeps a float32 state whatever the constants' dtype.

Multi-step functions run ``jax.lax.scan`` over the leading axis. ``unroll`` is the scan's
``unroll``: ``None`` (the default) unrolls short sequences completely, ``T <=``
:data:`AUTO_UNROLL_MAX_STEPS` (16), and keeps one rolled loop body for longer ones; ``1`` always
keeps the loop, ``True`` always unrolls. Why: XLA keeps a rolled loop's stacked outputs (spikes
and the potentials its backward needs) in loop buffers plus copies, which an unrolled loop lets it
share (docs/neurons.md has the measurement). For long sequences (hundreds of steps) a rolled loop
keeps the program and its compile time independent of ``T``. Weights are not applied inside the
scan; apply them once to the merged ``[T * B, ...]`` input before calling a neuron.

**One core, three backward passes.** ``if_multistep`` and ``lif_multistep`` (and
:func:`neuron_multistep`, and the NNX modules of :mod:`revsnn_jax.neurons.modules`) take
``backward=``, as SpikingJelly's ``backend=`` and Norse's ``adjoint=`` do; the forward is the
same and the gradients are equal, only what the backward keeps differs
(:mod:`revsnn_jax.neurons.backward`):

* ``"autodiff"`` (default): JAX differentiates the scan; it keeps each step's linearisation.
* ``"recompute"``: keeps only the input ``X`` and reruns the forward for ``H`` in the backward.
* ``"lean"``: time-chunked recomputation, ``T / K`` stored potentials per neuron
  (``chunk=K``, default about ``sqrt(T)``).

The hand-written passes take the constants as Python numbers and do not return a trace; PLIF
(learnable ``tau``) is ``"autodiff"`` only.

**Parallel in time.** With a threshold reset the spike at ``t`` depends on ``V[t-1]``, so the
recursion is not linear and no associative scan reproduces it exactly. Without reset it is
linear, ``V[t] = (1 - a) V[t-1] + b X[t]``, and :func:`leaky_integrate_associative` computes it
with ``jax.lax.associative_scan`` (``O(log T)`` depth) over the pairs ``(A, B)`` composed as
``(A2, B2) o (A1, B1) = (A1 A2, A2 B1 + B2)``; :func:`lif_no_reset_associative` fires on it
(``S[t] = Heaviside(V[t] - V_th)``, no reset: a non-resetting LIF readout).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax.neurons import surrogate as surrogate_lib
from revsnn_jax.neurons.backward import BACKWARDS, autodiff_scan, hand_written
from revsnn_jax.neurons.dynamics import (  # noqa: F401  (the checks are used by the modules)
    AUTO_UNROLL_MAX_STEPS,
    ArrayLike,
    NeuronConfig,
    Unroll,
    _check_floating,
    _check_sequence,
    _check_state,
    _check_tau,
    _check_threshold,
    _concrete,
    _fire_and_reset,
    _inv_tau,
    _lif_charge,
    _plif_inv_tau,
    _reset_constants,
    scan_unroll,
)

__all__ = [
    "AUTO_UNROLL_MAX_STEPS",
    "BACKWARDS",
    "NeuronConfig",
    "if_multistep",
    "if_step",
    "leaky_integrate_associative",
    "lif_multistep",
    "lif_no_reset_associative",
    "lif_step",
    "neuron_multistep",
    "plif_multistep",
    "plif_step",
    "plif_w_from_tau",
    "quantize_spike",
    "scan_unroll",
]

Array = jax.Array


def if_step(
    x: ArrayLike,
    v: ArrayLike,
    *,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = False,
    surrogate: surrogate_lib.SurrogateLike = "sigmoid",
) -> tuple[Array, Array]:
    """One step of the integrate-and-fire neuron: ``H = V + X``, fire, reset.

    Returns ``(spike, v_next)``, both shaped like ``x``.
    """
    x = _check_floating(x)
    v = _check_state(x, v)
    v_threshold, v_reset = _reset_constants(x, x.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    return _fire_and_reset(v + x, v_threshold, v_reset, detach_reset, spike_fn)


def lif_step(
    x: ArrayLike,
    v: ArrayLike,
    *,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = False,
    surrogate: surrogate_lib.SurrogateLike = "sigmoid",
) -> tuple[Array, Array]:
    """One step of the leaky integrate-and-fire neuron (equations in the module docstring).

    Returns ``(spike, v_next)``, both shaped like ``x``.
    """
    x = _check_floating(x)
    v = _check_state(x, v)
    inv_tau = _inv_tau(x, x.shape, tau)
    v_threshold, v_reset = _reset_constants(x, x.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    h = _lif_charge(x, v, inv_tau, v_reset, decay_input)
    return _fire_and_reset(h, v_threshold, v_reset, detach_reset, spike_fn)


def plif_w_from_tau(tau: float) -> float:
    """The PLIF parameter ``w`` with ``sigmoid(w) = 1 / tau`` (SpikingJelly's ``init_tau``)."""
    if not tau > 1:
        raise ValueError(f"PLIF needs tau > 1 so that 1/tau = sigmoid(w) is defined, got {tau}")
    return float(-np.log(tau - 1.0))


def plif_step(
    x: ArrayLike,
    v: ArrayLike,
    w: ArrayLike,
    *,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = False,
    surrogate: surrogate_lib.SurrogateLike = "sigmoid",
) -> tuple[Array, Array]:
    """One step of the parametric LIF neuron, ``1 / tau = sigmoid(w)`` with ``w`` learnable."""
    x = _check_floating(x)
    v = _check_state(x, v)
    inv_tau = _plif_inv_tau(x, x.shape, w)
    v_threshold, v_reset = _reset_constants(x, x.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    h = _lif_charge(x, v, inv_tau, v_reset, decay_input)
    return _fire_and_reset(h, v_threshold, v_reset, detach_reset, spike_fn)


# --------------------------------------------------------------------------- many steps
def _check_backward(backward: str) -> None:
    if backward not in BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}; choose one of {', '.join(BACKWARDS)}")


def if_multistep(
    x: ArrayLike,
    *,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = False,
    surrogate: surrogate_lib.SurrogateLike = "sigmoid",
    v_init: ArrayLike | None = None,
    return_trace: bool = False,
    unroll: Unroll = None,
    backward: str = "autodiff",
    chunk: int | None = None,
):
    """Integrate-and-fire over ``x`` shaped ``[T, ...]`` with ``jax.lax.scan``.

    Returns ``(spikes, final_v)``, or ``(spikes, final_v, v_trace)`` with ``return_trace=True``;
    ``v_trace[t]`` is the potential after step ``t``'s reset (SpikingJelly's ``v_seq``).
    ``v_init`` defaults to ``v_reset`` (hard reset) or 0 (soft reset), SpikingJelly's start.
    ``unroll``: see :func:`scan_unroll` (default: unroll ``T <= 16`` completely).
    ``backward``: ``"autodiff"``, ``"lean"`` (``chunk`` steps per chunk) or ``"recompute"``
    (module docstring).
    """
    _check_backward(backward)
    if backward != "autodiff":
        config = NeuronConfig("if", 2.0, v_threshold, v_reset, True, detach_reset, surrogate,
                              unroll, backward)
        return hand_written(config, x, v_init=v_init, chunk=chunk, return_trace=return_trace)
    x, v0 = _check_sequence(x, v_init, v_reset)
    v_threshold, v_reset = _reset_constants(x, v0.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    return autodiff_scan(lambda x_t, v: v + x_t, x, v0, v_threshold, v_reset, detach_reset,
                         spike_fn, return_trace, unroll)


def lif_multistep(
    x: ArrayLike,
    *,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = False,
    surrogate: surrogate_lib.SurrogateLike = "sigmoid",
    v_init: ArrayLike | None = None,
    return_trace: bool = False,
    unroll: Unroll = None,
    backward: str = "autodiff",
    chunk: int | None = None,
):
    """Leaky integrate-and-fire over ``x`` shaped ``[T, ...]`` with ``jax.lax.scan``.

    Returns ``(spikes, final_v)``, or ``(spikes, final_v, v_trace)`` with ``return_trace=True``.
    ``backward`` and ``chunk`` as in :func:`if_multistep`.
    """
    _check_backward(backward)
    if backward != "autodiff":
        config = NeuronConfig("lif", tau, v_threshold, v_reset, decay_input, detach_reset,
                              surrogate, unroll, backward)
        return hand_written(config, x, v_init=v_init, chunk=chunk, return_trace=return_trace)
    x, v0 = _check_sequence(x, v_init, v_reset)
    inv_tau = _inv_tau(x, v0.shape, tau)
    v_threshold, v_reset = _reset_constants(x, v0.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    return autodiff_scan(lambda x_t, v: _lif_charge(x_t, v, inv_tau, v_reset, decay_input),
                         x, v0, v_threshold, v_reset, detach_reset, spike_fn, return_trace,
                         unroll)


def plif_multistep(
    x: ArrayLike,
    w: ArrayLike,
    *,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = False,
    surrogate: surrogate_lib.SurrogateLike = "sigmoid",
    v_init: ArrayLike | None = None,
    return_trace: bool = False,
    unroll: Unroll = None,
):
    """Parametric LIF over ``x`` shaped ``[T, ...]``: ``1 / tau = sigmoid(w)``, ``w`` learnable.

    ``w`` is a scalar (SpikingJelly's ``ParametricLIFNode``) or broadcasts against one step;
    :func:`plif_w_from_tau` converts an initial ``tau``. Returns as :func:`lif_multistep`.
    Its backward is autodiff (``w`` is differentiated).
    """
    x, v0 = _check_sequence(x, v_init, v_reset)
    inv_tau = _plif_inv_tau(x, v0.shape, w)
    v_threshold, v_reset = _reset_constants(x, v0.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    return autodiff_scan(lambda x_t, v: _lif_charge(x_t, v, inv_tau, v_reset, decay_input),
                         x, v0, v_threshold, v_reset, detach_reset, spike_fn, return_trace,
                         unroll)


def neuron_multistep(x: ArrayLike, config: NeuronConfig) -> Array:
    """Spikes of the neuron described by ``config`` over ``x`` (``[T, ...]``), from SpikingJelly's
    initial potential (``V = v_reset`` for a hard reset, 0 for a soft one), with
    ``config.backward``.

    ``"quant"`` is stateless and applies :func:`quantize_spike` elementwise.
    """
    if config.kind == "if":
        return if_multistep(x, v_threshold=config.v_threshold, v_reset=config.v_reset,
                            detach_reset=config.detach_reset, surrogate=config.surrogate,
                            unroll=config.unroll, backward=config.backward)[0]
    if config.kind == "lif":
        return lif_multistep(x, tau=config.tau, decay_input=config.decay_input,
                             v_threshold=config.v_threshold, v_reset=config.v_reset,
                             detach_reset=config.detach_reset, surrogate=config.surrogate,
                             unroll=config.unroll, backward=config.backward)[0]
    if config.kind == "quant":
        return quantize_spike(x)
    raise ValueError(f"unknown neuron kind {config.kind!r}; choose 'if', 'lif' or 'quant'")


# --------------------------------------------------------------------------- stateless quantizer
def quantize_spike(v: ArrayLike) -> Array:
    """T-RevSNN's stateless spike ``S = floor(clip(V, 0, 1) + 0.5)`` (threshold 0.5).

    Backward: ``dS/dV = 1`` for ``0 <= V <= 1``, else 0 (straight-through on the clip window).
    The same formula is used in training and evaluation (the reference's ``round`` at eval
    sends ``V = 0.5`` to 0; here it is always 1). Elementwise, any shape, floating input.
    """
    return _quantize_spike(_check_floating(v, "v"))


@jax.custom_jvp
def _quantize_spike(v: Array) -> Array:
    return jnp.floor(jnp.clip(v, 0, 1) + 0.5)


@_quantize_spike.defjvp
def _quantize_spike_jvp(primals, tangents):
    (v,), (v_dot,) = primals, tangents
    window = ((v >= 0) & (v <= 1)).astype(v.dtype)
    return _quantize_spike(v), window * v_dot


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
    x, v0 = _check_sequence(x, v_init)
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
