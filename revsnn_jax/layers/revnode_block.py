"""The reversible node between two weight layers, keeping neither its input nor its output.

In a network ``z -> X = pre(z) -> Y = node(X) -> out = post(Y)`` (``pre`` a BatchNorm, ``post``
pooling and the next convolution), autodiff keeps ``z`` for the BatchNorm and ``Y`` for the
convolution's weight gradient, and the reversible node keeps ``Y`` too. ``Y`` is real-valued
(``Y = X + a S``, :mod:`revsnn_jax.neurons.reversible_node`), so unlike a LIF's 0/1 spikes it cannot be
kept as bits. But it does not need to be kept at all: ``X`` is a function of ``z``, which is kept
anyway, and the spikes ``S`` are among the node's bit planes. :func:`revnode_block` runs
``pre -> node -> post`` under ONE ``jax.custom_vjp`` whose residuals are ``pre``'s parameters and
input ``z``, ``post``'s parameters and the node's ``1 + d`` bit planes per neuron and step: no
array of ``X``'s or ``Y``'s size. Per step, in the node's fixed point (units of
``2**-frac_bits``; ``[.]`` rounds onto that grid)::

    forward:   X = pre(p, z)          Y1 = [X1] + a S1,  Y2 = [X2] + a S2      out = post(w, Y)
    backward:  X = pre(p, z)          (rebuilt; S, remainders from the bit planes)
               V1[T-1], V2[T-1]       (the node's integer steps over [X] from V = 0, potentials
                                       only: the final potentials are not kept either)
               Y = [X] + a S          (exactly the forward's Y)
               g_w, g_Y = pullback of post at (w, Y), applied to g_out
               g_X = the node's streamlined backward (reverse integer steps from the final
                     potentials, closed-form local derivatives; reversible_node docstring)
               g_p, g_z = pullback of pre at (p, z), applied to g_X

The rebuild is tied to ``g_out`` (:mod:`revsnn_jax.core.ties`) so that XLA runs it in the backward,
through one :func:`revsnn_jax.core.ties.anchor` of ``g_out`` (and one per step of the backward scan):
``g_out`` is BatchNorm's input cotangent in the next link, and a tie to its element directly
would keep that link's BatchNorm input and cotangent alive, link after link.
Gradients are those of plain autodiff of ``post(w, revnode_reference(pre(p, z)))``: the node's
backward is the one of the node alone, and ``pre``, ``post`` are differentiated by JAX.

``time_steps=T`` declares a static ``pre`` (its output has no time axis, e.g. a direct-encoding
stem): ``X[t] = pre(p, z)`` for every ``t``, the residual is the static ``z`` and the backward
sums ``g_X`` over time inside its scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax.core.conv import conv2d
from revsnn_jax.core.ties import anchor, tie
from revsnn_jax.neurons import scan_unroll
from revsnn_jax.neurons.reversible_node import (
    RevNodeConfig,
    _backward_step,
    _check_range,
    _forward,
    _int_step,
    _round_ste,
    _split,
    _to_int,
)

__all__ = ["avg_pool2", "node_link", "revnode_block", "revnode_block_reference"]

Array = jax.Array
PyTree = Any


def _grid(x: Array, q: float) -> Array:
    """``X`` on the node's grid, in integer units (the forward's conversion, op for op)."""
    return _to_int(_round_ste(x, q), q)


def _spikes(plane: Array, channels: int) -> Array:
    """A packed spike plane ``[..., bytes]`` as int32 ``[..., C]``."""
    return jnp.unpackbits(plane, axis=-1, count=channels).astype(jnp.int32)


def _tie_all(tree: PyTree, g: PyTree) -> PyTree:
    """:func:`revsnn_jax.core.ties.tie` for integer leaves too: each gets ``+ int(0 * g[0])``, so
    nothing computed from them (the last step's inverse) can run before ``g`` exists."""
    zero = tie(jnp.zeros((), jnp.float32), g)
    return jax.tree.map(lambda a: a + zero.astype(a.dtype), tree)


def _check(cfg: RevNodeConfig, x: Array, time_steps: int | None) -> None:
    chex.assert_type(x, float)
    if time_steps is None and x.ndim < 2:
        raise ValueError(f"pre must return [T, ..., C] (or pass time_steps), got {x.shape}")
    if time_steps is not None and time_steps < 1:
        raise ValueError(f"time_steps must be >= 1, got {time_steps}")
    _split(x)
    _check_range(x, cfg)


def revnode_block(pre_fn: Callable[[PyTree, Array], Array],
                  post_fn: Callable[[PyTree, Array], Array],
                  pre_params: PyTree, pre_input: Array, post_params: PyTree,
                  cfg: RevNodeConfig, *, time_steps: int | None = None,
                  local_fn: Callable[[Array], Array] | None = None):
    """``post_fn(post_params, local_fn(node(pre_fn(pre_params, pre_input))))`` and the node's
    firing rate.

    The backward keeps ``pre_params, pre_input, post_params`` and the node's bit planes, and
    rebuilds the node's input, potentials and output from them (module docstring).
    ``pre_fn`` returns ``X [T, ..., C]`` (``C`` even), or ``[..., C]`` repeated over
    ``time_steps`` steps; ``post_fn`` takes ``Y [T, ..., C]``, or ``local_fn(Y)`` when given:
    a function without parameters that acts on each time step alone (e.g. pooling), which the
    forward applies inside the node's time scan and the backward applies, and differentiates,
    step by step, so that no ``[T, ...]`` array of ``Y``'s size exists in either. Returns
    ``(out, rate)``: the rate (mean spike count of both groups per neuron and step) carries no
    gradient.
    """
    q = float(2 ** cfg.frac_bits)
    a = int(cfg.coupling * 2 ** cfg.frac_bits)

    def node_input(p, z):
        x = pre_fn(p, z)
        _check(cfg, x, time_steps)
        return x

    def run(p, z, w):
        x = node_input(p, z)
        if time_steps is not None:
            x = jnp.broadcast_to(x[None], (time_steps, *x.shape))
        y, (m1, m2, bits1, bits2, _), rate = _forward(cfg, _round_ste(x, q), local_fn)
        return post_fn(w, y), jax.lax.stop_gradient(rate), (m1, m2, bits1, bits2)

    @jax.custom_vjp
    def block(p, z, w):
        out, rate, _ = run(p, z, w)
        return out, rate

    def block_fwd(p, z, w):
        out, rate, (_, _, bits1, bits2) = run(p, z, w)
        # Not the final potentials: the backward recomputes them from X. Kept, their
        # computation (the last steps) would be moved by XLA into the backward, their only
        # consumer, keeping every step's potentials alive in their place.
        return (out, rate), (p, z, w, bits1, bits2)

    def block_bwd(residuals, cotangents):
        p, z, w, bits1, bits2 = residuals
        g_out, _ = cotangents
        after = anchor(g_out)  # one scalar for every tie to g_out (ties module docstring)
        p, z = tie((p, z), after)
        bits1, bits2 = _tie_all((bits1, bits2), after)
        x, pre_vjp = jax.vjp(node_input, p, z)
        dtype = x.dtype
        channels = x.shape[-1] // 2
        mx1, mx2 = _split(_grid(x, q))
        static = time_steps is not None
        steps = time_steps if static else x.shape[0]
        unroll = scan_unroll(steps, cfg.unroll)
        # ``* (1 / q)`` by a tied scalar: XLA:CPU would otherwise materialise a constant of
        # Y's size for its fused pooling / convolution and keep it from the program's start
        inv_q = tie(jnp.asarray(1 / q, dtype), after)

        def node_output(grid1, grid2, s1, s2):  # Y = X + a S, from the integer grid
            return jnp.concatenate([grid1 + a * s1, grid2 + a * s2], -1).astype(dtype) * inv_q

        def y_step(b1, b2, mxt1, mxt2):  # Y[t] from X[t] and the spike planes of step t
            return node_output(mxt1, mxt2, _spikes(b1[0], channels), _spikes(b2[0], channels))

        per_step = (None, None) if static else (mx1, mx2)

        def inputs_at(mxt1, mxt2):
            return (mx1, mx2) if static else (mxt1, mxt2)

        def potentials_body(carry, step):  # the forward's integer steps, potentials only
            m1, m2, *_ = _int_step(cfg, *carry, *inputs_at(*step))
            return (m1, m2), None

        start = jnp.zeros(mx1.shape if static else mx1.shape[1:], jnp.int32)
        (m1, m2), _ = jax.lax.scan(potentials_body, (start, start), per_step, length=steps,
                                   unroll=unroll)

        if local_fn is None:
            local_y = node_output(mx1, mx2, _spikes(bits1[:, 0], channels),
                                  _spikes(bits2[:, 0], channels))
        else:  # local(Y[t]) step by step: Y is never held for all T
            def local_body(_, step):
                b1, b2, mxt1, mxt2 = step
                return None, local_fn(y_step(b1, b2, *inputs_at(mxt1, mxt2)))

            _, local_y = jax.lax.scan(local_body, None, (bits1, bits2, *per_step),
                                      unroll=unroll)
        g_w, g_local = jax.vjp(post_fn, w, local_y)[1](g_out)

        def body(carry, step):
            (m1n, m2n, gv1, gv2), g_acc = carry
            b1, b2, g_lt, mxt1, mxt2 = step
            # unpack step t's bits only once step t + 1 is done: all at once, XLA would hold
            # every step's unpacked planes
            after_step = anchor((gv1, gv2))
            b1, b2 = _tie_all((b1, b2), after_step)
            g_lt = tie(g_lt, after_step)  # and its cotangent's pullback through local_fn
            mxt1, mxt2 = inputs_at(mxt1, mxt2)
            if local_fn is None:
                gyt = g_lt
            else:
                gyt = jax.vjp(local_fn, y_step(b1, b2, mxt1, mxt2))[1](g_lt)[0]
            gyt1, gyt2 = _split(gyt)
            node_carry, gx1, gx2 = _backward_step(
                cfg, "streamlined", dtype, channels, (m1n, m2n, gv1, gv2), b1, b2,
                mxt1, mxt2, gyt1, gyt2, inputs_given=True)
            gx = jnp.concatenate([gx1, gx2], -1)
            if static:
                return (node_carry, g_acc + gx), None
            return (node_carry, g_acc), gx

        zeros = jnp.zeros(m1.shape, dtype)
        g_acc = jnp.zeros(x.shape, dtype) if static else jnp.zeros((), dtype)
        (_, g_sum), g_steps = jax.lax.scan(
            body, ((m1, m2, zeros, zeros), g_acc), (bits1, bits2, g_local, *per_step),
            reverse=True, unroll=unroll)
        g_p, g_z = pre_vjp(g_sum if static else g_steps)
        return g_p, g_z, g_w

    block.defvjp(block_fwd, block_bwd)
    return block(pre_params, pre_input, post_params)


def revnode_block_reference(pre_fn: Callable[[PyTree, Array], Array],
                            post_fn: Callable[[PyTree, Array], Array],
                            pre_params: PyTree, pre_input: Array, post_params: PyTree,
                            cfg: RevNodeConfig, *,
                            time_steps: int | None = None,
                            local_fn: Callable[[Array], Array] | None = None) -> Array:
    """:func:`revnode_block`'s output under plain autodiff (everything stored): the reference."""
    from revsnn_jax.neurons.reversible_node import revnode_reference

    x = pre_fn(pre_params, pre_input)
    if time_steps is not None:
        x = jnp.broadcast_to(x[None], (time_steps, *x.shape))
    y = revnode_reference(x, cfg)
    return post_fn(post_params, y if local_fn is None else local_fn(y))


# --------------------------------------------------------------------------- NNX layers
@jax.custom_vjp
def avg_pool2(y: Array) -> Array:
    """:func:`revsnn_jax.layers.avg_pool` ``(2, 2, 0)`` over ``[..., H, W, C]`` whose backward
    is the exact upsampling ``dY[..., 2i + u, 2j + v, :] = dP[..., i, j, :] / 4`` (zero in a
    last odd row or column): the values of autodiff of the pool, without constants of the
    input's or output's size."""
    # the quarter tied to y: a constant would be materialised at the output's size and, in a
    # backward that recomputes the pool, kept from the program's start (module docstring)
    dims = (1,) * (y.ndim - 3) + (2, 2, 1)
    summed = jax.lax.reduce_window(y, np.zeros((), y.dtype), jax.lax.add, dims, dims, "VALID")
    return summed * tie(jnp.asarray(0.25, y.dtype), y)


def _avg_pool2_fwd(y):
    # an empty array that carries the input's H and W
    return avg_pool2(y), jnp.zeros((y.shape[-3], y.shape[-2], 0), y.dtype)


def _avg_pool2_bwd(hw, g):
    h, w = hw.shape[:2]
    up = jnp.repeat(jnp.repeat(g / 4, 2, axis=-3), 2, axis=-2)
    pad = [(0, 0)] * (g.ndim - 3) + [(0, h - up.shape[-3]), (0, w - up.shape[-2]), (0, 0)]
    return (jnp.pad(up, pad),)


avg_pool2.defvjp(_avg_pool2_fwd, _avg_pool2_bwd)


def node_link(z: Array, node: Any, *, bn: Any = None, pools: int = 0, conv: Any = None,
              time_steps: int | None = None) -> Array:
    """``conv(pool^pools(node(bn(z))))`` as one :func:`revnode_block` (training mode).

    ``node`` is a :class:`revsnn_jax.neurons.reversible_node.ReversibleNode`; ``bn`` a
    :class:`revsnn_jax.layers.BatchNorm` (its running statistics are updated as its own call
    does) or ``None`` for a static ``z`` repeated over ``time_steps`` (``[B, ..., C]``);
    ``pools`` 2x2 average pools; ``conv`` a :class:`revsnn_jax.layers.Conv2d` or ``None``.
    Records the node's firing rate as its ``firing_rate``. Same values and gradients as calling
    the layers one after the other with the node under plain autodiff.
    """
    from revsnn_jax.core.nnx_utils import sow_intermediate
    from revsnn_jax.layers.folded import batch_norm_train

    if bn is not None:
        bn(z)  # the running-statistics update; its output is not used (and not computed)
        epsilon = bn.epsilon
        pre_params = (bn.scale[...].astype(z.dtype), bn.bias[...].astype(z.dtype))

        def pre(p, z):
            return batch_norm_train(z, p[0], p[1], epsilon)
    else:
        if time_steps is None:
            raise ValueError("a link without BatchNorm takes a static z: pass time_steps")
        pre_params = ()

        def pre(p, z):
            return z

    if conv is not None:
        if conv.spike_input:
            raise ValueError("the node's output is real-valued: its conv needs spike_input=False")
        layer = conv.conv
        post_params = layer.kernel[...]
        if layer.use_bias:
            post_params = (post_params, layer.bias[...])
    else:
        post_params = ()

    def local(y):
        for _ in range(pools):
            y = avg_pool2(y)
        return y

    def post(w, y):
        if conv is None:
            return y
        kernel, bias = w if isinstance(w, tuple) else (w, None)
        lead = y.shape[:-3]
        out = conv2d(y.reshape((-1, *y.shape[-3:])).astype(kernel.dtype), kernel,
                     layer.strides, layer.padding)
        if bias is not None:
            out = out + bias
        return out.reshape((*lead, *out.shape[1:]))

    out, rate = revnode_block(pre, post, pre_params, z, post_params, node.config,
                              time_steps=time_steps, local_fn=local if pools else None)
    sow_intermediate(node, "firing_rate", rate)
    return out
