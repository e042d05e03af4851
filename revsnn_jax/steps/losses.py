"""Training losses.

* :func:`cross_entropy` -- softmax cross-entropy on integer labels ``[B]`` or soft targets
  ``[B, K]`` (mixup), with optional label smoothing.
* :func:`intermediate_supervision_loss` -- T-RevSNN's ImageNet loss over ``n`` heads,
  ``sum_i (i / n) CE_ls(out_i) + CE_ls(out_n)`` (the last head weighs 2 in all).
* :func:`tet_loss` -- TET (Deng et al., ICLR 2022) over per-step outputs ``[T, B, K]``:
  ``(1 - lamb) * mean_t CE(out_t) + lamb * MSE(out, means)``.

Each takes ``(outputs, labels, label_smoothing)``; ``LOSSES`` maps the config names
(``cross_entropy``, ``intermediate_supervision``, ``tet``) to them, with the multi-output losses
reading a model's ``head_outputs(x)`` (``[n, B, K]``) instead of its logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["LOSSES", "cross_entropy", "intermediate_supervision_loss", "tet_loss"]


def _targets(labels: jax.Array, num_classes: int, dtype, label_smoothing: float) -> jax.Array:
    if labels.ndim == 1:
        targets = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    else:
        targets = labels.astype(dtype)
    return optax.smooth_labels(targets, label_smoothing) if label_smoothing else targets


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy; ``labels`` are integer classes ``[B]`` or targets ``[B, K]``."""
    targets = _targets(labels, logits.shape[-1], logits.dtype, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


def intermediate_supervision_loss(outputs: jax.Array, labels: jax.Array,
                                  label_smoothing: float = 0.1) -> jax.Array:
    """``sum_i (i / n) CE_ls(out_i) + CE_ls(out_n)`` over heads ``outputs[i]``, ``[n, B, K]``."""
    n = outputs.shape[0]
    per_head = jax.vmap(lambda o: cross_entropy(o, labels, label_smoothing))(outputs)
    weights = jnp.arange(1, n + 1, dtype=outputs.dtype) / n
    return (weights * per_head).sum() + per_head[-1]


def tet_loss(outputs: jax.Array, labels: jax.Array, label_smoothing: float = 0.0, *,
             lamb: float = 1e-3, means: float = 1.0) -> jax.Array:
    """TET over per-step outputs ``[T, B, K]``: ``(1 - lamb) mean_t CE + lamb MSE(out, means)``."""
    ce = jax.vmap(lambda o: cross_entropy(o, labels, label_smoothing))(outputs).mean()
    return (1 - lamb) * ce + lamb * jnp.mean((outputs - means) ** 2)


# name -> (loss, model method giving its outputs, how the final logits follow from them)
LOSSES = {
    "cross_entropy": (cross_entropy, "__call__", lambda out: out),
    "intermediate_supervision": (intermediate_supervision_loss, "head_outputs",
                                 lambda out: out[-1]),
    "tet": (tet_loss, "head_outputs", lambda out: out.mean(0)),
}
