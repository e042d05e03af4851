"""T-RevSNN: parameter counts, exact gradients of the temporal reversible backward, state
reconstruction over many columns, and training memory that does not grow with T."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from revsnn_jax import memory
from revsnn_jax.core.nnx_utils import merge_fresh
from revsnn_jax.models import create, trevsnn
from revsnn_jax.steps import losses

TINY = dict(channels=(4, 8, 8, 8), kernel=3, num_classes=5)


def _param_count(name, **kwargs):
    model = nnx.eval_shape(lambda: create(name, rngs=nnx.Rngs(0), **kwargs))
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name, kwargs, expected", [
    ("trevsnn_small", {}, 32_331_312),          # the reference log's "number of params"
    ("trevsnn_tiny", {}, 17_203_856),
    ("trevsnn_tiny", {"kernel": 5}, 17_376_912),
    ("trevsnn_tiny_dvs", {}, 10_220_364),      # 8 columns, 10 classes, per-column stems
])
def test_parameter_counts_match_the_reference(name, kwargs, expected):
    assert _param_count(name, **kwargs) == expected


def _model(mode, dtype, time_steps, event=False):
    kwargs = dict(TINY, time_steps=time_steps, memory_mode=mode, rngs=nnx.Rngs(0))
    if event:
        kwargs.update(event_channels=2, per_column_heads=True)
    model = trevsnn.TRevSNN(**kwargs)
    graph, params, state = nnx.split(model, nnx.Param, ...)
    cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
    return graph, jax.tree.map(cast, params), jax.tree.map(cast, state)


def _inputs(dtype, time_steps, event):
    key = jax.random.key(3)
    if event:
        return (jax.random.uniform(key, (time_steps, 2, 8, 8, 2)) < 0.3).astype(dtype)
    return jax.random.normal(key, (2, 16, 16, 3), dtype)


@functools.cache
def _loss_and_grads(mode, dtype, time_steps, event):
    graph, params, state = _model(mode, dtype, time_steps, event)
    x = _inputs(dtype, time_steps, event)
    y = jnp.array([1, 3])

    def loss(params, state):
        model = merge_fresh(graph, params, state)
        out = model.head_outputs(x)
        value = losses.tet_loss(out, y) if event else losses.intermediate_supervision_loss(
            out, y)
        return value, nnx.state(model, nnx.Not(nnx.Param))

    (value, new_state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, state)
    return value, grads, new_state


def _max_relative_error(a, b):
    return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_reversible_gradients_equal_autodiff_float64():
    # Three columns: the reverse walk reconstructs two earlier columns' states.
    ref = _loss_and_grads("none", jnp.float64, 3, False)
    rev = _loss_and_grads("reversible", jnp.float64, 3, False)
    assert float(rev[0]) == pytest.approx(float(ref[0]), rel=1e-12)
    assert _max_relative_error(rev[1], ref[1]) < 1e-9
    # Running statistics are updated once, by the forward, identically.
    assert _max_relative_error(rev[2], ref[2]) < 1e-12
    # alpha of later columns and the shared convs get real gradients.
    assert float(jnp.abs(rev[1]["columns"]["alpha3"][...]).max()) > 0
    assert float(jnp.abs(rev[1]["shared0"]["pwconv2"]["bias"][...]).max()) > 0


def test_reversible_gradients_event_data_float32():
    # Event data: one stem per column inside the chain, a head per column, TET loss.
    # float32 tolerance: reconstruction divides by alpha (0.5), doubling rounding error per
    # column walked back; two columns here.
    ref = _loss_and_grads("none", jnp.float32, 3, True)
    rev = _loss_and_grads("reversible", jnp.float32, 3, True)
    assert float(rev[0]) == pytest.approx(float(ref[0]), rel=1e-6)
    assert _max_relative_error(rev[1], ref[1]) < 1e-4


def test_state_reconstruction_round_trips_over_16_columns():
    graph, params, state = _model("reversible", jnp.float64, 16)
    x = _inputs(jnp.float64, 16, False)
    forward = jax.jit(lambda p, s: trevsnn.state_history(merge_fresh(graph, p, s), x))(
        params, state)
    rebuilt = jax.jit(lambda p, s: trevsnn.reconstructed_history(merge_fresh(graph, p, s), x))(
        params, state)
    for level, (f, r) in enumerate(zip(forward, rebuilt, strict=True)):
        assert f.shape[0] == 16
        err = float(jnp.max(jnp.abs(f - r)) / jnp.max(jnp.abs(f)))
        # float64: 15 divisions by alpha = 0.5 amplify rounding by at most 2^15.
        assert err < 1e-9, (level, err)


def test_alpha_is_clamped_away_from_zero_keeping_its_sign():
    a = jnp.array([0.0, 1e-5, -1e-5, 0.3, -0.3])
    np.testing.assert_allclose(trevsnn._clamp_alpha(a), [1e-3, 1e-3, -1e-3, 0.3, -0.3])
    np.testing.assert_allclose(jax.grad(lambda v: trevsnn._clamp_alpha(v).sum())(a), 1.0)


def _temp_bytes(mode, time_steps):
    model = nnx.eval_shape(lambda: trevsnn.TRevSNN(**TINY, time_steps=time_steps,
                                                   memory_mode=mode, rngs=nnx.Rngs(0)))
    graph, params, state = nnx.split(model, nnx.Param, ...)
    # Activations dominate at this size; the stacked per-column parameters (which do grow with
    # T, as parameters must) stay small beside them.
    x = jax.ShapeDtypeStruct((8, 64, 64, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((8,), jnp.int32)

    def grads(params, state, x, y):
        return jax.grad(lambda p: losses.intermediate_supervision_loss(
            merge_fresh(graph, p, state).head_outputs(x), y))(params)

    return memory.compiled_memory(grads, params, state, x, y).temp_bytes


def test_training_memory_does_not_grow_with_columns():
    rev = [_temp_bytes("reversible", t) for t in (2, 8)]
    plain = [_temp_bytes("none", t) for t in (2, 8)]
    assert rev[1] <= 1.1 * rev[0], rev
    assert plain[1] >= 2.5 * plain[0], plain
    assert rev[1] < plain[1] / 3, (rev, plain)


def test_bad_inputs_are_named():
    model = nnx.eval_shape(lambda: trevsnn.TRevSNN(**TINY, time_steps=2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"RGB images \[B, H, W, 3\]"):
        model.head_outputs(jnp.zeros((2, 16, 16, 1), jnp.float32))
    event = nnx.eval_shape(lambda: trevsnn.TRevSNN(**TINY, time_steps=4, event_channels=2,
                                                   per_column_heads=True, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="one column per frame"):
        event.head_outputs(jnp.zeros((5, 2, 8, 8, 2), jnp.float32))
    with pytest.raises(ValueError, match="unknown memory_mode"):
        trevsnn.TRevSNN(**TINY, memory_mode="rev", rngs=nnx.Rngs(0))
