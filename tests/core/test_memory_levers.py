"""The memory levers every model gets: ties, bit-packed spike convolutions, the lean BatchNorm,
tied per-block remat and halves between reversible stages. Values and gradients equal the plain
versions; memory claims are read from XLA's compiled plan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from revsnn_jax import layers, memory, neurons
from revsnn_jax.core import bitpack, remat
from revsnn_jax.core.conv import conv2d
from revsnn_jax.core.ties import anchor, tie, tieable
from revsnn_jax.reversible import reversible_stage, reversible_stage_inverse

CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _lax_conv(s, k, strides=(1, 1), padding=((1, 1), (1, 1))):
    return jax.lax.conv_general_dilated(s, k, strides, padding, dimension_numbers=CONV_DIMS)


def _spikes(key, shape, dtype=jnp.float32):
    return (jax.random.uniform(key, shape) < 0.3).astype(dtype)


# --------------------------------------------------------------------------- ties
def test_tie_keeps_values_and_adds_a_dependence():
    x = {"a": jnp.arange(6.0).reshape(2, 3), "n": jnp.arange(3)}
    g = jnp.full((4,), 7.0)
    tied = tie(x, g)
    np.testing.assert_array_equal(tied["a"], x["a"])
    assert tied["n"].dtype == x["n"].dtype
    # the tied value depends on g (its gradient w.r.t. g exists, and is zero)
    dg = jax.grad(lambda g: tie(x, g)["a"].sum())(g)
    np.testing.assert_array_equal(dg, jnp.zeros_like(g))
    jaxpr = str(jax.make_jaxpr(lambda x, g: tie(x, g))(x, g))
    assert "mul" in jaxpr and "add" in jaxpr
    # nothing floating to tie to: unchanged
    assert tie(x, jnp.arange(3))["a"] is x["a"]
    # tieable: whether tie changes anything in x (a non-empty floating leaf)
    assert tieable(x) and tieable(jnp.ones(2))
    assert not tieable({"n": jnp.arange(3), "e": jnp.zeros((0,))}) and not tieable(())


def test_anchor_is_a_scalar_reduction_of_g():
    """``anchor(g)``: a scalar that depends on ``g`` through a reduction (which XLA computes once
    and never fuses into a consumer), zero gradient, ``None`` without a floating leaf."""
    g = {"n": jnp.arange(3), "f": jnp.arange(1.0, 7.0).reshape(2, 3)}
    a = anchor(g)
    assert a.shape == () and float(a) == 3.0  # the first two elements of the float leaf
    assert float(anchor(jnp.asarray([5.0]))) == 5.0
    assert anchor(jnp.arange(3)) is None and anchor(()) is None
    jaxpr = str(jax.make_jaxpr(anchor)(g))
    assert "reduce_sum" in jaxpr
    x = jnp.arange(4.0)
    dg = jax.grad(lambda f: tie(x, anchor(f)).sum())(g["f"])
    np.testing.assert_array_equal(dg, jnp.zeros_like(g["f"]))
    np.testing.assert_array_equal(tie(x, anchor(g)), x)


# --------------------------------------------------------------------------- bit packing
@pytest.mark.parametrize("channels", [1, 5, 8, 13, 64])
def test_pack_unpack_round_trip(channels):
    s = _spikes(jax.random.key(channels), (3, 4, channels))
    packed = bitpack.pack_bits(s)
    assert packed.dtype == jnp.uint8
    assert packed.shape == (3, 4, -(-channels // 8))
    np.testing.assert_array_equal(bitpack.unpack_bits(packed, channels), s)


def test_unpack_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        bitpack.unpack_bits(jnp.zeros((2, 1), jnp.int32), 8)
    with pytest.raises(ValueError, match="do not fit"):
        bitpack.unpack_bits(jnp.zeros((2, 1), jnp.uint8), 9)


@pytest.mark.parametrize(("ksize", "strides", "padding", "channels"), [
    (3, (1, 1), ((1, 1), (1, 1)), 16),
    (1, (2, 2), ((0, 0), (0, 0)), 12),   # a shortcut conv, channels not a multiple of 8
    (3, (2, 2), ((1, 1), (1, 1)), 8),
])
def test_spike_conv_equals_lax_conv_float64(ksize, strides, padding, channels):
    ks, kk, kc = jax.random.split(jax.random.key(1), 3)
    s = _spikes(ks, (2, 8, 8, channels), jnp.float64)
    k = jax.random.normal(kk, (ksize, ksize, channels, 6), jnp.float64)
    ct = jax.random.normal(kc, _lax_conv(s, k, strides, padding).shape, jnp.float64)

    def loss(conv):
        return lambda s, k: jnp.sum(conv(s, k, strides, padding) * ct)

    np.testing.assert_array_equal(bitpack.spike_conv(s, k, strides, padding),
                                  _lax_conv(s, k, strides, padding))
    got = jax.grad(loss(bitpack.spike_conv), argnums=(0, 1))(s, k)
    want = jax.grad(loss(_lax_conv), argnums=(0, 1))(s, k)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == jnp.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _spiking_conv_stack(spike_input: bool, depth: int = 4, channels: int = 32):
    """Per-example training memory of ``depth`` x (IF neuron -> conv3x3) on [T=2, B, 8, 8, C],
    through the library's convolution (:func:`revsnn_jax.core.conv.conv2d`) with the spikes kept
    as float32 (``spike_input=False``) or as bits (:func:`revsnn_jax.core.bitpack.spike_conv`)."""
    kernels = [jax.ShapeDtypeStruct((3, 3, channels, channels), jnp.float32)] * depth
    conv = bitpack.spike_conv if spike_input else conv2d

    def loss(kernels, x):
        for k in kernels:
            s = neurons.if_multistep(x, surrogate="atan")[0]
            t, b = s.shape[:2]
            x = conv(s.reshape(t * b, *s.shape[2:]), k, (1, 1), ((1, 1), (1, 1)))
            x = x.reshape(t, b, *x.shape[1:])
        return jnp.sum(x ** 2)

    def make_args(b):
        return kernels, jax.ShapeDtypeStruct((2, b, 8, 8, channels), jnp.float32)

    return memory.per_example_memory(make_args, jax.grad(loss), batch=8).bytes_per_example


def test_spike_conv_keeps_spikes_as_bits():
    """Each layer's float32 spikes (T * 8 * 8 * C * 4 bytes per example) become 1/32 of that."""
    depth, channels = 4, 32
    float_spikes = 2 * 8 * 8 * channels * 4
    plain = _spiking_conv_stack(False, depth, channels)
    packed = _spiking_conv_stack(True, depth, channels)
    # at least 90% of the 31/32 saved per layer (the last layer's spikes die at the peak)
    assert plain - packed >= 0.9 * (depth - 1) * float_spikes * 31 / 32


def test_conv2d_spike_input_option():
    conv = layers.Conv2d(8, 4, 3, padding=1, spike_input=True, rngs=nnx.Rngs(0))
    plain = layers.Conv2d(8, 4, 3, padding=1, rngs=nnx.Rngs(0))
    s = _spikes(jax.random.key(3), (2, 3, 6, 6, 8))
    np.testing.assert_allclose(conv(s), plain(s), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="without bias"):
        layers.Conv2d(8, 4, 3, use_bias=True, spike_input=True, rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------- BatchNorm
def _bn_formula(x, scale, bias, eps):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def test_batch_norm_train_gradients_equal_autodiff_float64():
    kx, ks, kb, kc = jax.random.split(jax.random.key(2), 4)
    x = jax.random.normal(kx, (3, 4, 5, 6), jnp.float64) * 3 + 1
    scale = jax.random.normal(ks, (6,), jnp.float64)
    bias = jax.random.normal(kb, (6,), jnp.float64)
    ct = jax.random.normal(kc, x.shape, jnp.float64)

    def loss(bn):
        return lambda x, s, b: jnp.sum(bn(x, s, b, 1e-5) * ct)

    np.testing.assert_allclose(layers.batch_norm_train(x, scale, bias, 1e-5),
                               _bn_formula(x, scale, bias, 1e-5), rtol=1e-13, atol=1e-13)
    got = jax.grad(loss(layers.batch_norm_train), argnums=(0, 1, 2))(x, scale, bias)
    want = jax.grad(loss(_bn_formula), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_batch_norm_train_keeps_only_its_input():
    """A chain of BatchNorm -> ReLU layers: the lean backward keeps one float32 per element and
    layer (its input, which is also the ReLU's output before it); autodiff of the formula
    keeps more than twice that."""
    depth, shape = 4, (16, 16, 32)

    def per_example(bn):
        def loss(params, x):
            for scale, bias in params:
                x = jax.nn.relu(bn(x, scale, bias, 1e-5))
            return jnp.sum(x)

        params = [(jax.ShapeDtypeStruct((32,), jnp.float32),) * 2] * depth

        def make_args(b):
            return params, jax.ShapeDtypeStruct((b, *shape), jnp.float32)

        return memory.per_example_memory(make_args, jax.grad(loss), batch=4).bytes_per_example

    elements = np.prod(shape)
    lean = per_example(layers.batch_norm_train)
    formula = per_example(_bn_formula)
    assert lean < 0.6 * formula
    # one float32 x per layer plus one transient of the backward
    assert lean <= (depth + 1.5) * elements * 4


# --------------------------------------------------------------------------- remat
def test_remat_checkpoint_gradients_and_state():
    def fn(p, s, x, key):
        del key
        y = jnp.tanh(x @ p["w"]) * s["scale"]
        return y, {"scale": s["scale"] + 1.0, "count": s["count"] + 1}

    kx, kw = jax.random.split(jax.random.key(4))
    x = jax.random.normal(kx, (5, 3))
    params = {"w": jax.random.normal(kw, (3, 3))}
    state = {"scale": jnp.float32(2.0), "count": jnp.int32(0)}

    def loss(f):
        return lambda p, x: jnp.sum(f(p, state, x, None)[0] ** 2)

    got = jax.grad(loss(remat.checkpoint(fn)), argnums=(0, 1))(params, x)
    want = jax.grad(loss(fn), argnums=(0, 1))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    _, new_state = remat.checkpoint(fn)(params, state, x, None)
    assert int(new_state["count"]) == 1 and float(new_state["scale"]) == 3.0


# --------------------------------------------------------------------------- halves
def _branch(p, s, x, key):
    spikes, _ = neurons.lif_multistep(x, surrogate="atan")
    return jnp.tanh(spikes @ p["w"]) * 0.5, s


@pytest.mark.parametrize("memory_mode", ["reversible", "checkpoint", "none"])
def test_stage_takes_and_returns_halves(memory_mode):
    kx, kf, kg = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(kx, (3, 2, 8)) * 2
    params = ({"w": jax.random.normal(kf, (2, 4, 4))}, {"w": jax.random.normal(kg, (2, 4, 4))})
    halves = (x[..., :4], x[..., 4:])
    y, _ = reversible_stage(_branch, _branch, params, None, x, memory_mode=memory_mode)
    (y1, y2), _ = reversible_stage(_branch, _branch, params, None, halves,
                                   memory_mode=memory_mode)
    np.testing.assert_array_equal(jnp.concatenate([y1, y2], -1), y)
    x1, x2 = reversible_stage_inverse(_branch, _branch, params, None, (y1, y2))
    np.testing.assert_allclose(jnp.concatenate([x1, x2], -1), x, atol=1e-5)

    def loss(params, halves):
        (y1, y2), _ = reversible_stage(_branch, _branch, params, None, halves,
                                       memory_mode=memory_mode)
        return jnp.sum(y1 ** 2) + jnp.sum(jnp.sin(y2))

    def loss_plain(params, x):
        y, _ = reversible_stage(_branch, _branch, params, None, x, memory_mode="none")
        return jnp.sum(y[..., :4] ** 2) + jnp.sum(jnp.sin(y[..., 4:]))

    dp, (dx1, dx2) = jax.grad(loss, argnums=(0, 1))(params, halves)
    dp_ref, dx_ref = jax.grad(loss_plain, argnums=(0, 1))(params, x)
    np.testing.assert_allclose(jnp.concatenate([dx1, dx2], -1), dx_ref, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), dp, dp_ref)


def test_stage_rejects_mismatched_halves():
    params = ({"w": jnp.zeros((1, 4, 4))}, {"w": jnp.zeros((1, 4, 4))})
    with pytest.raises(ValueError, match="one shape and dtype"):
        reversible_stage(_branch, _branch, params, None, (jnp.zeros((2, 4)), jnp.zeros((3, 4))))
    with pytest.raises(ValueError, match="a pair"):
        reversible_stage(_branch, _branch, params, None, (jnp.zeros((2, 4)),) * 3)
