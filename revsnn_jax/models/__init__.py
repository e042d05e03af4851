"""Layer 5, the model families and the registry (:func:`create`, :func:`list_models`); imports
``layers``, ``reversible``, ``neurons`` and ``core``.

Importing a family module (``resnet``, ``former``, ``trevsnn``, ``vgg``, ``resnet19``, ``mlp``)
registers its models.
"""

from revsnn_jax.models import former, mlp, resnet, resnet19, trevsnn, vgg
from revsnn_jax.models.registry import ModelInfo, create, get_info, list_models, register
from revsnn_jax.models.summary import abstract_model, count_params

__all__ = ["ModelInfo", "abstract_model", "count_params", "create", "former", "get_info",
           "list_models", "mlp", "register", "resnet", "resnet19", "trevsnn", "vgg"]
