"""Data-dependence ties: make a backward-pass recompute wait for the cotangent it serves.

A backward that rebuilds values instead of storing them (the reversible engine, per-block
rematerialisation, a convolution that keeps its input bit-packed, a BatchNorm that keeps only
its input) saves memory only if the compiler runs the rebuild *in the backward*, next to its
use. XLA is free to do otherwise: a recompute needs no cotangent, so the scheduler may run it
right after the forward, and when its operands equal the forward's (a one-block stage whose
loop XLA removed) common-subexpression elimination merges it with the forward, keeping every
intermediate alive from the forward to the backward. ``jax.lax.optimization_barrier`` is meant
to prevent that, but XLA:CPU expands barriers right after its first CSE pass, before its later
simplification and scheduling, so there it prevents nothing.

A data dependence survives every pass::

    tie(x, g) = x + 0 * g[0, ..., 0]

``x`` now depends on the cotangent ``g``, so nothing computed from it can run before ``g``
exists, and it no longer equals the forward's ``x``. The value is unchanged (``x + (+-0) == x``;
a NaN or Inf in ``g`` propagates, but the gradient is then non-finite anyway), and the cost is
one multiply of one element and an add fused into the consumer: nothing on any backend.

**Many ties to one cotangent.** XLA fuses the slice ``g[0, ..., 0]`` of an elementwise result
into each consumer, where that element is recomputed from ``g``'s own operands: tying many
values to a ``g`` computed elementwise from large arrays (a BatchNorm's backward from its input
and cotangent) keeps those arrays alive until the last tied consumer, and ties that chain layer
after layer keep every layer's arrays alive to the end of the backward. :func:`anchor` computes
one scalar from ``g`` as a reduction (of two elements; one would be simplified away), which XLA
never fuses into a consumer: it is computed once, as soon as ``g`` exists, into its own buffer,
and values tied to it depend on ``g`` without keeping anything else alive.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["anchor", "tie", "tieable"]


def _first_float_leaf(tree: Any) -> jax.Array | None:
    for leaf in jax.tree.leaves(tree):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and leaf.size:
            return leaf
    return None


def _first_float_element(tree: Any) -> jax.Array | None:
    leaf = _first_float_leaf(tree)
    if leaf is None:
        return None
    return jax.lax.slice(leaf, (0,) * leaf.ndim, (1,) * leaf.ndim).reshape(())


def tie(x: Any, g: Any) -> Any:
    """``x`` (any pytree) made data-dependent on ``g`` (any pytree), values unchanged.

    Every floating leaf of ``x`` becomes ``leaf + 0 * e`` with ``e`` the first element of the
    first non-empty floating leaf of ``g``; other leaves are returned as they are. With no such
    element in ``g`` (e.g. an empty or integer cotangent) ``x`` is returned unchanged.
    """
    element = _first_float_element(g)
    if element is None:
        return x

    def tie_leaf(leaf: Any) -> Any:
        if leaf is None:
            return None
        leaf = jnp.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            return leaf
        return leaf + (element * 0).astype(leaf.dtype)

    return jax.tree.map(tie_leaf, x)


def tieable(x: Any) -> bool:
    """Whether :func:`tie` changes anything in ``x``: ``x`` has a non-empty floating leaf."""
    return _first_float_leaf(x) is not None


def anchor(g: Any) -> jax.Array | None:
    """A scalar that depends on ``g``, computed once into its own buffer: the sum of the first
    two elements of ``g``'s first non-empty floating leaf (``None`` if there is none).
    ``tie(x, anchor(g))`` orders ``x`` after ``g`` like ``tie(x, g)`` but keeps none of ``g``'s
    operands alive (module docstring)."""
    leaf = _first_float_leaf(g)
    if leaf is None:
        return None
    return jnp.sum(jax.lax.slice(leaf.reshape(-1), (0,), (min(2, leaf.size),)))
