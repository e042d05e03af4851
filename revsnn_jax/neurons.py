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
                surrogate derivative (:mod:`revsnn_jax.surrogate`).
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
share; on XLA:CPU a training step of MS-ResNet34 (CIFAR, T = 4) needs 51.5 MiB per image with
the time loops unrolled and 94.9 MiB with them rolled, for the same compile time. For long
sequences (hundreds of steps) a rolled loop keeps the program and its compile time independent
of ``T``. Weights are not applied inside the scan; apply them once to the merged
``[T * B, ...]`` input before calling a neuron.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax import surrogate as surrogate_lib

__all__ = [
    "AUTO_UNROLL_MAX_STEPS",
    "NeuronConfig",
    "if_multistep",
    "if_step",
    "lif_multistep",
    "lif_step",
    "neuron_multistep",
    "plif_multistep",
    "plif_step",
    "plif_w_from_tau",
    "quantize_spike",
    "scan_unroll",
]

Array = jax.Array

#: Sequences up to this many steps are unrolled completely when ``unroll=None`` (the default).
AUTO_UNROLL_MAX_STEPS = 16

Unroll = int | bool | None
ArrayLike = Any


class NeuronConfig(NamedTuple):
    """Hashable description of a neuron, used by layers and models to name their neurons.

    ``kind`` is ``"if"``, ``"lif"`` or ``"quant"`` (stateless quantizer). The other fields are
    the keyword arguments of the multi-step functions. PLIF needs a learnable parameter and is
    built by modules instead (:class:`revsnn_jax.neuron_modules.PLIF`).
    """

    kind: str = "lif"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: surrogate_lib.SurrogateLike = "sigmoid"
    unroll: int | bool | None = None


def scan_unroll(time_steps: int, unroll: int | bool | None = None) -> int | bool:
    """The ``unroll`` to give ``jax.lax.scan`` over ``time_steps`` steps.

    ``None`` means: unroll completely when ``time_steps <= AUTO_UNROLL_MAX_STEPS``, else keep
    one rolled loop body (``1``). An ``int >= 1`` or a ``bool`` is passed through.
    """
    if unroll is None:
        return True if time_steps <= AUTO_UNROLL_MAX_STEPS else 1
    if isinstance(unroll, bool):
        return unroll
    if not isinstance(unroll, int | np.integer) or unroll < 1:
        raise ValueError(f"unroll must be None, a bool or an int >= 1, got {unroll!r}")
    return int(unroll)


# --------------------------------------------------------------------------- input checks
def _check_floating(x: ArrayLike, name: str = "x") -> Array:
    if not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} has dtype {x.dtype}; spiking neurons need floating inputs "
            f"(cast it, e.g. {name}.astype(jnp.float32))"
        )
    return jnp.asarray(x)


def _concrete(value: ArrayLike) -> np.ndarray | None:
    """``value`` as a numpy array when it is known at trace time, else None (a tracer)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_tau(tau: ArrayLike) -> None:
    concrete = _concrete(tau)
    if concrete is not None and not np.all(concrete > 0):
        raise ValueError(f"tau must be positive, got {tau}")


def _check_threshold(v_threshold: ArrayLike) -> None:
    concrete = _concrete(v_threshold)
    if concrete is not None and not np.all(np.isfinite(concrete)):
        raise ValueError(f"v_threshold must be finite, got {v_threshold}")


def _constant(value: ArrayLike, name: str, dtype: Any, step_shape: tuple[int, ...]) -> Array:
    """A neuron constant (``tau``, ``v_threshold``, ``v_reset``, ``w``) in the input's dtype.

    Casting matters: a numpy ``float64`` constant would otherwise promote a float32 membrane
    potential to float64 (with ``jax_enable_x64``), which breaks the scan carry and silently
    changes the single-step output dtype. The constant must broadcast to one step's shape
    without enlarging it (a scalar or, e.g., one value per channel).
    """
    value = jnp.asarray(value)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real number or array, got dtype {value.dtype}")
    try:
        grown = np.broadcast_shapes(value.shape, step_shape) != tuple(step_shape)
    except ValueError:
        grown = True
    if grown:
        raise ValueError(
            f"{name} has shape {value.shape}, which does not broadcast to the shape of one "
            f"time step {tuple(step_shape)} (use a scalar or e.g. one value per channel)"
        )
    return value.astype(dtype)


def _check_sequence(x: ArrayLike, v_init: ArrayLike | None,
                    v_reset: ArrayLike | None = None) -> tuple[Array, Array]:
    """Validate a time-major input and build the initial membrane potential.

    Without ``v_init`` the potential starts at ``v_reset`` (hard reset) or 0 (``v_reset=None``,
    soft reset), as SpikingJelly's neurons do (their ``v`` is initialised to ``v_reset``, or 0
    when ``v_reset`` is None).
    """
    x = _check_floating(x)
    if x.ndim < 1:
        raise ValueError(
            "multi-step neurons take a time-major input x shaped [T, ...] with T >= 1; "
            "got a scalar (use the *_step function for a single step)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"x has an empty time axis (shape {x.shape}); need T >= 1 at axis 0")
    step_shape = x.shape[1:]
    if v_init is None:
        if v_reset is None:
            return x, jnp.zeros(step_shape, x.dtype)
        v_reset = _constant(v_reset, "v_reset", x.dtype, step_shape)
        return x, jnp.broadcast_to(v_reset, step_shape)
    v_init = _check_floating(v_init, "v_init")
    if v_init.shape not in ((), step_shape):
        hint = ""
        if v_init.shape == x.shape[:-1] or (x.ndim >= 2 and v_init.shape == x.shape[:1] + x.shape[2:]):
            hint = " (is the time axis at axis 0? x must be [T, ...])"
        raise ValueError(
            f"v_init has shape {v_init.shape}, expected the shape of one time step "
            f"{step_shape} of x {x.shape}{hint}"
        )
    return x, jnp.broadcast_to(v_init, step_shape).astype(x.dtype)


def _check_state(x: Array, v: ArrayLike) -> Array:
    """The membrane potential of a single step, in ``x``'s dtype and broadcast to ``x``'s shape."""
    v = _check_floating(v, "v")
    if v.shape != x.shape:
        try:
            ok = np.broadcast_shapes(v.shape, x.shape) == x.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"v has shape {v.shape}, expected the shape of x {x.shape} (one time step)"
            )
    return jnp.broadcast_to(v, x.shape).astype(x.dtype)


def _reset_constants(
    x: Array, step_shape: tuple[int, ...], v_threshold: ArrayLike, v_reset: ArrayLike | None
) -> tuple[Array, Array | None]:
    _check_threshold(v_threshold)
    v_th = _constant(v_threshold, "v_threshold", x.dtype, step_shape)
    if v_reset is None:
        return v_th, None
    return v_th, _constant(v_reset, "v_reset", x.dtype, step_shape)


def _inv_tau(x: Array, step_shape: tuple[int, ...], tau: ArrayLike) -> Array:
    _check_tau(tau)
    return 1 / _constant(tau, "tau", x.dtype, step_shape)


def _plif_inv_tau(x: Array, step_shape: tuple[int, ...], w: ArrayLike) -> Array:
    return jax.nn.sigmoid(_constant(w, "w", x.dtype, step_shape))


# --------------------------------------------------------------------------- one step
def _fire_and_reset(
    h: Array,
    v_threshold: ArrayLike,
    v_reset: ArrayLike | None,
    detach_reset: bool,
    spike_fn: Callable[[Array], Array],
) -> tuple[Array, Array]:
    s = spike_fn(h - v_threshold)
    s_reset = jax.lax.stop_gradient(s) if detach_reset else s
    if v_reset is None:
        v = h - v_threshold * s_reset
    else:
        v = h * (1 - s_reset) + v_reset * s_reset
    return s, v


def _lif_charge(x: Array, v: Array, inv_tau: ArrayLike, v_reset: ArrayLike | None,
                decay_input: bool) -> Array:
    leak_target = 0.0 if v_reset is None else v_reset
    if decay_input:
        return v + (x - (v - leak_target)) * inv_tau
    return v - (v - leak_target) * inv_tau + x


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
def _scan_neuron(
    charge: Callable[[Array, Array], Array],
    x: Array,
    v0: Array,
    v_threshold: ArrayLike,
    v_reset: ArrayLike | None,
    detach_reset: bool,
    spike_fn: Callable[[Array], Array],
    return_trace: bool,
    unroll: Unroll,
):
    def step(v, x_t):
        s, v_next = _fire_and_reset(charge(x_t, v), v_threshold, v_reset, detach_reset, spike_fn)
        return v_next, ((s, v_next) if return_trace else s)

    v_final, out = jax.lax.scan(step, v0, x, unroll=scan_unroll(x.shape[0], unroll))
    if return_trace:
        spikes, trace = out
        return spikes, v_final, trace
    return out, v_final


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
):
    """Integrate-and-fire over ``x`` shaped ``[T, ...]`` with ``jax.lax.scan``.

    Returns ``(spikes, final_v)``, or ``(spikes, final_v, v_trace)`` with ``return_trace=True``;
    ``v_trace[t]`` is the potential after step ``t``'s reset (SpikingJelly's ``v_seq``).
    ``v_init`` defaults to ``v_reset`` (hard reset) or 0 (soft reset), SpikingJelly's start.
    ``unroll``: see :func:`scan_unroll` (default: unroll ``T <= 16`` completely).
    """
    x, v0 = _check_sequence(x, v_init, v_reset)
    v_threshold, v_reset = _reset_constants(x, v0.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    return _scan_neuron(lambda x_t, v: v + x_t, x, v0, v_threshold, v_reset, detach_reset,
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
):
    """Leaky integrate-and-fire over ``x`` shaped ``[T, ...]`` with ``jax.lax.scan``.

    Returns ``(spikes, final_v)``, or ``(spikes, final_v, v_trace)`` with ``return_trace=True``.
    """
    x, v0 = _check_sequence(x, v_init, v_reset)
    inv_tau = _inv_tau(x, v0.shape, tau)
    v_threshold, v_reset = _reset_constants(x, v0.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    return _scan_neuron(lambda x_t, v: _lif_charge(x_t, v, inv_tau, v_reset, decay_input),
                        x, v0, v_threshold, v_reset, detach_reset, spike_fn, return_trace, unroll)


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
    """
    x, v0 = _check_sequence(x, v_init, v_reset)
    inv_tau = _plif_inv_tau(x, v0.shape, w)
    v_threshold, v_reset = _reset_constants(x, v0.shape, v_threshold, v_reset)
    spike_fn = surrogate_lib.get(surrogate)
    return _scan_neuron(lambda x_t, v: _lif_charge(x_t, v, inv_tau, v_reset, decay_input),
                        x, v0, v_threshold, v_reset, detach_reset, spike_fn, return_trace, unroll)


def neuron_multistep(x: ArrayLike, config: NeuronConfig) -> Array:
    """Spikes of the neuron described by ``config`` over ``x`` (``[T, ...]``), from SpikingJelly's
    initial potential (``V = v_reset`` for a hard reset, 0 for a soft one).

    The building block for layers: returns only the spike train. ``"quant"`` is stateless and
    applies :func:`quantize_spike` elementwise.
    """
    if config.kind == "if":
        return if_multistep(x, v_threshold=config.v_threshold, v_reset=config.v_reset,
                            detach_reset=config.detach_reset, surrogate=config.surrogate,
                            unroll=config.unroll)[0]
    if config.kind == "lif":
        return lif_multistep(x, tau=config.tau, decay_input=config.decay_input,
                             v_threshold=config.v_threshold, v_reset=config.v_reset,
                             detach_reset=config.detach_reset, surrogate=config.surrogate,
                            unroll=config.unroll)[0]
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
