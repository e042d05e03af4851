"""T-RevSNN's column chain: columns ``1..T-1`` as one scan, and the reversible custom VJP.

Columns ``1..T-1`` share one structure (they have up-sampling paths) and are stacked along a
leading axis. Their level-0 input is either one stem output ``x0`` shared by every column
(static images) or the column's own frame ``frames[t]`` (event data, stem inside the column).
The reversible chain's backward rebuilds the earlier level states from the last column's,
top-down (:mod:`revsnn_jax.models.trevsnn` has the equations)::

    c_l^(t-1) = (c_l^t - L_l(c_(l-1)^t, c_(l+1)^(t-1))) / alpha_l

evaluating each ``L_l`` once with ``jax.vjp``: its value reconstructs, its pullback
differentiates.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.nnx_utils import call_capturing, firing_rates, merge_fresh
from revsnn_jax.core.remat import tree_add, zero_cotangent
from revsnn_jax.neurons import quantize_spike

__all__ = ["NUM_LEVELS", "States"]

NUM_LEVELS = 4
States = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def _summaries(c3: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-column readouts of the top level: spatial means of ``c_3`` and of its spikes."""
    return c3.mean(axis=(1, 2)), quantize_spike(c3).mean(axis=(1, 2))


def _column_rates(col: nnx.Module, x: jax.Array, prev: States | None,
                  shared: Sequence[nnx.Module]) -> tuple[States, jax.Array]:
    """``col(x, prev, shared)`` and the firing rates of its quantizers (one per spiking layer,
    a fixed order), returned as an output so that they can leave a scan or a custom VJP."""
    new_c, sown = call_capturing(col.__call__, x, prev, shared)
    return new_c, jax.lax.stop_gradient(firing_rates(sown))


def _run_chain(col_graph, shared_graph, params, state, shared_params, shared_state, x0, frames,
               init, checkpoint: bool):
    """Columns 1..T-1 as one scan: final states, per-column summaries, updated column state
    and per-column firing rates ``[T - 1, layers]``."""
    shared = merge_fresh(shared_graph, shared_params, shared_state)

    def body(c, column):
        p_t, s_t, frame_t = column
        col = merge_fresh(col_graph, p_t, s_t)
        new_c, rates = _column_rates(col, x0 if frame_t is None else frame_t, c, shared)
        return new_c, (_summaries(new_c[3]), nnx.state(col, nnx.Not(nnx.Param)), rates)

    if checkpoint:
        body = jax.checkpoint(body)
    final, (summaries, new_state, rates) = jax.lax.scan(body, init, (params, state, frames))
    return final, summaries, new_state, rates


def _reversible_chain(col_graph, shared_graph):
    """Columns 1..T-1 in one custom VJP that reconstructs earlier states from the last."""

    def forward(params, state, shared_params, shared_state, x0, frames, init):
        return _run_chain(col_graph, shared_graph, params, state, shared_params, shared_state,
                          x0, frames, init, checkpoint=False)

    @jax.custom_vjp
    def chain(params, state, shared_params, shared_state, x0, frames, init):
        return forward(params, state, shared_params, shared_state, x0, frames, init)

    def chain_fwd(params, state, shared_params, shared_state, x0, frames, init):
        final, summaries, new_state, rates = forward(params, state, shared_params, shared_state,
                                                     x0, frames, init)
        # Residuals: the last column's states, parameters, incoming state and the inputs
        # (stem output or frames). Nothing per column is stored (the firing rates are a few
        # scalars per column, outputs without gradient).
        return (final, summaries, new_state, rates), (final, params, state, shared_params,
                                                      shared_state, x0, frames)

    def chain_bwd(residuals, cotangents):
        final, params, state, shared_params, shared_state, x0, frames = residuals
        d_final, (d_mean, d_spike_mean), _, _ = cotangents
        shared_const = shared_state

        def level_value(level, p, s, sp, lower, upper):
            col = merge_fresh(col_graph, p, s)
            return col.level(level, lower, upper, merge_fresh(shared_graph, sp, shared_const))

        def alpha_term(level, p, s, prev):
            return merge_fresh(col_graph, p, s).alpha(level).astype(prev.dtype) * prev

        def body(carry, column):
            c, g, d_x0, d_shared = carry
            p_t, s_t, frame_t, dm_t, dq_t = column
            g = list(g)
            # The cotangents of this column's summaries flow into its top state.
            hw = c[3].shape[1] * c[3].shape[2]
            _, spike_pullback = jax.vjp(quantize_spike, c[3])
            g[3] = (g[3] + jnp.broadcast_to(dm_t[:, None, None, :] / hw, c[3].shape)
                    + spike_pullback(jnp.broadcast_to(dq_t[:, None, None, :] / hw,
                                                      c[3].shape))[0])
            prev: list[jax.Array] = [None] * NUM_LEVELS  # type: ignore[list-item]
            d_prev = [jnp.zeros_like(ci) for ci in c]
            d_params = jax.tree.map(jnp.zeros_like, p_t)
            for level in reversed(range(NUM_LEVELS)):
                lower = (x0 if frame_t is None else frame_t) if level == 0 else c[level - 1]
                upper = None if level == 3 else prev[level + 1]
                # L_l once: its value reconstructs c_l^(t-1), its pullback differentiates.
                out, pullback = jax.vjp(
                    lambda p, sp, lo, up, lv=level: level_value(lv, p, s_t, sp, lo, up),
                    p_t, shared_params, lower, upper)
                alpha = merge_fresh(col_graph, p_t, s_t).alpha(level).astype(out.dtype)
                prev[level] = (c[level] - out) / alpha
                dp, dsp, d_lower, d_upper = pullback(g[level])
                d_params = tree_add(d_params, dp)
                d_shared = tree_add(d_shared, dsp)
                if level > 0:
                    g[level - 1] = g[level - 1] + d_lower
                elif frame_t is None:
                    d_x0 = d_x0 + d_lower
                if upper is not None:
                    d_prev[level + 1] = d_prev[level + 1] + d_upper
                # c_l^t = alpha_l * c_l^(t-1) + L_l: gradients of alpha and of c_l^(t-1).
                _, alpha_pullback = jax.vjp(
                    lambda p, v, lv=level: alpha_term(lv, p, s_t, v), p_t, prev[level])
                d_alpha, d_prev_direct = alpha_pullback(g[level])
                d_params = tree_add(d_params, d_alpha)
                d_prev[level] = d_prev[level] + d_prev_direct
            return (tuple(prev), tuple(d_prev), d_x0, d_shared), d_params

        init_carry = (final, tuple(d_final), None if x0 is None else jnp.zeros_like(x0),
                      jax.tree.map(jnp.zeros_like, shared_params))
        (_, d_init, d_x0, d_shared), d_params = jax.lax.scan(
            body, init_carry, (params, state, frames, d_mean, d_spike_mean), reverse=True)
        return (d_params, zero_cotangent(state), d_shared, zero_cotangent(shared_state), d_x0,
                None, d_init)

    chain.defvjp(chain_fwd, chain_bwd)
    return chain
