"""RevSFormer (Zhang & Zhang, AAAI 2024) and its Spikingformer counterparts, as in mi804/RevSNN.

Reference files: ``cifar10/revmodel.py`` (RevSFormer), ``cifar10/model.py`` (Spikingformer),
and the DVS folders' copies. Tensors are time-major and channels last:
images ``[B, 32, 32, 3]`` (CIFAR; repeated over ``time_steps`` before the tokenizer) or event
frames ``[T, B, 128, 128, 2]`` (DVS); tokens ``[T, B, N, C]`` with ``N = 8 * 8 = 64``.

* :class:`SpikingTokenizer` -- CIFAR: ``conv3x3 -> BN`` to ``D/8``, then
  ``LIF -> conv3x3 -> BN`` to ``D/4`` and ``D/2``, then two ``LIF -> maxpool(3,2,1) -> conv3x3
  -> BN`` stages (``D``, ``D``): 32x32 -> 8x8. DVS: ``conv3x3 -> BN`` to ``D/8`` and four
  ``LIF -> maxpool -> conv3x3 -> BN`` stages (``D/4, D/2, D, D``): 128x128 -> 8x8.
* :class:`SpikingSelfAttention` (SSA) -- ``x = LIF(x)``; ``q, k, v = LIF(BN(x W))`` (1x1
  conv = per-token linear, no bias), binary spikes split into heads;
  ``out = (q k^T) v * 0.125`` without softmax; ``LIF_{V_th=0.5}``; ``BN(out W_o + b_o)``.
* :class:`SpikingMLP` -- ``LIF -> linear(D -> 4D, bias) -> BN -> LIF -> linear(4D -> D, bias)
  -> BN``.
* :class:`RevSFormer` -- tokenizer, tokens duplicated to ``2D`` channels, ``depth`` reversible
  blocks ``y1 = x1 + SSA(x2), y2 = x2 + MLP(y1)`` (one
  :class:`~revsnn_jax.reversible.ReversibleSequence`), mean over tokens and ``T``,
  ``Linear(2D)``. No final neuron, no LayerNorm.
* :class:`Spikingformer` -- tokenizer, ``depth`` blocks ``x = x + SSA(x); x = x + MLP(x)`` on
  the ``D``-wide stream, mean over tokens and ``T``, ``Linear(D)``. The reference's
  ``norm_layer`` LayerNorm is never applied and is not built here; the reference parameter
  counts do not include it either.

**Attention order.** Without a softmax, ``(q k^T) v = q (k^T v)`` exactly. The left form keeps
an ``[T, B, heads, N, N]`` score tensor (``heads * 64 * 64`` per image and time step: 49,152 at
12 heads, 32,768 at 8) and costs ``4 N^2 d`` FLOPs per head; the right form keeps
``[T, B, heads, d, d]`` (12 * 32 * 32 = 12,288 at 12 heads; 8 * 48 * 48 = 18,432 at 8; 16 * 16
* 16 = 4,096 for DVS) and costs ``4 N d^2`` FLOPs per head, cheaper whenever ``d < N`` (every
configuration here: ``N = 64``, ``d = 16 / 32 / 48``). :func:`spiking_attention` therefore
computes ``k^T v`` first. q, k and v are binary, so every product is a small integer sum
(< 2^24): both orders give bit-identical results in float32 and float64.

**Lean backward passes** (same values and gradients, tested):
:func:`revsnn_jax.layers.lean_max_pool` replaces XLA's ``select_and_scatter`` max-pool gradient
(which XLA:CPU expands into int32 index arrays of the input's size) and keeps its 0/1 input as
bits; every neuron runs with ``backward="recompute"`` (:mod:`revsnn_jax.neurons.backward`: the
backward keeps only its input); every pointwise layer and tokenizer convolution keeps its spike
input as bits (:mod:`revsnn_jax.core.bitpack`).

Neurons: SpikingJelly ``MultiStepLIFNode(tau, detach_reset=True)``, hard reset to 0, Sigmoid(4)
surrogate; ``tau = 2.0`` on CIFAR and ``1.5`` on DVS; the attention neuron fires at 0.5.
Initialisation follows PyTorch's defaults (convolutions and 1x1 convs ``U(+-1/sqrt(fan_in))``,
BN weight 1 / bias 0) and Spikingformer's ``_init_weights`` for the head (truncated normal, std
0.02, bias 0). Parameter counts equal the reference exactly (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core import bitpack
from revsnn_jax.core.conv import apply_nnx_conv
from revsnn_jax.core.modes import PLAIN_MEMORY_MODES
from revsnn_jax.layers import BatchNorm, lean_max_pool, run_blocks
from revsnn_jax.models.registry import register
from revsnn_jax.neurons import NeuronConfig, surrogate
from revsnn_jax.neurons.modules import from_config
from revsnn_jax.reversible import ReversibleSequence, check_memory_mode

__all__ = [
    "ATTENTION_SCALE",
    "CIFAR_FORMER_NEURON",
    "DVS_FORMER_NEURON",
    "RevSFormer",
    "SpikingMLP",
    "SpikingSelfAttention",
    "SpikingTokenizer",
    "Spikingformer",
    "spiking_attention",
]

Array = jax.Array
Dtype = Any

#: CIFAR transformers: ``MultiStepLIFNode(tau=2.0, detach_reset=True)``, Sigmoid(4) surrogate,
#: with the backward that keeps only the neuron's input (``backward="recompute"``).
CIFAR_FORMER_NEURON = NeuronConfig(kind="lif", tau=2.0, v_threshold=1.0, v_reset=0.0,
                                   decay_input=True, detach_reset=True,
                                   surrogate=surrogate.sigmoid(4.0), backward="recompute")
#: DVS transformers: as CIFAR with ``tau = 1.5``.
DVS_FORMER_NEURON = CIFAR_FORMER_NEURON._replace(tau=1.5)
#: The fixed attention scale of Spikingformer / RevSFormer (independent of the head width).
ATTENTION_SCALE = 0.125
#: Threshold of the neuron after the attention product (``attn_lif``).
ATTENTION_THRESHOLD = 0.5
MLP_RATIO = 4

# PyTorch's default Conv/Linear initialisation (kaiming_uniform with a = sqrt(5)):
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight; the same bound for the bias.
_torch_default_kernel = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_default_bias(fan_in: int):
    bound = fan_in ** -0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# --------------------------------------------------------------------------- layers
class _Conv3x3(nnx.Module):
    """``nn.Conv2d(in, out, 3, 1, 1, bias=False)`` with PyTorch's default init, time folded.

    ``spike_input=True``: the input is 0/1 spikes, kept as bits for the backward
    (:func:`revsnn_jax.core.bitpack.spike_conv`)."""

    def __init__(self, in_features: int, out_features: int, *, param_dtype: Dtype,
                 spike_input: bool = False, rngs: nnx.Rngs) -> None:
        self.spike_input = spike_input
        self.conv = nnx.Conv(in_features, out_features, (3, 3), padding=((1, 1), (1, 1)),
                             use_bias=False, kernel_init=_torch_default_kernel,
                             param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        lead = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        if self.spike_input:
            y = bitpack.spike_conv(x, self.conv.kernel[...], (1, 1), ((1, 1), (1, 1)))
        else:
            y = apply_nnx_conv(self.conv, x)
        return y.reshape((*lead, *y.shape[1:]))


class _Pointwise(nnx.Module):
    """A 1x1 convolution over tokens (``nn.Conv1d(in, out, 1)`` / ``nn.Conv2d(in, out, 1)``):
    a linear map of the channel axis, applied once to every token of every time step.

    Every one of them reads spikes, so the backward keeps its input as bits
    (:func:`revsnn_jax.core.bitpack.spike_dense`)."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool,
                 param_dtype: Dtype, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(in_features, out_features, use_bias=use_bias,
                                 kernel_init=_torch_default_kernel,
                                 bias_init=_torch_default_bias(in_features),
                                 param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        y = bitpack.spike_dense(x, self.linear.kernel[...])
        if self.linear.bias is not None:
            y = y + self.linear.bias[...]
        return y


def spiking_attention(q: Array, k: Array, v: Array, scale: float = ATTENTION_SCALE) -> Array:
    """Softmax-free attention ``(q k^T) v * scale`` over ``[T, B, heads, N, d]`` inputs.

    Computed as ``q (k^T v)`` (identical without a softmax; module docstring): the kept
    intermediate is ``[T, B, heads, d, d]`` instead of ``[T, B, heads, N, N]``.
    """
    kv = jnp.einsum("tbhnd,tbhne->tbhde", k, v)
    return jnp.einsum("tbhnd,tbhde->tbhne", q, kv) * scale


class SpikingSelfAttention(nnx.Module):
    """Spikingformer's SSA on tokens ``[T, B, N, dim]`` (module docstring); F in RevSFormer."""

    def __init__(self, dim: int, heads: int, neuron: NeuronConfig, *,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.heads = dim, heads
        self.proj_lif = from_config(neuron)
        self.q_conv = _Pointwise(dim, dim, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.q_bn = BatchNorm(dim, param_dtype=param_dtype)
        self.q_lif = from_config(neuron)
        self.k_conv = _Pointwise(dim, dim, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.k_bn = BatchNorm(dim, param_dtype=param_dtype)
        self.k_lif = from_config(neuron)
        self.v_conv = _Pointwise(dim, dim, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.v_bn = BatchNorm(dim, param_dtype=param_dtype)
        self.v_lif = from_config(neuron)
        self.attn_lif = from_config(neuron._replace(v_threshold=ATTENTION_THRESHOLD))
        self.out_conv = _Pointwise(dim, dim, use_bias=True, param_dtype=param_dtype, rngs=rngs)
        self.out_bn = BatchNorm(dim, param_dtype=param_dtype)

    def _heads(self, x: Array) -> Array:
        t, b, n, c = x.shape
        # channel c = head * d + j, as the reference's reshape(T, B, N, heads, C // heads)
        return x.reshape(t, b, n, self.heads, c // self.heads).transpose(0, 1, 3, 2, 4)

    def __call__(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"SSA expects tokens [T, B, N, {self.dim}], got {x.shape}")
        x = self.proj_lif(x)
        q = self._heads(self.q_lif(self.q_bn(self.q_conv(x))))
        k = self._heads(self.k_lif(self.k_bn(self.k_conv(x))))
        v = self._heads(self.v_lif(self.v_bn(self.v_conv(x))))
        out = spiking_attention(q, k, v)  # [T, B, heads, N, d]
        t, b, h, n, d = out.shape
        out = out.transpose(0, 1, 3, 2, 4).reshape(t, b, n, h * d)
        out = self.attn_lif(out)
        return self.out_bn(self.out_conv(out))


class SpikingMLP(nnx.Module):
    """``LIF -> 1x1(D -> 4D, bias) -> BN -> LIF -> 1x1(4D -> D, bias) -> BN``; G in RevSFormer."""

    def __init__(self, dim: int, neuron: NeuronConfig, *, ratio: int = MLP_RATIO,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        hidden = ratio * dim
        self.lif1 = from_config(neuron)
        self.fc1 = _Pointwise(dim, hidden, use_bias=True, param_dtype=param_dtype, rngs=rngs)
        self.bn1 = BatchNorm(hidden, param_dtype=param_dtype)
        self.lif2 = from_config(neuron)
        self.fc2 = _Pointwise(hidden, dim, use_bias=True, param_dtype=param_dtype, rngs=rngs)
        self.bn2 = BatchNorm(dim, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        x = self.bn1(self.fc1(self.lif1(x)))
        return self.bn2(self.fc2(self.lif2(x)))


class SpikingTokenizer(nnx.Module):
    """Spikingformer's tokenizer to ``8 x 8`` tokens of width ``dim``: ``[T, B, 64, dim]``.

    ``event_input=False`` (CIFAR): input images ``[B, 32, 32, C]``, repeated over
    ``time_steps`` (the first conv is linear, so it runs once on the image and its output is
    repeated before the BN: identical to the reference's repeat-first, at 1/T of the cost).
    ``event_input=True`` (DVS): input frames ``[T, B, 128, 128, C]``.
    """

    def __init__(self, in_channels: int, dim: int, neuron: NeuronConfig, *, time_steps: int,
                 event_input: bool = False, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        if dim % 8:
            raise ValueError(f"dim must be divisible by 8, got {dim}")
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        self.time_steps, self.event_input = time_steps, event_input
        widths = [dim // 8, dim // 4, dim // 2, dim, dim]
        # CIFAR pools before the last two convs (32 -> 16 -> 8); DVS before the last four.
        self.pools = (True, True, True, True) if event_input else (False, False, True, True)
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.conv0 = _Conv3x3(in_channels, widths[0], **kw)
        self.bn0 = BatchNorm(widths[0], param_dtype=param_dtype)
        self.lifs = nnx.List([from_config(neuron) for _ in range(4)])
        self.convs = nnx.List([_Conv3x3(widths[i], widths[i + 1], spike_input=True, **kw)
                               for i in range(4)])
        self.bns = nnx.List([BatchNorm(widths[i + 1], param_dtype=param_dtype)
                             for i in range(4)])

    def __call__(self, x: Array) -> Array:
        if self.event_input:
            if x.ndim != 5:
                raise ValueError(f"this model takes event frames [T, B, H, W, C]; got {x.shape}")
            x = self.conv0(x)
        else:
            if x.ndim != 4:
                raise ValueError(f"this model takes static images [B, H, W, C] and repeats them "
                                 f"over T={self.time_steps} inside; got shape {x.shape}")
            x = self.conv0(x)
            x = jnp.broadcast_to(x[None], (self.time_steps, *x.shape))
        x = self.bn0(x)
        for lif, pool, conv, bn in zip(self.lifs, self.pools, self.convs, self.bns, strict=True):
            x = lif(x)
            if pool:
                x = lean_max_pool(x, 3, 2, 1, spike_input=True)
            x = bn(conv(x))
        t, b, h, w, c = x.shape
        return x.reshape(t, b, h * w, c)


class _FormerHead(nnx.Module):
    """Mean over tokens and time, then ``Linear`` (trunc-normal std 0.02 weight, zero bias)."""

    def __init__(self, in_features: int, num_classes: int, *, param_dtype: Dtype,
                 rngs: nnx.Rngs) -> None:
        self.fc = nnx.Linear(in_features, num_classes,
                             kernel_init=jax.nn.initializers.truncated_normal(0.02),
                             bias_init=jax.nn.initializers.zeros, param_dtype=param_dtype,
                             rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc(x.mean(axis=(0, 2)))


# --------------------------------------------------------------------------- networks
def _check_common(dim: int, depth: int, heads: int) -> None:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if dim < 8 or dim % 8:
        raise ValueError(f"dim must be a positive multiple of 8, got {dim}")
    if heads < 1 or dim % heads:
        raise ValueError(f"heads ({heads}) must divide dim ({dim})")


class RevSFormer(nnx.Module):
    """RevSFormer-``depth``-``dim``: reversible spiking transformer (module docstring).

    ``memory_mode``: ``"reversible"`` (reconstruct in the backward), ``"checkpoint"``
    (``jax.checkpoint`` per block) or ``"none"`` (plain autodiff); identical math.
    """

    def __init__(self, *, dim: int, depth: int, heads: int, num_classes: int, time_steps: int,
                 neuron: NeuronConfig, in_channels: int = 3, event_input: bool = False,
                 memory_mode: str = "reversible", param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        _check_common(dim, depth, heads)
        check_memory_mode(memory_mode)
        self.dim, self.depth, self.heads = dim, depth, heads
        self.num_classes, self.time_steps = num_classes, time_steps
        self.memory_mode, self.event_input = memory_mode, event_input
        self.tokenizer = SpikingTokenizer(in_channels, dim, neuron, time_steps=time_steps,
                                          event_input=event_input, param_dtype=param_dtype,
                                          rngs=rngs)

        def make_f(r: nnx.Rngs) -> SpikingSelfAttention:
            return SpikingSelfAttention(dim, heads, neuron, param_dtype=param_dtype, rngs=r)

        def make_g(r: nnx.Rngs) -> SpikingMLP:
            return SpikingMLP(dim, neuron, param_dtype=param_dtype, rngs=r)

        self.blocks = ReversibleSequence(make_f, make_g, depth, rngs=rngs,
                                         memory_mode=memory_mode)
        self.head = _FormerHead(2 * dim, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = self.tokenizer(x)
        x = jnp.concatenate([x, x], axis=-1)  # the reference duplicates the tokens
        return self.head(self.blocks(x))


class SpikingformerBlock(nnx.Module):
    """``x = x + SSA(x); x = x + MLP(x)``."""

    def __init__(self, dim: int, heads: int, neuron: NeuronConfig, *, param_dtype: Dtype,
                 rngs: nnx.Rngs) -> None:
        self.attn = SpikingSelfAttention(dim, heads, neuron, param_dtype=param_dtype, rngs=rngs)
        self.mlp = SpikingMLP(dim, neuron, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikingformer(nnx.Module):
    """Spikingformer-``depth``-``dim``, RevSFormer's non-reversible counterpart.

    ``memory_mode``: ``"none"`` or ``"checkpoint"`` (:func:`flax.nnx.remat` per block).
    """

    def __init__(self, *, dim: int, depth: int, heads: int, num_classes: int, time_steps: int,
                 neuron: NeuronConfig, in_channels: int = 3, event_input: bool = False,
                 memory_mode: str = "none", param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        _check_common(dim, depth, heads)
        if memory_mode not in PLAIN_MEMORY_MODES:
            raise ValueError(f"Spikingformer is not reversible: memory_mode must be 'none' or "
                             f"'checkpoint', got {memory_mode!r}")
        self.dim, self.depth, self.heads = dim, depth, heads
        self.num_classes, self.time_steps = num_classes, time_steps
        self.memory_mode, self.event_input = memory_mode, event_input
        self.tokenizer = SpikingTokenizer(in_channels, dim, neuron, time_steps=time_steps,
                                          event_input=event_input, param_dtype=param_dtype,
                                          rngs=rngs)
        self.layers = nnx.List([SpikingformerBlock(dim, heads, neuron, param_dtype=param_dtype,
                                                   rngs=rngs) for _ in range(depth)])
        self.head = _FormerHead(dim, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = self.tokenizer(x)
        return self.head(run_blocks(self.layers, x, self.memory_mode))


# --------------------------------------------------------------------------- registry
CIFAR_SHAPE = (32, 32, 3)
DVS_SHAPE = (128, 128, 2)
DVS_TIME_STEPS = 10


def cifar_heads(num_classes: int) -> int:
    """The reference's head count for the 384-wide CIFAR models: 8 for CIFAR100, else 12."""
    return 8 if num_classes == 100 else 12


def _single(name: str, value: Sequence[int] | None) -> int | None:
    """``blocks=(L,)`` / ``widths=(D,)`` (the ``revsnn memory`` overrides) as one integer."""
    if value is None:
        return None
    value = tuple(int(v) for v in value)
    if len(value) != 1:
        raise ValueError(f"a transformer has one stage: {name} must hold one value, got {value}")
    return value[0]


def _builder(cls: type, *, default_dim: int, default_depth: int, reversible: bool,
             dvs: bool) -> Callable[..., Any]:
    default_mode = "reversible" if reversible else "none"

    def build(*, num_classes: int = 10, time_steps: int = DVS_TIME_STEPS if dvs else 4,
              memory_mode: str = default_mode, rngs: nnx.Rngs | None = None,
              depth: int | None = None, dim: int | None = None, heads: int | None = None,
              blocks: Sequence[int] | None = None, widths: Sequence[int] | None = None,
              neuron: NeuronConfig | None = None,
              param_dtype: Dtype = jnp.float32) -> Any:
        depth = depth or _single("blocks", blocks) or default_depth
        dim = dim or _single("widths", widths) or default_dim
        if heads is None:
            heads = 16 if dvs else cifar_heads(num_classes)
        return cls(dim=dim, depth=depth, heads=heads, num_classes=num_classes,
                   time_steps=time_steps,
                   neuron=neuron or (DVS_FORMER_NEURON if dvs else CIFAR_FORMER_NEURON),
                   in_channels=2 if dvs else 3, event_input=dvs, memory_mode=memory_mode,
                   param_dtype=param_dtype, rngs=nnx.Rngs(0) if rngs is None else rngs)

    build.__doc__ = (f"{cls.__name__}-{default_depth}-{default_dim} "
                     f"({'DVS event frames [T, B, 128, 128, 2]' if dvs else 'CIFAR images'}); "
                     f"overrides: depth, dim, heads (or blocks=(L,), widths=(D,)), neuron.")
    return build


_CIFAR = dict(input_shape=CIFAR_SHAPE, default_time_steps=4, default_num_classes=10)
_DVS = dict(input_shape=DVS_SHAPE, default_time_steps=DVS_TIME_STEPS, default_num_classes=10)

#: name, class, default dim, default depth, event data?, counterpart, description
_REGISTRY = (
    ("revsformer_2_384", RevSFormer, 384, 2, False, "spikingformer_2_384",
     "RevSFormer-2-384, CIFAR 32x32: 2 reversible SSA/MLP blocks, stream 768, heads 12 (C10) / "
     "8 (C100), LIF tau 2"),
    ("revsformer_4_384", RevSFormer, 384, 4, False, "spikingformer_4_384",
     "RevSFormer-4-384, CIFAR 32x32: 4 reversible SSA/MLP blocks, stream 768, heads 12 (C10) / "
     "8 (C100), LIF tau 2"),
    ("revsformer_2_256", RevSFormer, 256, 2, True, "spikingformer_2_256",
     "RevSFormer-2-256, DVS 128x128x2 frames: 2 reversible blocks, stream 512, 16 heads, "
     "LIF tau 1.5"),
    ("spikingformer_2_384", Spikingformer, 384, 2, False, None,
     "Spikingformer-2-384, CIFAR 32x32: 2 blocks x + SSA(x); x + MLP(x), width 384, heads 12 "
     "(C10) / 8 (C100), LIF tau 2"),
    ("spikingformer_4_384", Spikingformer, 384, 4, False, None,
     "Spikingformer-4-384, CIFAR 32x32: 4 blocks x + SSA(x); x + MLP(x), width 384, heads 12 "
     "(C10) / 8 (C100), LIF tau 2"),
    ("spikingformer_2_256", Spikingformer, 256, 2, True, None,
     "Spikingformer-2-256, DVS 128x128x2 frames: 2 blocks, width 256, 16 heads, LIF tau 1.5"),
)

for _name, _cls, _dim, _depth, _dvs, _counterpart, _description in _REGISTRY:
    _reversible = _cls is RevSFormer
    register(_name, family="revsformer" if _reversible else "spikingformer",
             reversible=_reversible, counterpart=_counterpart, description=_description,
             **(_DVS if _dvs else _CIFAR))(
        _builder(_cls, default_dim=_dim, default_depth=_depth, reversible=_reversible, dvs=_dvs))
