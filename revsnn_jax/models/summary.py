"""Inspect models without allocating them: abstract construction and parameter counts."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from revsnn_jax.models.registry import create

__all__ = ["abstract_model", "count_params"]


def abstract_model(name: str, **kwargs: Any) -> nnx.Module:
    """The registered model ``name`` built under :func:`flax.nnx.eval_shape`.

    Its arrays are :class:`jax.ShapeDtypeStruct` placeholders, so even a 70M-parameter model
    costs no memory; use it to count parameters or to build abstract arguments for compiling.
    ``rngs`` defaults to ``nnx.Rngs(0)``.
    """
    rngs = kwargs.pop("rngs", None) or nnx.Rngs(0)
    return nnx.eval_shape(lambda r: create(name, rngs=r, **kwargs), rngs)


def count_params(model: nnx.Module | nnx.State) -> int:
    """Number of trainable scalars (:class:`flax.nnx.Param` leaves) of a model or a state.

    BatchNorm running statistics are not parameters and are not counted (as PyTorch's
    ``sum(p.numel() for p in model.parameters())``).
    """
    state = model if isinstance(model, nnx.State) else nnx.state(model, nnx.Param)
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(state)))
