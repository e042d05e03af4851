"""``spiking_mlp``: a small fully connected spiking network (a legitimate baseline and test model).

``flatten -> [Linear -> BatchNorm? -> LIF] x len(hidden) -> Linear``, the read-out averaged over
time. Static images are encoded directly: the first Linear (and its BatchNorm) runs once on the
image and its output is fed to the neurons at every one of the T steps; event frames
``[T, B, H, W, C]`` are flattened per step with time folded into the batch. Weights are applied
once over the merged ``[T * B, ...]`` axis and only the neuron scans over T
(:class:`revsnn_jax.neurons.modules.LIF`).

Memory modes: ``"none"`` (plain autodiff) and ``"checkpoint"`` (each hidden layer under
``jax.checkpoint``: its activations are recomputed in the backward pass). Each spiking layer
records its mean firing rate as an :class:`flax.nnx.Intermediate` named ``firing_rate``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.modes import PLAIN_MEMORY_MODES
from revsnn_jax.layers import run_blocks
from revsnn_jax.models.registry import register
from revsnn_jax.neurons.modules import LIF

__all__ = ["SpikingLayer", "SpikingMLP"]

_List = getattr(nnx, "List", list)  # flax >= 0.12 wants nnx.List for lists of modules


class SpikingLayer(nnx.Module):
    """``Linear -> BatchNorm? -> LIF`` on time-major ``[T, B, D]`` (or a static ``[B, D]``)."""

    def __init__(self, d_in: int, d_out: int, *, time_steps: int, tau: float, bn: bool,
                 surrogate: str, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.linear = nnx.Linear(d_in, d_out, use_bias=not bn, dtype=dtype, param_dtype=dtype,
                                 rngs=rngs)
        self.bn = (nnx.BatchNorm(d_out, momentum=0.9, dtype=dtype, param_dtype=dtype, rngs=rngs)
                   if bn else None)
        self.time_steps = time_steps
        self.tau = tau
        self.surrogate = surrogate
        self.neuron = LIF(tau=tau, surrogate=surrogate)

    def __call__(self, x: jax.Array) -> jax.Array:
        static = x.ndim == 2
        lead = x.shape[:-1]
        h = self.linear(x.reshape(-1, x.shape[-1]))
        if self.bn is not None:
            h = self.bn(h)
        h = h.reshape(*lead, -1)
        if static:  # direct encoding: the same input current at every step
            h = jnp.broadcast_to(h, (self.time_steps, *h.shape))
        return self.neuron(h)


class SpikingMLP(nnx.Module):
    """A fully connected spiking network over flattened images or event frames."""

    def __init__(self, *, num_classes: int = 10, time_steps: int = 4, memory_mode: str = "none",
                 input_shape: Sequence[int] = (8, 8, 1), hidden: Sequence[int] = (256, 256),
                 tau: float = 2.0, bn: bool = True, surrogate: str = "sigmoid",
                 dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        if memory_mode not in PLAIN_MEMORY_MODES:
            raise ValueError(f"spiking_mlp supports memory_mode 'none' or 'checkpoint', "
                             f"got {memory_mode!r}")
        if not hidden:
            raise ValueError("spiking_mlp needs at least one hidden layer")
        d_in = 1
        for s in input_shape:
            d_in *= int(s)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.time_steps = time_steps
        self.memory_mode = memory_mode
        dims = [d_in, *hidden]
        self.layers = _List([
            SpikingLayer(a, b, time_steps=time_steps, tau=tau, bn=bn, surrogate=surrogate,
                         dtype=dtype, rngs=rngs)
            for a, b in itertools.pairwise(dims)
        ])
        self.head = nnx.Linear(dims[-1], num_classes, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.input_shape)
        if x.ndim == n + 1:  # images [B, H, W, C]
            h = x.reshape(x.shape[0], -1)
        elif x.ndim == n + 2:  # event frames [T, B, H, W, C]
            h = x.reshape(x.shape[0], x.shape[1], -1)
        else:
            raise ValueError(f"spiking_mlp expects [B, *{self.input_shape}] images or "
                             f"[T, B, *{self.input_shape}] frames, got shape {x.shape}")
        h = run_blocks(self.layers, h, self.memory_mode)
        t, b = h.shape[:2]
        logits = self.head(h.reshape(t * b, -1)).reshape(t, b, -1)
        return logits.mean(0)


@register("spiking_mlp", family="mlp", reversible=False, input_shape=(8, 8, 1),
          default_time_steps=4, default_num_classes=10)
def spiking_mlp(*, num_classes: int = 10, time_steps: int = 4, memory_mode: str = "none",
                rngs: nnx.Rngs | None = None, **overrides) -> SpikingMLP:
    """Fully connected spiking network (Linear-BN-LIF layers, read-out averaged over T)."""
    return SpikingMLP(num_classes=num_classes, time_steps=time_steps, memory_mode=memory_mode,
                      rngs=rngs or nnx.Rngs(0), **overrides)
