"""The optax optimizer and learning-rate schedule of a recipe (epoch-valued settings in steps).

Schedules: ``multistep`` (``lr * gamma^k`` after the ``k``-th milestone), ``cosine`` (decay to
``min_lr`` over the steps after warmup) or ``constant``, each after an optional linear warmup
from ``warmup_lr``. Optimizers: ``sgd`` (PyTorch's: weight decay added to the gradient before
momentum), ``adamw`` and ``lamb`` (timm's: no decay on 1-D parameters), optionally behind
adaptive gradient clipping and global-norm clipping.
"""

from __future__ import annotations

import jax
import optax

from revsnn_jax.training.config import TrainConfig


def make_schedule(cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate per step: warmup, then the configured schedule."""
    lr = cfg.learning_rate
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "multistep":
        boundaries = {round(m * steps_per_epoch): cfg.gamma for m in cfg.milestones}
        schedule = optax.piecewise_constant_schedule(lr, boundaries)
    elif cfg.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1),
                                               alpha=cfg.min_lr / lr if lr else 0.0)
    elif cfg.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose multistep, cosine or constant")
    if warmup:
        schedule = optax.join_schedules(
            [optax.linear_schedule(cfg.warmup_lr, lr, warmup), schedule], [warmup])
    return schedule


def _update_rule(cfg: TrainConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    if cfg.optimizer == "sgd":
        # PyTorch SGD: weight decay is added to the gradient before momentum (coupled L2)
        return optax.chain(
            optax.add_decayed_weights(cfg.weight_decay) if cfg.weight_decay else optax.identity(),
            optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
        )
    if cfg.optimizer in ("adamw", "lamb"):
        # timm: no decay (and, for Lamb, no trust ratio) on biases and other 1-D parameters
        mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
        make = optax.adamw if cfg.optimizer == "adamw" else optax.lamb
        return make(schedule, weight_decay=cfg.weight_decay, mask=mask)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adamw or lamb")


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, schedule)`` of the recipe; epoch-valued settings become step counts."""
    schedule = make_schedule(cfg, steps_per_epoch, total_steps)
    optimizer = _update_rule(cfg, schedule)
    clipping = []
    if cfg.adaptive_clip:
        clipping.append(optax.adaptive_grad_clip(cfg.adaptive_clip, eps=1e-3))
    if cfg.clip_grad_norm:
        clipping.append(optax.clip_by_global_norm(cfg.clip_grad_norm))
    if clipping:
        optimizer = optax.chain(*clipping, optimizer)
    return optimizer, schedule
