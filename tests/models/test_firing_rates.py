"""Every registered model records the firing rate of every spiking layer.

For each model of the registry, at reduced widths on a tiny input, a forward pass under
:func:`revsnn_jax.core.nnx_utils.call_capturing` (what ``summary.json``'s ``firing_rate`` reads) must
yield one rate per spiking layer -- including the layers inside reversible stages, the
reversible node and T-RevSNN's columns -- each strictly between 0 and 1, and exactly as many as
the architecture has, counted from its configuration (blocks per stage, depth, columns).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from revsnn_jax.core.nnx_utils import firing_rates, mean_of_sown
from revsnn_jax.models import create, list_models
from revsnn_jax.steps import split_model

B = 4
DVS_T = 2  # event models take T frames; fewer than their default keeps the test fast


def _reduced(info):
    """Reduced-width overrides and a tiny input for a registered model."""
    family = info.family
    h, w, c = info.input_shape
    t = info.default_time_steps
    if family in ("revsformer", "spikingformer"):
        kw = dict(dim=32, heads=2)
    elif family in ("revsresnet", "msresnet"):
        kw = dict(widths=(4,) * (3 if c == 2 else 4))
    elif family == "trevsnn":
        kw = dict(channels=(4, 8, 8, 8))
    elif family in ("vgg", "resnet19"):
        kw = dict(width=4)
    elif family == "mlp":
        kw = dict(hidden=(16, 16))
    else:
        raise AssertionError(f"no reduced configuration for family {family!r}")
    if c == 2 and family in ("revsformer", "spikingformer"):
        # fewer frames; full-size frames keep enough tokens (8 x 8) for the attention to fire
        t = DVS_T
        shape = (t, B, h, w, c)
    elif c == 2:  # event frames: fewer frames, smaller frames
        t = DVS_T
        shape = (t, B, 32, 32, c)
    elif family == "trevsnn":
        shape = (B, 32, 32, c)
    else:
        shape = (B, h, w, c)
    return dict(kw, time_steps=t, num_classes=4), shape


def expected_layers(name: str, model) -> int:
    """Spiking layers of the architecture, from its configuration."""
    family = next(i.family for i in list_models() if i.name == name)
    if family in ("revsformer", "spikingformer"):
        # tokenizer: 4 LIFs; per block: SSA (input, q, k, v, attention) 5, MLP 2
        return 4 + 7 * model.depth
    if family == "revsresnet":
        # per reversible block: F and G with 2 neurons each; a down-sampling neuron between
        # stages; the head's neuron
        return 4 * sum(model.blocks) + (len(model.blocks) - 1) + 1
    if family == "msresnet":
        # per block 2 neurons, plus the shortcut's where a stage starts (stride 2); the head's
        return 2 * sum(model.blocks) + (len(model.blocks) - 1) + 1
    if family == "vgg":
        return 8  # the stem's node and 7 conv units
    if family == "resnet19":
        return 1 + 2 * len(model.layers)  # the stem's node, 2 per basic block
    if family == "mlp":
        return len(model.layers)
    if family == "trevsnn":
        # per column: 4 levels x 2 blocks x 2 quantizers, 3 down-samplings; columns after the
        # first have 3 up-samplings more; then each column's top-level spikes Q(c_3)
        t = model.time_steps
        return 19 + 22 * (t - 1) + t
    raise AssertionError(family)


def _input(shape):
    """A smooth random input (4 x 4 pixel patches plus a little noise): like an image, it
    keeps its contrast through pooling, so every layer of an untrained model gets a drive."""
    k1, k2 = jax.random.split(jax.random.key(0))
    *lead, h, w, c = shape
    coarse = jax.random.normal(k1, (*lead, h // 4, w // 4, c), jnp.float32)
    coarse = jnp.repeat(jnp.repeat(coarse, 4, axis=-3), 4, axis=-2)
    return coarse + 0.3 * jax.random.normal(k2, tuple(shape), jnp.float32)


def _prepare(name, params):
    """T-RevSNN initialises its depthwise kernels with std 0.02, which keeps the quantizer after
    a block's first depthwise conv silent in an untrained model; scale those kernels (x 25:
    std 0.5) so that every layer fires."""
    if not name.startswith("trevsnn"):
        return params

    def scale(path, leaf):
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        return leaf * 25 if "dwconv1" in keys and "kernel" in keys else leaf

    return jax.tree_util.tree_map_with_path(scale, params)


MODELS = [info.name for info in list_models()]


@pytest.mark.parametrize("name", MODELS)
def test_every_spiking_layer_records_its_rate(name):
    info = next(i for i in list_models() if i.name == name)
    kwargs, shape = _reduced(info)
    model = create(name, **kwargs)
    fns, params, state = split_model(model)
    params = _prepare(name, params)
    x = _input(shape)

    @jax.jit
    def forward(params, state, x):
        _, sown = fns.intermediates(params, state, x, train=True)
        return firing_rates(sown), mean_of_sown(sown)

    rates, mean = forward(params, state, x)
    assert rates is not None, f"{name} records no firing rate"
    rates = np.asarray(rates)
    assert rates.shape == (expected_layers(name, model),), (name, rates.shape)
    assert np.all((rates > 0) & (rates < 1)), (name, rates)
    np.testing.assert_allclose(float(mean), rates.mean(), rtol=1e-6)


def test_recording_adds_no_gradient():
    # the rates are stop_gradient-ed: a loss that reads them has zero gradient
    model = create("revsresnet21", widths=(4, 4, 4, 4), num_classes=4, time_steps=2)
    fns, params, state = split_model(model)
    x = jax.random.normal(jax.random.key(0), (B, 32, 32, 3), jnp.float32)

    def loss(params):
        return mean_of_sown(fns.intermediates(params, state, x, train=True)[1])

    grads = jax.grad(loss)(params)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))
