"""Layer 2, spiking neurons: surrogates, dynamics and their time scans; imports only ``core``.

* :mod:`~revsnn_jax.neurons.surrogate` -- spike functions: Heaviside forward, surrogate
  derivative backward;
* :mod:`~revsnn_jax.neurons.dynamics` -- one step of IF / LIF / PLIF (charge, fire, reset),
  :class:`NeuronConfig` and the input checks;
* :mod:`~revsnn_jax.neurons.multistep` -- the neurons over ``T`` steps under ``jax.lax.scan``
  (the functions exported here), with three backward passes chosen by ``backward=``:
  :mod:`~revsnn_jax.neurons.backward` (autodiff and recompute) and
  :mod:`~revsnn_jax.neurons.lean` (the hand-written reverse scan);
* :mod:`~revsnn_jax.neurons.kernels` -- fused CPU kernels (a layer and its neuron in one pass);
* :mod:`~revsnn_jax.neurons.modules` -- Flax NNX shells :class:`IF`, :class:`LIF`,
  :class:`PLIF`, :class:`Quantizer`;
* :mod:`~revsnn_jax.neurons.reversible_node` -- the reversible spiking neuron node of Lei et al.
"""

from revsnn_jax.neurons import surrogate
from revsnn_jax.neurons.modules import IF, LIF, PLIF, Quantizer, from_config
from revsnn_jax.neurons.multistep import (
    AUTO_UNROLL_MAX_STEPS,
    BACKWARDS,
    NeuronConfig,
    if_multistep,
    if_step,
    leaky_integrate_associative,
    lif_multistep,
    lif_no_reset_associative,
    lif_step,
    neuron_multistep,
    plif_multistep,
    plif_step,
    plif_w_from_tau,
    quantize_spike,
    scan_unroll,
)

__all__ = ["AUTO_UNROLL_MAX_STEPS", "BACKWARDS", "IF", "LIF", "PLIF", "NeuronConfig", "Quantizer",
           "from_config", "if_multistep", "if_step",
           "leaky_integrate_associative", "lif_multistep", "lif_no_reset_associative", "lif_step",
           "neuron_multistep", "plif_multistep", "plif_step", "plif_w_from_tau", "quantize_spike",
           "scan_unroll", "surrogate"]
