"""RevSFormer / Spikingformer: exact parameter counts, attention, reversible gradients, memory."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from revsnn_jax import models
from revsnn_jax.models import former

# Counts of the PyTorch reference (mi804/RevSNN) (BN running statistics excluded).
REFERENCE_PARAMS = [
    ("revsformer_2_384", 10, 5_766_586), ("revsformer_4_384", 10, 9_323_962),
    ("spikingformer_2_384", 10, 5_762_746), ("spikingformer_4_384", 10, 9_320_122),
    ("revsformer_2_256", 10, 2_569_226), ("spikingformer_2_256", 10, 2_566_666),
    ("revsformer_2_384", 100, 5_835_796), ("revsformer_4_384", 100, 9_393_172),
    ("spikingformer_2_384", 100, 5_797_396), ("spikingformer_4_384", 100, 9_354_772),
]


@pytest.mark.parametrize(("name", "num_classes", "expected"), REFERENCE_PARAMS)
def test_parameter_count_matches_reference(name, num_classes, expected):
    model = models.abstract_model(name, num_classes=num_classes)  # nothing allocated
    assert models.count_params(model) == expected


def test_registry_heads_and_overrides():
    names = {m.name for m in models.list_models()}
    assert {"revsformer_2_384", "revsformer_4_384", "revsformer_2_256", "spikingformer_2_384",
            "spikingformer_4_384", "spikingformer_2_256"} <= names
    assert models.get_info("revsformer_4_384").counterpart == "spikingformer_4_384"
    assert models.abstract_model("revsformer_2_384", num_classes=10).heads == 12
    assert models.abstract_model("spikingformer_4_384", num_classes=100).heads == 8
    assert models.abstract_model("revsformer_2_256").heads == 16
    small = models.abstract_model("revsformer_4_384", depth=3, dim=32, heads=2)
    assert (small.depth, small.dim, small.heads) == (3, 32, 2)
    assert models.abstract_model("revsformer_4_384", blocks=(6,), widths=(16,), heads=2).depth == 6
    with pytest.raises(ValueError, match="not available"):
        models.create("spikingformer_2_384", memory_mode="reversible")


@pytest.mark.parametrize(("name", "x_shape"), [
    ("revsformer_4_384", (2, 32, 32, 3)), ("spikingformer_4_384", (2, 32, 32, 3)),
    ("revsformer_2_256", (3, 2, 128, 128, 2)), ("spikingformer_2_256", (3, 2, 128, 128, 2)),
])
def test_full_size_output_shape(name, x_shape):
    model = models.abstract_model(name, num_classes=7, time_steps=3)
    tokens = nnx.eval_shape(lambda m, x: m.tokenizer(x), model,
                            jax.ShapeDtypeStruct(x_shape, jnp.float32))
    assert tokens.shape == (3, 2, 64, model.dim)
    out = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct(x_shape, jnp.float32))
    assert out.shape == (2, 7) and out.dtype == jnp.float32


# --------------------------------------------------------------------------- attention
def _np_lif(x, tau, v_th):
    """SpikingJelly MultiStepLIFNode (decay_input, hard reset to 0) over axis 0, plain loop."""
    v = np.zeros(x.shape[1:])
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau
        s = (h >= v_th).astype(x.dtype)
        v = h * (1 - s)
        out[t] = s
    return out


def _np_bn(x, scale, bias, eps=1e-5):
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axes), x.var(axes)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_spiking_attention_matches_plain_loop():
    """(q k^T) v * 0.125 over binary spikes, looped over t, batch, heads and tokens."""
    rng = np.random.default_rng(0)
    t_, b_, h_, n_, d_ = 2, 2, 3, 5, 4
    q, k, v = (rng.integers(0, 2, (t_, b_, h_, n_, d_)).astype(np.float64) for _ in range(3))
    expected = np.zeros_like(q)
    for t in range(t_):
        for b in range(b_):
            for h in range(h_):
                for i in range(n_):  # query token
                    for j in range(n_):  # key token
                        expected[t, b, h, i] += (q[t, b, h, i] @ k[t, b, h, j]) * v[t, b, h, j]
    got = former.spiking_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    np.testing.assert_array_equal(np.asarray(got), expected * 0.125)  # integer sums: exact


def test_ssa_module_matches_numpy_reference():
    """The whole SSA (LIF -> q/k/v LIF(BN(W x)) -> attention -> LIF_0.5 -> BN(W x + b))."""
    dim, heads, tau = 16, 2, 2.0
    ssa = former.SpikingSelfAttention(dim, heads, former.CIFAR_FORMER_NEURON,
                                      param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    for bn in (ssa.q_bn, ssa.k_bn, ssa.v_bn):  # denser q/k/v spikes, so attn_lif fires
        bn.scale[...] = jnp.full((dim,), 2.5, jnp.float64)
        bn.bias[...] = jnp.full((dim,), 1.0, jnp.float64)
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 1.5, (4, 2, 32, dim))  # [T, B, N, C]
    w = {name: np.asarray(getattr(ssa, name).linear.kernel[...])
         for name in ("q_conv", "k_conv", "v_conv", "out_conv")}
    b_out = np.asarray(ssa.out_conv.linear.bias[...])
    ones, zeros = np.ones(dim), np.zeros(dim)

    s = _np_lif(x, tau, 1.0)
    q, k, v = (_np_lif(_np_bn(s @ w[f"{n}_conv"], 2.5 * ones, ones), tau, 1.0) for n in "qkv")
    t_, b_, n_, _ = x.shape
    d = dim // heads
    attn = np.zeros((t_, b_, n_, dim))
    for t in range(t_):
        for b in range(b_):
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                for i in range(n_):
                    for j in range(n_):
                        attn[t, b, i, sl] += (q[t, b, i, sl] @ k[t, b, j, sl]) * v[t, b, j, sl]
    attn *= 0.125
    expected = _np_bn(_np_lif(attn, tau, 0.5) @ w["out_conv"] + b_out, ones, zeros)
    got = ssa(jnp.asarray(x))
    assert np.asarray(q).any() and np.asarray(_np_lif(attn, tau, 0.5)).any()  # spikes happen
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- gradients
SMALL = dict(dim=16, depth=2, heads=2)


def _numpy_initialised(name, dtype, seed=0, **kw):
    """A small model with NumPy-drawn values (avoids compiling JAX's sampler per shape)."""
    abstract = models.abstract_model(name, num_classes=3, time_steps=3, param_dtype=dtype, **kw)
    graph, params, state = nnx.split(abstract, nnx.Param, ...)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = jax.tree_util.keystr(path)
        shape = leaf.shape
        if "kernel" in key:  # conv [.., kh, kw, in, out] or linear [.., in, out]
            fan_in = int(np.prod(shape[-4:-1])) if len(shape) >= 4 and "conv'" in key \
                else shape[-2]
            value = rng.uniform(-1, 1, shape) * np.sqrt(3.0 / fan_in)
        elif "scale" in key:
            value = 1.0 + 0.3 * rng.normal(size=shape)
        elif "var" in key:
            value = np.ones(shape)
        elif "bias" in key and "bn" in key:
            value = 0.5 + 0.3 * rng.normal(size=shape)  # enough spikes in the small model
        else:  # linear bias, running mean
            value = 0.1 * rng.normal(size=shape)
        return jnp.asarray(value, leaf.dtype)

    params = jax.tree_util.tree_map_with_path(fill, params)
    state = jax.tree_util.tree_map_with_path(fill, state)
    return nnx.merge(graph, params, state)


def _grads(name, memory_mode, x, y, dtype):
    from revsnn_jax import steps
    from revsnn_jax.steps import losses

    model = _numpy_initialised(name, dtype, memory_mode=memory_mode, **SMALL)
    fns, params, state = steps.split_model(model)

    def loss(p):
        logits, new_state = fns.apply(p, state, x, train=True)
        return losses.cross_entropy(logits, y), (logits, new_state)

    (value, (logits, new_state)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, logits, new_state, g


@pytest.mark.parametrize(("name", "modes"), [
    ("revsformer_2_384", ("reversible", "none")),
    pytest.param("spikingformer_2_384", ("checkpoint", "none"), marks=pytest.mark.slow),
])
def test_memory_modes_give_identical_gradients_float64(name, modes):
    x = jax.random.normal(jax.random.key(3), (2, 16, 16, 3), jnp.float64) * 2.0
    y = jnp.array([0, 2])
    a = _grads(name, modes[0], x, y, jnp.float64)
    b = _grads(name, modes[1], x, y, jnp.float64)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-12)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14),
                 a[2], b[2])  # BatchNorm running statistics updated once in every mode
    flat_a, flat_b = jax.tree.leaves(a[3]), jax.tree.leaves(b[3])
    assert len(flat_a) == len(flat_b)
    # the attention's q/k/v convolutions receive gradient (spikes flow through the SSA)
    attn = a[3]["blocks"]["f"] if "blocks" in a[3] else a[3]["layers"][0]["attn"]
    for conv in ("q_conv", "k_conv", "v_conv", "out_conv"):
        assert float(jnp.abs(attn[conv]["linear"]["kernel"][...]).max()) > 0, conv
    for ga, gb in zip(flat_a, flat_b, strict=True):
        assert ga.dtype == jnp.float64
        np.testing.assert_allclose(ga, gb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("binary", [True, False])
def test_lean_max_pool_matches_layers_max_pool(binary):
    """Same values and gradients (first maximum per window, ties included) as layers.max_pool."""
    from revsnn_jax.layers import lean_max_pool, max_pool

    rng = np.random.default_rng(0)
    pools = [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2)]
    for shape, (window, stride, padding) in itertools.product(
            [(2, 3, 8, 8, 4), (2, 7, 9, 3)], pools):
        x = rng.integers(0, 2, shape) if binary else rng.normal(size=shape)
        x = jnp.asarray(x, jnp.float64)
        a, pull_a = jax.vjp(functools.partial(max_pool, window=window, stride=stride,
                                              padding=padding), x)
        g = jnp.asarray(rng.normal(size=a.shape))
        # spike_input keeps 0/1 inputs as bits for the backward: same gradient
        for spike_input in ((False, True) if binary else (False,)):
            b, pull_b = jax.vjp(functools.partial(
                lean_max_pool, window=window, stride=stride, padding=padding,
                spike_input=spike_input), x)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            np.testing.assert_allclose(pull_a(g)[0], pull_b(g)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("v_threshold", [1.0, 0.5])
def test_former_neuron_recompute_backward_matches_autodiff(v_threshold):
    """The transformers' neurons keep only their input (backward="recompute"): same values and
    gradients as autodiff of the plain scan."""
    from revsnn_jax import neurons

    cfg = former.CIFAR_FORMER_NEURON._replace(v_threshold=v_threshold)
    assert cfg.backward == "recompute"
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(0.8, 1.5, (5, 3, 7)))
    a, pull_a = jax.vjp(lambda z: neurons.neuron_multistep(z, cfg._replace(backward="autodiff")),
                        x)
    b, pull_b = jax.vjp(lambda z: neurons.neuron_multistep(z, cfg), x)
    g = jnp.asarray(rng.normal(size=a.shape))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert 0.1 < float(a.mean()) < 0.9
    np.testing.assert_allclose(pull_a(g)[0], pull_b(g)[0], rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- memory
def test_reversible_memory_per_image_is_flat_in_depth_and_below_plain():
    """The RevSNN claim on a reduced config (compile only): RevSFormer's memory per image does
    not grow with depth and stays below Spikingformer's at the same depth."""
    from revsnn_jax.memory import benchmark

    common = dict(batch=2, time_steps=2, image_size=8)

    def per_image(name, mode, depth):
        row = benchmark.measure_training_step(
            name, memory_mode=mode, model_kwargs=dict(dim=32, heads=2, depth=depth), **common)
        return row["bytes_per_image"]

    rev_shallow = per_image("revsformer_4_384", "reversible", 2)
    rev_deep = per_image("revsformer_4_384", "reversible", 4)
    plain_deep = per_image("spikingformer_4_384", "none", 4)
    assert rev_deep <= 1.1 * rev_shallow
    assert rev_deep < 0.6 * plain_deep
