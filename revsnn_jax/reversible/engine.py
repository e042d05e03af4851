"""The reversible engine: a stage of additive coupling blocks whose backward reconstructs.

A reversible block (RevNet; Gomez et al., 2017) splits the channels of ``x`` into halves
``(x1, x2)`` and couples them additively through two functions ``F`` and ``G``::

    forward:  y1 = x1 + F(x2)            inverse:  x2 = y2 - G(y1)
              y2 = x2 + G(y1)                      x1 = y1 - F(x2)

Because the block is invertible, the backward pass can rebuild every block's input from the
stage's output instead of keeping it. :func:`reversible_stage` runs ``N`` blocks whose
parameters are stacked along a leading axis with one ``jax.lax.scan``, wrapped in ONE
``jax.custom_vjp``: the only residuals are the stage output, the parameters, the incoming state
and the key, so training memory does not grow with ``N``. (A ``custom_vjp`` per block is not
enough: XLA then keeps every block's output alive.)

The backward walks the blocks in reverse. Per block it evaluates each function forward once::

    g_out, g_pullback = jax.vjp(G, p_g, y1);  x2 = y2 - g_out;  dp_g, dy1_g = g_pullback(dy2)
    dx1 = dy1 + dy1_g
    f_out, f_pullback = jax.vjp(F, p_f, x2);  x1 = y1 - f_out;  dp_f, dx2_f = f_pullback(dx1)
    dx2 = dy2 + dx2_f

so one reconstruction plus the pullbacks cost about one forward more than plain autodiff
(~4/3 of a plain step's FLOPs), not two. This is ``backward="streamlined"`` (the default).
``backward="naive"`` is the usual reversible-layer backward (revtorch / RevNet): first
reconstruct ``x2 = y2 - G(y1)`` by evaluating ``G``, then evaluate ``G`` again inside
``jax.vjp`` to differentiate it (same for ``F``), with a ``jax.lax.optimization_barrier``
between the two so XLA cannot merge them: two forwards per function. It exists to measure what
the streamlined backward saves; the gradients are the same.

``F`` and ``G`` are pure functions ``(params, state, x_half, key) -> (out_half, new_state)``.
``state`` carries mutable statistics such as BatchNorm running averages: the forward pass returns
the updated state once; the recompute in the backward sees the same incoming state, so it uses
identical batch statistics, and its state update is discarded (running statistics are never
updated twice, unlike the PyTorch reference). ``key`` is replayed exactly, so dropout masks in
the recompute equal those of the forward. Spiking sub-networks that scan over time plug in
directly: their membrane potentials start from their initial value and are recomputed forward in time on the
reconstructed input (RevSNN's "reversible along the temporal dimension").

**Ties.** The backward's recomputes are tied to the cotangents they serve
(:mod:`revsnn_jax.core.ties`): each block's ``G`` parameters to the stage's incoming cotangent before
its ``G`` recompute, and ``F``'s input ``x2`` to ``dx1`` (G's pullback) before ``F`` is
recomputed. A tie is ``x + 0 * g[0, ..., 0]``, a real data dependence that costs one multiply:
without it XLA may merge a recompute with the forward (a one-block stage has no loop left to
prevent it) or schedule it early, keeping a function's intermediates alive from the forward to
the backward; ``jax.lax.optimization_barrier`` does not prevent that on XLA:CPU. The first tie
is on ``G``'s parameters rather than on the residual ``y1`` (tied only when ``G`` has no
floating parameters): ``tie(y1, .)`` is a new elementwise consumer of ``y1``, into which XLA
fuses a copy of ``y1``'s own producer (``x1 + F(x2)`` of the forward), so that the forward's
operands of that sum stay alive into the backward instead of ``y1`` (``docs/memory.md``).

**Halves.** ``x`` may be given as its two channel halves ``(x1, x2)``; ``y`` then comes back as
halves. Models that chain stages (RevSResNet) pass halves between them, so no concatenated copy
of the stream exists beside the halves the backward keeps.

Floating point: ``(a + b) - b`` is not exactly ``a``; the reconstruction error is about one ulp
per block, and a reconstructed pre-activation sitting exactly at a spiking threshold can, rarely,
flip a spike. Gradients match plain autodiff to rounding in float64 and to a small tolerance in
float32.

Three memory modes with identical math, chosen by ``memory_mode``:

* ``"reversible"`` -- reconstruct (this module's custom VJP);
* ``"checkpoint"`` -- per-block rematerialisation (:func:`revsnn_jax.core.remat.checkpoint`): store
  block inputs, recompute inside, tied to the cotangent like the reversible backward;
* ``"none"`` -- plain autodiff, everything stored.

:class:`ReversibleSequence` is the Flax NNX adapter: it builds stacked F/G sub-modules from
factories and runs them through :func:`reversible_stage`. :func:`check_reversible` checks a
user's F/G (round trip of the inverse, gradients against plain autodiff) and returns a
:class:`ReversibleReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core import remat
from revsnn_jax.core.modes import MEMORY_MODES
from revsnn_jax.core.nnx_utils import sow_intermediate
from revsnn_jax.core.ties import tie, tieable

__all__ = [
    "BACKWARDS",
    "MEMORY_MODES",
    "BlockFn",
    "ReversibleSequence",
    "check_memory_mode",
    "reversible_stage",
    "reversible_stage_inverse",
]

BACKWARDS = ("streamlined", "naive")

PyTree = Any
# (params, state, x_half, key) -> (out_half, new_state)
BlockFn = Callable[[PyTree, PyTree, jax.Array, Any], tuple[jax.Array, PyTree]]


# --------------------------------------------------------------------------- helpers
def check_memory_mode(memory_mode: str, allowed: tuple[str, ...] = MEMORY_MODES) -> None:
    """Raise a clear ``ValueError`` unless ``memory_mode`` is one of ``allowed``."""
    if memory_mode not in allowed:
        raise ValueError(
            f"unknown memory_mode {memory_mode!r}; choose one of {', '.join(allowed)}"
        )


def _split_halves(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    channels = x.shape[-1]
    if channels % 2:
        raise ValueError(
            f"a reversible stage splits the last (channel) axis into two halves, but x has "
            f"{channels} channels (shape {x.shape}); use an even channel count"
        )
    return x[..., : channels // 2], x[..., channels // 2:]


def _as_halves(x: Any) -> tuple[tuple[jax.Array, jax.Array], bool]:
    """``((x1, x2), given_as_halves)`` for an array (split on channels) or a pair of halves."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"x given as halves must be a pair (x1, x2), got {len(x)} arrays")
        x1, x2 = (jnp.asarray(h) for h in x)
        if x1.shape != x2.shape or x1.dtype != x2.dtype:
            raise ValueError(f"the halves (x1, x2) must have one shape and dtype, got "
                             f"{x1.dtype}{list(x1.shape)} and {x2.dtype}{list(x2.shape)}")
        halves = (x1, x2)
    else:
        halves = _split_halves(jnp.asarray(x))
    if not jnp.issubdtype(halves[0].dtype, jnp.floating):
        raise TypeError(f"x must be floating, got dtype {halves[0].dtype}")
    return halves, isinstance(x, (tuple, list))


def _join(halves: tuple[jax.Array, jax.Array], as_halves: bool) -> Any:
    return tuple(halves) if as_halves else jnp.concatenate(halves, axis=-1)


def _num_blocks(params: PyTree) -> int:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("reversible_stage needs parameters stacked along a leading block axis")
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "every parameter of a reversible stage must be stacked along a leading block axis "
            f"of the same size; found leading sizes {sorted(map(str, sizes))}"
        )
    return sizes.pop()


def _check_state(state: PyTree, num_blocks: int) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != num_blocks:
            raise ValueError(
                f"every state leaf of a reversible stage must be stacked along a leading block "
                f"axis of size {num_blocks} (the parameters' block count); state leaf "
                f"{jax.tree_util.keystr(path)} has shape {shape}"
            )


def _checked_output(name: str, fn: BlockFn) -> BlockFn:
    """``fn`` with a clear error when its output does not match its input half."""

    def wrapped(p, s, x_half, key):
        out, new_s = fn(p, s, x_half, key)
        out = jnp.asarray(out)
        if out.shape != x_half.shape:
            raise ValueError(
                f"{name} must map a channel half to the same shape: input {x_half.shape}, "
                f"output {out.shape}"
            )
        if out.dtype != x_half.dtype:
            raise TypeError(
                f"{name} must return the dtype of its input half: input {x_half.dtype}, output "
                f"{out.dtype} (cast inside {name}, e.g. `out.astype(x.dtype)`; for mixed "
                f"precision keep the streams in float32 and compute {name} in bfloat16)"
            )
        return out, new_s

    return wrapped


def _block_keys(key: Any, num_blocks: int) -> tuple[Any, Any]:
    """Independent keys for F and G of every block (``None`` when no key is given)."""
    if key is None:
        return None, None
    keys = jax.random.split(key, 2 * num_blocks)
    return keys[:num_blocks], keys[num_blocks:]


def _coupling_forward(f: BlockFn, g: BlockFn, x1, x2, block):
    pf, pg, sf, sg, kf, kg = block
    f_out, sf_new = f(pf, sf, x2, kf)
    y1 = x1 + f_out
    g_out, sg_new = g(pg, sg, y1, kg)
    y2 = x2 + g_out
    return y1, y2, (sf_new, sg_new)


def _scan_forward(f: BlockFn, g: BlockFn, params, state, x1, x2, key, checkpoint: bool):
    """The stage's forward over the halves: ``((y1, y2), new_state)``."""
    pf, pg = params
    sf, sg = state
    kf, kg = _block_keys(key, _num_blocks(params))

    def block_fn(p, s, halves, k):
        y1, y2, new_state = _coupling_forward(f, g, *halves, (*p, *s, *k))
        return (y1, y2), new_state

    if checkpoint:
        block_fn = remat.checkpoint(block_fn)

    def body(halves, block):
        pf_i, pg_i, sf_i, sg_i, kf_i, kg_i = block
        return block_fn((pf_i, pg_i), (sf_i, sg_i), halves, (kf_i, kg_i))

    return jax.lax.scan(body, (x1, x2), (pf, pg, sf, sg, kf, kg))


def _check_backward(backward: str) -> None:
    if backward not in BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}; choose one of {', '.join(BACKWARDS)}")


def _undo_coupling(fn: BlockFn, params, state, key, z, y, dy, naive: bool):
    """Undo ``y = x + fn(z)``: return ``x`` and the pullback of ``dy`` (``d params, d z``).

    Streamlined: ``fn`` runs once, ``jax.vjp`` gives both the value that rebuilds ``x`` and the
    pullback. Naive (the usual reversible-layer backward): ``fn`` runs once to rebuild ``x`` and
    again inside ``jax.vjp``; an optimisation barrier keeps XLA from sharing the two runs.
    """
    def call(p, v):
        return fn(p, state, v, key)[0]

    if naive:
        x = y - call(params, z)
        z, x = jax.lax.optimization_barrier((z, x))
        _, pullback = jax.vjp(call, params, z)
    else:
        out, pullback = jax.vjp(call, params, z)
        x = y - out
    d_params, d_z = pullback(dy)
    return x, d_params, d_z


def _make_reversible(f: BlockFn, g: BlockFn, backward: str = "streamlined"):
    """The stage as one custom-VJP function of ``(params, state, x1, x2, key)``."""

    @jax.custom_vjp
    def stage(params, state, x1, x2, key):
        return _scan_forward(f, g, params, state, x1, x2, key, checkpoint=False)

    def stage_fwd(params, state, x1, x2, key):
        (y1, y2), new_state = _scan_forward(f, g, params, state, x1, x2, key, checkpoint=False)
        # Residuals: the stage output, parameters, incoming state and key. Nothing per block.
        return ((y1, y2), new_state), (y1, y2, params, state, key)

    def stage_bwd(residuals, cotangents):
        y1, y2, params, state, key = residuals
        (dy1, dy2), _ = cotangents  # the state output is not differentiable
        pf, pg = params
        sf, sg = state
        kf, kg = _block_keys(key, _num_blocks(params))
        naive = backward == "naive"
        # Ties (revsnn_jax.core.ties): the first recompute waits for the stage's cotangent, and
        # every F recompute for G's pullback, so XLA can neither merge a recompute with the
        # forward (a one-block stage has no loop left to stop it) nor run it early. G's
        # parameters are tied, not y1 (module docstring), unless G has none: each block's
        # inside the loop, so that no tied copy of every block's parameters exists at once.
        tie_params = tieable(pg)
        stage_dy2 = dy2
        if not tie_params:
            y1 = tie(y1, dy2)

        def body(carry, block):
            y1, y2, dy1, dy2 = carry
            pf_i, pg_i, sf_i, sg_i, kf_i, kg_i = block
            if tie_params:
                pg_i = tie(pg_i, stage_dy2)
            # y2 = x2 + G(y1): rebuild x2, pull dy2 back through G.
            x2, dpg, dy1_from_g = _undo_coupling(g, pg_i, sg_i, kg_i, y1, y2, dy2, naive)
            dx1 = dy1 + dy1_from_g
            # y1 = x1 + F(x2): rebuild x1, pull the total cotangent of y1 back through F.
            x1, dpf, dx2_from_f = _undo_coupling(f, pf_i, sf_i, kf_i, tie(x2, dx1), y1, dx1,
                                                 naive)
            dx2 = dy2 + dx2_from_f
            return (x1, x2, dx1, dx2), (dpf, dpg)

        (_, _, dx1, dx2), dparams = jax.lax.scan(
            body, (y1, y2, dy1, dy2), (pf, pg, sf, sg, kf, kg), reverse=True)
        return dparams, remat.zero_cotangent(state), dx1, dx2, None

    stage.defvjp(stage_fwd, stage_bwd)
    return stage


# --------------------------------------------------------------------------- public API
def reversible_stage(
    f: BlockFn,
    g: BlockFn,
    params: tuple[PyTree, PyTree],
    state: tuple[PyTree, PyTree] | None,
    x: jax.Array | tuple[jax.Array, jax.Array],
    key: Any = None,
    *,
    memory_mode: str = "reversible",
    backward: str = "streamlined",
) -> tuple[jax.Array | tuple[jax.Array, jax.Array], tuple[PyTree, PyTree]]:
    """Run ``N`` reversible coupling blocks over ``x`` and return ``(y, new_state)``.

    Args:
      f, g: pure block functions ``(params, state, x_half, key) -> (out_half, new_state)``.
        ``out_half`` has the shape and dtype of ``x_half``.
      params: ``(f_params, g_params)``; every leaf stacked along a leading axis of size ``N``
        (block ``i`` uses ``leaf[i]``).
      state: ``(f_state, g_state)`` stacked the same way (e.g. BatchNorm running statistics),
        or ``None`` for stateless functions (they then receive ``None``).
      x: input ``[..., C]`` with an even channel count on the last axis (typically
        ``[T, B, H, W, C]``), or its two channel halves as a pair ``(x1, x2)``. Passing
        halves between stages avoids a concatenated copy of the stream beside the halves
        the backward keeps.
      key: a PRNG key for randomness inside F/G (split per block and function, replayed in the
        backward), or ``None``.
      memory_mode: ``"reversible"``, ``"checkpoint"`` or ``"none"`` (module docstring).
      backward: for ``"reversible"``: ``"streamlined"`` (each function evaluated once in the
        backward, default) or ``"naive"`` (evaluated twice: reconstruct, then differentiate).

    Returns:
      ``y`` in the form of ``x`` (an array, or a pair of halves) and the new state, stacked like
      ``state`` (the forward's update, emitted once).
    """
    check_memory_mode(memory_mode)
    _check_backward(backward)
    (x1, x2), as_halves = _as_halves(x)
    num_blocks = _num_blocks(params)
    if state is None:
        state = (None, None)
    else:
        _check_state(state, num_blocks)
    f, g = _checked_output("F", f), _checked_output("G", g)
    if memory_mode == "reversible":
        halves, new_state = _make_reversible(f, g, backward)(params, state, x1, x2, key)
    else:
        halves, new_state = _scan_forward(f, g, params, state, x1, x2, key,
                                          checkpoint=memory_mode == "checkpoint")
    return _join(halves, as_halves), new_state


def reversible_stage_inverse(
    f: BlockFn,
    g: BlockFn,
    params: tuple[PyTree, PyTree],
    state: tuple[PyTree, PyTree] | None,
    y: jax.Array | tuple[jax.Array, jax.Array],
    key: Any = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Reconstruct a stage's input from its output (what the backward pass does).

    ``y`` is an array or a pair of halves, and the input comes back in the same form.
    ``state`` and ``key`` must be those the forward received.
    """
    halves, as_halves = _as_halves(y)
    num_blocks = _num_blocks(params)
    if state is not None:
        _check_state(state, num_blocks)
    f, g = _checked_output("F", f), _checked_output("G", g)
    pf, pg = params
    sf, sg = (None, None) if state is None else state
    kf, kg = _block_keys(key, num_blocks)

    def body(carry, block):
        y1, y2 = carry
        pf_i, pg_i, sf_i, sg_i, kf_i, kg_i = block
        x2 = y2 - g(pg_i, sg_i, y1, kg_i)[0]
        x1 = y1 - f(pf_i, sf_i, x2, kf_i)[0]
        return (x1, x2), None

    halves, _ = jax.lax.scan(body, halves, (pf, pg, sf, sg, kf, kg), reverse=True)
    return _join(halves, as_halves)


# --------------------------------------------------------------------------- Flax NNX adapter
def _stack_modules(make: Callable[[nnx.Rngs], nnx.Module], num_blocks: int,
                   rngs: nnx.Rngs) -> nnx.Module:
    @nnx.split_rngs(splits=num_blocks)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(block_rngs: nnx.Rngs) -> nnx.Module:
        return make(block_rngs)

    stacked = create(rngs)
    # flax 0.10 (Python 3.10) leaves RNG counters unstacked (scalars) under split_rngs; give
    # every state leaf the leading block axis so the stage can scan over it.
    state = nnx.state(stacked, nnx.Not(nnx.Param))
    nnx.update(stacked, jax.tree.map(
        lambda leaf: jnp.broadcast_to(leaf, (num_blocks, *jnp.shape(leaf)))
        if jnp.ndim(leaf) == 0 else leaf, state))
    return stacked


class ReversibleSequence(nnx.Module):
    """``num_blocks`` reversible coupling blocks with NNX sub-modules ``F`` and ``G``.

    ``make_f(rngs)`` and ``make_g(rngs)`` build one block's F and G, each mapping
    ``[..., C/2] -> [..., C/2]``. Their parameters are created stacked along a leading block
    axis (``self.f`` / ``self.g``) and the stage runs through :func:`reversible_stage` under
    ``memory_mode``. BatchNorm statistics are updated once per forward; dropout and other RNG
    streams held by the sub-modules are replayed exactly in the backward. ``backward`` is
    ``"streamlined"`` (default) or ``"naive"`` (see :func:`reversible_stage`).

    Example::

        stage = ReversibleSequence(lambda r: Branch(64, rngs=r), lambda r: Branch(64, rngs=r),
                                   num_blocks=4, rngs=nnx.Rngs(0))
        y = stage(x)   # x [T, B, H, W, 128]
        y1, y2 = stage((x1, x2))   # or the halves [T, B, H, W, 64] each, returned as halves
    """

    def __init__(
        self,
        make_f: Callable[[nnx.Rngs], nnx.Module],
        make_g: Callable[[nnx.Rngs], nnx.Module],
        num_blocks: int,
        *,
        rngs: nnx.Rngs,
        memory_mode: str = "reversible",
        backward: str = "streamlined",
    ) -> None:
        check_memory_mode(memory_mode)
        _check_backward(backward)
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.memory_mode = memory_mode
        self.backward = backward
        self.f = _stack_modules(make_f, num_blocks, rngs)
        self.g = _stack_modules(make_g, num_blocks, rngs)

    def __call__(self, x: jax.Array | tuple[jax.Array, jax.Array]
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The stage over ``x``, an array or a pair of halves; ``y`` comes back in that form."""
        f_fn, f_params, f_state = remat.module_block_fn(self.f)
        g_fn, g_params, g_state = remat.module_block_fn(self.g)
        y, ((f_new, f_rate), (g_new, g_rate)) = reversible_stage(
            f_fn, g_fn, (f_params, g_params), (f_state, g_state), x,
            memory_mode=self.memory_mode, backward=self.backward)
        nnx.update(self.f, f_new)
        nnx.update(self.g, g_new)
        rates = [r for r in (f_rate, g_rate) if r is not None]
        if rates:  # [num_blocks, layers] each: every spiking layer of every block's F and G
            sow_intermediate(self, "firing_rate", jax.lax.stop_gradient(
                jnp.concatenate([jnp.reshape(r, (self.num_blocks, -1)) for r in rates], 1)))
        return y

