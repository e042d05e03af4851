"""Small Flax NNX helpers shared by the engine, the models and the training steps."""

from __future__ import annotations

import inspect
from typing import Any

from flax import nnx

__all__ = ["merge_fresh"]

# flax >= 0.11 keeps Variables inside State and needs nnx.merge(..., copy=True) to build fresh
# ones (mutating a Variable created outside a jax transform raises TraceContextError); flax 0.10
# (the newest that Python 3.10 gets) stores VariableState, always builds fresh Variables on
# merge and has no ``copy`` argument.
_MERGE_COPY = {"copy": True} if "copy" in inspect.signature(nnx.merge).parameters else {}


def merge_fresh(graph: Any, *states: Any) -> Any:
    """``nnx.merge`` that always builds fresh Variables, safe inside jit/grad/scan/custom_vjp."""
    return nnx.merge(graph, *states, **_MERGE_COPY)
