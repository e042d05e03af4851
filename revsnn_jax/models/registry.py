"""Create models by name.

A model family registers a constructor with :func:`register`; users call :func:`create`::

    model = revsnn_jax.models.create("revsresnet21", num_classes=10, time_steps=4,
                                     memory_mode="reversible", rngs=nnx.Rngs(0))

Every constructor takes keyword arguments ``num_classes``, ``time_steps``, ``memory_mode``
(``"reversible"``, ``"checkpoint"`` or ``"none"``; non-reversible families accept
``"checkpoint"`` and ``"none"``) and ``rngs`` (an :class:`flax.nnx.Rngs`), plus family-specific
overrides (widths, blocks, neuron settings). Models are Flax NNX modules: ``model(x)`` takes
images ``[B, H, W, C]`` (repeated over time inside, direct encoding) or event frames
``[T, B, H, W, C]`` and returns logits ``[B, num_classes]`` averaged over time;
``model.train()`` / ``model.eval()`` switch BatchNorm between batch and running statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from revsnn_jax.core.modes import MEMORY_MODES, PLAIN_MEMORY_MODES

__all__ = ["ModelInfo", "create", "get_info", "list_models", "register"]



@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registered model: its constructor and what it is."""

    name: str
    constructor: Callable[..., Any]
    family: str
    reversible: bool
    counterpart: str | None
    input_shape: tuple[int, ...]  # one example, [H, W, C]; event models [H, W, C] per frame
    default_time_steps: int
    default_num_classes: int
    description: str


_MODELS: dict[str, ModelInfo] = {}


def register(
    name: str,
    *,
    family: str,
    reversible: bool,
    input_shape: tuple[int, ...],
    default_time_steps: int,
    default_num_classes: int,
    counterpart: str | None = None,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model constructor under ``name``."""

    def decorator(constructor: Callable[..., Any]) -> Callable[..., Any]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelInfo(name, constructor, family, reversible, counterpart,
                                  tuple(input_shape), default_time_steps, default_num_classes,
                                  description or (constructor.__doc__ or "").strip().split("\n")[0])
        return constructor

    return decorator


def list_models() -> list[ModelInfo]:
    """Every registered model, in registration order."""
    return list(_MODELS.values())


def get_info(name: str) -> ModelInfo:
    """The registration of ``name``; a clear error listing the known names otherwise."""
    if name not in _MODELS:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}"
        )
    return _MODELS[name]


def create(name: str, **kwargs: Any) -> Any:
    """Build the model ``name`` (see the module docstring for the common keyword arguments)."""
    info = get_info(name)
    mode = kwargs.get("memory_mode")
    if mode is not None:
        allowed = MEMORY_MODES if info.reversible else PLAIN_MEMORY_MODES
        if mode not in allowed:
            raise ValueError(
                f"memory_mode {mode!r} is not available for {name}; choose one of "
                f"{', '.join(allowed)}"
            )
    return info.constructor(**kwargs)
