"""Layer 1, the XLA-level mechanisms every layer above uses; imports nothing from the package.

* :mod:`~revsnn_jax.core.ties` -- data-dependence ties that order a backward recompute after
  its cotangent (the only ordering XLA:CPU keeps), and :func:`~revsnn_jax.core.ties.anchor`;
* :mod:`~revsnn_jax.core.remat` -- per-block rematerialisation with tied recomputes, and the
  NNX call helpers behind it;
* :mod:`~revsnn_jax.core.conv` -- the 2-D convolution of every model, with a backward
  laid out in XLA:CPU's fast canonical form;
* :mod:`~revsnn_jax.core.bitpack` -- spikes stored 8 per byte for a backward pass;
* :mod:`~revsnn_jax.core.modes` -- the memory modes (``reversible``, ``checkpoint``, ``none``);
* :mod:`~revsnn_jax.core.nnx_utils` -- Flax NNX helpers (sown intermediates, firing rates).
"""

from revsnn_jax.core import bitpack, conv, modes, nnx_utils, remat, ties

__all__ = ["bitpack", "conv", "modes", "nnx_utils", "remat", "ties"]
