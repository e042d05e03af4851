"""revsnn-jax: reversible spiking neural networks in JAX and Flax.

Training memory of a spiking network grows with depth and time steps because backpropagation
through time keeps every activation and membrane potential. Reversible networks reconstruct
activations in the backward pass instead of storing them. The names a user reaches for are
exported here (and documented in docs/api.md); each lives in a small module:

* :mod:`revsnn_jax.surrogate`, :mod:`revsnn_jax.neurons` -- spike functions and IF / LIF / PLIF /
  quantizer neurons as pure functions over ``jax.lax.scan``; :mod:`revsnn_jax.neuron_modules`
  (:class:`IF`, :class:`LIF`, :class:`PLIF`, :class:`Quantizer`) -- thin Flax NNX shells;
* :mod:`revsnn_jax.reversible` -- the engine: :func:`reversible_stage`,
  :class:`ReversibleSequence`, :func:`check_reversible`;
* :mod:`revsnn_jax.remat`, :mod:`revsnn_jax.bitpack`, :mod:`revsnn_jax.ties` -- per-block
  rematerialisation, bit-packed spike storage and the data-dependence ties behind both;
* :mod:`revsnn_jax.models` -- every published model by name (:func:`create`);
* :mod:`revsnn_jax.memory` -- training memory from XLA's compiled plan
  (:func:`per_example_memory`).

Submodules and these names are imported on first use, so ``import revsnn_jax`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: exported name -> the module that defines it
_NAMES = {
    "reversible_stage": "revsnn_jax.reversible",
    "ReversibleSequence": "revsnn_jax.reversible",
    "check_reversible": "revsnn_jax.reversible",
    "IF": "revsnn_jax.neuron_modules",
    "LIF": "revsnn_jax.neuron_modules",
    "PLIF": "revsnn_jax.neuron_modules",
    "Quantizer": "revsnn_jax.neuron_modules",
    "create": "revsnn_jax.models",
    "per_example_memory": "revsnn_jax.memory",
}
_MODULES = ("bitpack", "kernels", "memory", "models", "neuron_backward", "neuron_modules",
            "neurons", "remat", "reversible", "surrogate", "ties")

__all__ = ["__version__", *_MODULES, *_NAMES]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"revsnn_jax.{name}")
    else:
        raise AttributeError(f"module 'revsnn_jax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
