"""core.conv.conv2d: the values and gradients of lax.conv_general_dilated, canonical on CPU,
autodiff's convolutions when lowered for GPU/TPU."""

from __future__ import annotations

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from revsnn_jax.core import conv as conv_mod
from revsnn_jax.core.conv import CANONICAL_DIM_LABELS, apply_nnx_conv, conv2d

#: (N, H, W, C_in, C_out, k, stride, padding, groups)
CASES = [
    (2, 8, 8, 3, 5, 3, 1, 1, 1),      # 3x3 same
    (2, 9, 9, 4, 6, 3, 2, 1, 1),      # stride 2, odd size (no pixel left over)
    (2, 8, 8, 4, 6, 3, 2, 1, 1),      # stride 2, last row unused: k' > k, cropped
    (2, 8, 8, 4, 6, 1, 2, 0, 1),      # strided 1x1 shortcut
    (2, 16, 16, 3, 4, 7, 2, 3, 1),    # ImageNet stem
    (2, 8, 8, 6, 6, 5, 1, 2, 6),      # depthwise
    (2, 8, 8, 6, 12, 3, 1, 1, 3),     # grouped
    (2, 10, 10, 4, 4, 3, 3, 0, 2),    # stride 3, no padding, groups
    (2, 2, 2, 4, 6, 3, 1, 1, 1),      # 3x3 over 2x2: patches
    (2, 1, 1, 4, 4, 3, 1, 1, 4),      # depthwise 3x3 over 1x1: patches
    (2, 4, 4, 4, 6, 3, 2, 1, 2),      # output 2x2 < 3x3: patches
]


def _lax(x, k, s, p, g):
    return jax.lax.conv_general_dilated(x, k, (s, s), ((p, p), (p, p)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=g)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_values_and_gradients_match_lax_float64(case):
    n, h, w, ci, co, k, s, p, g = case
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((n, h, w, ci)))
        kernel = jnp.asarray(rng.standard_normal((k, k, ci // g, co)))
        y_ref, pull_ref = jax.vjp(lambda x, k_: _lax(x, k_, s, p, g), x, kernel)
        y, pull = jax.vjp(lambda x, k_: conv2d(x, k_, s, p, g), x, kernel)
        dy = jnp.asarray(rng.standard_normal(y_ref.shape))
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
        for ours, ref in zip(pull(dy), pull_ref(dy), strict=True):
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_weight_gradient_in_image_groups(monkeypatch):
    """A batch larger than GRAD_GROUP_BYTES sums its groups' weight gradients in a loop."""
    monkeypatch.setattr(conv_mod, "GRAD_GROUP_BYTES", 2 * 8 * 8 * 4 * 8)  # two images a group
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((6, 8, 8, 4)))
        kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 4)))
        dy = jnp.asarray(rng.standard_normal((6, 4, 4, 4)))
        ours = jax.vjp(lambda x, k: conv2d(x, k, 2, 1), x, kernel)[1](dy)
        ref = jax.vjp(lambda x, k: _lax(x, k, 2, 1, 1), x, kernel)[1](dy)
        jaxpr = str(jax.make_jaxpr(lambda x, k: jax.vjp(lambda a, b: conv2d(a, b, 2, 1), x, k)
                                   [1](dy))(x, kernel))
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert conv_mod._group_size(6, 8 * 8 * 4 * 8) == 2
    assert "conv2d_grads" in jaxpr


def _scanned_grad(ws, x):
    def body(x, w):
        return jnp.tanh(conv2d(x, w, 1, 1)), None

    return jnp.sum(jax.lax.scan(body, x, ws)[0])


def test_canonical_inside_a_scan_on_cpu():
    ws, x = jnp.ones((2, 3, 3, 4, 4)), jnp.ones((2, 8, 8, 4))
    text = jax.jit(jax.grad(_scanned_grad)).lower(ws, x).compile().as_text()
    labels = collections.Counter(re.findall(r"dim_labels=([^,\s}]+)", text))
    assert labels == {CANONICAL_DIM_LABELS: 3}, labels


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_other_platforms_keep_autodiffs_convolutions(platform):
    """Lowered for GPU/TPU, the backward is autodiff's (its weight gradient keeps the
    feature-major input layout ``[f, ...]``); for CPU every operand is batch-major."""
    ws, x = jnp.ones((2, 3, 3, 4, 4)), jnp.ones((2, 8, 8, 4))
    traced = jax.jit(jax.grad(_scanned_grad)).trace(ws, x)
    other = traced.lower(lowering_platforms=(platform,)).as_text()
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert "[f, 0, 1, b]" in other
    assert "[f, 0, 1, b]" not in cpu


def test_apply_nnx_conv_matches_the_module():
    rngs = nnx.Rngs(0)
    x = jax.random.normal(jax.random.key(0), (3, 2, 8, 8, 4))  # leading axes are folded
    for layer in (nnx.Conv(4, 6, (3, 3), strides=2, padding=1, rngs=rngs),
                  nnx.Conv(4, 4, (5, 5), padding="SAME", feature_group_count=4, rngs=rngs),
                  nnx.Conv(4, 6, (1, 1), use_bias=False, rngs=rngs)):
        np.testing.assert_allclose(apply_nnx_conv(layer, x), layer(x), rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_clear_error():
    x, k = jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 2))
    with pytest.raises(ValueError, match="expects x"):
        conv2d(x[0], k)
    with pytest.raises(ValueError, match="feature_group_count"):
        conv2d(x, k, feature_group_count=2)
    with pytest.raises(TypeError, match="cast"):
        conv2d(x, k.astype(jnp.float16))
    with pytest.raises(ValueError, match="strides"):
        conv2d(x, k, strides=0)
    with pytest.raises(ValueError, match="padding"):
        conv2d(x, k, padding=(1, 1, 1))
