"""Layer 3, the reversible engine; imports ``neurons`` and ``core``.

* :mod:`~revsnn_jax.reversible.engine` -- :func:`reversible_stage` (two-stream additive coupling
  ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)`` over a stage of identical blocks under one
  ``jax.custom_vjp`` that reconstructs instead of storing), its inverse, and the NNX shell
  :class:`ReversibleSequence`;
* :mod:`~revsnn_jax.reversible.check` -- :func:`check_reversible` (round trip and gradients
  against plain autodiff) and the gradient gap the trainer's drift guard shares;
* :mod:`~revsnn_jax.reversible.demo` -- a small spiking stage for notebooks and benchmarks.
"""

from revsnn_jax.reversible.check import (
    ReversibleReport,
    check_reversible,
    gradient_gap,
    relative_gap,
)
from revsnn_jax.reversible.engine import (
    BACKWARDS,
    MEMORY_MODES,
    BlockFn,
    ReversibleSequence,
    check_memory_mode,
    reversible_stage,
    reversible_stage_inverse,
)

__all__ = ["BACKWARDS", "MEMORY_MODES", "BlockFn", "ReversibleReport", "ReversibleSequence",
           "check_memory_mode", "check_reversible", "gradient_gap", "relative_gap",
           "reversible_stage", "reversible_stage_inverse"]
