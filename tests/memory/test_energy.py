"""Synaptic operations and energy (revsnn_jax.memory.energy) against hand counts on tiny networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from revsnn_jax import models, steps
from revsnn_jax.memory import energy
from revsnn_jax.neurons.surrogate import heaviside


def _spikes(key, shape, rate):
    return (jax.random.uniform(key, shape) < rate).astype(jnp.float32)


def test_linear_mlp_hand_count():
    """Dense encoding layer -> spikes -> linear: MACs for the first, rate * MACs for the second."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    w1 = jax.random.normal(k1, (5, 7), jnp.float32)
    w2 = jax.random.normal(k2, (7, 3), jnp.float32)
    x = jax.random.normal(k3, (4, 5), jnp.float32)  # real-valued input

    def net(w1, w2, x):
        s = heaviside(x @ w1 - 0.3)
        return s @ w2

    ops = energy.synaptic_operations(net, w1, w2, x)
    s = np.asarray(heaviside(x @ w1 - 0.3))
    rate = s.mean()
    assert 0.0 < rate < 1.0
    assert len(ops.layers) == 2
    first, second = ops.layers
    assert first.dense_macs == 4 * 5 * 7 and first.macs == 4 * 5 * 7 and first.sops == 0
    assert second.dense_macs == 4 * 7 * 3 and second.macs == 0
    np.testing.assert_allclose(second.sops, rate * 4 * 7 * 3, rtol=1e-6)
    np.testing.assert_allclose(second.firing_rate, rate, rtol=1e-6)
    np.testing.assert_allclose(ops.sops, rate * 84, rtol=1e-6)
    assert ops.macs == 140
    np.testing.assert_allclose(ops.energy(), 0.9e-12 * rate * 84 + 4.6e-12 * 140, rtol=1e-6)
    np.testing.assert_allclose(ops.firing_rate, rate, rtol=1e-6)


def test_weight_on_the_left_uses_the_spiking_operand():
    w = jnp.ones((3, 6), jnp.float32) * 0.5
    s = _spikes(jax.random.key(1), (6, 2), 0.4)
    ops = energy.synaptic_operations(lambda w, s: w @ s, w, s)
    (layer,) = ops.layers
    np.testing.assert_allclose(layer.sops, float(s.mean()) * 3 * 6 * 2, rtol=1e-6)
    assert layer.macs == 0


def test_convolution_hand_count():
    """3x3 'SAME' conv, 2 -> 4 channels, groups 1 and 2: MACs = out size * kh * kw * C_in/g."""
    s = _spikes(jax.random.key(2), (2, 6, 6, 2), 0.25)
    for groups in (1, 2):
        w = jnp.ones((3, 3, 2 // groups, 4), jnp.float32)

        def conv(w, s, groups=groups):
            return jax.lax.conv_general_dilated(s, w, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                feature_group_count=groups)

        (layer,) = energy.synaptic_operations(conv, w, s).layers
        dense = 2 * 6 * 6 * 4 * 3 * 3 * (2 // groups)
        assert layer.primitive == "conv_general_dilated" and layer.dense_macs == dense
        np.testing.assert_allclose(layer.sops, float(s.mean()) * dense, rtol=1e-6)


def test_scan_counts_every_step_with_its_own_rate():
    """A layer inside lax.scan over T steps: T calls, each with that step's rate."""
    rates = (0.1, 0.5, 0.9)
    keys = jax.random.split(jax.random.key(3), len(rates))
    xs = jnp.stack([_spikes(k, (4, 8), r) for k, r in zip(keys, rates, strict=True)])
    w = jnp.ones((8, 5), jnp.float32)

    def run(w, xs):
        return jax.lax.scan(lambda c, x: (c + (x @ w).sum(), None), 0.0, xs)[0]

    (layer,) = energy.synaptic_operations(run, w, xs).layers
    assert layer.calls == 3 and layer.dense_macs == 3 * 4 * 8 * 5
    np.testing.assert_allclose(layer.sops, float(xs.sum()) * 5, rtol=1e-6)


def test_custom_vjp_jit_and_checkpoint_are_walked():
    s = _spikes(jax.random.key(4), (3, 4), 0.5)
    w = jnp.ones((4, 2), jnp.float32)

    @jax.custom_vjp
    def f(w, s):
        return s @ w

    f.defvjp(lambda w, s: (f(w, s), (w, s)), lambda res, g: (res[1].T @ g, g @ res[0].T))
    fn = jax.jit(jax.checkpoint(lambda w, s: f(w, s) + 0.0))
    (layer,) = energy.synaptic_operations(fn, w, s).layers
    np.testing.assert_allclose(layer.sops, float(s.sum()) * 2, rtol=1e-6)


def test_cond_counts_only_the_taken_branch():
    s = _spikes(jax.random.key(6), (3, 4), 0.5)
    w = jnp.ones((4, 2), jnp.float32)

    def fn(w, s, pick):
        return jax.lax.cond(pick, lambda: s @ w, lambda: jnp.zeros((3, 2), jnp.float32) * w[0])

    taken = energy.synaptic_operations(fn, w, s, jnp.bool_(True))
    skipped = energy.synaptic_operations(fn, w, s, jnp.bool_(False))
    np.testing.assert_allclose(taken.sops, float(s.sum()) * 2, rtol=1e-6)
    assert skipped.sops == 0.0 and skipped.dense_macs == 0.0


def test_energy_joules_and_bad_input():
    assert energy.energy_joules(1e9, 1e8) == pytest.approx(0.9e-3 + 0.46e-3)
    with pytest.raises(ValueError, match="must be >= 0"):
        energy.energy_joules(-1.0, 0.0)
    with pytest.raises(TypeError, match="callable"):
        energy.synaptic_operations(3, jnp.ones(2))


def test_spiking_mlp_model_counts_every_linear_layer():
    """A registered model end to end: every nnx.Linear is found, the first one is dense."""
    model = models.create("spiking_mlp", input_shape=(4, 4, 1), hidden=(16,), time_steps=2,
                          rngs=nnx.Rngs(0), dtype=jnp.float32)
    fns, params, state = steps.split_model(model)
    x = jax.random.uniform(jax.random.key(5), (3, 4, 4, 1), jnp.float32)
    ops = energy.synaptic_operations(
        lambda p, s, x: fns.apply(p, s, x, train=True)[0], params, state, x)
    dense = [layer.dense_macs for layer in ops.layers]
    n_in = 16  # 4 * 4 * 1 pixels
    # input layer: computed once on the static image (the same current at every step),
    # 16 -> 16 units; then the read-out 16 -> 10 on the spikes of T=2 steps
    assert dense == [3 * n_in * 16, 2 * 3 * 16 * 10]
    assert ops.layers[0].spiking_fraction == 0.0 and ops.layers[1].spiking_fraction == 1.0
    assert ops.macs == 3 * n_in * 16
    assert 0.0 <= ops.firing_rate <= 1.0
