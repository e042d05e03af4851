"""Time-folded layers: PyTorch pooling semantics, BatchNorm statistics, initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from revsnn_jax import layers


def _torch_avg_pool_reference(x: np.ndarray) -> np.ndarray:
    """AvgPool2d(3, 2, 1, count_include_pad=True) over [N, H, W, C], written out by hand."""
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2, w + 2, c), x.dtype)
    padded[:, 1:-1, 1:-1] = x
    oh, ow = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    out = np.zeros((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum((1, 2)) / 9.0
    return out


def test_avg_pool_counts_padding_and_keeps_time_axis():
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 6, 4)).astype(np.float32)  # [T,B,H,W,C]
    y = np.asarray(layers.avg_pool(jnp.asarray(x)))
    assert y.shape == (2, 3, 4, 3, 4)
    ref = _torch_avg_pool_reference(x.reshape(6, 7, 6, 4)).reshape(y.shape)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_max_pool_ignores_padding():
    x = -jnp.ones((1, 4, 4, 1), jnp.float32)  # all negative: zero padding must not win
    y = layers.max_pool(x)
    assert y.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(np.asarray(y), -1.0)


def test_batchnorm_pytorch_semantics():
    bn = layers.BatchNorm(3, param_dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 5, 3), jnp.float32) * 2.0 + 1.0
    y = bn(x)
    flat = np.asarray(x).reshape(-1, 3)  # statistics over T * B * H * W
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 3).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 3).std(0), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 + 0.1 * flat.var(0, ddof=1),
                               rtol=1e-5)
    bn.eval()
    y_eval = bn(x)
    expected = (np.asarray(x) - np.asarray(bn.mean[...])) / np.sqrt(np.asarray(bn.var[...]) + 1e-5)
    np.testing.assert_allclose(np.asarray(y_eval), expected, rtol=1e-5, atol=1e-5)
    assert [p.size for p in jax.tree.leaves(nnx.state(bn, nnx.Param))] == [3, 3]


def test_conv_folds_time_and_uses_kaiming_fan_out():
    conv = layers.Conv2d(16, 64, 3, stride=2, padding=1, param_dtype=jnp.float32,
                         rngs=nnx.Rngs(0))
    y = conv(jnp.ones((2, 3, 8, 8, 16), jnp.float32))
    assert y.shape == (2, 3, 4, 4, 64)
    kernel = np.asarray(conv.conv.kernel[...])
    assert kernel.shape == (3, 3, 16, 64)
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * 64)), rtol=0.05)
    assert conv.conv.bias is None


def test_linear_torch_default_init_bounds():
    lin = layers.Linear(64, 10, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    bound = 1 / 8
    for leaf in (lin.linear.kernel[...], lin.linear.bias[...]):
        assert float(jnp.abs(leaf).max()) <= bound
        assert float(jnp.abs(leaf).max()) > 0.5 * bound


def test_spiking_neuron_layer_is_parameter_free():
    from revsnn_jax.models.resnet import CIFAR_NEURON
    from revsnn_jax.neurons.modules import from_config

    sn = from_config(CIFAR_NEURON)
    s = sn(jnp.full((3, 2), 0.6, jnp.float32))  # IF: 0.6, 1.2 -> spike, reset, 0.6
    np.testing.assert_array_equal(np.asarray(s[:, 0]), [0.0, 1.0, 0.0])
    assert not jax.tree.leaves(nnx.state(sn, nnx.Param))


def test_eager_calls_record_nothing_and_warn_nothing_captured_calls_record_rates():
    import warnings

    from revsnn_jax.core.nnx_utils import call_capturing, mean_of_sown
    from revsnn_jax.models import create

    model = create("revsresnet21", widths=(4, 4, 8, 8), time_steps=2, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 32, 32, 3), jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model(x)
    assert not nnx.state(model, nnx.Intermediate)  # nothing left on the module
    _, sown = call_capturing(model.__call__, x)
    rate = mean_of_sown(sown)
    assert rate is not None and 0.0 <= float(rate) <= 1.0
