"""Losses: closed forms, and the training step's choice of model outputs by loss name."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from revsnn_jax import steps
from revsnn_jax.steps import losses


def _ce(logits, labels, smoothing):
    k = logits.shape[-1]
    targets = np.eye(k)[labels] * (1 - smoothing) + smoothing / k
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(-(targets * logp).sum(-1).mean())


def test_intermediate_supervision_weights_heads_by_position():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(4, 6, 5))
    labels = rng.integers(0, 5, size=6)
    per_head = [_ce(o, labels, 0.1) for o in outputs]
    expected = sum((i + 1) / 4 * c for i, c in enumerate(per_head)) + per_head[-1]
    got = losses.intermediate_supervision_loss(jnp.asarray(outputs), jnp.asarray(labels), 0.1)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_tet_is_mean_cross_entropy_plus_a_small_mse_to_the_mean():
    rng = np.random.default_rng(1)
    outputs = rng.normal(size=(3, 4, 5))
    labels = rng.integers(0, 5, size=4)
    ce = np.mean([_ce(o, labels, 0.0) for o in outputs])
    expected = 0.999 * ce + 0.001 * np.mean((outputs - 1.0) ** 2)
    got = losses.tet_loss(jnp.asarray(outputs), jnp.asarray(labels))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_cross_entropy_takes_soft_targets():
    logits = jnp.asarray([[1.0, 2.0, 0.5]], jnp.float64)
    soft = jnp.asarray([[0.25, 0.75, 0.0]], jnp.float64)
    expected = optax.softmax_cross_entropy(logits, soft).mean()
    assert float(losses.cross_entropy(logits, soft)) == pytest.approx(float(expected))


class _TwoHeads(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.b = nnx.Linear(3, 4, rngs=rngs)

    def head_outputs(self, x):
        return jnp.stack([self.a(x), self.b(x)])

    def __call__(self, x):
        return self.head_outputs(x)[-1]


def test_train_step_reads_head_outputs_for_multi_head_losses():
    fns, params, state = steps.split_model(_TwoHeads(nnx.Rngs(0)))
    x = jnp.ones((2, 3), jnp.float32)
    y = jnp.asarray([0, 3])
    opt = optax.sgd(0.0)
    _, _, _, metrics = steps.make_train_step(fns, opt, loss="intermediate_supervision")(
        params, state, opt.init(params), x, y)
    logits = fns.apply(params, state, x, train=True)[0]
    heads = fns.apply(params, state, x, train=True, method="head_outputs")[0]
    np.testing.assert_allclose(logits, heads[-1])
    assert float(metrics["loss"]) == pytest.approx(
        float(losses.intermediate_supervision_loss(heads, y, 0.0)), rel=1e-6)


def test_unknown_loss_and_missing_heads_are_clear_errors():
    class OneHead(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 4, rngs=rngs)

        def __call__(self, x):
            return self.a(x)

    fns, params, state = steps.split_model(OneHead(nnx.Rngs(0)))
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        steps.make_train_step(fns, optax.sgd(0.1), loss="focal")
    step = steps.make_train_step(fns, optax.sgd(0.1), loss="tet")
    with pytest.raises(ValueError, match="has no head_outputs"):
        jax.eval_shape(step, params, state, optax.sgd(0.1).init(params),
                       jnp.ones((2, 3), jnp.float32), jnp.asarray([0, 1]))
