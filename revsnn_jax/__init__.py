"""revsnn-jax: reversible spiking neural networks in JAX and Flax.

Training memory of a spiking network grows with depth and time steps because backpropagation
through time keeps every activation and membrane potential. Reversible networks reconstruct
activations in the backward pass instead of storing them. The package is laid out in layers,
bottom to top, each a subpackage whose ``__init__`` is its public face; a module imports only
from its own layer or below (docs/architecture.md):

1. :mod:`revsnn_jax.core` -- ties, rematerialisation, bit-packed spikes, memory modes, NNX helpers;
2. :mod:`revsnn_jax.neurons` -- surrogates, IF / LIF / PLIF / quantizer dynamics under
   ``jax.lax.scan``, their NNX modules (:class:`IF`, :class:`LIF`, :class:`PLIF`,
   :class:`Quantizer`) and the reversible neuron node;
3. :mod:`revsnn_jax.reversible` -- the engine: :func:`reversible_stage`,
   :class:`ReversibleSequence`, :func:`check_reversible`;
4. :mod:`revsnn_jax.layers` -- time-folded convolution, BatchNorm, Linear, pools;
5. :mod:`revsnn_jax.models` -- every published model by name (:func:`create`);
6. :mod:`revsnn_jax.steps` -- losses and the pure training step;
7. :mod:`revsnn_jax.memory` -- training memory from XLA's compiled plan
   (:func:`per_example_memory`, ``compile_step``), targets, the planner;
8. :mod:`revsnn_jax.data` -- data sets and the input pipeline;
9. :mod:`revsnn_jax.training` -- the trainer, checkpoints, the training loop;
10. :mod:`revsnn_jax.commands` and :mod:`revsnn_jax.cli` -- the ``revsnn`` command.

``revsnn_jax.surrogate`` is :mod:`revsnn_jax.neurons.surrogate`. Subpackages and these names are
imported on first use, so ``import revsnn_jax`` stays cheap.
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
    "IF": "revsnn_jax.neurons",
    "LIF": "revsnn_jax.neurons",
    "PLIF": "revsnn_jax.neurons",
    "Quantizer": "revsnn_jax.neurons",
    "create": "revsnn_jax.models",
    "per_example_memory": "revsnn_jax.memory",
}
#: subpackages, the layers (bottom to top), and the one module alias users rely on
_MODULES = ("core", "neurons", "reversible", "layers", "models", "steps", "memory", "data",
            "training", "commands")
_ALIASES = {"surrogate": "revsnn_jax.neurons.surrogate"}

__all__ = ["__version__", *_MODULES, *_ALIASES, *_NAMES]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _ALIASES:
        value = importlib.import_module(_ALIASES[name])
    elif name in _MODULES:
        value = importlib.import_module(f"revsnn_jax.{name}")
    else:
        raise AttributeError(f"module 'revsnn_jax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
