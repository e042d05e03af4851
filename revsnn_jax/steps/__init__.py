"""Layer 6, the training-step programs every model shares; imports ``models`` and below.

* :mod:`~revsnn_jax.steps.train_step` -- an NNX model split into pure functions of
  ``(params, state, opt_state, batch)``, and the jitted training step over them;
* :mod:`~revsnn_jax.steps.losses` -- cross-entropy with label smoothing, intermediate
  supervision, TET.

``memory`` compiles these steps for a target; ``training`` runs them.
"""

from revsnn_jax.steps import losses
from revsnn_jax.steps.train_step import ModelFns, make_train_step, split_model

__all__ = ["ModelFns", "losses", "make_train_step", "split_model"]
