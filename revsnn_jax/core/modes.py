"""The memory modes, named once for the engine, the models and the commands.

* ``"reversible"`` -- reconstruct activations in the backward (:mod:`revsnn_jax.reversible`);
* ``"checkpoint"`` -- keep each block's input, recompute its inside (:mod:`revsnn_jax.core.remat`);
* ``"none"`` -- plain autodiff, every activation kept.

Non-reversible models offer :data:`PLAIN_MEMORY_MODES`.
"""

from __future__ import annotations

__all__ = ["MEMORY_MODES", "PLAIN_MEMORY_MODES"]

MEMORY_MODES = ("reversible", "checkpoint", "none")
#: The modes of a model without reversible blocks.
PLAIN_MEMORY_MODES = ("none", "checkpoint")
