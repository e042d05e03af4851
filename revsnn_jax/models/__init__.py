"""Model families and the registry (:func:`create`, :func:`list_models`)."""

from revsnn_jax.models.registry import ModelInfo, create, get_info, list_models, register

__all__ = ["ModelInfo", "create", "get_info", "list_models", "register"]

from revsnn_jax.models import trevsnn  # noqa: F401  (registers the T-RevSNN family)
