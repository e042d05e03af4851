"""Neuron core: forward against a numpy loop, gradients against hand-written BPTT, checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from neuron_reference import backward, forward

from revsnn_jax import neurons
from revsnn_jax.neurons import surrogate as surrogate_lib

T, SHAPE = 16, (3, 4)
V_TH = 0.8  # not the default, so a dropped threshold shows
TAU = 3.0
W = neurons.plif_w_from_tau(1.7)

KINDS = {  # name -> (kind, decay_input)
    "if": ("if", True),
    "lif": ("lif", True),
    "lif_no_decay_input": ("lif", False),
    "plif": ("plif", True),
    "plif_no_decay_input": ("plif", False),
}
RESETS = {"hard0": 0.0, "hard_neg": -0.3, "soft": None}


def _inputs(seed, dtype=np.float32, shape=(T, *SHAPE)):
    rng = np.random.default_rng(seed)
    return (rng.normal(1.0, 1.0, shape)).astype(dtype)


def _run(kind, decay_input, x, **kwargs):
    """The library's multi-step neuron of this kind, with the test's constants."""
    w = kwargs.pop("w", W)
    if kind == "if":
        return neurons.if_multistep(x, **kwargs)
    if kind == "lif":
        return neurons.lif_multistep(x, tau=TAU, decay_input=decay_input, **kwargs)
    return neurons.plif_multistep(x, w, decay_input=decay_input, **kwargs)


# --------------------------------------------------------------------------- forward vs numpy
@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("reset", ["hard_neg", "soft"])  # V_reset = 0: test_neuron_modules
@pytest.mark.parametrize("with_v_init,detach_reset", [(False, False), (True, True)])
def test_multistep_matches_numpy_loop(name, reset, with_v_init, detach_reset):
    kind, decay_input = KINDS[name]
    x = _inputs(0)
    v_init = _inputs(1, shape=SHAPE) * 0.5 if with_v_init else None
    spikes, v_final, trace = _run(
        kind, decay_input, jnp.asarray(x), v_threshold=V_TH, v_reset=RESETS[reset],
        detach_reset=detach_reset, surrogate="atan",
        v_init=None if v_init is None else jnp.asarray(v_init), return_trace=True)
    ref_s, ref_v, ref_trace = forward(x, kind, tau=TAU, w=W, decay_input=decay_input,
                                      v_threshold=V_TH, v_reset=RESETS[reset], v_init=v_init)
    assert spikes.dtype == v_final.dtype == trace.dtype == jnp.float32
    assert 0.05 < ref_s.mean() < 0.95  # the test exercises both firing and not firing
    np.testing.assert_array_equal(np.asarray(spikes), ref_s)
    np.testing.assert_allclose(np.asarray(trace), ref_trace, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(v_final), ref_v, rtol=0, atol=1e-6)


def test_threshold_crossing_is_inclusive_and_reset_values():
    # H = V_th exactly fires (Heaviside(0) = 1); hard reset goes to V_reset, soft subtracts V_th
    x = jnp.asarray([[0.5], [0.5], [0.25]], jnp.float32)
    s, _, tr = neurons.if_multistep(x, v_threshold=1.0, v_reset=-0.5, v_init=0.0,
                                    return_trace=True)
    np.testing.assert_array_equal(np.asarray(s[:, 0]), [0, 1, 0])
    np.testing.assert_array_equal(np.asarray(tr[:, 0]), [0.5, -0.5, -0.25])
    # by default a hard-reset neuron starts at v_reset (SpikingJelly): -0.5 + 0.5 + 0.5 < 1
    s, _, tr = neurons.if_multistep(x, v_threshold=1.0, v_reset=-0.5, return_trace=True)
    np.testing.assert_array_equal(np.asarray(s[:, 0]), [0, 0, 0])
    np.testing.assert_array_equal(np.asarray(tr[:, 0]), [0.0, 0.5, 0.75])
    x = jnp.asarray([[1.5], [0.5], [0.25]], jnp.float32)
    s, _, tr = neurons.if_multistep(x, v_threshold=1.0, v_reset=None, return_trace=True)
    np.testing.assert_array_equal(np.asarray(s[:, 0]), [1, 1, 0])
    np.testing.assert_array_equal(np.asarray(tr[:, 0]), [0.5, 0.0, 0.25])


@pytest.mark.parametrize("name", ["if", "lif_no_decay_input", "plif"])
def test_single_steps_compose_to_multistep(name):
    kind, decay_input = KINDS[name]
    x = jnp.asarray(_inputs(2))[:6]
    kw = dict(v_threshold=V_TH, v_reset=None, surrogate="sigmoid")
    spikes, v_final = _run(kind, decay_input, x, **kw)
    v = jnp.zeros(SHAPE, jnp.float32)
    for t in range(x.shape[0]):
        if kind == "if":
            s, v = neurons.if_step(x[t], v, **kw)
        elif kind == "lif":
            s, v = neurons.lif_step(x[t], v, tau=TAU, decay_input=decay_input, **kw)
        else:
            s, v = neurons.plif_step(x[t], v, W, decay_input=decay_input, **kw)
        np.testing.assert_array_equal(np.asarray(s), np.asarray(spikes[t]))
    np.testing.assert_allclose(np.asarray(v), np.asarray(v_final), atol=1e-6)


def test_numpy_constants_keep_float32():
    # regression: numpy float64 constants promoted the float32 potential to float64 under
    # jax_enable_x64, breaking the scan carry ("carry input and output must have equal types")
    x = jnp.asarray(_inputs(3))
    ref = neurons.lif_multistep(x, tau=TAU, v_threshold=V_TH, v_reset=-0.3, return_trace=True)
    out = neurons.lif_multistep(x, tau=np.float64(TAU), v_threshold=np.float64(V_TH),
                                v_reset=np.float64(-0.3), return_trace=True)
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    s, v = neurons.lif_step(x[0], jnp.zeros(SHAPE, jnp.float32), tau=np.float64(2.0),
                            v_threshold=np.float64(1.0))
    assert s.dtype == v.dtype == jnp.float32
    # per-channel constants (one value per last-axis entry) broadcast over one step
    tau = np.array([1.5, 2.0, 3.0, 4.0])
    s, v, tr = neurons.lif_multistep(x, tau=tau, return_trace=True)
    cols = [forward(np.asarray(x)[..., i:i + 1], "lif", tau=t) for i, t in enumerate(tau)]
    np.testing.assert_array_equal(np.asarray(s), np.concatenate([c[0] for c in cols], -1))
    np.testing.assert_allclose(np.asarray(tr), np.concatenate([c[2] for c in cols], -1), atol=1e-6)


# --------------------------------------------------------------------------- transformations
def test_jit_equals_eager_and_vmap_over_batch():
    x = jnp.asarray(_inputs(4))
    v0 = jnp.asarray(_inputs(5, shape=SHAPE)) * 0.3
    f = functools.partial(neurons.lif_multistep, tau=TAU, v_reset=None, return_trace=True)
    eager = f(x, v_init=v0)
    jitted = jax.jit(lambda x, v0: f(x, v_init=v0))(x, v0)
    # Spikes bitwise; potentials to 1e-6 (XLA may fuse or contract jit-compiled arithmetic
    # differently from op-by-op execution, a last-bit difference).
    np.testing.assert_array_equal(np.asarray(eager[0]), np.asarray(jitted[0]))
    for a, b in zip(eager[1:], jitted[1:], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    # vmap over the batch axis (axis 1 of x, axis 0 of v_init) equals the batched call
    mapped = jax.vmap(lambda xb, vb: f(xb, v_init=vb), in_axes=(1, 0), out_axes=(1, 0, 1))(x, v0)
    for a, b in zip(eager, mapped, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)
    # and over the PLIF parameter
    ws = jnp.asarray([-1.0, 0.0, 1.0], jnp.float32)
    per_w = jax.vmap(lambda w: neurons.plif_multistep(x, w)[0])(ws)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(per_w[i]),
                                      np.asarray(neurons.plif_multistep(x, ws[i])[0]))


def _lowered(t, unroll):
    x = jnp.zeros((t, 8), jnp.float32)
    f = lambda x: neurons.lif_multistep(x, v_reset=None, return_trace=True,  # noqa: E731
                                        unroll=unroll)
    return jax.jit(f).lower(x).as_text()


def _lowered_size(t, unroll):
    return len(_lowered(t, unroll))


@pytest.mark.parametrize("unroll", [1, None])
def test_long_scans_stay_rolled(unroll):
    # only the shapes' digits change (32 -> 256); an unrolled loop would grow ~8x. Short
    # sequences compared with unroll=1: the default unrolls T <= 16 (next test).
    small, large = _lowered_size(32 if unroll is None else 4, unroll), _lowered_size(256, unroll)
    assert abs(large - small) < 0.02 * small, (small, large)


def test_short_scans_unroll_by_default_and_match_the_rolled_loop():
    assert neurons.scan_unroll(neurons.AUTO_UNROLL_MAX_STEPS) is True
    assert neurons.scan_unroll(neurons.AUTO_UNROLL_MAX_STEPS + 1) == 1
    assert "stablehlo.while" not in _lowered(8, None)  # eight bodies, no loop
    assert "stablehlo.while" in _lowered(8, 1)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 5)), jnp.float64)

    def loss(x, unroll):
        s, v = neurons.lif_multistep(x * 2, v_reset=None, unroll=unroll)
        return jnp.sum(s * jnp.arange(5)) + jnp.sum(v ** 2)

    for unroll in (None, 2, True):
        np.testing.assert_array_equal(loss(x, unroll), loss(x, 1))
        np.testing.assert_allclose(jax.grad(loss)(x, unroll), jax.grad(loss)(x, 1), rtol=1e-14)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "yes"])
def test_bad_unroll_is_rejected(bad):
    with pytest.raises(ValueError, match="unroll"):
        neurons.lif_multistep(jnp.zeros((4, 2), jnp.float32), unroll=bad)


# --------------------------------------------------------------------------- gradients
def _loss_weights(seed, x_shape):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=x_shape), rng.normal(size=x_shape[1:]), rng.normal(size=x_shape))


# every kind with hard reset + full gradient and soft reset + detached reset; LIF with all four
BPTT_CASES = [(name, reset, detach) for name in KINDS
              for reset, detach in (("hard_neg", False), ("soft", True))]
BPTT_CASES += [("lif", "hard_neg", True), ("lif", "soft", False)]


@pytest.mark.parametrize("name,reset,detach_reset", BPTT_CASES)
def test_bptt_gradient_matches_hand_written_backward(name, reset, detach_reset):
    kind, decay_input = KINDS[name]
    x = _inputs(6, np.float64)
    v0 = _inputs(7, np.float64, SHAPE) * 0.5
    a, b, c = _loss_weights(8, x.shape)
    surrogate = ("sigmoid", 3.0) if reset == "soft" else ("atan", 2.0)
    kw = dict(v_threshold=V_TH, v_reset=RESETS[reset], detach_reset=detach_reset,
              surrogate=surrogate_lib.get(*surrogate))

    def loss(x, v0, w):
        s, v, tr = _run(kind, decay_input, x, v_init=v0, return_trace=True, w=w, **kw)
        return jnp.sum(a * s) + jnp.sum(b * v) + jnp.sum(c * tr)

    args = (jnp.asarray(x, jnp.float64), jnp.asarray(v0, jnp.float64), jnp.float64(W))
    gx, gv0, gw = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
    rx, rv0, rw = backward(x, kind, a, b, c, surrogate=surrogate, tau=TAU, w=W,
                           decay_input=decay_input, v_threshold=V_TH, v_reset=RESETS[reset],
                           v_init=v0, detach_reset=detach_reset)
    assert gx.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(gx), rx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(gv0), rv0, rtol=1e-10, atol=1e-12)
    if kind == "plif":
        assert abs(float(gw)) > 1e-3
        np.testing.assert_allclose(float(gw), rw, rtol=1e-10)
    # detach_reset removes exactly the reset path: the other setting's oracle differs
    other, _, _ = backward(x, kind, a, b, c, surrogate=surrogate, tau=TAU, w=W,
                           decay_input=decay_input, v_threshold=V_TH, v_reset=RESETS[reset],
                           v_init=v0, detach_reset=not detach_reset)
    assert np.max(np.abs(other - rx)) > 1e-3


def test_detach_reset_changes_the_gradient():
    x = jnp.asarray(_inputs(9, np.float64))
    grads = [jax.jit(jax.grad(lambda x, d=d: neurons.lif_multistep(
        x, detach_reset=d, surrogate="atan")[0].sum()))(x) for d in (False, True)]
    assert float(jnp.max(jnp.abs(grads[0] - grads[1]))) > 1e-3
    # the forward pass is the same
    np.testing.assert_array_equal(
        np.asarray(neurons.lif_multistep(x, detach_reset=True)[0]),
        np.asarray(neurons.lif_multistep(x, detach_reset=False)[0]))


def _smooth_spike(u):
    """A smooth stand-in for the spike: makes the whole scan differentiable for finite differences."""
    return jax.nn.sigmoid(4.0 * u)


@pytest.mark.parametrize("reset", ["hard_neg", "soft"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_scan_autodiff_matches_finite_differences_when_smooth(reset, detach_reset):
    x = jnp.asarray(_inputs(10, np.float64, (6, 3)))
    v0 = jnp.asarray(_inputs(11, np.float64, (3,)))
    kw = dict(v_threshold=V_TH, v_reset=RESETS[reset], detach_reset=detach_reset,
              surrogate=_smooth_spike, return_trace=True)

    @jax.jit
    def plif(x, v0, w):
        return neurons.plif_multistep(x, w, v_init=v0, **kw)

    @jax.jit
    def lif(x, v0):
        return neurons.lif_multistep(x, tau=TAU, decay_input=False, v_init=v0, **kw)

    if detach_reset:  # stop_gradient hides the reset path from autodiff, not from the function
        with pytest.raises(AssertionError):
            check_grads(plif, (x, v0, jnp.float64(W)), order=1, modes=["rev"], eps=1e-6)
        return
    check_grads(plif, (x, v0, jnp.float64(W)), order=1, modes=["fwd", "rev"], eps=1e-6)
    check_grads(lif, (x, v0), order=1, modes=["rev"], eps=1e-6)


def test_plif_w_gradient_matches_finite_differences():
    x = jnp.asarray(_inputs(12, np.float64))

    @jax.jit
    def objective(w):  # smooth: spikes through the smooth stand-in, firing-rate target
        s, v = neurons.plif_multistep(x, w, surrogate=_smooth_spike)
        return jnp.mean((s.mean(0) - 0.3) ** 2) + 0.1 * jnp.mean(v**2)

    w = jnp.float64(W)
    g = float(jax.grad(objective)(w))
    eps = 1e-6
    fd = float(objective(w + eps) - objective(w - eps)) / (2 * eps)
    assert abs(g) > 1e-4
    np.testing.assert_allclose(g, fd, rtol=1e-7)
    # per-channel w: each entry gets its own nonzero gradient
    gw = jax.jit(jax.grad(lambda w: neurons.plif_multistep(x, w, surrogate="atan")[0].sum()))(
        jnp.full((SHAPE[-1],), W, jnp.float64))
    assert gw.shape == (SHAPE[-1],) and bool(jnp.all(gw != 0))


def test_plif_w_from_tau_inverts_sigmoid():
    for tau in (1.5, 2.0, 10.0):
        np.testing.assert_allclose(1 / jax.nn.sigmoid(neurons.plif_w_from_tau(tau)), tau,
                                   rtol=1e-12)


# --------------------------------------------------------------------------- quantizer
def test_quantizer_values_gradient_and_jit():
    v = jnp.asarray([-1.0, -1e-3, 0.0, 0.3, 0.4999, 0.5, 0.7, 1.0, 1.001, 2.5], jnp.float32)
    expected = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    np.testing.assert_array_equal(np.asarray(neurons.quantize_spike(v)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(neurons.quantize_spike)(v)), expected)
    assert neurons.quantize_spike(v).dtype == jnp.float32
    grad = jax.grad(lambda v: neurons.quantize_spike(v).sum())
    np.testing.assert_array_equal(np.asarray(grad(v)), [0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(jax.jit(grad)(v)), np.asarray(grad(v)))
    x = jnp.asarray(_inputs(13))
    np.testing.assert_array_equal(
        np.asarray(neurons.neuron_multistep(x, neurons.NeuronConfig(kind="quant"))),
        np.floor(np.clip(np.asarray(x), 0, 1) + 0.5))


def test_neuron_config_dispatches():
    x = jnp.asarray(_inputs(14))
    cfg = neurons.NeuronConfig(kind="lif", tau=TAU, v_threshold=V_TH, v_reset=None)
    np.testing.assert_array_equal(
        np.asarray(neurons.neuron_multistep(x, cfg)),
        forward(np.asarray(x), "lif", tau=TAU, v_threshold=V_TH, v_reset=None)[0])
    cfg = neurons.NeuronConfig(kind="if", v_threshold=V_TH)
    np.testing.assert_array_equal(np.asarray(neurons.neuron_multistep(x, cfg)),
                                  forward(np.asarray(x), "if", v_threshold=V_TH)[0])
    with pytest.raises(ValueError, match="unknown neuron kind 'plif'"):
        neurons.neuron_multistep(x, neurons.NeuronConfig(kind="plif"))


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    x = jnp.zeros((4, 2, 3), jnp.float32)
    with pytest.raises(TypeError, match=r"dtype int32.*floating"):
        neurons.lif_multistep(jnp.zeros((4, 3), jnp.int32))
    with pytest.raises(TypeError, match="floating"):
        neurons.quantize_spike(jnp.asarray([0, 1], jnp.int32))
    with pytest.raises(TypeError, match="v_init has dtype"):
        neurons.if_multistep(x, v_init=jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"v_init has shape \(4, 2\).*time axis"):
        neurons.lif_multistep(x, v_init=jnp.zeros((4, 2), jnp.float32))
    with pytest.raises(ValueError, match=r"v_init has shape \(3, 2\), expected .*\(2, 3\)"):
        neurons.if_multistep(x, v_init=jnp.zeros((3, 2), jnp.float32))
    with pytest.raises(ValueError, match="empty time axis"):
        neurons.lif_multistep(jnp.zeros((0, 3), jnp.float32))
    with pytest.raises(ValueError, match="scalar"):
        neurons.if_multistep(jnp.float32(1.0))
    for bad_tau in (0.0, -2.0, np.array([2.0, -1.0, 2.0]), jnp.asarray(-1.0, jnp.float32)):
        with pytest.raises(ValueError, match="tau must be positive"):
            neurons.lif_multistep(x, tau=bad_tau)
    with pytest.raises(ValueError, match="tau must be positive"):
        neurons.lif_step(x[0], x[0], tau=-1.0)
    with pytest.raises(ValueError, match="PLIF needs tau > 1"):
        neurons.plif_w_from_tau(0.5)
    with pytest.raises(ValueError, match="unknown surrogate 'atann'"):
        neurons.lif_multistep(x, surrogate="atann")
    with pytest.raises(ValueError, match="v_threshold must be finite"):
        neurons.if_multistep(x, v_threshold=float("nan"))
    with pytest.raises(ValueError, match=r"tau has shape \(5,\).*does not broadcast"):
        neurons.lif_multistep(x, tau=np.full((5,), 2.0))
    with pytest.raises(ValueError, match=r"w has shape \(4, 2, 3\)"):
        neurons.plif_multistep(x, jnp.zeros((4, 2, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"v has shape \(5, 2, 3\)"):
        neurons.if_step(x[0], jnp.zeros((5, 2, 3), jnp.float32))
