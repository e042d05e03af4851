"""What one training step computes from a batch: host-drawn mixup, time-major events, the loss.

Mixup (timm mode "batch") mixes a batch with itself reversed, ``x' = lam x + (1 - lam) x[::-1]``
with soft targets mixed the same way; ``lam`` is drawn on the host from ``(seed, step)`` so a
resumed run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from revsnn_jax import data, steps
from revsnn_jax.training.config import TrainConfig


def mixup_lambda(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The mixup weight of ``step`` (1.0: no mixing), a pure function of ``(seed, step)``.

    Drawn on the host, as timm does, so a resumed run mixes exactly as an uninterrupted one:
    ``lam ~ Beta(alpha, alpha)`` with probability ``mixup_prob``, never from
    ``mixup_off_epoch`` on.
    """
    if cfg.mixup_alpha <= 0:
        return 1.0
    if cfg.mixup_off_epoch is not None and step >= round(cfg.mixup_off_epoch * steps_per_epoch):
        return 1.0
    rng = np.random.default_rng((cfg.seed, 0x6D6978, step))
    if rng.random() >= cfg.mixup_prob:
        return 1.0
    return float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))


def mixup(x: jax.Array, y: jax.Array, lam: Any, num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Batch mixup (timm mode "batch"): mix with the reversed batch; soft targets."""
    lam = jnp.asarray(lam, x.dtype)
    targets = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
    return lam * x + (1 - lam) * x[::-1], lam * targets + (1 - lam) * targets[::-1]


def time_major(x: jax.Array, spec: data.DatasetSpec) -> jax.Array:
    """Event batches arrive ``[B, T, H, W, C]``; models take ``[T, B, H, W, C]``."""
    return jnp.swapaxes(x, 0, 1) if spec.kind == "events" else x


def mixed(cfg: TrainConfig, x: jax.Array, y: jax.Array, lam: Any,
          num_classes: int) -> tuple[jax.Array, jax.Array]:
    """``(x, y)`` mixed with weight ``lam`` when the recipe uses mixup (on ``[B, ...]``, before
    events go time-major), else unchanged."""
    return mixup(x, y, lam, num_classes) if cfg.mixup_alpha > 0 else (x, y)


def make_loss_step(cfg: TrainConfig, spec: data.DatasetSpec, num_classes: int,
                   fns: steps.ModelFns, optimizer: optax.GradientTransformation) -> Callable:
    """``step(params, state, opt_state, x, y, lam) -> (params, state, opt_state, metrics)``:
    :func:`revsnn_jax.steps.make_train_step` (with the finite flag) on the mixed, time-major
    batch. Not jitted."""
    base = steps.make_train_step(fns, optimizer, label_smoothing=cfg.label_smoothing,
                                 loss=cfg.loss, check_finite=True,
                                 skip_nonfinite=cfg.skip_nonfinite)

    def step(params, state, opt_state, x, y, lam):
        x, y = mixed(cfg, x, y, lam, num_classes)
        return base(params, state, opt_state, time_major(x, spec), y)

    return step
