"""Spike functions: exact step forward, closed-form surrogate derivatives backward."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from revsnn_jax.neurons import surrogate

CLOSED_FORMS = {
    "sigmoid": lambda x, a: a * (1 / (1 + np.exp(-a * x))) * (1 - 1 / (1 + np.exp(-a * x))),
    "atan": lambda x, a: (a / 2) / (1 + (math.pi / 2 * a * x) ** 2),
    "rectangle": lambda x, w: np.where(np.abs(x) < w / 2, 1 / w, 0.0),
    "triangle": lambda x, w: np.maximum(0, 1 - np.abs(x) / w) / w,
    "fast_sigmoid": lambda x, k: 1 / (1 + k * np.abs(x)) ** 2,
}


@pytest.mark.parametrize("name", surrogate.SURROGATES)
@pytest.mark.parametrize("param", [0.7, 3.0])
def test_derivative_matches_closed_form(name, param):
    x = np.linspace(-2.0, 2.0, 101)
    fn = surrogate.get(name, param)
    grad = jax.vmap(jax.grad(lambda v: fn(v)))(jnp.asarray(x, jnp.float64))
    np.testing.assert_allclose(np.asarray(grad), CLOSED_FORMS[name](x, param), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", surrogate.SURROGATES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
def test_forward_is_exact_heaviside_in_every_dtype(name, dtype):
    fn = surrogate.get(name)
    x = jnp.asarray([-1.0, -1e-3, 0.0, 1e-3, 2.0], dtype)
    out = jax.jit(fn)(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), [0, 0, 1, 1, 1])
    g = jax.grad(lambda v: fn(v).sum())(x)
    assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g)))


def test_jit_vmap_grad_agree_with_eager():
    fn = surrogate.atan(2.0)
    x = jax.random.normal(jax.random.key(0), (7, 5))
    eager = jax.grad(lambda v: (fn(v) * v).sum())(x)
    jitted = jax.jit(jax.grad(lambda v: (fn(v) * v).sum()))(x)
    vmapped = jax.vmap(jax.grad(lambda v: (fn(v) * v).sum()))(x)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)
    np.testing.assert_allclose(eager, vmapped, rtol=1e-6)


def test_unknown_name_and_bad_parameter_are_clear():
    with pytest.raises(ValueError, match="unknown surrogate 'tanhh'"):
        surrogate.get("tanhh")
    with pytest.raises(ValueError, match="positive alpha"):
        surrogate.sigmoid(-1.0)
    with pytest.raises(TypeError, match="surrogate must be"):
        surrogate.get(3)


def test_python_scalars_are_accepted_and_integers_rejected():
    sg = surrogate.get("atan")
    assert float(sg(0.0)) == 1.0 and float(sg(-0.5)) == 0.0
    assert float(jax.grad(sg)(0.0)) == float(sg.derivative(0.0)) > 0
    with pytest.raises(TypeError, match="floating"):
        sg(jnp.arange(3))
