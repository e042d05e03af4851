"""A reversible spiking neuron node: our reconstruction of Lei et al.'s node (arXiv 2308.08649).

The paper ("Towards Zero Memory Footprint Spiking Neural Network Training") has no public code
and its method section could not be read; what is known (docs/revnode.md): each
time step's state is split into two groups ``[V1, V2]``, inputs ``[X1, X2]`` and outputs
``[Y1, Y2]`` are coupled additively, the outputs are real-valued (not binary spikes), an extra
updated potential is carried into the next step, and a "streamlined" backward avoids recomputing
what it can derive. Everything below is OUR formulation; where the published description is
ambiguous we say so.

Equations (per time step ``t``, channels split into halves; ``k = 1 - 1/tau``)::

    H1 = k V1[t-1] + (1 - k) X2[t]       S1 = Heaviside(H1 - V_th)   V1[t] = H1 - V_th S1
    Y1 = X1[t] + a S1
    H2 = k V2[t-1] + (1 - k) Y1          S2 = Heaviside(H2 - V_th)   V2[t] = H2 - V_th S2
    Y2 = X2[t] + a S2

Group 1's LIF neurons are driven by ``X2`` and add their spikes to ``X1``; group 2's are driven
by ``Y1`` and add theirs to ``X2`` (RevNet additive coupling with a LIF neuron as coupling
function). Reset is soft (reset by subtraction); ``V[-1] = 0``. The node maps
``[T, ..., C] -> [T, ..., C]`` and its output ``[Y1, Y2]`` is real-valued, as the reviewers
report for the paper's node. (Ambiguities: whether the paper's outputs feed the next layer
directly or are spikes again, which reset it uses, and whether ``V̂`` is a pre-reset potential:
unknown. We read ``V̂`` as ``H``, the potential before reset; our node carries ``V`` and derives
``H = V[t] + V_th S`` in the backward.)

Why it stores a few bits per neuron and step. Reconstructing ``V[t-1]`` from ``V[t]`` needs
(i) the spike ``S[t]``: the soft reset is many-to-one, a ``V[t]`` in ``[0, V_th)`` arises both
with and without a spike, and the output ``Y = X + a S`` does not reveal ``S`` because ``X`` is
unknown; (ii) the bits the leak shifts out: ``k V`` with ``k < 1`` contracts, so running it
backwards in floating point amplifies rounding by ``1/k`` per step (``2**32`` over 32 steps at
``tau = 2``). Neither can be recovered from outputs and final potentials alone, so exact
reconstruction needs ``1 + d`` bits per neuron and step, where ``k = n / 2**d``. We therefore
run the membrane arithmetic in fixed point (integers in units of ``2**-frac_bits``):
``H * 2**d = n V + (2**d - n) I`` exactly, ``H`` is its floor and the ``d`` remainder bits are
kept, bit-packed, with the spike bit. Inputs are rounded to that grid on entry (straight-through
gradient), so ``Y`` and every potential are exactly representable and the backward reconstructs
``X``, ``H`` and every ``V[t]`` with ZERO error. At ``tau = 2`` (``k = 1/2``) that is 2 bits per
neuron-step, 1/16 of one float32; the residuals are the outputs, the final potentials and these
bit planes, nothing per step in floating point. ``tau`` must make ``1 - 1/tau = n / 2**d`` with
``d <= 8`` (2, 4, 4/3, 8/5, 8, ...).

Backward (``backward="streamlined"``, default): per step, reverse the integer update (no neuron
evaluation), which yields ``H`` itself, and apply the closed-form local derivatives::

    gS2 = a gY2 - V_th gV2[t]            gH2 = gV2[t] + gS2 * sg'(H2 - V_th)
    gV2[t-1] = k gH2                     gY1 += (1 - k) gH2
    gS1 = a gY1 - V_th gV1[t]            gH1 = gV1[t] + gS1 * sg'(H1 - V_th)
    gV1[t-1] = k gH1                     gX1 = gY1,  gX2 = gY2 + (1 - k) gH1

(``detach_reset`` drops the ``- V_th gV`` terms). ``backward="naive"`` is the usual
reversible-layer backward: reconstruct, then evaluate the step again inside ``jax.vjp`` and pull
back, an ``optimization_barrier`` keeping XLA from sharing the two evaluations.
``memory_mode="none"`` runs the same equations under plain autodiff (:func:`revnode_reference`),
the reference the tests compare gradients with.

Limits: inputs must satisfy ``|x| < 2**(mantissa - frac_bits - 1)`` (2,048 for float32 with the
default ``frac_bits=12``) and potentials stay in int32; the grid (2.4e-4 by default) quantises
inputs before they reach the neurons.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.nnx_utils import sow_intermediate
from revsnn_jax.neurons import surrogate as surrogate_lib
from revsnn_jax.neurons.multistep import scan_unroll

__all__ = [
    "BACKWARDS",
    "NODE_MEMORY_MODES",
    "RevNodeConfig",
    "ReversibleNode",
    "reversible_node",
    "revnode_forward_residuals",
    "revnode_inverse",
    "revnode_reference",
]

BACKWARDS = ("streamlined", "naive")
NODE_MEMORY_MODES = ("reversible", "none")
Array = jax.Array


@dataclasses.dataclass(frozen=True)
class RevNodeConfig:
    """Constants of the reversible node (hashable: a static argument)."""

    tau: float = 2.0
    v_threshold: float = 1.0
    coupling: float = 1.0  # ``a``
    surrogate: Any = "sigmoid"
    detach_reset: bool = False
    frac_bits: int = 12
    #: ``jax.lax.scan``'s unroll over T (:func:`revsnn_jax.neurons.scan_unroll`: by default
    #: ``T <= 16`` is unrolled completely).
    unroll: int | bool | None = None

    def __post_init__(self) -> None:
        scan_unroll(1, self.unroll)  # rejects a bad value here
        if not (1.0 <= self.tau < math.inf):
            raise ValueError(f"tau must be finite and >= 1, got {self.tau}")
        if not 1 <= self.frac_bits <= 20:
            raise ValueError(f"frac_bits must be in 1..20, got {self.frac_bits}")
        _leak_fraction(self.tau)
        for name in ("v_threshold", "coupling"):
            value = getattr(self, name) * 2 ** self.frac_bits
            if value != round(value):
                raise ValueError(f"{name} must be a multiple of 2**-frac_bits, got "
                                 f"{getattr(self, name)}")
        sg = surrogate_lib.get(self.surrogate)
        if not isinstance(sg, surrogate_lib.Surrogate):
            raise TypeError("the reversible node needs a named surrogate (its backward uses the "
                            "closed-form derivative)")

    @property
    def sg(self) -> surrogate_lib.Surrogate:
        return surrogate_lib.get(self.surrogate)

    @property
    def leak(self) -> tuple[int, int]:
        return _leak_fraction(self.tau)


def _leak_fraction(tau: float) -> tuple[int, int]:
    """``k = 1 - 1/tau`` as ``(n, d)`` with ``k = n / 2**d`` exactly, ``d <= 8``."""
    k = 1.0 - 1.0 / tau
    for d in range(9):
        n = k * 2 ** d
        if n == round(n):
            return int(n), d
    raise ValueError(
        f"tau={tau} gives a leak 1 - 1/tau = {k} that is not n / 2**d with d <= 8; the "
        "reversible node's exact fixed-point membrane needs such a leak (e.g. tau = 2, 4, 4/3, "
        "8/5 or 8)")


# --------------------------------------------------------------------------- fixed point
def _round_ste(x: Array, scale: float) -> Array:
    """``round(x * scale) / scale`` forward, identity gradient."""
    q = jnp.round(x * scale) / scale
    return x + jax.lax.stop_gradient(q - x)


def _to_int(x: Array, scale: float) -> Array:
    return jnp.round(x * scale).astype(jnp.int32)


def _int_step(cfg: RevNodeConfig, m1, m2, mx1, mx2):
    """One exact integer step. Returns new potentials, outputs, H's, spikes and remainders."""
    n, d = cfg.leak
    q = 2 ** cfg.frac_bits
    vth, a = int(cfg.v_threshold * q), int(cfg.coupling * q)
    mask = 2 ** d - 1
    p1 = n * m1 + (2 ** d - n) * mx2
    mh1, r1 = p1 >> d, p1 & mask
    s1 = (mh1 >= vth).astype(jnp.int32)
    my1 = mx1 + a * s1
    p2 = n * m2 + (2 ** d - n) * my1
    mh2, r2 = p2 >> d, p2 & mask
    s2 = (mh2 >= vth).astype(jnp.int32)
    my2 = mx2 + a * s2
    return mh1 - vth * s1, mh2 - vth * s2, my1, my2, (mh1, mh2, s1, s2, r1, r2)


def _int_inverse_step(cfg: RevNodeConfig, m1n, m2n, my1, my2, s1, s2, r1, r2):
    """Reverse :func:`_int_step` exactly: previous potentials, inputs and the two H's."""
    n, d = cfg.leak
    q = 2 ** cfg.frac_bits
    vth, a = int(cfg.v_threshold * q), int(cfg.coupling * q)
    mh2 = m2n + vth * s2
    m2 = ((mh2 << d) + r2 - (2 ** d - n) * my1)
    mx2 = my2 - a * s2
    mh1 = m1n + vth * s1
    m1 = ((mh1 << d) + r1 - (2 ** d - n) * mx2)
    if n > 1:
        m2, m1 = m2 // n, m1 // n
    elif n == 0:  # no memory: V[t-1] does not influence H; any value reproduces the step
        m2, m1 = jnp.zeros_like(m2), jnp.zeros_like(m1)
    mx1 = my1 - a * s1
    return m1, m2, mx1, mx2, mh1, mh2


# --------------------------------------------------------------------------- bit planes
def _pack(s: Array, r: Array, d: int) -> Array:
    """Spike bit and ``d`` remainder bits as ``1 + d`` bit planes packed along channels."""
    planes = [s.astype(jnp.bool_)] + [((r >> b) & 1).astype(jnp.bool_) for b in range(d)]
    return jnp.stack([jnp.packbits(p, axis=-1) for p in planes])


def _unpack(packed: Array, channels: int, d: int) -> tuple[Array, Array]:
    planes = jnp.unpackbits(packed, axis=-1, count=channels).astype(jnp.int32)
    s = planes[0]
    r = sum((planes[1 + b] << b for b in range(d)), jnp.zeros_like(s))
    return s, r


def _split(x: Array) -> tuple[Array, Array]:
    c = x.shape[-1]
    if c % 2:
        raise ValueError(f"the reversible node splits channels into two groups; got {c} "
                         f"channels (shape {x.shape}), use an even count")
    return x[..., : c // 2], x[..., c // 2:]


def _check_input(x: Array) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be time-major [T, ..., C] with T >= 1, got {x.shape}")
    return x


# --------------------------------------------------------------------------- reference
def revnode_reference(x: Array, cfg: RevNodeConfig = RevNodeConfig(),
                      return_potentials: bool = False):
    """The node's equations under plain autodiff (everything stored; ``memory_mode="none"``).

    Values are the exact fixed-point ones; gradients follow the real-valued equations of the
    module docstring through the surrogate (straight-through for the rounding). With
    ``return_potentials`` also returns ``(V1, V2)`` for every step, ``[T, ..., C/2]`` each.
    """
    y, potentials, _ = _reference(x, cfg)
    return (y, potentials) if return_potentials else y


def _reference(x: Array, cfg: RevNodeConfig):
    """:func:`revnode_reference`'s ``(y, (V1, V2), firing rate)``; the rate (the mean of both
    groups' spikes over every neuron and step) carries no gradient."""
    x = _check_input(x)
    n, d = cfg.leak
    q = float(2 ** cfg.frac_bits)
    k = n / 2 ** d
    vth = cfg.v_threshold
    sg = cfg.sg
    x1, x2 = _split(_round_ste(x, q))

    def neuron(v, inp):
        h_float = k * v + (1 - k) * inp
        p = n * _to_int(v, q) + (2 ** d - n) * _to_int(inp, q)
        h = h_float + jax.lax.stop_gradient((p >> d).astype(x.dtype) / q - h_float)
        s = sg(h - vth)
        s_reset = jax.lax.stop_gradient(s) if cfg.detach_reset else s
        return s, h - vth * s_reset

    def step(carry, xt):
        v1, v2 = carry
        xt1, xt2 = xt
        s1, v1 = neuron(v1, xt2)
        y1 = xt1 + cfg.coupling * s1
        s2, v2 = neuron(v2, y1)
        y2 = xt2 + cfg.coupling * s2
        rate = jax.lax.stop_gradient((s1.mean() + s2.mean()) / 2)
        return (v1, v2), (jnp.concatenate([y1, y2], -1), v1, v2, rate)

    zeros = jnp.zeros(x1.shape[1:], x.dtype)
    _, (y, v1s, v2s, rates) = jax.lax.scan(step, (zeros, zeros), (x1, x2),
                                           unroll=scan_unroll(x.shape[0], cfg.unroll))
    return y, (v1s, v2s), rates.mean()


# --------------------------------------------------------------------------- custom VJP
def _forward(cfg: RevNodeConfig, x: Array, local_fn=None):
    """The node's integer forward over ``x [T, ...]``; ``local_fn`` (a per-step map without
    parameters, e.g. pooling) is applied to each step's output inside the scan, so that no
    ``[T, ...]`` array of the unmapped output's size exists."""
    _, d = cfg.leak
    q = float(2 ** cfg.frac_bits)
    channels = x.shape[-1] // 2

    def step(carry, xt):
        m1, m2 = carry
        mx1, mx2 = _split(_to_int(xt, q))  # split per step: no [T, ...] half copies
        m1, m2, my1, my2, (_, _, s1, s2, r1, r2) = _int_step(cfg, m1, m2, mx1, mx2)
        y = jnp.concatenate([my1, my2], -1).astype(x.dtype) / q
        if local_fn is not None:
            y = local_fn(y)
        rate = (s1.mean(dtype=x.dtype) + s2.mean(dtype=x.dtype)) / 2  # a scalar per step
        return (m1, m2), (y, _pack(s1, r1, d), _pack(s2, r2, d), rate)

    zeros = jnp.zeros((*x.shape[1:-1], channels), jnp.int32)
    (m1, m2), (y, bits1, bits2, rates) = jax.lax.scan(
        step, (zeros, zeros), x, unroll=scan_unroll(x.shape[0], cfg.unroll))
    return y, (m1, m2, bits1, bits2, channels), rates.mean()


def _local_grads(cfg: RevNodeConfig, dtype, h1, h2, gy1, gy2, gv1, gv2):
    """Closed-form cotangents of one step (the streamlined backward)."""
    n, d = cfg.leak
    k = n / 2 ** d
    vth, a = cfg.v_threshold, cfg.coupling
    sg = cfg.sg
    gs2 = a * gy2 if cfg.detach_reset else a * gy2 - vth * gv2
    gh2 = gv2 + gs2 * sg.derivative(h2 - vth)
    gy1 = gy1 + (1 - k) * gh2
    gs1 = a * gy1 if cfg.detach_reset else a * gy1 - vth * gv1
    gh1 = gv1 + gs1 * sg.derivative(h1 - vth)
    return gy1, gy2 + (1 - k) * gh1, (k * gh1).astype(dtype), (k * gh2).astype(dtype)


def _reference_step(cfg: RevNodeConfig, v1, v2, x1, x2):
    """One step of :func:`revnode_reference` (floats on the grid), for the naive backward."""
    n, d = cfg.leak
    q = float(2 ** cfg.frac_bits)
    k = n / 2 ** d
    sg = cfg.sg

    def neuron(v, inp):
        h_float = k * v + (1 - k) * inp
        p = n * _to_int(v, q) + (2 ** d - n) * _to_int(inp, q)
        h = h_float + jax.lax.stop_gradient((p >> d).astype(v.dtype) / q - h_float)
        s = sg(h - cfg.v_threshold)
        s_reset = jax.lax.stop_gradient(s) if cfg.detach_reset else s
        return s, h - cfg.v_threshold * s_reset

    s1, v1 = neuron(v1, x2)
    y1 = x1 + cfg.coupling * s1
    s2, v2 = neuron(v2, y1)
    return v1, v2, y1, x2 + cfg.coupling * s2


def _backward_step(cfg: RevNodeConfig, backward: str, dtype, channels: int, carry, b1, b2,
                   in1, in2, gy1, gy2, inputs_given: bool = False):
    """One reverse step of the node's backward: ``(carry, gX1, gX2)``, carry
    ``(V1[t], V2[t], gV1[t], gV2[t])`` -> ``(V1[t-1], V2[t-1], gV1[t-1], gV2[t-1])`` (potentials
    in fixed point). ``in1, in2`` are the step's outputs ``Y1, Y2`` (floats on the grid), or with
    ``inputs_given`` its inputs ``X1, X2`` in integer units; ``b1, b2`` its bit planes."""
    _, d = cfg.leak
    q = float(2 ** cfg.frac_bits)
    m1n, m2n, gv1, gv2 = carry
    s1, r1 = _unpack(b1, channels, d)
    s2, r2 = _unpack(b2, channels, d)
    if inputs_given:
        a = int(cfg.coupling * 2 ** cfg.frac_bits)
        my1, my2 = in1 + a * s1, in2 + a * s2
    else:
        my1, my2 = _to_int(in1, q), _to_int(in2, q)
    m1, m2, mx1, mx2, mh1, mh2 = _int_inverse_step(cfg, m1n, m2n, my1, my2, s1, s2, r1, r2)
    if backward == "streamlined":
        h1, h2 = mh1.astype(dtype) / q, mh2.astype(dtype) / q
        gx1, gx2, gv1, gv2 = _local_grads(cfg, dtype, h1, h2, gy1, gy2, gv1, gv2)
    else:
        v1, v2, x1, x2 = jax.lax.optimization_barrier(
            (m1.astype(dtype) / q, m2.astype(dtype) / q, mx1.astype(dtype) / q,
             mx2.astype(dtype) / q))
        _, pullback = jax.vjp(functools.partial(_reference_step, cfg), v1, v2, x1, x2)
        gv1, gv2, gx1, gx2 = pullback((gv1, gv2, gy1, gy2))
    return (m1, m2, gv1, gv2), gx1, gx2


@functools.cache
def _make_node(cfg: RevNodeConfig, backward: str):
    @jax.custom_vjp
    def node(x):
        y, _, rate = _forward(cfg, x)
        return y, rate

    def node_fwd(x):
        y, residuals, rate = _forward(cfg, x)
        # Residuals: the output, the final potentials (int32) and 1 + d bit planes per group.
        # The firing rate (a scalar) leaves as a second output; it has no gradient.
        return (y, rate), (y, *residuals[:4])

    def node_bwd(residuals, cotangents):
        gy, _ = cotangents
        y, m1, m2, bits1, bits2 = residuals
        dtype = y.dtype
        channels = y.shape[-1] // 2

        def body(carry, step):
            yt, b1, b2, gyt = step
            yt1, yt2 = _split(yt)  # split per step: no [T, ...] half copies
            gyt1, gyt2 = _split(gyt)
            carry, gx1, gx2 = _backward_step(cfg, backward, dtype, channels, carry, b1, b2,
                                             yt1, yt2, gyt1, gyt2)
            return carry, jnp.concatenate([gx1, gx2], -1)

        zeros = jnp.zeros(m1.shape, dtype)
        _, gx = jax.lax.scan(body, (m1, m2, zeros, zeros), (y, bits1, bits2, gy),
                             reverse=True, unroll=scan_unroll(y.shape[0], cfg.unroll))
        return (gx,)

    node.defvjp(node_fwd, node_bwd)
    return node


def _check_range(x: Array, cfg: RevNodeConfig) -> None:
    mantissa = jnp.finfo(x.dtype).nmant + 1
    if mantissa - cfg.frac_bits - 1 < 4:
        raise ValueError(f"dtype {x.dtype} has too few mantissa bits for frac_bits="
                         f"{cfg.frac_bits}; keep the node's stream in float32 or float64")


def reversible_node(x: Array, cfg: RevNodeConfig = RevNodeConfig(), *,
                    memory_mode: str = "reversible", backward: str = "streamlined",
                    return_rate: bool = False):
    """Run the reversible node over ``x`` ``[T, ..., C]`` from zero potentials; returns ``Y``.

    ``memory_mode="reversible"`` uses one ``custom_vjp`` (residuals: output, final potentials,
    ``1 + d`` bits per neuron-step); ``"none"`` is plain autodiff of the same equations.
    ``backward`` picks the reversible backward: ``"streamlined"`` or ``"naive"``.
    ``return_rate=True`` returns ``(Y, rate)``: the mean spike count of both groups per neuron
    and step (no gradient; a scalar the forward computes anyway).
    """
    if memory_mode not in NODE_MEMORY_MODES:
        raise ValueError(f"unknown memory_mode {memory_mode!r}; choose one of "
                         f"{', '.join(NODE_MEMORY_MODES)}")
    if backward not in BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}; choose one of {', '.join(BACKWARDS)}")
    x = _check_input(x)
    _split(x)
    _check_range(x, cfg)
    if memory_mode == "none":
        y, _, rate = _reference(x, cfg)
    else:
        q = float(2 ** cfg.frac_bits)
        # Round onto the grid with a straight-through gradient, outside the custom VJP.
        y, rate = _make_node(cfg, backward)(_round_ste(x, q))
    return (y, jax.lax.stop_gradient(rate)) if return_rate else y


def revnode_inverse(y: Array, final_potentials: tuple[Array, Array], bits: tuple[Array, Array],
                    cfg: RevNodeConfig = RevNodeConfig()):
    """Reconstruct inputs and every potential from the outputs (what the backward does).

    ``final_potentials`` and ``bits`` are the residuals :func:`revnode_forward_residuals`
    returns. Returns ``(x, (V1, V2))`` with ``V`` shaped ``[T, ..., C/2]`` (``V[t]`` after step
    ``t``).
    """
    _, d = cfg.leak
    q = float(2 ** cfg.frac_bits)
    y1, y2 = _split(y)
    channels = y1.shape[-1]

    def body(carry, step):
        m1n, m2n = carry
        yt1, yt2, b1, b2 = step
        s1, r1 = _unpack(b1, channels, d)
        s2, r2 = _unpack(b2, channels, d)
        m1, m2, mx1, mx2, _, _ = _int_inverse_step(cfg, m1n, m2n, _to_int(yt1, q),
                                                   _to_int(yt2, q), s1, s2, r1, r2)
        x = jnp.concatenate([mx1, mx2], -1).astype(y.dtype) / q
        return (m1, m2), (x, m1n.astype(y.dtype) / q, m2n.astype(y.dtype) / q)

    _, (x, v1s, v2s) = jax.lax.scan(body, final_potentials, (y1, y2, *bits), reverse=True,
                                    unroll=scan_unroll(y.shape[0], cfg.unroll))
    return x, (v1s, v2s)


def revnode_forward_residuals(x: Array, cfg: RevNodeConfig = RevNodeConfig()):
    """The forward pass and the residuals the backward keeps: ``(y, (m1, m2), (bits1, bits2))``.

    ``m1, m2`` are the final potentials in fixed point (int32, units of ``2**-frac_bits``).
    """
    x = _check_input(x)
    y, (m1, m2, bits1, bits2, _), _ = _forward(cfg, _round_ste(x, float(2 ** cfg.frac_bits)))
    return y, (m1, m2), (bits1, bits2)


# --------------------------------------------------------------------------- Flax NNX module
class ReversibleNode(nnx.Module):
    """Drop-in replacement for a multi-step LIF node on ``[T, B, ..., C]`` (no parameters).

    Output is real-valued ``[Y1, Y2]`` (module docstring). ``memory_mode``: ``"reversible"``
    (reconstruct; ``backward`` ``"streamlined"`` or ``"naive"``) or ``"none"`` (plain autodiff).
    Records its firing rate (both groups' spikes) as ``nnx.Intermediate`` ``firing_rate``.
    """

    def __init__(self, config: RevNodeConfig = RevNodeConfig(), *,
                 memory_mode: str = "reversible", backward: str = "streamlined") -> None:
        if memory_mode not in NODE_MEMORY_MODES:
            raise ValueError(f"unknown memory_mode {memory_mode!r}; choose one of "
                             f"{', '.join(NODE_MEMORY_MODES)}")
        if backward not in BACKWARDS:
            raise ValueError(f"unknown backward {backward!r}")
        self.config = config
        self.memory_mode = memory_mode
        self.backward = backward

    def __call__(self, x: Array) -> Array:
        y, rate = reversible_node(x, self.config, memory_mode=self.memory_mode,
                                  backward=self.backward, return_rate=True)
        sow_intermediate(self, "firing_rate", rate)
        return y
