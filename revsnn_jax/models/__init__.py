"""Model families and the registry (:func:`create`, :func:`list_models`)."""

from revsnn_jax.models import mlp  # noqa: F401  (registers spiking_mlp)
from revsnn_jax.models.registry import ModelInfo, create, get_info, list_models, register

__all__ = ["ModelInfo", "create", "get_info", "list_models", "register"]
