"""RevSResNet (Zhang & Zhang, AAAI 2024) and its MS-ResNet counterparts, as in mi804/RevSNN.

Tensors are time-major and channels last, ``[T, B, H, W, C]``. Two input conventions:

* static images ``[B, H, W, C]`` (CIFAR, 32x32x3): the stem ``conv3x3 -> BN`` runs once on the
  image and its output is repeated over ``time_steps`` (direct encoding);
* event frames ``[T, B, H, W, C]`` (CIFAR10-DVS / DVS128 Gesture, 128x128x2): the stem
  ``conv3x3(stride 2) -> BN -> pool`` runs on every frame and ``T`` is taken from the data.

**RevSResNet** (``cifar10/revs_resnet.py``): stem to ``2 * widths[0]`` channels, then stages of
reversible blocks ``y1 = x1 + F(x2), y2 = x2 + G(y1)`` over the channel halves (half-width
``widths[i]``), with ``F = G = neuron -> conv3x3 -> BN -> neuron -> conv3x3 -> BN``. Between
stages a non-reversible :class:`DownSample` ``neuron -> avgpool(3, s2, p1) -> conv1x1 -> BN``.
Head: ``neuron -> global average pool -> Linear`` per time step, logits averaged over ``T``.
A stage is one :class:`revsnn_jax.reversible.ReversibleSequence` (one ``custom_vjp``, block
parameters stacked), so ``memory_mode="reversible"`` reconstructs activations in the backward
pass; ``"checkpoint"`` and ``"none"`` run the same math with rematerialisation or plain autodiff.

**MS-ResNet** (``cifar10/ms_resnet.py``): membrane-shortcut basic blocks
``out = BN(conv(neuron(BN(conv(neuron(x)))))) + shortcut(x)``, shortcut
``neuron -> conv1x1(stride) -> BN`` where the shape changes. ``memory_mode="checkpoint"``
rematerialises each block (:func:`revsnn_jax.core.remat.checkpoint_module`).

Storage (both families): every convolution that reads spikes keeps them as bits for its
weight gradient (``Conv2d(spike_input=True)``), every BatchNorm keeps only its input, and
RevSResNet passes its stream between stages as two channel halves.

Neurons: IF with ATan(2) surrogate, hard reset to 0, ``detach_reset=True`` for CIFAR; LIF with
``tau = 1.5`` and Sigmoid(4) for DVS. Parameter counts equal the reference exactly (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.modes import PLAIN_MEMORY_MODES
from revsnn_jax.layers import (
    BatchNorm,
    Conv2d,
    Linear,
    avg_pool,
    global_avg_pool,
    max_pool,
    run_blocks,
)
from revsnn_jax.models.registry import register
from revsnn_jax.neurons import NeuronConfig, surrogate
from revsnn_jax.neurons.modules import from_config
from revsnn_jax.reversible import ReversibleSequence, check_memory_mode

__all__ = [
    "CIFAR_NEURON",
    "DVS_NEURON",
    "DownSample",
    "EventStem",
    "MSBasicBlock",
    "MSResNet",
    "ResidualBranch",
    "RevSResNet",
    "SpikingHead",
    "StaticStem",
]

Array = jax.Array
Dtype = Any
Halves = tuple[Array, Array]


def split_halves(x: Array) -> Halves:
    """The two channel halves ``(x[..., :C/2], x[..., C/2:])`` of a stream."""
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]

#: CIFAR ResNets: SpikingJelly ``MultiStepIFNode(detach_reset=True, surrogate_function=ATan())``.
CIFAR_NEURON = NeuronConfig(kind="if", v_threshold=1.0, v_reset=0.0, detach_reset=True,
                            surrogate=surrogate.atan(2.0))
#: DVS ResNets: ``MultiStepLIFNode(tau=1.5, detach_reset=True)`` (default Sigmoid(4) surrogate).
DVS_NEURON = NeuronConfig(kind="lif", tau=1.5, v_threshold=1.0, v_reset=0.0, decay_input=True,
                          detach_reset=True, surrogate=surrogate.sigmoid(4.0))


# --------------------------------------------------------------------------- building blocks
class ResidualBranch(nnx.Module):
    """``neuron -> conv3x3 -> BN -> neuron -> conv3x3 -> BN`` at constant width and resolution.

    RevSResNet's F and G (the reference's ``BasicResidualBlock``): the MS-ResNet residual branch
    without its shortcut. Maps ``[T, B, H, W, planes]`` to the same shape.
    """

    def __init__(self, planes: int, neuron: NeuronConfig, *, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        self.sn1 = from_config(neuron)
        self.conv1 = Conv2d(planes, planes, 3, padding=1, spike_input=True,
                            param_dtype=param_dtype, rngs=rngs)
        self.bn1 = BatchNorm(planes, param_dtype=param_dtype)
        self.sn2 = from_config(neuron)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, spike_input=True,
                            param_dtype=param_dtype, rngs=rngs)
        self.bn2 = BatchNorm(planes, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        x = self.bn1(self.conv1(self.sn1(x)))
        return self.bn2(self.conv2(self.sn2(x)))


class DownSample(nnx.Module):
    """RevSResNet's non-reversible transition ``neuron -> avgpool(3, s2, p1) -> conv1x1 -> BN``.

    Takes the stream as one array or as its two channel halves ``(x1, x2)`` (what a reversible
    stage returns) and answers in the same form; halves are pooled separately and joined only
    at the (4x smaller) pooled resolution.
    """

    def __init__(self, in_features: int, out_features: int, neuron: NeuronConfig, *,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.sn = from_config(neuron)
        self.conv = Conv2d(in_features, out_features, 1, param_dtype=param_dtype, rngs=rngs)
        self.bn = BatchNorm(out_features, param_dtype=param_dtype)

    def __call__(self, x: Array | Halves) -> Array | Halves:
        if isinstance(x, tuple):
            pooled = jnp.concatenate([avg_pool(s, 3, 2, 1) for s in self.sn(x)], axis=-1)
            return split_halves(self.bn(self.conv(pooled)))
        return self.bn(self.conv(avg_pool(self.sn(x), 3, 2, 1)))


class StaticStem(nnx.Module):
    """Direct encoding: ``conv3x3(s1, p1) -> BN`` on a static image ``[B, H, W, C]``, repeated
    over ``time_steps`` to ``[T, B, H, W, C']`` (BN statistics over the image batch)."""

    def __init__(self, in_features: int, out_features: int, time_steps: int, *,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        self.time_steps = time_steps
        self.conv = Conv2d(in_features, out_features, 3, padding=1, param_dtype=param_dtype,
                           rngs=rngs)
        self.bn = BatchNorm(out_features, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        if x.ndim != 4:
            raise ValueError(
                f"this model takes static images [B, H, W, C] and repeats them over "
                f"T={self.time_steps} inside; got shape {x.shape}")
        y = self.bn(self.conv(x))
        return jnp.broadcast_to(y[None], (self.time_steps, *y.shape))


class EventStem(nnx.Module):
    """Per-frame stem for event data ``[T, B, H, W, C]``: ``conv3x3(s2, p1) -> BN -> pool(3, 2, 1)``.

    ``pool`` is ``"avg"`` (RevSResNet24) or ``"max"`` (MS-ResNet20), as in the reference.
    """

    def __init__(self, in_features: int, out_features: int, pool: str = "avg", *,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.conv = Conv2d(in_features, out_features, 3, stride=2, padding=1,
                           param_dtype=param_dtype, rngs=rngs)
        self.bn = BatchNorm(out_features, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        if x.ndim != 5:
            raise ValueError(f"this model takes event frames [T, B, H, W, C]; got shape {x.shape}")
        y = self.bn(self.conv(x))
        return avg_pool(y, 3, 2, 1) if self.pool == "avg" else max_pool(y, 3, 2, 1)


class SpikingHead(nnx.Module):
    """``neuron -> global average pool -> Linear`` per time step, logits averaged over ``T``.

    Takes the stream as one array or as its two channel halves ``(x1, x2)``.
    """

    def __init__(self, in_features: int, num_classes: int, neuron: NeuronConfig, *,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.sn = from_config(neuron)
        self.fc = Linear(in_features, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array | Halves) -> Array:
        if isinstance(x, tuple):
            features = jnp.concatenate([global_avg_pool(s) for s in self.sn(x)], axis=-1)
        else:
            features = global_avg_pool(self.sn(x))
        return self.fc(features).mean(axis=0)


class MSBasicBlock(nnx.Module):
    """Membrane-shortcut block ``BN(conv(neuron(BN(conv(neuron(x)))))) + shortcut(x)``.

    The first conv3x3 carries the stride; the shortcut is the identity, or
    ``neuron -> conv1x1(stride) -> BN`` when the stride or the width changes.
    """

    def __init__(self, in_features: int, out_features: int, neuron: NeuronConfig, *,
                 stride: int = 1, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.sn1 = from_config(neuron)
        self.conv1 = Conv2d(in_features, out_features, 3, stride=stride, padding=1,
                            spike_input=True, param_dtype=param_dtype, rngs=rngs)
        self.bn1 = BatchNorm(out_features, param_dtype=param_dtype)
        self.sn2 = from_config(neuron)
        self.conv2 = Conv2d(out_features, out_features, 3, padding=1, spike_input=True,
                            param_dtype=param_dtype, rngs=rngs)
        self.bn2 = BatchNorm(out_features, param_dtype=param_dtype)
        self.has_shortcut = stride != 1 or in_features != out_features
        if self.has_shortcut:
            self.shortcut_sn = from_config(neuron)
            self.shortcut_conv = Conv2d(in_features, out_features, 1, stride=stride,
                                        spike_input=True, param_dtype=param_dtype, rngs=rngs)
            self.shortcut_bn = BatchNorm(out_features, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        out = self.bn1(self.conv1(self.sn1(x)))
        out = self.bn2(self.conv2(self.sn2(out)))
        if self.has_shortcut:
            x = self.shortcut_bn(self.shortcut_conv(self.shortcut_sn(x)))
        return out + x


# --------------------------------------------------------------------------- networks
def _check_stages(blocks: Sequence[int], widths: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    blocks, widths = tuple(int(b) for b in blocks), tuple(int(w) for w in widths)
    if len(blocks) != len(widths) or not blocks:
        raise ValueError(f"blocks {blocks} and widths {widths} need the same, non-zero length")
    if min(blocks) < 1 or min(widths) < 1:
        raise ValueError(f"blocks {blocks} and widths {widths} must be positive")
    return blocks, widths


class RevSResNet(nnx.Module):
    """Reversible spiking ResNet: stem, reversible stages with non-reversible down-sampling, head.

    ``widths`` are the half-widths (F/G width) per stage, so stage ``i`` carries
    ``2 * widths[i]`` channels; ``blocks`` the reversible blocks per stage. ``event_input``
    selects the DVS stem (frames ``[T, B, H, W, C]``) instead of the static-image stem.
    """

    def __init__(self, *, blocks: Sequence[int], widths: Sequence[int], num_classes: int,
                 time_steps: int, neuron: NeuronConfig, in_channels: int = 3,
                 event_input: bool = False, memory_mode: str = "reversible",
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        blocks, widths = _check_stages(blocks, widths)
        check_memory_mode(memory_mode)
        self.blocks, self.widths = blocks, widths
        self.num_classes, self.time_steps = num_classes, time_steps
        self.memory_mode = memory_mode
        self.event_input = event_input
        stream = [2 * w for w in widths]
        if event_input:
            self.stem = EventStem(in_channels, stream[0], "avg", param_dtype=param_dtype,
                                  rngs=rngs)
        else:
            self.stem = StaticStem(in_channels, stream[0], time_steps, param_dtype=param_dtype,
                                   rngs=rngs)
        stages, downs = [], []
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            if i > 0:
                downs.append(DownSample(stream[i - 1], stream[i], neuron,
                                        param_dtype=param_dtype, rngs=rngs))
            stages.append(ReversibleSequence(_branch_factory(w, neuron, param_dtype),
                                             _branch_factory(w, neuron, param_dtype), n,
                                             rngs=rngs, memory_mode=memory_mode))
        self.stages = nnx.List(stages)
        self.downsamples = nnx.List(downs)
        self.head = SpikingHead(stream[-1], num_classes, neuron, param_dtype=param_dtype,
                                rngs=rngs)

    def __call__(self, x: Array) -> Array:
        # The stream travels as two channel halves from the stem to the head: the halves are
        # what the reversible stages keep, and a concatenated copy beside them would be extra.
        x = split_halves(self.stem(x))
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
        return self.head(x)


def _branch_factory(planes: int, neuron: NeuronConfig,
                    param_dtype: Dtype) -> Callable[[nnx.Rngs], ResidualBranch]:
    def make(rngs: nnx.Rngs) -> ResidualBranch:
        return ResidualBranch(planes, neuron, param_dtype=param_dtype, rngs=rngs)

    return make


class MSResNet(nnx.Module):
    """MS-ResNet: stem, stages of :class:`MSBasicBlock` (first block of stage ``i > 0`` has
    stride 2), head. ``widths`` are the stage widths; the stem outputs ``widths[0]`` channels.
    ``memory_mode="checkpoint"`` rematerialises every block in the backward pass
    (:mod:`revsnn_jax.core.remat`: only block inputs are kept)."""

    def __init__(self, *, blocks: Sequence[int], widths: Sequence[int], num_classes: int,
                 time_steps: int, neuron: NeuronConfig, in_channels: int = 3,
                 event_input: bool = False, memory_mode: str = "none",
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        blocks, widths = _check_stages(blocks, widths)
        if memory_mode not in PLAIN_MEMORY_MODES:
            raise ValueError(f"MS-ResNet is not reversible: memory_mode must be 'none' or "
                             f"'checkpoint', got {memory_mode!r}")
        self.blocks, self.widths = blocks, widths
        self.num_classes, self.time_steps = num_classes, time_steps
        self.memory_mode = memory_mode
        self.event_input = event_input
        if event_input:
            self.stem = EventStem(in_channels, widths[0], "max", param_dtype=param_dtype,
                                  rngs=rngs)
        else:
            self.stem = StaticStem(in_channels, widths[0], time_steps, param_dtype=param_dtype,
                                   rngs=rngs)
        layers, width = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(MSBasicBlock(width, w, neuron, stride=stride,
                                           param_dtype=param_dtype, rngs=rngs))
                width = w
        self.layers = nnx.List(layers)
        self.head = SpikingHead(widths[-1], num_classes, neuron, param_dtype=param_dtype,
                                rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = self.stem(x)
        return self.head(run_blocks(self.layers, x, self.memory_mode))


# --------------------------------------------------------------------------- registry
REVSRESNET_CIFAR_WIDTHS = (64, 128, 256, 448)
MSRESNET_CIFAR_WIDTHS = (64, 128, 256, 512)
CIFAR_SHAPE = (32, 32, 3)
DVS_SHAPE = (128, 128, 2)
DVS_TIME_STEPS = 10


def _builder(cls: type, default_blocks: tuple[int, ...], default_widths: tuple[int, ...],
             neuron: NeuronConfig, dvs: bool) -> Callable[..., Any]:
    """The constructor of one registered ResNet: overrides ``widths``, ``blocks``, ``neuron``."""
    default_mode = "reversible" if cls is RevSResNet else "none"

    def build(*, num_classes: int = 10, time_steps: int = DVS_TIME_STEPS if dvs else 4,
              memory_mode: str = default_mode, rngs: nnx.Rngs | None = None,
              widths: Sequence[int] | None = None, blocks: Sequence[int] | None = None,
              neuron: NeuronConfig = neuron, param_dtype: Dtype = jnp.float32) -> Any:
        return cls(blocks=blocks or default_blocks, widths=widths or default_widths,
                   num_classes=num_classes, time_steps=time_steps, neuron=neuron,
                   in_channels=2 if dvs else 3, event_input=dvs, memory_mode=memory_mode,
                   param_dtype=param_dtype, rngs=nnx.Rngs(0) if rngs is None else rngs)

    return build


_CIFAR = dict(input_shape=CIFAR_SHAPE, default_time_steps=4, default_num_classes=10)
_DVS = dict(input_shape=DVS_SHAPE, default_time_steps=DVS_TIME_STEPS, default_num_classes=10)

#: name, class, blocks per stage, widths, event data?, counterpart, description
_REGISTRY = (
    ("revsresnet21", RevSResNet, (1, 1, 1, 1), REVSRESNET_CIFAR_WIDTHS, False, "msresnet18",
     "RevSResNet21, CIFAR 32x32: reversible blocks [1,1,1,1], half-widths 64/128/256/448, "
     "IF+ATan(2)"),
    ("revsresnet37", RevSResNet, (1, 2, 3, 2), REVSRESNET_CIFAR_WIDTHS, False, "msresnet34",
     "RevSResNet37, CIFAR 32x32: reversible blocks [1,2,3,2], half-widths 64/128/256/448, "
     "IF+ATan(2)"),
    ("revsresnet109", RevSResNet, (2, 4, 16, 4), REVSRESNET_CIFAR_WIDTHS, False, "msresnet104",
     "RevSResNet109, CIFAR 32x32: reversible blocks [2,4,16,4], half-widths 64/128/256/448, "
     "IF+ATan(2)"),
    ("msresnet18", MSResNet, (2, 2, 2, 2), MSRESNET_CIFAR_WIDTHS, False, None,
     "MS-ResNet18, CIFAR 32x32: blocks [2,2,2,2], widths 64/128/256/512, IF+ATan(2)"),
    ("msresnet34", MSResNet, (3, 4, 6, 3), MSRESNET_CIFAR_WIDTHS, False, None,
     "MS-ResNet34, CIFAR 32x32: blocks [3,4,6,3], widths 64/128/256/512, IF+ATan(2)"),
    ("msresnet104", MSResNet, (3, 8, 32, 8), MSRESNET_CIFAR_WIDTHS, False, None,
     "MS-ResNet104, CIFAR 32x32: blocks [3,8,32,8], widths 64/128/256/512, IF+ATan(2)"),
    ("revsresnet24", RevSResNet, (1, 2, 2), (16, 32, 48), True, "msresnet20",
     "RevSResNet24, DVS 128x128x2 frames: reversible blocks [1,2,2], half-widths 16/32/48, "
     "LIF tau 1.5"),
    ("msresnet20", MSResNet, (3, 3, 3), (16, 32, 64), True, None,
     "MS-ResNet20, DVS 128x128x2 frames: blocks [3,3,3], widths 16/32/64, LIF tau 1.5"),
)

for _name, _cls, _blocks, _widths, _dvs, _counterpart, _description in _REGISTRY:
    register(_name, family="revsresnet" if _cls is RevSResNet else "msresnet",
             reversible=_cls is RevSResNet, counterpart=_counterpart,
             description=_description, **(_DVS if _dvs else _CIFAR))(
        _builder(_cls, _blocks, _widths, DVS_NEURON if _dvs else CIFAR_NEURON, _dvs))
