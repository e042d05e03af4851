"""The dynamics of one neuron step and the checks of its inputs, shared by every backward.

:mod:`revsnn_jax.neurons` (the public functions) and :mod:`revsnn_jax.neurons.backward` (the
hand-written backward passes) build their scans from the functions here, so the forward of
every ``backward=`` choice is the same charge / fire / reset (equations in
:mod:`revsnn_jax.neurons`):

* charge, LIF: ``H = V + (X - (V - V_reset)) / tau`` (``decay_input=True``) or
  ``H = V - (V - V_reset) / tau + X``; IF: ``H = V + X``;
* fire: ``S = Heaviside(H - V_th)`` (surrogate derivative backward);
* reset: hard ``V' = H (1 - S) + V_reset S``, soft ``V' = H - V_th S``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax.neurons import surrogate as surrogate_lib

__all__ = ["AUTO_UNROLL_MAX_STEPS", "NeuronConfig", "Unroll", "scan_unroll"]

Array = jax.Array

#: Sequences up to this many steps are unrolled completely when ``unroll=None`` (the default).
AUTO_UNROLL_MAX_STEPS = 16

Unroll = int | bool | None
ArrayLike = Any


class NeuronConfig(NamedTuple):
    """Hashable description of a neuron, used by layers and models to name their neurons.

    ``kind`` is ``"if"``, ``"lif"`` or ``"quant"`` (stateless quantizer). The other fields are
    the keyword arguments of the multi-step functions (``backward``: ``"autodiff"``,
    ``"lean"`` or ``"recompute"``, :mod:`revsnn_jax.neurons.backward`). PLIF needs a learnable parameter and is
    built by modules instead (:class:`revsnn_jax.neurons.modules.PLIF`).
    """

    kind: str = "lif"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: surrogate_lib.SurrogateLike = "sigmoid"
    unroll: int | bool | None = None
    backward: str = "autodiff"


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
