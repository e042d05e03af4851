"""CPU-friendly matmul / convolution kernels and the neurons fused with them.

* :mod:`revsnn_jax.neurons.kernels.cpu` -- :func:`dense`, :func:`conv_nhwc`;
* :mod:`revsnn_jax.neurons.kernels.fused` -- :func:`linear_lif`, :func:`conv_lif` (lean backward).
"""

from revsnn_jax.neurons.kernels.cpu import conv_nhwc, dense
from revsnn_jax.neurons.kernels.fused import conv_lif, linear_lif

__all__ = ["conv_lif", "conv_nhwc", "dense", "linear_lif"]
