"""Flax NNX neuron modules: same numbers as the numpy loop, PLIF's parameter, flags, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from neuron_reference import forward

import revsnn_jax
from revsnn_jax import neurons
from revsnn_jax.neurons.modules import IF, LIF, PLIF, Quantizer

T, SHAPE = 12, (2, 5)


def _inputs(seed, shape=(T, *SHAPE), dtype=np.float32):
    return np.random.default_rng(seed).normal(1.0, 1.0, shape).astype(dtype)


CASES = {  # name -> (module, numpy reference kwargs)
    "if_hard": (lambda: IF(v_threshold=0.8), dict(kind="if", v_threshold=0.8)),
    "if_soft_detach": (lambda: IF(v_reset=None, detach_reset=True),
                       dict(kind="if", v_reset=None)),
    "lif": (lambda: LIF(tau=3.0, v_reset=-0.2, surrogate="atan"),
            dict(kind="lif", tau=3.0, v_reset=-0.2)),
    "lif_no_decay_soft": (lambda: LIF(tau=1.5, decay_input=False, v_reset=None),
                          dict(kind="lif", tau=1.5, decay_input=False, v_reset=None)),
    "plif": (lambda: PLIF(tau=2.5, v_threshold=0.7),
             dict(kind="plif", w=neurons.plif_w_from_tau(2.5), v_threshold=0.7)),
    "plif_no_decay_soft": (lambda: PLIF(tau=4.0, decay_input=False, v_reset=None),
                           dict(kind="plif", w=neurons.plif_w_from_tau(4.0),
                                decay_input=False, v_reset=None)),
}


@pytest.mark.parametrize("name", CASES)
def test_module_matches_numpy_loop(name):
    make, ref_kwargs = CASES[name]
    module = make()
    x = _inputs(0)
    v_init = _inputs(1, SHAPE) * 0.5
    ref_kwargs = dict(ref_kwargs)
    kind = ref_kwargs.pop("kind")
    ref_s, ref_v, ref_trace = forward(x, kind, v_init=v_init, **ref_kwargs)
    assert 0.05 < ref_s.mean() < 0.95

    spikes, v_final, trace = module(jnp.asarray(x), jnp.asarray(v_init), return_trace=True)
    assert spikes.dtype == v_final.dtype == trace.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(spikes), ref_s)
    np.testing.assert_allclose(np.asarray(v_final), ref_v, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(trace), ref_trace, rtol=0, atol=1e-6)
    # the other return flags give the same numbers
    s2, v2 = module(jnp.asarray(x), jnp.asarray(v_init), return_state=True)
    np.testing.assert_array_equal(np.asarray(s2), ref_s)
    np.testing.assert_array_equal(np.asarray(v2), np.asarray(v_final))
    # v_init defaults to zeros; with no flag only the spikes come back
    only_spikes = module(jnp.asarray(x))
    assert isinstance(only_spikes, jax.Array)
    np.testing.assert_array_equal(np.asarray(only_spikes), forward(x, kind, **ref_kwargs)[0])


def test_state_carries_over_between_calls():
    # running T steps in two halves with the final state passed on equals one call
    lif = LIF(tau=2.0, v_reset=None)
    x = jnp.asarray(_inputs(2))
    s_all, v_all = lif(x, return_state=True)
    s1, v1 = lif(x[: T // 2], return_state=True)
    s2, v2 = lif(x[T // 2 :], v1, return_state=True)
    np.testing.assert_array_equal(np.asarray(jnp.concatenate([s1, s2])), np.asarray(s_all))
    np.testing.assert_allclose(np.asarray(v2), np.asarray(v_all), atol=1e-6)


def test_plif_parameter_init_and_gradient():
    plif = PLIF(tau=2.0)
    params = nnx.state(plif, nnx.Param)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 1 and leaves[0].shape == () and leaves[0].dtype == jnp.float32
    np.testing.assert_allclose(float(plif.w[...]), neurons.plif_w_from_tau(2.0))
    np.testing.assert_allclose(float(plif.tau), 2.0, rtol=1e-6)
    # the other neurons hold no parameters
    for m in (IF(), LIF(), Quantizer()):
        assert jax.tree.leaves(nnx.state(m, nnx.Param)) == []

    x = jnp.asarray(_inputs(3))

    def loss(model):
        return jnp.sum(model(x) * jnp.arange(T, dtype=jnp.float32)[:, None, None])

    grad_fn = nnx.jit(nnx.grad(loss))
    grads = grad_fn(plif)
    g_module = float(jax.tree.leaves(grads)[0])
    g_function = float(jax.jit(jax.grad(lambda w: jnp.sum(
        neurons.plif_multistep(x, w)[0] * jnp.arange(T, dtype=jnp.float32)[:, None, None])))(
            jnp.float32(plif.w[...])))
    assert abs(g_module) > 1e-3
    np.testing.assert_allclose(g_module, g_function, rtol=1e-6)

    # a plain gradient step on w changes the time constant
    graphdef, params, rest = nnx.split(plif, nnx.Param, ...)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    updated = nnx.merge(graphdef, params, rest)
    assert float(updated.tau) != pytest.approx(2.0)

    # one w per channel
    per_channel = PLIF(tau=2.0, shape=(SHAPE[-1],))
    g = jax.tree.leaves(grad_fn(per_channel))[0]
    assert g.shape == (SHAPE[-1],) and bool(jnp.all(g != 0))


def test_jit_equals_eager_and_vmap():
    x = jnp.asarray(_inputs(4))
    for module in (LIF(tau=2.0, v_reset=None), PLIF(tau=3.0), Quantizer()):
        eager = module(x)
        jitted = nnx.jit(lambda m, x: m(x))(module, x)
        np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
        mapped = jax.vmap(lambda xb, m=module: m(xb), in_axes=1, out_axes=1)(x)
        np.testing.assert_array_equal(np.asarray(eager), np.asarray(mapped))


def test_quantizer_module():
    q = Quantizer()
    v = jnp.asarray([[-0.5, 0.0, 0.49, 0.5, 1.0, 1.5]], jnp.float32)
    np.testing.assert_array_equal(np.asarray(q(v)), [[0, 0, 0, 1, 1, 1]])
    s, state = q(v, return_state=True)
    assert state is None and s.dtype == jnp.float32
    g = jax.grad(lambda v: q(v).sum())(v)
    np.testing.assert_array_equal(np.asarray(g), [[0, 1, 1, 1, 1, 0]])


def test_exported_from_package():
    assert revsnn_jax.neurons.modules.PLIF is PLIF


def test_bad_configuration_and_input_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown surrogate 'sigmod'"):
        LIF(surrogate="sigmod")
    with pytest.raises(ValueError, match="tau must be positive"):
        LIF(tau=0.0)
    with pytest.raises(ValueError, match="tau must be positive"):
        PLIF(tau=-2.0)
    with pytest.raises(ValueError, match="PLIF needs tau > 1"):
        PLIF(tau=0.5)
    with pytest.raises(ValueError, match="v_threshold must be finite"):
        IF(v_threshold=float("inf"))
    lif = LIF()
    with pytest.raises(TypeError, match="floating"):
        lif(jnp.ones((4, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"v_init has shape \(4,\).*one time step \(3,\)"):
        lif(jnp.ones((4, 3), jnp.float32), jnp.zeros((4,), jnp.float32))
    with pytest.raises(ValueError, match="empty time axis"):
        PLIF()(jnp.ones((0, 3), jnp.float32))
    with pytest.raises(ValueError, match="stateless"):
        Quantizer()(jnp.ones((4, 3), jnp.float32), jnp.zeros((3,), jnp.float32))
    with pytest.raises(ValueError, match="T >= 1"):
        Quantizer()(jnp.ones((0, 3), jnp.float32))
    with pytest.raises(TypeError, match="floating"):
        Quantizer()(jnp.ones((4, 3), jnp.int32))


def test_modules_start_at_v_reset():
    # SpikingJelly's initial potential: v_reset for a hard reset, 0 for a soft one
    x = jnp.zeros((3, 2), jnp.float32)
    for module in (IF(v_threshold=0.5, v_reset=-0.1), LIF(v_threshold=0.5, v_reset=-0.1),
                   PLIF(v_threshold=0.5, v_reset=-0.1)):
        _, v_final = module(x, return_state=True)
        np.testing.assert_allclose(np.asarray(v_final), -0.1, rtol=0, atol=1e-7)
    _, v_final = LIF(v_reset=None)(x, return_state=True)
    np.testing.assert_array_equal(np.asarray(v_final), 0.0)
