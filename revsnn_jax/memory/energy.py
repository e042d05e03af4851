"""Synaptic operations (SOPs) and an energy estimate of a spiking network's forward pass.

The convention of the Spikingformer / SEW-ResNet / Spikformer papers, with the 45 nm CMOS
energies of Horowitz (2014), "Computing's energy problem (and what we can do about it)",
ISSCC, pp. 10-14:

* a convolution or linear layer ``l`` costs ``MAC_l`` multiply-accumulates when its input is
  dense (real-valued), e.g. the encoding layer that sees the image;
* when its input is spikes (0/1) each MAC becomes an accumulate that happens only where a spike
  arrived: ``SOP_l = r_l * MAC_l`` with ``r_l`` the layer's input firing rate (fraction of
  non-zero input entries);
* ``E = E_AC * sum_{spiking l} SOP_l + E_MAC * sum_{dense l} MAC_l`` with
  ``E_AC = 0.9 pJ`` (32-bit float add) and ``E_MAC = 4.6 pJ`` (32-bit float multiply + add).

Which layers count as "dense" is decided from the data, not from the position: a layer whose
input is not entirely 0/1 at that call (the encoding layer, a classifier on averaged spikes,
layers fed by real-valued coupling streams) is counted as MACs. In networks where only the
first layer sees real values this is exactly the papers' "first layer as MAC" rule.

Layers are found by walking the function's jaxpr: every ``dot_general`` (linear layers,
attention products) and ``conv_general_dilated`` (convolutions) is a layer. Its MACs are
counted from shapes (``dot_general``: output size times the contracted size;
convolution: output size times ``kh * kw * C_in / groups``, padding included, as the papers'
counters do) and its input firing rate from the values, per call: calls inside ``lax.scan``
(time steps, blocks of a reversible stage) are counted once per iteration with that
iteration's rate. Element-wise work (BatchNorm, neurons, residual additions) is not counted,
as in the papers. Only the forward pass is counted (``custom_vjp`` functions are evaluated
through their primal function).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

__all__ = ["E_AC", "E_MAC", "LayerOps", "SynapticOps", "energy_joules",
           "synaptic_operations"]

#: Energy of one accumulate (32-bit float add), 45 nm (Horowitz 2014): 0.9 pJ.
E_AC = 0.9e-12
#: Energy of one multiply-accumulate (32-bit float mult 3.7 pJ + add 0.9 pJ), 45 nm: 4.6 pJ.
E_MAC = 4.6e-12

_LAYER_PRIMITIVES = ("dot_general", "conv_general_dilated")
# call-like primitives whose sub-jaxpr is evaluated inline on the same inputs
_CALL_PARAMS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
                "core_call": "call_jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr",
                "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
                "custom_vjp_call_jaxpr": "fun_jaxpr"}


@dataclasses.dataclass(frozen=True)
class LayerOps:
    """One ``dot_general`` / ``conv_general_dilated`` of the traced function, summed over
    every call (scan iterations).

    ``dense_macs``: MACs of all calls; ``sops``: ``sum r * MAC`` over the calls whose input was
    spikes (0/1); ``macs``: MACs of the calls whose input was real-valued; ``firing_rate``:
    the input's non-zero fraction over all calls; ``spiking_fraction``: the share of
    ``dense_macs`` whose input was spikes (1.0: a spiking layer, 0.0: a dense one).
    """

    name: str
    primitive: str
    calls: int
    dense_macs: float
    sops: float
    macs: float
    firing_rate: float
    spiking_fraction: float


@dataclasses.dataclass(frozen=True)
class SynapticOps:
    """The layers of one forward pass and their totals (for the whole batch given)."""

    layers: tuple[LayerOps, ...]

    @property
    def sops(self) -> float:
        """Synaptic operations (accumulates) of the spike-driven layers."""
        return float(sum(layer.sops for layer in self.layers))

    @property
    def macs(self) -> float:
        """MACs of the layers whose input was dense (real-valued)."""
        return float(sum(layer.macs for layer in self.layers))

    @property
    def dense_macs(self) -> float:
        """MACs of the same network run as an ANN (every input dense)."""
        return float(sum(layer.dense_macs for layer in self.layers))

    @property
    def spiking_macs(self) -> float:
        """Dense MACs of the calls whose input was spikes (the denominator of the rate)."""
        return float(sum(layer.spiking_fraction * layer.dense_macs for layer in self.layers))

    @property
    def firing_rate(self) -> float:
        """MAC-weighted input firing rate of the spike-driven layers, ``SOPs / spiking MACs``
        (0.0 when no layer is spike-driven)."""
        spiking = self.spiking_macs
        return self.sops / spiking if spiking else 0.0

    def energy(self, e_ac: float = E_AC, e_mac: float = E_MAC) -> float:
        """``e_ac * SOPs + e_mac * MACs`` in joules (see :func:`energy_joules`)."""
        return energy_joules(self.sops, self.macs, e_ac=e_ac, e_mac=e_mac)

    def table(self) -> str:
        """A plain-text table, one row per layer."""
        lines = [f"{'layer':<44} {'calls':>5} {'dense MACs':>12} {'rate':>6} {'SOPs':>12} "
                 f"{'MACs':>12}"]
        for layer in self.layers:
            lines.append(f"{layer.name:<44} {layer.calls:>5} {layer.dense_macs:>12.4g} "
                         f"{layer.firing_rate:>6.3f} {layer.sops:>12.4g} {layer.macs:>12.4g}")
        lines.append(f"{'total':<44} {'':>5} {self.dense_macs:>12.4g} {'':>6} "
                     f"{self.sops:>12.4g} {self.macs:>12.4g}")
        lines.append(f"energy {self.energy() * 1e3:.4g} mJ (E_AC {E_AC * 1e12:.1f} pJ, "
                     f"E_MAC {E_MAC * 1e12:.1f} pJ)")
        return "\n".join(lines)


def energy_joules(sops: float, macs: float, *, e_ac: float = E_AC,
                  e_mac: float = E_MAC) -> float:
    """``E = e_ac * SOPs + e_mac * MACs`` (joules); defaults 0.9 pJ / AC and 4.6 pJ / MAC,
    45 nm CMOS (Horowitz, ISSCC 2014), the values used by the Spikingformer and SEW papers."""
    if sops < 0 or macs < 0:
        raise ValueError(f"sops ({sops}) and macs ({macs}) must be >= 0")
    return float(e_ac * sops + e_mac * macs)


# --------------------------------------------------------------------------- the jaxpr walk
def _layer_macs(eqn: Any) -> int:
    out = eqn.outvars[0].aval
    if eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval
        return int(math.prod(out.shape) * math.prod(lhs.shape[d] for d in lhs_contract))
    if eqn.params.get("batch_group_count", 1) != 1:
        raise NotImplementedError(
            "conv_general_dilated with batch_group_count > 1 (a weight gradient) is not a "
            "forward layer; count the forward function only")
    rhs = eqn.invars[1].aval
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    return int(math.prod(out.shape) * math.prod(rhs.shape) // rhs.shape[out_feature_dim])


def _read(env: dict, v: Any) -> Any:
    return v.val if isinstance(v, jex.Literal) else env[v]


def _has_layers(jaxpr: Any) -> bool:
    """Whether ``jaxpr`` (or any jaxpr nested in it) holds a convolution or matrix product."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _LAYER_PRIMITIVES:
            return True
        if any(_has_layers(_open(sub)[0]) for sub in jex.jaxprs_in_params(eqn.params)):
            return True
    return False


def _open(j: Any) -> tuple[Any, Sequence[Any]]:
    return (j.jaxpr, j.consts) if isinstance(j, jex.ClosedJaxpr) else (j, ())


def _record(eqn: Any, invals: Sequence[Any]) -> dict[str, Any]:
    """Traced per-call counts of one layer: which operand is the input, its rate, SOP/MAC."""
    macs = _layer_macs(eqn)
    lhs, rhs = invals[0], invals[1]

    def stats(x):
        binary = jnp.all((x == 0) | (x == 1))
        return binary, jnp.count_nonzero(x).astype(jnp.float32) / x.size

    lhs_binary, lhs_rate = stats(lhs)
    if eqn.primitive.name == "dot_general":  # the input may be either operand (x @ W or W @ x)
        rhs_binary, rhs_rate = stats(rhs)
        use_rhs = jnp.logical_and(~lhs_binary, rhs_binary)
        binary = lhs_binary | rhs_binary
        rate = jnp.where(use_rhs, rhs_rate, lhs_rate)
    else:  # convolution: lhs is the input, rhs the kernel
        binary, rate = lhs_binary, lhs_rate
    fmacs = jnp.float32(macs)
    return {"calls": jnp.float32(1.0), "dense_macs": fmacs,
            "sops": jnp.where(binary, rate * fmacs, 0.0),
            "macs": jnp.where(binary, 0.0, fmacs),
            "spiking_macs": jnp.where(binary, fmacs, 0.0),
            "rate_sum": rate}


def _run(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], prefix: str
         ) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Evaluate ``jaxpr`` (under tracing) and return its outputs and per-layer records."""
    env: dict = {}
    for var, val in zip(jaxpr.constvars, consts, strict=True):
        env[var] = val
    for var, val in zip(jaxpr.invars, args, strict=True):
        env[var] = val
    records: dict[str, dict[str, Any]] = {}
    counter: dict[str, int] = {}

    def name_of(kind: str) -> str:
        counter[kind] = counter.get(kind, 0) + 1
        return f"{prefix}{kind}[{counter[kind] - 1}]"

    for eqn in jaxpr.eqns:
        invals = [_read(env, v) for v in eqn.invars]
        prim = eqn.primitive.name
        if prim in _LAYER_PRIMITIVES:
            outvals = [eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))]
            records[name_of(prim)] = _record(eqn, invals)
        elif prim == "scan":
            outvals, sub = _run_scan(eqn, invals, name_of("scan") + "/")
            records.update(sub)
        elif prim == "cond":
            branches = eqn.params["branches"]
            outs, subs = [], []
            for i, branch in enumerate(branches):
                o, s = _run(branch.jaxpr, branch.consts, invals[1:], f"{prefix}cond.{i}/")
                outs.append(o)
                subs.append(s)
            index = jnp.clip(invals[0].astype(jnp.int32), 0, len(branches) - 1)
            outvals = [jax.lax.select_n(index, *vals) for vals in zip(*outs, strict=True)]
            for i, s in enumerate(subs):  # only the taken branch counts
                for key, rec in s.items():
                    records[key] = jax.tree.map(lambda v, i=i, index=index: jnp.where(index == i, v, 0.0),
                                                rec)
        elif prim in _CALL_PARAMS and _CALL_PARAMS[prim] in eqn.params:
            inner, inner_consts = _open(eqn.params[_CALL_PARAMS[prim]])
            outvals, sub = _run(inner, inner_consts, invals, name_of(prim) + "/")
            records.update(sub)
        else:
            if any(_has_layers(_open(sub)[0]) for sub in jex.jaxprs_in_params(eqn.params)):
                raise NotImplementedError(
                    f"synaptic_operations cannot look inside {prim!r}, which holds "
                    "convolutions or matrix products; count a function that uses lax.scan, "
                    "jit, checkpoint, cond or custom_vjp/custom_jvp around its layers instead")
            with eqn.ctx.manager:
                out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = list(out) if eqn.primitive.multiple_results else [out]
        for var, val in zip(eqn.outvars, outvals, strict=True):
            if not isinstance(var, jex.DropVar):
                env[var] = val
    return [_read(env, v) for v in jaxpr.outvars], records


def _run_scan(eqn: Any, invals: Sequence[Any], prefix: str):
    p = eqn.params
    body, body_consts = _open(p["jaxpr"])
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, carry, xs = invals[:n_consts], invals[n_consts:n_consts + n_carry], \
        invals[n_consts + n_carry:]

    def step(carry, x):
        outs, recs = _run(body, body_consts, [*consts, *carry, *x], prefix)
        return outs[:n_carry], (outs[n_carry:], recs)

    carry, (ys, recs) = jax.lax.scan(step, list(carry), list(xs), length=p["length"],
                                     reverse=p["reverse"])
    summed = jax.tree.map(lambda v: v.sum(axis=0), recs)
    return [*carry, *ys], summed


def _flatten_args(args: Sequence[Any]) -> list[Any]:
    return jax.tree.leaves(args)


def synaptic_operations(fn: Callable[..., Any], *args: Any) -> SynapticOps:
    """Count the synaptic operations of ``fn(*args)`` (a pure forward function).

    ``fn`` is traced with :func:`jax.make_jaxpr`; every ``dot_general`` and
    ``conv_general_dilated`` it executes is a layer with ``MAC`` multiply-accumulates per call
    and input firing rate ``r`` (non-zero fraction of its input operand at that call). Per
    call, an input that is entirely 0/1 makes it spike-driven, ``SOP = r * MAC``; otherwise it
    is dense and counts ``MAC`` multiply-accumulates. Totals are for the batch in ``args``;
    divide by the batch for per-example numbers. ``SynapticOps.energy()`` applies
    ``E = 0.9 pJ * SOPs + 4.6 pJ * MACs`` (Horowitz 2014, 45 nm).

    Example::

        ops = synaptic_operations(lambda p, s, x: fns.apply(p, s, x, train=False)[0],
                                  params, state, images)
        print(ops.table(), ops.energy() / images.shape[0], "J per image")
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable forward function, got {type(fn).__name__}")
    closed = jax.make_jaxpr(fn)(*args)
    leaves = _flatten_args(args)

    @jax.jit
    def run(consts, leaves):
        _, recs = _run(closed.jaxpr, consts, leaves, "")
        return recs

    recs = jax.device_get(run(closed.consts, leaves))
    prims = {}
    layers = []
    for name, rec in recs.items():
        prims[name] = name.rsplit("/", 1)[-1].split("[", 1)[0]
        calls = round(float(np.asarray(rec["calls"])))
        dense = float(rec["dense_macs"])
        layers.append(LayerOps(
            name=name, primitive=prims[name], calls=calls, dense_macs=dense,
            sops=float(rec["sops"]), macs=float(rec["macs"]),
            firing_rate=float(rec["rate_sum"]) / max(calls, 1),
            spiking_fraction=float(rec["spiking_macs"]) / dense if dense else 0.0))
    return SynapticOps(layers=tuple(layers))
