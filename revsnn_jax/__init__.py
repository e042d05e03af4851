"""revsnn-jax: reversible spiking neural networks in JAX and Flax.

Training memory of a spiking network grows with depth and time steps because backpropagation
through time keeps every activation and membrane potential. Reversible networks reconstruct
activations in the backward pass instead of storing them. This package provides

* :mod:`revsnn_jax.surrogate` -- spike functions (Heaviside forward, surrogate backward);
* :mod:`revsnn_jax.neurons` -- IF / LIF / PLIF / quantizer neurons as pure functions over
  ``jax.lax.scan``;
* :mod:`revsnn_jax.neuron_modules` -- thin Flax NNX shells over the neurons;
* :mod:`revsnn_jax.lean` -- the lean IF / LIF scan (time-chunked recomputation, optionally
  fused with its Linear / conv): the plain scan's gradients at a fraction of its memory.
"""

from revsnn_jax import lean, neuron_modules, neurons, surrogate

__version__ = "0.1.0"

__all__ = ["__version__", "lean", "neuron_modules", "neurons", "surrogate"]
