"""Parity with SpikingJelly itself: IF / LIF / PLIF against its multi-step nodes, in float64.

For every combination of neuron kind, reset (hard to 0, hard to ``v_reset=-0.1`` with
``v_threshold=0.5``, soft), ``decay_input``, ``detach_reset`` and surrogate (sigmoid, atan), the
same input runs through :mod:`revsnn_jax.neurons` (default initial potential) and through
SpikingJelly's ``IFNode`` / ``LIFNode`` / ``ParametricLIFNode`` (``step_mode="m"``, torch
backend, freshly reset). Spikes must agree exactly; the potential after every step, the final
potential and the surrogate gradient of a weighted spike sum (w.r.t. the input, and PLIF's
``w``) to 1e-12. Needs torch and SpikingJelly (``pip install -e '.[parity]'``); skipped
otherwise. Only this module turns on float64 in JAX, inside a context manager.
"""

from __future__ import annotations

import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="SpikingJelly parity needs torch (pip install -e '.[parity]')")
sj_neuron = pytest.importorskip(
    "spikingjelly.activation_based.neuron",
    reason="SpikingJelly parity needs spikingjelly (pip install -e '.[parity]')")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

from revsnn_jax import neurons  # noqa: E402
from revsnn_jax.neurons import surrogate  # noqa: E402

TOL = 1e-12
T, SHAPE = 8, (3, 5)
TAU = 2.0
PLIF_TAU = 3.0
# (v_threshold, v_reset): hard reset to 0, hard reset below 0 (the case that needs SpikingJelly's
# initial potential v_reset), soft reset
RESETS = {"hard0": (1.0, 0.0), "hard-0.1": (0.5, -0.1), "soft": (1.0, None)}
SURROGATES = {"sigmoid": (4.0, "Sigmoid"), "atan": (2.0, "ATan")}


def _configs():
    for kind in ("if", "lif", "plif"):
        decays = (True,) if kind == "if" else (True, False)
        for reset, decay, detach, surr in itertools.product(RESETS, decays, (False, True),
                                                            SURROGATES):
            yield kind, reset, decay, detach, surr


def _id(config):
    kind, reset, decay, detach, surr = config
    return f"{kind}-{reset}-decay{int(decay)}-detach{int(detach)}-{surr}"


CONFIGS = list(_configs())


def _inputs(config, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.4, 0.6, (T, *SHAPE))
    if config[0] != "if" and config[2]:  # decay_input divides the input by tau
        x = 2.5 * x
    weights = rng.normal(0.0, 1.0, (T, *SHAPE))
    return x, weights


def _spikingjelly(config, x, weights):
    """Spikes, potentials after every step, final potential, d(sum(weights * spikes))/dx and
    (PLIF) d/dw from SpikingJelly's multi-step node, float64."""
    kind, reset, decay, detach, surr = config
    v_th, v_reset = RESETS[reset]
    alpha, surr_name = SURROGATES[surr]
    kw = dict(v_threshold=v_th, v_reset=v_reset, detach_reset=detach, step_mode="m",
              surrogate_function=getattr(sj_surrogate, surr_name)(alpha=alpha),
              store_v_seq=True)
    cls = {"if": sj_neuron.IFNode, "lif": sj_neuron.LIFNode,
           "plif": sj_neuron.ParametricLIFNode}[kind]
    if "backend" in inspect.signature(cls.__init__).parameters:
        kw["backend"] = "torch"
    if kind == "lif":
        kw.update(tau=TAU, decay_input=decay)
    elif kind == "plif":
        kw.update(init_tau=PLIF_TAU, decay_input=decay)
    node = cls(**kw).double()
    if kind == "plif":
        # SpikingJelly builds w = -log(init_tau - 1) as a float32 tensor (torch's default
        # dtype), so .double() keeps a float32-rounded w: give both sides the same float64 w
        with torch.no_grad():
            node.w.copy_(torch.tensor(neurons.plif_w_from_tau(PLIF_TAU), dtype=torch.float64))
    node.reset()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    spikes = node(xt)
    (spikes * torch.tensor(weights, dtype=torch.float64)).sum().backward()
    gw = node.w.grad.item() if kind == "plif" else None
    return (spikes.detach().numpy(), node.v_seq.detach().numpy(), node.v.detach().numpy(),
            xt.grad.numpy(), gw)


def _ours(config, x, weights):
    """The same quantities from revsnn_jax.neurons (default initial potential), float64."""
    kind, reset, decay, detach, surr = config
    v_th, v_reset = RESETS[reset]
    alpha, _ = SURROGATES[surr]
    kw = dict(v_threshold=v_th, v_reset=v_reset, detach_reset=detach,
              surrogate=getattr(surrogate, surr)(alpha))
    w0 = neurons.plif_w_from_tau(PLIF_TAU)

    def run(x, w):
        if kind == "if":
            return neurons.if_multistep(x, return_trace=True, **kw)
        if kind == "lif":
            return neurons.lif_multistep(x, tau=TAU, decay_input=decay, return_trace=True, **kw)
        return neurons.plif_multistep(x, w, decay_input=decay, return_trace=True, **kw)

    def loss(x, w):
        return jnp.sum(run(x, w)[0] * weights)

    xj = jnp.asarray(x, jnp.float64)
    wj = jnp.asarray(w0, jnp.float64)
    spikes, v_final, trace = run(xj, wj)
    gx, gw = jax.grad(loss, argnums=(0, 1))(xj, wj)
    assert spikes.dtype == jnp.float64 and gx.dtype == jnp.float64
    return (np.asarray(spikes), np.asarray(trace), np.asarray(v_final), np.asarray(gx),
            float(gw) if kind == "plif" else None)


def compare(config, seed: int = 0) -> dict[str, float]:
    """Differences between SpikingJelly and revsnn_jax for one configuration: the number of
    differing spikes and max abs differences of the potentials, final potential and gradients."""
    x, weights = _inputs(config, seed)
    sj = _spikingjelly(config, x, weights)
    with jax.enable_x64(True):
        ours = _ours(config, x, weights)
    out = {"spikes_differing": int(np.sum(sj[0] != ours[0])),
           "spike_rate": float(sj[0].mean()),
           "v_seq": float(np.max(np.abs(sj[1] - ours[1]))),
           "v_final": float(np.max(np.abs(sj[2] - ours[2]))),
           "grad_x": float(np.max(np.abs(sj[3] - ours[3]))),
           "grad_x_scale": float(np.max(np.abs(sj[3])))}
    if sj[4] is not None:
        out["grad_w"] = abs(sj[4] - ours[4])
        out["grad_w_scale"] = abs(sj[4])
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_matches_spikingjelly(config):
    d = compare(config)
    # a meaningful comparison: some spikes, some silence, gradients that are not all zero
    assert 0.05 < d["spike_rate"] < 0.95, d
    assert d["grad_x_scale"] > 1e-3, d
    assert d["spikes_differing"] == 0, d
    assert d["v_seq"] <= TOL and d["v_final"] <= TOL, d
    assert d["grad_x"] <= TOL, d
    if config[0] == "plif":
        assert d["grad_w_scale"] > 1e-6, d
        assert d["grad_w"] <= TOL, d


def test_initial_potential_is_v_reset_without_input():
    """No input: a hard-reset neuron stays at v_reset (SpikingJelly's start), a soft one at 0."""
    with jax.enable_x64(True):
        x = jnp.zeros((3, 2), jnp.float64)
        _, v_final = neurons.lif_multistep(x, v_threshold=0.5, v_reset=-0.1)
        np.testing.assert_array_equal(np.asarray(v_final), -0.1)
        _, v_final = neurons.if_multistep(x, v_reset=None)
        np.testing.assert_array_equal(np.asarray(v_final), 0.0)
