"""Small Flax NNX helpers shared by the engine, the models and the training steps."""

from __future__ import annotations

import inspect
from typing import Any

from flax import nnx

__all__ = ["MODEL_STATE", "call_capturing", "firing_rates", "mean_of_sown", "merge_fresh",
           "sow_intermediate"]

# flax >= 0.11 keeps Variables inside State and needs nnx.merge(..., copy=True) to build fresh
# ones (mutating a Variable created outside a jax transform raises TraceContextError); flax 0.10
# (the newest that Python 3.10 gets) stores VariableState, always builds fresh Variables on
# merge and has no ``copy`` argument.
_MERGE_COPY = {"copy": True} if "copy" in inspect.signature(nnx.merge).parameters else {}


def merge_fresh(graph: Any, *states: Any) -> Any:
    """``nnx.merge`` that always builds fresh Variables, safe inside jit/grad/scan/custom_vjp."""
    return nnx.merge(graph, *states, **_MERGE_COPY)


# Everything a module carries between calls except its parameters and sown values.
MODEL_STATE = nnx.All(nnx.Not(nnx.Param), nnx.Not(nnx.Intermediate))


def call_capturing(method: Any, *args: Any) -> tuple[Any, Any]:
    """``(method(*args), sown)``: run a module's bound method and collect what it ``sow``-ed.

    Sown values (``nnx.Intermediate``, e.g. ``firing_rate``) are returned as a State and never
    become part of the module's state. flax >= 0.12 uses ``nnx.capture``; older versions store
    sown values on the module, which are popped again.
    """
    if hasattr(nnx, "capture"):
        return nnx.capture(method, nnx.Intermediate)(*args)
    out = method(*args)
    return out, nnx.pop(method.__self__, nnx.Intermediate)


def sow_intermediate(module: Any, name: str, value: Any) -> None:
    """Record ``value`` as an ``nnx.Intermediate`` named ``name`` where it will be collected.

    On flax >= 0.12, a value is collected only inside ``nnx.capture`` (what
    :func:`call_capturing` uses); outside it ``Module.sow`` is deprecated and would store the
    value on the module, so a plain eager call ``model(x)`` records nothing. Older flax versions
    always sow (:func:`call_capturing` pops the values again).
    """
    if hasattr(nnx, "capture") and not hasattr(module, "__captures__"):
        return
    module.sow(nnx.Intermediate, name, value)


def firing_rates(sown: Any, name: str = "firing_rate") -> Any:
    """Every value sown under ``name``, flattened and concatenated into one 1-D array, or ``None``.

    Convention for ``firing_rate``: a sown value holds one rate per spiking layer -- a scalar
    for one layer (:class:`revsnn_jax.neurons.modules.LIF`), an array for several (a
    reversible stage sows its blocks' layers, a T-RevSNN model its columns' layers, as values
    computed inside ``custom_vjp`` / ``scan`` leave them as outputs). So the result has one
    entry per spiking layer, in a fixed order.
    """
    import jax.numpy as jnp
    from jax import tree_util

    values = [jnp.ravel(leaf) for path, leaf in tree_util.tree_leaves_with_path(sown)
              if any(getattr(k, "key", getattr(k, "name", None)) == name for k in path)]
    return jnp.concatenate(values) if values else None


def mean_of_sown(sown: Any, name: str = "firing_rate") -> Any:
    """The mean over every entry sown under ``name`` (:func:`firing_rates`: for firing rates,
    the mean over spiking layers), or ``None``."""
    import jax.numpy as jnp

    values = firing_rates(sown, name)
    return None if values is None else jnp.mean(values)
