"""Tests of the reversible spiking node (``revsnn_jax.neurons.reversible_node``): exact reconstruction of
inputs and membrane potentials, gradients against plain autodiff, FLOPs of the streamlined
backward (node and engine), and a small ``vgg11_revnode`` that learns. Tiny shapes; float64 is
enabled by ``conftest.py``, so dtypes are explicit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from revsnn_jax.neurons.reversible_node import (
    ReversibleNode,
    RevNodeConfig,
    reversible_node,
    revnode_forward_residuals,
    revnode_inverse,
    revnode_reference,
)

CONFIGS = [
    RevNodeConfig(),
    RevNodeConfig(tau=4.0 / 3.0, detach_reset=True, surrogate="atan", coupling=0.5),
    RevNodeConfig(tau=4.0, v_threshold=0.5),
]


def _x(shape, dtype, seed=0, scale=1.5):
    return jax.random.normal(jax.random.key(seed), shape, dtype) * scale


@pytest.mark.parametrize("cfg", CONFIGS)
def test_roundtrip_inputs_and_potentials_t32(cfg):
    x = _x((32, 3, 12), jnp.float32)
    y, final, bits = revnode_forward_residuals(x, cfg)
    y_ref, (v1, v2) = revnode_reference(x, cfg, return_potentials=True)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    assert float(jnp.mean(jnp.abs(y - x) > 0.25 * cfg.coupling)) > 0.02  # neurons do spike
    x_rec, (w1, w2) = revnode_inverse(y, final, bits, cfg)
    q = 2.0 ** cfg.frac_bits
    x_grid = jnp.round(x * q) / q
    for rec, ref in ((x_rec, x_grid), (w1, v1), (w2, v2)):
        err = float(jnp.max(jnp.abs(rec - ref)) / jnp.max(jnp.abs(ref)))
        assert err <= 1e-5, err
    # the grid quantises the input by at most half a step
    assert float(jnp.max(jnp.abs(x_grid - x))) <= 0.5 / q


def test_residuals_are_output_final_potentials_and_bits():
    x = jax.ShapeDtypeStruct((16, 2, 4, 4, 16), jnp.float32)
    _, vjp = jax.eval_shape(lambda x: jax.vjp(reversible_node, x), x)
    leaves = jax.tree.leaves(vjp)
    floats = [leaf for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)]
    # one float array of the output's shape, nothing per step in floating point
    assert [leaf.shape for leaf in floats if leaf.size > 1] == [x.shape]
    nbytes = sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
    out_bytes = np.prod(x.shape) * 4
    # tau=2: 2 bits per neuron-step + two int32 final potentials (+ scalars)
    expected = np.prod(x.shape) * 2 / 8 + np.prod(x.shape[1:]) * 4
    assert nbytes - out_bytes <= expected + 64


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-9), (jnp.float32, 1e-4)])
@pytest.mark.parametrize("cfg", CONFIGS[:2])
@pytest.mark.parametrize("backward", ["streamlined", "naive"])
def test_gradients_match_plain_autodiff(dtype, rtol, cfg, backward):
    x = _x((8, 2, 3, 10), dtype, seed=1)
    ct = _x(x.shape, dtype, seed=2, scale=1.0)

    def loss(mode):
        return lambda x: jnp.sum(jnp.tanh(reversible_node(x, cfg, memory_mode=mode,
                                                          backward=backward)) * ct)

    g_ref = jax.jit(jax.grad(loss("none")))(x)
    g_rev = jax.jit(jax.grad(loss("reversible")))(x)
    assert g_rev.dtype == dtype
    assert float(jnp.max(jnp.abs(g_ref))) > 0
    np.testing.assert_allclose(np.asarray(g_rev), np.asarray(g_ref), rtol=0,
                               atol=rtol * float(jnp.max(jnp.abs(g_ref))))


def test_surrogate_path_carries_gradient_through_time():
    # the gradient of the last output w.r.t. the first input exists only through the membranes
    cfg = RevNodeConfig()
    x = _x((6, 1, 8), jnp.float64, seed=3, scale=0.8)
    g = jax.grad(lambda x: jnp.sum(reversible_node(x, cfg)[-1]))(x)
    assert float(jnp.max(jnp.abs(g[0]))) > 0


def test_module_and_errors():
    node = ReversibleNode()
    y = node(_x((4, 2, 6), jnp.float32))
    assert y.shape == (4, 2, 6) and y.dtype == jnp.float32
    with pytest.raises(ValueError, match="even"):
        node(_x((4, 2, 5), jnp.float32))
    with pytest.raises(ValueError, match="tau"):
        RevNodeConfig(tau=1.5)
    with pytest.raises(ValueError, match="backward"):
        reversible_node(_x((4, 2, 6), jnp.float32), backward="fast")
    with pytest.raises(TypeError, match="floating"):
        reversible_node(jnp.ones((4, 2, 6), jnp.int32))


def _flops(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost["flops"])


def test_node_streamlined_backward_fewer_flops_than_naive():
    x = jax.ShapeDtypeStruct((4, 4, 8, 8, 32), jnp.float32)
    # rolled loops: XLA counts one body per loop, the same structure in all three programs
    # (unrolled, fusion duplicates cheap producers into consumers and blurs the comparison)
    cfg = RevNodeConfig(unroll=1)

    def grad_flops(backward):
        return _flops(jax.grad(lambda x: jnp.sum(reversible_node(x, cfg, backward=backward) ** 2)),
                      x)

    fwd = _flops(lambda x: jnp.sum(reversible_node(x, cfg) ** 2), x)
    stream, naive = grad_flops("streamlined"), grad_flops("naive")
    # backward FLOPs = step FLOPs minus the forward's
    assert stream - fwd <= 0.8 * (naive - fwd), (fwd, stream, naive)


# --------------------------------------------------------------------------- engine backward
def _branch(p, s, x, key):
    """IF -> linear -> BN -> IF -> linear -> BN on dense features ``[T, B, C/2]`` (RevSResNet's
    branch with dense layers; BN with batch statistics, no running state)."""
    from revsnn_jax import neurons

    def bn(h):
        mean = jnp.mean(h, (0, 1))
        return (h - mean) * jax.lax.rsqrt(jnp.var(h, (0, 1)) + 1e-5)

    h = bn(neurons.if_multistep(x, surrogate="atan")[0] @ p["w1"])
    return bn(neurons.if_multistep(h, surrogate="atan")[0] @ p["w2"]), s


def _engine_args(dtype, num_blocks=2, half=32, shape=(4, 8)):
    keys = jax.random.split(jax.random.key(5), 4)
    w = lambda k: jax.random.normal(k, (num_blocks, half, half), dtype) * (2.0 / half ** 0.5)  # noqa: E731
    params = ({"w1": w(keys[0]), "w2": w(keys[1])}, {"w1": w(keys[2]), "w2": w(keys[3])})
    x = jax.random.normal(jax.random.key(6), (*shape, 2 * half), dtype)
    return params, x


def _stage_loss(mode, backward="streamlined"):
    from revsnn_jax.reversible import reversible_stage

    def loss(params, x):
        y, _ = reversible_stage(_branch, _branch, params, None, x, memory_mode=mode,
                                backward=backward)
        return jnp.sum(y ** 2)

    return loss


def test_engine_naive_backward_same_gradients():
    params, x = _engine_args(jnp.float64, half=8)
    g_ref = jax.grad(_stage_loss("none"), argnums=(0, 1))(params, x)
    for backward in ("streamlined", "naive"):
        g = jax.grad(_stage_loss("reversible", backward), argnums=(0, 1))(params, x)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                       atol=1e-9 * float(jnp.max(jnp.abs(b))))
    with pytest.raises(ValueError, match="backward"):
        _stage_loss("reversible", "slow")(params, x)


def test_engine_streamlined_flops():
    # Same loop structure in every build (a scan over blocks, neuron scans inside), so XLA's
    # per-body FLOP counts are comparable.
    params, x = _engine_args(jnp.float32)
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    x = jax.ShapeDtypeStruct(x.shape, x.dtype)
    fwd = _flops(_stage_loss("none"), params, x)
    plain = _flops(jax.grad(_stage_loss("none")), params, x)
    stream = _flops(jax.grad(_stage_loss("reversible", "streamlined")), params, x)
    naive = _flops(jax.grad(_stage_loss("reversible", "naive")), params, x)
    assert stream <= 1.4 * plain, (plain, stream)
    assert stream - fwd <= 0.8 * (naive - fwd), (fwd, stream, naive)


# --------------------------------------------------------------------------- networks
def test_networks_registered_with_node_option():
    from revsnn_jax.models import count_params, create, get_info

    for name, node, mode in (("vgg11", "lif", "none"), ("vgg11_revnode", "reversible",
                                                          "reversible"),
                             ("resnet19", "lif", "none"),
                             ("resnet19_revnode", "reversible", "reversible")):
        info = get_info(name)
        assert info.reversible == (node == "reversible")
        model = create(name, width=4, num_classes=7, time_steps=2)
        assert model.node_kind == node and model.memory_mode == mode
    # the node has no parameters: both nodes give the same parameter count
    assert count_params(create("vgg11", width=4)) == count_params(create("vgg11_revnode",
                                                                          width=4))
    with pytest.raises(ValueError, match="memory_mode"):
        create("vgg11", memory_mode="reversible")


def test_small_vgg11_revnode_learns_digits():
    import optax
    from flax import nnx

    from revsnn_jax import steps
    from revsnn_jax.data import load_digits
    from revsnn_jax.models import create

    data = load_digits("train")
    x = jnp.asarray(np.repeat(np.repeat(data.images[:64], 4, axis=1), 4, axis=2))  # 32x32
    y = jnp.asarray(data.labels[:64])
    model = create("vgg11_revnode", width=4, time_steps=2, in_channels=1, rngs=nnx.Rngs(0))
    fns, params, state = steps.split_model(model)
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)
    step = jax.jit(steps.make_train_step(fns, opt))
    losses = []
    for _ in range(6):
        params, state, opt_state, metrics = step(params, state, opt_state, x, y)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def _bench_revnode():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "bench_revnode.py"
    spec = importlib.util.spec_from_file_location("bench_revnode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_saved_bytes_counts_each_buffer_once_with_its_role():
    """The node-level measure: residual buffers of ``jax.vjp``, each once, input / output
    recognised; known answers for functions whose residuals are known."""
    bench = _bench_revnode()
    x = jnp.linspace(-1.0, 1.0, 24, dtype=jnp.float32).reshape(4, 6)
    r = bench.jax_saved_bytes(lambda x: x * x, x)  # keeps x itself
    assert (r["bytes"], r["input_bytes"], r["output_bytes"]) == (96, 96, 0)
    r = bench.jax_saved_bytes(jnp.sin, x)  # keeps cos(x)
    assert (r["bytes"], r["input_bytes"], r["output_bytes"]) == (96, 0, 0)

    @jax.custom_vjp
    def f(x):
        return 2 * x

    def f_fwd(x):
        y = 2 * x
        return y, (y, y, (x > 0).astype(jnp.int8))  # the output twice, a byte per element

    f.defvjp(f_fwd, lambda res, g: (2 * g,))
    r = bench.jax_saved_bytes(f, x)
    assert (r["bytes"], r["output_bytes"]) == (96 + 24, 96)
    assert sorted(role for *_, role in r["arrays"]) == ["internal", "output"]
    # the reversible node: its output, two final potentials, 2 bit planes per group (tau 2)
    xn = _x((8, 2, 32), jnp.float32)
    r = bench.jax_saved_bytes(lambda x: reversible_node(x), xn)
    assert r["output_bytes"] == xn.size * 4
    assert r["bytes"] - r["output_bytes"] == 2 * 2 * 16 * 4 + 2 * 8 * 2 * 2 * 2


def _block_fns(dtype, pools=1):
    from revsnn_jax.layers import avg_pool, batch_norm_train

    def pre(p, z):
        return batch_norm_train(z, p[0], p[1], 1e-5)

    def post(w, y):
        for _ in range(pools):
            y = avg_pool(y, 2, 2, 0)
        t, b = y.shape[:2]
        out = jax.lax.conv_general_dilated(y.reshape((t * b, *y.shape[2:])), w, (1, 1),
                                           ((1, 1), (1, 1)),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out.reshape((t, b, *out.shape[1:]))

    return pre, post


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-10), (jnp.float32, 2e-5)])
@pytest.mark.parametrize("static,local", [(False, False), (True, False), (False, True),
                                          (True, True)])
def test_block_gradients_match_plain_autodiff(dtype, rtol, static, local):
    """``pre -> node -> post`` keeping neither X nor Y: values and every gradient (pre's
    parameters and input, post's parameters) equal plain autodiff of the same function."""
    from revsnn_jax.layers.revnode_block import revnode_block, revnode_block_reference

    cfg = RevNodeConfig()
    t = 6
    from revsnn_jax.layers.revnode_block import avg_pool2

    pre, post = _block_fns(dtype, pools=0 if local else 1)
    kw = dict(local_fn=avg_pool2) if local else {}
    shape = (2, 8, 8, 6) if static else (t, 2, 8, 8, 6)
    z = _x(shape, dtype, seed=1, scale=2.0)
    p = (1.0 + 0.5 * _x((6,), dtype, seed=2), 0.3 * _x((6,), dtype, seed=3))
    w = 0.3 * _x((3, 3, 6, 4), dtype, seed=4)
    ct = _x((t, 2, 4, 4, 4), dtype, seed=5)
    steps = t if static else None

    def loss(fn):
        def f(p, z, w):
            out = fn(pre, post, p, z, w, cfg, time_steps=steps, **kw)
            return jnp.sum((out[0] if isinstance(out, tuple) else out) * ct)
        return f

    out, rate = revnode_block(pre, post, p, z, w, cfg, time_steps=steps, **kw)
    ref = revnode_block_reference(pre, post, p, z, w, cfg, time_steps=steps, **kw)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=rtol, atol=rtol)
    assert 0.02 < float(rate) < 0.98
    got = jax.jit(jax.grad(loss(revnode_block), argnums=(0, 1, 2)))(p, z, w)
    want = jax.jit(jax.grad(loss(revnode_block_reference), argnums=(0, 1, 2)))(p, z, w)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = float(jnp.max(jnp.abs(r)))
        assert scale > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=rtol, atol=rtol * scale)


def test_block_keeps_neither_input_nor_output_of_the_node():
    """The block's residuals: pre's parameters and input, post's kernel, two final potentials
    and the bit planes; nothing of the node's [T, ..., C] size in floating point."""
    from revsnn_jax.layers.revnode_block import revnode_block

    pre, post = _block_fns(jnp.float32)
    z = _x((8, 2, 8, 8, 6), jnp.float32)
    p = (jnp.ones(6, jnp.float32), jnp.zeros(6, jnp.float32))
    w = 0.3 * _x((3, 3, 6, 4), jnp.float32, seed=4)
    bench = _bench_revnode()
    r = bench.jax_saved_bytes(lambda z: revnode_block(pre, post, p, z, w, RevNodeConfig())[0], z)
    assert r["input_bytes"] == z.size * 4
    internal = r["bytes"] - r["input_bytes"]
    assert internal <= w.size * 4 + 2 * 6 + 2 * 2 * 8 * 8 * 3 * 4 + 2 * 8 * 2 * 2 * 8 * 8 + 64


def test_vgg11_revnode_linked_path_equals_plain_autodiff():
    """``vgg11_revnode`` in training with ``memory_mode="reversible"`` (every BN -> node ->
    pools -> conv one ``revnode_block``) against the same network under plain autodiff: loss,
    every parameter gradient and the BatchNorm running statistics, float64; the firing rates
    of all 8 nodes are recorded."""
    from flax import nnx

    from revsnn_jax.core.nnx_utils import call_capturing
    from revsnn_jax.models import create

    x = _x((2, 32, 32, 3), jnp.float64, seed=7)
    labels = jnp.array([1, 2])

    def loss(model):
        logits = model(x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

    results = {}
    for mode in ("reversible", "none"):
        model = create("vgg11_revnode", widths=(2, 2, 4, 4, 4), time_steps=3,
                       memory_mode=mode, param_dtype=jnp.float64)
        value, grads = nnx.jit(lambda m: nnx.value_and_grad(loss)(m))(model)
        results[mode] = value, grads, nnx.state(model, nnx.BatchStat)
        _, sown = call_capturing(model, x)
        rates = [float(r) for r in jax.tree.leaves(sown)]
        assert len(rates) == 8 and all(0 < r < 1 for r in rates)
    (v, g, s), (v_ref, g_ref, s_ref) = results["reversible"], results["none"]
    np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9,
                                   atol=1e-11 * float(jnp.max(jnp.abs(b))))
    for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_vgg11_revnode_needs_less_memory_per_image_than_vgg11():
    """The node exists to save memory: on XLA:CPU's compiled training step (width 8, T = 4,
    batch 2 -> 4), ``vgg11_revnode`` (reversible) needs at most 0.8x of ``vgg11``'s memory per
    image. Without :func:`revsnn_jax.core.ties.anchor` in the block's backward, XLA kept every
    layer's BatchNorm input and cotangent to the end of the backward and it needed more."""
    from revsnn_jax.memory import benchmark

    common = dict(batch=2, time_steps=4, model_kwargs=dict(width=8))
    lif = benchmark.measure_training_step("vgg11", memory_mode="none", **common)
    rev = benchmark.measure_training_step("vgg11_revnode", memory_mode="reversible", **common)
    assert rev["bytes_per_image"] <= 0.8 * lif["bytes_per_image"], (rev, lif)
