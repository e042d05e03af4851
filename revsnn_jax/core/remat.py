"""Per-block rematerialisation that the compiler cannot undo: keep the input, recompute inside.

``checkpoint(fn)`` has the math of ``fn`` and the memory of ``jax.checkpoint(fn)`` as intended:
the forward keeps only ``fn``'s inputs; the backward re-runs ``fn`` under ``jax.vjp`` and pulls
the cotangent back through it::

    forward:   y, new_state = fn(params, state, x, key)          residuals: params, state, x, key
    backward:  x' = tie(x, dy)                                   (revsnn_jax.core.ties)
               _, pullback = jax.vjp(lambda p, v: fn(p, state, v, key)[0], params, x')
               d params, d x = pullback(dy)

Unlike ``jax.checkpoint``, whose recompute XLA:CPU merges back into the forward (its
rematerialisation barrier is gone before XLA's later CSE and scheduling), the recompute here
starts from ``tie(x, dy)``: it cannot run before the cotangent exists, and it cannot be shared
with the forward. ``state`` (e.g. BatchNorm running statistics, RNG counters) is replayed: the
recompute sees the state the forward saw, so it uses the same batch statistics and dropout
masks, and its state update is discarded.

``fn`` is a block function ``(params, state, x, key) -> (y, new_state)`` (the engine's
:data:`revsnn_jax.reversible.BlockFn`); ``x`` and ``y`` may be any pytrees of arrays.
:func:`checkpoint_module` applies it to a Flax NNX module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.nnx_utils import MODEL_STATE, call_capturing, firing_rates, merge_fresh
from revsnn_jax.core.ties import tie

__all__ = ["checkpoint", "checkpoint_module", "module_block_fn", "tree_add", "zero_cotangent"]

PyTree = Any
BlockFn = Callable[[PyTree, PyTree, PyTree, Any], tuple[PyTree, PyTree]]


def zero_cotangent(tree: PyTree) -> PyTree:
    """Zeros for the floating leaves of ``tree``, ``None`` for integer and key leaves."""

    def zero(leaf: Any) -> Any:
        leaf = jnp.asarray(leaf)
        return jnp.zeros_like(leaf) if jnp.issubdtype(leaf.dtype, jnp.inexact) else None

    return jax.tree.map(zero, tree)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a + b`` of two pytrees of one structure (accumulating gradients)."""
    return jax.tree.map(jnp.add, a, b)


def checkpoint(fn: BlockFn) -> BlockFn:
    """``fn`` with its inside recomputed in the backward instead of stored (module docstring)."""

    @jax.custom_vjp
    def run(params, state, x, key):
        return fn(params, state, x, key)

    def run_fwd(params, state, x, key):
        return fn(params, state, x, key), (params, state, x, key)

    def run_bwd(residuals, cotangents):
        params, state, x, key = residuals
        dy, _ = cotangents  # the state output carries no gradient
        x = tie(x, dy)
        _, pullback = jax.vjp(lambda p, v: fn(p, state, v, key)[0], params, x)
        d_params, d_x = pullback(dy)
        return d_params, zero_cotangent(state), d_x, None

    run.defvjp(run_fwd, run_bwd)
    return run


def module_block_fn(module: nnx.Module) -> tuple[BlockFn, PyTree, PyTree]:
    """A module as a pure block function plus its parameters and its other state.

    The function returns ``(out, (new_state, firing_rates))``: the module's state after the
    call and the firing rates its spiking layers recorded, one per layer
    (:func:`revsnn_jax.core.nnx_utils.firing_rates`; ``None`` if none), which cannot leave a
    ``custom_vjp`` or a ``scan`` otherwise. ``key`` is ignored (NNX modules carry their RNG
    streams in the state, which is replayed exactly).
    """
    graph, params, state = nnx.split(module, nnx.Param, ...)

    def fn(p, s, x, key):
        del key
        block = merge_fresh(graph, p, s)
        out, sown = call_capturing(block.__call__, x)
        rates = firing_rates(sown, "firing_rate")
        if rates is not None:
            rates = jax.lax.stop_gradient(rates)
        return out, (nnx.state(block, MODEL_STATE), rates)

    return fn, params, state


def checkpoint_module(module: nnx.Module, x: PyTree) -> tuple[PyTree, jax.Array | None]:
    """``module(x)`` under :func:`checkpoint`; updates the module's state as a plain call would.

    Returns the output and the firing rates the module's spiking layers recorded, one per layer
    (or ``None``), for the caller to record (a value sown inside cannot cross the
    ``custom_vjp``).
    """
    fn, params, state = module_block_fn(module)
    out, (new_state, rate) = checkpoint(fn)(params, state, x, None)
    nnx.update(module, new_state)
    return out, rate
