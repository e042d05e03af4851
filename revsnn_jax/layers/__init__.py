"""Layer 4, what models are built from; imports ``reversible``, ``neurons`` and ``core``.

* :mod:`~revsnn_jax.layers.folded` -- time-folded convolution, BatchNorm, Linear and pools over
  ``[T, B, ...]`` (weights applied once over ``T * B``), and :func:`run_blocks` (a stack under a
  memory mode);
* :mod:`~revsnn_jax.layers.revnode_block` -- BatchNorm, the reversible node, pools and the next
  convolution under one custom VJP (the reversible node's network link).
"""

from revsnn_jax.layers.folded import (
    BatchNorm,
    Conv2d,
    Linear,
    avg_pool,
    batch_norm_train,
    global_avg_pool,
    kaiming_normal_fan_out,
    lean_max_pool,
    max_pool,
    run_blocks,
)

__all__ = ["BatchNorm", "Conv2d", "Linear", "avg_pool", "batch_norm_train", "global_avg_pool",
           "kaiming_normal_fan_out", "lean_max_pool", "max_pool", "run_blocks"]
