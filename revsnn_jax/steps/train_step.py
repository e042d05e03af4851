"""Pure training and evaluation steps over Flax NNX models.

An NNX model is split once into a static graph definition and two pytrees:

* ``params`` -- every :class:`flax.nnx.Param` (what the optimizer updates);
* ``state``  -- everything else that changes (BatchNorm running statistics, RNG counters).

The steps below are pure functions of ``(params, state, opt_state, batch)`` so they can be
jitted, sharded, checkpointed with orbax and measured with :mod:`revsnn_jax.memory`. Training
and evaluation use two graph definitions of the same model (``model.train()`` /
``model.eval()``), which differ only in static flags such as BatchNorm's
``use_running_average``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from revsnn_jax.core.nnx_utils import MODEL_STATE, call_capturing, merge_fresh
from revsnn_jax.steps import losses

__all__ = ["ModelFns", "make_train_step", "split_model"]


Batch = tuple[jax.Array, jax.Array]  # (inputs, labels); labels int [B] or soft targets [B, K]


@dataclasses.dataclass(frozen=True)
class ModelFns:
    """A model as pure functions: ``apply(params, state, x, train) -> (logits, new_state)``."""

    train_graph: Any
    eval_graph: Any

    def apply(self, params: Any, state: Any, x: jax.Array, *, train: bool,
              method: str = "__call__"):
        """The model's ``method(x)`` (default: its logits) and its new state."""
        logits, _, new_state = self._run(params, state, x, train, method)
        return logits, new_state

    def intermediates(self, params: Any, state: Any, x: jax.Array, *, train: bool = False):
        """``(logits, sown)``: the forward pass and every ``nnx.Intermediate`` it recorded
        (values modules ``sow``, e.g. ``firing_rate``)."""
        logits, sown, _ = self._run(params, state, x, train)
        return logits, sown

    def _run(self, params: Any, state: Any, x: jax.Array, train: bool,
             method: str = "__call__"):
        model = merge_fresh(self.train_graph if train else self.eval_graph, params, state)
        if method != "__call__" and not hasattr(model, method):
            raise ValueError(f"{type(model).__name__} has no {method}(); this loss needs a "
                             "model with several heads (e.g. T-RevSNN)")
        # values a module sows (nnx.Intermediate) are captured, never part of the model state
        logits, sown = call_capturing(getattr(model, method), x)
        return logits, sown, nnx.state(model, MODEL_STATE)


def split_model(model: nnx.Module) -> tuple[ModelFns, Any, Any]:
    """Split an NNX model into pure functions, its parameters and its other state."""
    nnx.pop(model, nnx.Intermediate)  # drop anything sown by earlier eager calls
    model.eval()
    eval_graph = nnx.graphdef(model)
    model.train()
    train_graph, params, state = nnx.split(model, nnx.Param, ...)
    return ModelFns(train_graph, eval_graph), params, state


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    hard = labels if labels.ndim == logits.ndim - 1 else labels.argmax(-1)
    return (logits.argmax(-1) == hard).mean()


def make_train_step(
    fns: ModelFns,
    optimizer: optax.GradientTransformation,
    *,
    label_smoothing: float = 0.0,
    loss: str = "cross_entropy",
    check_finite: bool = False,
    skip_nonfinite: bool = False,
):
    """``step(params, state, opt_state, x, y) -> (params, state, opt_state, metrics)``.

    One full training step: forward, backward and optimizer update. ``loss`` names an entry of
    :data:`revsnn_jax.steps.losses.LOSSES`: ``cross_entropy`` on the model's logits, or
    ``intermediate_supervision`` / ``tet`` on its ``head_outputs``. ``metrics`` holds ``loss``
    and ``accuracy`` (scalars). Not jitted here; wrap it in :func:`jax.jit` with the shardings
    you need.

    ``check_finite`` adds ``metrics["finite"]``: ``isfinite(loss) and all(isfinite(grads))``
    (a device scalar: reading it is the caller's choice, no host sync here).
    ``skip_nonfinite`` (implies ``check_finite``) returns the incoming ``params``, ``state``
    and ``opt_state`` unchanged when that flag is false (``jax.lax.cond``), so a batch with a
    NaN/Inf loss or gradient leaves no trace.
    """
    if loss not in losses.LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(losses.LOSSES)}")
    loss_fn, method, to_logits = losses.LOSSES[loss]

    def objective(params, state, x, y):
        outputs, new_state = fns.apply(params, state, x, train=True, method=method)
        return loss_fn(outputs, y, label_smoothing), (to_logits(outputs), new_state)

    def step(params, state, opt_state, x, y):
        (loss, (logits, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            params, state, x, y)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, "accuracy": _accuracy(logits, y)}
        if check_finite or skip_nonfinite:
            finite = jnp.isfinite(loss)
            for g in jax.tree.leaves(grads):
                finite = finite & jnp.all(jnp.isfinite(g))
            metrics["finite"] = finite
            if skip_nonfinite:
                return (*jax.lax.cond(finite, lambda new, old: new, lambda new, old: old,
                                      (new_params, new_state, new_opt_state),
                                      (params, state, opt_state)), metrics)
        return new_params, new_state, new_opt_state, metrics

    return step

