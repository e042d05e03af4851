"""RevSResNet / MS-ResNet: exact parameter counts, shapes, reversible-vs-plain gradients, memory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from revsnn_jax import models, steps
from revsnn_jax.memory import benchmark
from revsnn_jax.steps import losses

# Counts of the PyTorch reference (mi804/RevSNN) (BN running stats excluded).
REFERENCE_PARAMS = [
    ("revsresnet21", 100, 11_048_420), ("revsresnet21", 10, 10_967_690),
    ("revsresnet37", 100, 23_590_884), ("revsresnet37", 10, 23_510_154),
    ("revsresnet109", 100, 70_075_876), ("revsresnet109", 10, 69_995_146),
    ("msresnet18", 100, 11_220_132), ("msresnet18", 10, 11_173_962),
    ("msresnet34", 100, 21_328_292), ("msresnet34", 10, 21_282_122),
    ("revsresnet24", 10, 260_362), ("msresnet20", 10, 272_330),
]


@pytest.mark.parametrize(("name", "num_classes", "expected"), REFERENCE_PARAMS)
def test_parameter_count_matches_reference(name, num_classes, expected):
    model = models.abstract_model(name, num_classes=num_classes)  # nothing allocated
    assert models.count_params(model) == expected


def test_registry_lists_the_family():
    names = {m.name for m in models.list_models()}
    assert {"revsresnet21", "revsresnet37", "revsresnet109", "revsresnet24", "msresnet18",
            "msresnet34", "msresnet104", "msresnet20"} <= names
    assert models.get_info("revsresnet37").counterpart == "msresnet34"
    with pytest.raises(ValueError, match="not available"):
        models.create("msresnet34", memory_mode="reversible")


@pytest.mark.parametrize(("name", "x_shape"), [
    ("revsresnet37", (2, 32, 32, 3)), ("msresnet34", (2, 32, 32, 3)),
    ("revsresnet24", (3, 2, 128, 128, 2)), ("msresnet20", (3, 2, 128, 128, 2)),
])
def test_full_size_output_shape(name, x_shape):
    model = models.abstract_model(name, num_classes=7, time_steps=3)
    out = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct(x_shape, jnp.float32))
    assert out.shape == (2, 7) and out.dtype == jnp.float32


def _numpy_initialised(name, dtype, seed=0, **kw):
    """A small model with random values drawn by NumPy.

    Compiling JAX's threefry sampler once per parameter shape dominates the test time on a
    busy 2-core CPU; the gradient tests only need *some* random values of the right scale.
    """
    abstract = models.abstract_model(name, num_classes=3, time_steps=2, param_dtype=dtype, **kw)
    graph, params, state = nnx.split(abstract, nnx.Param, ...)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = jax.tree_util.keystr(path)
        shape = leaf.shape
        if "kernel" in key and len(shape) >= 4:  # conv [.., kh, kw, in, out]: kaiming fan_out
            std = np.sqrt(2.0 / (shape[-4] * shape[-3] * shape[-1]))
            value = rng.normal(0.0, std, shape)
        elif "kernel" in key:  # linear [in, out]
            value = rng.uniform(-1, 1, shape) / np.sqrt(shape[-2])
        elif "scale" in key:
            value = 1.0 + 0.1 * rng.normal(size=shape)
        elif "var" in key:
            value = np.ones(shape)
        else:  # bias, running mean
            value = 0.1 * rng.normal(size=shape)
        return jnp.asarray(value, leaf.dtype)

    params = jax.tree_util.tree_map_with_path(fill, params)
    state = jax.tree_util.tree_map_with_path(fill, state)
    return nnx.merge(graph, params, state)


def _grads(name, memory_mode, x, y, dtype, **kw):
    model = _numpy_initialised(name, dtype, memory_mode=memory_mode, **kw)
    fns, params, state = steps.split_model(model)

    def loss(p):
        logits, new_state = fns.apply(p, state, x, train=True)
        return losses.cross_entropy(logits, y), (logits, new_state)

    (value, (logits, new_state)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, logits, new_state, g


# Small-width variants of each family (a 2-stage RevSResNet, CIFAR IF and DVS LIF neurons).
SMALL = {
    "revsresnet21": dict(widths=(2, 2), blocks=(1, 2)),
    "revsresnet24": dict(widths=(2, 2), blocks=(1, 2)),
    "msresnet18": dict(widths=(2, 4), blocks=(1, 1)),
}


def _inputs(name, dtype):
    kx, _ = jax.random.split(jax.random.key(42))
    shape = (2, 2, 16, 16, 2) if name == "revsresnet24" else (2, 8, 8, 3)
    return jax.random.normal(kx, shape, dtype) * 2.0, jnp.array([0, 2])


@pytest.mark.parametrize(("name", "modes"), [
    ("revsresnet21", ("reversible", "none")),
    pytest.param("revsresnet24", ("reversible", "none"), marks=pytest.mark.slow),
    pytest.param("msresnet18", ("checkpoint", "none"), marks=pytest.mark.slow),
])
def test_memory_modes_give_identical_gradients_float64(name, modes):
    x, y = _inputs(name, jnp.float64)
    a = _grads(name, modes[0], x, y, jnp.float64, **SMALL[name])
    b = _grads(name, modes[1], x, y, jnp.float64, **SMALL[name])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-12)
    # BatchNorm running statistics are updated once per step in every mode.
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14),
                 a[2], b[2])
    flat_a, flat_b = jax.tree.leaves(a[3]), jax.tree.leaves(b[3])
    assert len(flat_a) == len(flat_b)
    assert sum(float(jnp.abs(g).sum()) for g in flat_a) > 0
    for ga, gb in zip(flat_a, flat_b, strict=True):
        assert ga.dtype == jnp.float64
        np.testing.assert_allclose(ga, gb, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_reversible_gradients_float32():
    x, y = _inputs("revsresnet21", jnp.float32)
    a = _grads("revsresnet21", "reversible", x, y, jnp.float32, **SMALL["revsresnet21"])
    b = _grads("revsresnet21", "none", x, y, jnp.float32, **SMALL["revsresnet21"])
    for ga, gb in zip(jax.tree.leaves(a[3]), jax.tree.leaves(b[3]), strict=True):
        assert ga.dtype == jnp.float32
        scale = float(jnp.abs(gb).max()) + 1e-12
        np.testing.assert_allclose(ga / scale, gb / scale, atol=1e-4)


@pytest.mark.slow
def test_train_step_runs_and_updates():
    model = models.create("msresnet20", num_classes=3, widths=(2, 2), blocks=(1, 1),
                          rngs=nnx.Rngs(0))
    fns, params, state = steps.split_model(model)
    opt = optax.sgd(0.1, momentum=0.9)
    step = jax.jit(steps.make_train_step(fns, opt))
    x, y = _inputs("revsresnet24", jnp.float32)
    new_params, _, _, metrics = step(params, state, opt.init(params), x, y)
    assert np.isfinite(float(metrics["loss"]))
    moved = [float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(new_params), jax.tree.leaves(params), strict=True)]
    assert max(moved) > 0


def test_reversible_memory_per_image_is_flat_in_depth_and_below_plain():
    """The RevSNN claim on a reduced config (compile only): memory per image of a reversible
    stage does not grow with its blocks, one block included, and stays well below MS-ResNet's.

    A 1-block stage is the hard case: XLA removes its loop of trip count 1 and, without the
    engine's data-dependence ties, merges the backward's recompute with the forward."""
    common = dict(batch=2, time_steps=2, image_size=8)

    def per_image(name, mode, widths, blocks):
        row = benchmark.measure_training_step(
            name, memory_mode=mode, model_kwargs=dict(widths=widths, blocks=blocks), **common)
        return row["bytes_per_image"]

    # One stage: the stem and head are small, the stage dominates.
    rev_one = per_image("revsresnet21", "reversible", (8,), (1,))
    rev_shallow = per_image("revsresnet21", "reversible", (8,), (2,))
    rev_deep = per_image("revsresnet21", "reversible", (8,), (6,))
    ms_deep = per_image("msresnet34", "none", (16,), (6,))
    assert rev_deep <= 1.1 * rev_shallow
    assert max(rev_one, rev_deep) <= 1.15 * min(rev_one, rev_deep)
    assert rev_deep < 0.5 * ms_deep


def test_msresnet_checkpoint_mode_saves_memory():
    """Per-block remat must lower the compiled plan, not only in name: <= 0.6x of plain."""
    common = dict(batch=2, time_steps=2, image_size=8,
                  model_kwargs=dict(widths=(8, 16), blocks=(3, 3)))
    plain = benchmark.measure_training_step("msresnet34", memory_mode="none", **common)
    remat = benchmark.measure_training_step("msresnet34", memory_mode="checkpoint", **common)
    assert remat["bytes_per_image"] <= 0.6 * plain["bytes_per_image"]
