"""The small, fast training run the training tests share: a spiking MLP on the bundled digits."""

from __future__ import annotations

from revsnn_jax.training.config import TrainConfig

SMALL = dict(model="spiking_mlp", model_overrides={"hidden": [32]}, dataset="digits",
             batch_size=32, eval_batch_size=120, learning_rate=0.1, schedule="constant",
             log_every=1, checkpoint_every=1000, measure_memory=False, num_threads=2,
             prefetch=16, hflip=False)


def small(**changes) -> TrainConfig:
    """The small run's config with ``changes`` applied."""
    return TrainConfig(**{**SMALL, **changes})
