"""Spike functions: an exact Heaviside step forward, a smooth surrogate derivative backward.

A spiking neuron fires when its membrane potential reaches the threshold,
``S = Heaviside(H - V_th)`` with ``Heaviside(0) = 1``. The step has zero derivative almost
everywhere, so training replaces ``dS/dx`` (``x = H - V_th``) by the derivative ``g'(x)`` of a
smooth surrogate ``g`` (Neftci et al., 2019). The forward output is always the exact step.

Surrogates (``alpha`` / ``width`` / ``slope`` are the sharpness parameters):

==================  ==========================================================  ===========
name                derivative ``g'(x)``                                         default
==================  ==========================================================  ===========
``sigmoid``         ``alpha * s * (1 - s)``, ``s = sigmoid(alpha * x)``           alpha = 4
``atan``            ``(alpha / 2) / (1 + (pi / 2 * alpha * x) ** 2)``            alpha = 2
``rectangle``       ``1 / width`` for ``|x| < width / 2``, else 0 (straight-     width = 1
                    through estimator on a window)
``triangle``        ``max(0, 1 - |x| / width) / width``                          width = 1
``fast_sigmoid``    ``1 / (1 + slope * |x|) ** 2`` (SuperSpike)                  slope = 25
==================  ==========================================================  ===========

``sigmoid`` and ``atan`` follow SpikingJelly's ``surrogate.Sigmoid`` and ``surrogate.ATan``;
``fast_sigmoid`` follows snnTorch/Spyx SuperSpike (unnormalised, peak 1).

The spike is a :func:`jax.custom_jvp`, so it works under ``jit``, ``vmap``, ``grad``, forward-mode
autodiff and ``jax.vjp``, in any floating dtype (float32, bfloat16, float64); the output keeps the
input's dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "SURROGATES",
    "Surrogate",
    "atan",
    "fast_sigmoid",
    "get",
    "heaviside",
    "rectangle",
    "sigmoid",
    "spike",
    "triangle",
]

Array = jax.Array


def heaviside(x: Array) -> Array:
    """The exact step ``1[x >= 0]`` in ``x``'s dtype (``Heaviside(0) = 1``), no gradient."""
    x = jnp.asarray(x)
    return (x >= 0).astype(x.dtype)


def _sigmoid_derivative(x: Array, alpha: float) -> Array:
    s = jax.nn.sigmoid(alpha * x)
    return alpha * s * (1 - s)


def _atan_derivative(x: Array, alpha: float) -> Array:
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def _rectangle_derivative(x: Array, width: float) -> Array:
    return jnp.where(jnp.abs(x) < width / 2, 1.0 / width, 0.0).astype(x.dtype)


def _triangle_derivative(x: Array, width: float) -> Array:
    return (jnp.maximum(0.0, 1.0 - jnp.abs(x) / width) / width).astype(x.dtype)


def _fast_sigmoid_derivative(x: Array, slope: float) -> Array:
    return 1.0 / (1.0 + slope * jnp.abs(x)) ** 2


# name -> (closed-form derivative, name of its parameter, default value)
_REGISTRY: dict[str, tuple[Callable[[Array, float], Array], str, float]] = {
    "sigmoid": (_sigmoid_derivative, "alpha", 4.0),
    "atan": (_atan_derivative, "alpha", 2.0),
    "rectangle": (_rectangle_derivative, "width", 1.0),
    "triangle": (_triangle_derivative, "width", 1.0),
    "fast_sigmoid": (_fast_sigmoid_derivative, "slope", 25.0),
}
SURROGATES: tuple[str, ...] = tuple(_REGISTRY)
# Aliases users bring from other libraries.
_ALIASES = {"arctan": "atan", "straight_through": "rectangle", "ste": "rectangle",
            "superspike": "fast_sigmoid", "boxcar": "rectangle"}


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """A Heaviside spike with a named surrogate derivative.

    Hashable and immutable, so it can be a static argument of ``jax.jit`` and a field of a
    neuron configuration. Call it on ``x = H - V_th`` to get spikes; :meth:`derivative` gives the
    closed-form backward.
    """

    name: str
    param: float

    def __post_init__(self) -> None:
        if self.name not in _REGISTRY:
            raise ValueError(
                f"unknown surrogate {self.name!r}; choose one of {', '.join(SURROGATES)}"
            )
        if not (isinstance(self.param, (int, float)) and self.param > 0):
            _, pname, _ = _REGISTRY[self.name]
            raise ValueError(
                f"surrogate {self.name!r} needs a positive {pname}, got {self.param!r}"
            )

    def derivative(self, x: Array) -> Array:
        """The surrogate derivative ``g'(x)`` in ``x``'s dtype."""
        fn, _, _ = _REGISTRY[self.name]
        x = jnp.asarray(x)
        return fn(x, self.param).astype(x.dtype)

    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"a spike function needs a floating input, got dtype {x.dtype} "
                            "(cast it, e.g. x.astype(jnp.float32))")
        return spike(x, self)

    def __repr__(self) -> str:
        _, pname, _ = _REGISTRY[self.name]
        return f"{self.name}({pname}={self.param})"


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def spike(x: Array, surrogate: Surrogate) -> Array:
    """``Heaviside(x)`` forward; ``surrogate.derivative(x)`` as ``dS/dx`` for autodiff."""
    return heaviside(x)


@spike.defjvp
def _spike_jvp(surrogate: Surrogate, primals: tuple[Array], tangents: tuple[Array]):
    (x,), (x_dot,) = primals, tangents
    return heaviside(x), surrogate.derivative(x) * x_dot


def sigmoid(alpha: float = 4.0) -> Surrogate:
    """SpikingJelly's ``Sigmoid``: ``g'(x) = alpha * s * (1 - s)``, ``s = sigmoid(alpha x)``."""
    return Surrogate("sigmoid", float(alpha))


def atan(alpha: float = 2.0) -> Surrogate:
    """SpikingJelly's ``ATan``: ``g'(x) = (alpha / 2) / (1 + (pi / 2 * alpha * x)^2)``."""
    return Surrogate("atan", float(alpha))


def rectangle(width: float = 1.0) -> Surrogate:
    """Straight-through on a window: ``g'(x) = 1 / width`` for ``|x| < width / 2``."""
    return Surrogate("rectangle", float(width))


def triangle(width: float = 1.0) -> Surrogate:
    """``g'(x) = max(0, 1 - |x| / width) / width``."""
    return Surrogate("triangle", float(width))


def fast_sigmoid(slope: float = 25.0) -> Surrogate:
    """SuperSpike (Zenke & Ganguli, 2018): ``g'(x) = 1 / (1 + slope |x|)^2``."""
    return Surrogate("fast_sigmoid", float(slope))


SurrogateLike = str | Surrogate | Callable[[Array], Array]


def get(surrogate: SurrogateLike, param: float | None = None) -> Callable[[Array], Array]:
    """Resolve a surrogate given by name, :class:`Surrogate` or spike function.

    ``get("atan")`` and ``get("atan", 2.0)`` give SpikingJelly's ATan(2); a :class:`Surrogate`
    is returned as is; any other callable is taken to be a user's spike function ``x -> S``
    (for example one built with :func:`jax.custom_jvp`) and returned unchanged.
    """
    if isinstance(surrogate, Surrogate):
        if param is not None:
            raise ValueError("pass either a Surrogate or a name with a parameter, not both")
        return surrogate
    if isinstance(surrogate, str):
        name = _ALIASES.get(surrogate.lower(), surrogate.lower())
        if name not in _REGISTRY:
            raise ValueError(
                f"unknown surrogate {surrogate!r}; choose one of {', '.join(SURROGATES)} "
                f"(aliases: {', '.join(sorted(_ALIASES))}) or pass a function"
            )
        _, _, default = _REGISTRY[name]
        return Surrogate(name, float(default if param is None else param))
    if callable(surrogate):
        return surrogate
    raise TypeError(
        f"surrogate must be a name, a Surrogate or a function, got {type(surrogate).__name__}"
    )
