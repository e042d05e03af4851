"""Spiking VGG-11 and ResNet-19 for CIFAR (32x32), with a plain LIF node or the reversible node.

These are the networks the reversible-node paper (Lei et al., arXiv 2308.08649) evaluates on
CIFAR ("VGG and other convnets"; its exact layer tables were not retrieved), built here in the
common SNN style: direct encoding (``conv3x3 -> BN`` on the static image, repeated over ``T``),
then time-folded ``conv3x3 -> BN -> node`` units, head ``global average pool -> Linear`` per
time step with logits averaged over ``T``.

``node`` picks the spiking node after every BN:

* ``"lif"``: SpikingJelly-style multi-step LIF, ``tau = 2``, soft reset, Sigmoid(4) surrogate,
  binary spikes out; ``memory_mode`` ``"none"`` (plain autodiff) or ``"checkpoint"``
  (:func:`flax.nnx.remat` per unit);
* ``"reversible"``: :class:`revsnn_jax.reversible_node.ReversibleNode` with the same neuron
  constants, real-valued ``[Y1, Y2]`` out; ``memory_mode`` ``"reversible"`` (reconstruct) or
  ``"none"`` (plain autodiff of the same equations).

Only the node changes: convolutions and BatchNorm keep their activations for the backward as
usual (the paper's node does not make weight layers reversible either; a reviewer asked how
VGG's non-invertible layers are handled and the answer was not retrieved).

**VGG-11**: widths ``w = (64, 128, 256, 512, 512)``: ``[w0, M, w1, M, w2, w2, M, w3, w3, M, w4,
w4, M]`` (8 convs; ``M`` = 2x2 average pool), 32x32 -> 1x1, then ``Linear(w4, classes)``.
**ResNet-19** (tdBN style, Zheng et al. 2021): stem to ``w0 = 128``, stages of basic blocks
``node(BN(conv(node(BN(conv(x))))) + shortcut(x))`` with 3, 3, 2 blocks at widths 128, 256,
512 (stride 2 at the start of stages 2 and 3; shortcut ``conv1x1(stride) -> BN`` on a change),
then pool and ``Linear``. (The original head has an extra FC-256; ours goes straight to the
classes.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax import surrogate
from revsnn_jax.layers import BatchNorm, Conv2d, Linear, SpikingNeuron, avg_pool, global_avg_pool
from revsnn_jax.models.registry import register
from revsnn_jax.models.resnet import StaticStem
from revsnn_jax.neurons import NeuronConfig
from revsnn_jax.reversible_node import ReversibleNode, RevNodeConfig
from revsnn_jax.revnode_block import node_link

__all__ = ["LIF_NODE", "NODES", "REV_NODE", "SpikingResNet19", "SpikingVGG11", "make_node"]

Array = jax.Array
Dtype = Any

NODES = ("lif", "reversible")
#: The plain node: LIF tau 2, soft reset, Sigmoid(4).
LIF_NODE = NeuronConfig(kind="lif", tau=2.0, v_threshold=1.0, v_reset=None, decay_input=True,
                        surrogate=surrogate.sigmoid(4.0))
#: The reversible node with the same neuron constants.
REV_NODE = RevNodeConfig(tau=2.0, v_threshold=1.0, coupling=1.0,
                         surrogate=surrogate.sigmoid(4.0))
VGG11_WIDTHS = (64, 128, 256, 512, 512)
RESNET19_WIDTHS = (128, 256, 512)
RESNET19_BLOCKS = (3, 3, 2)


def _check_node(node: str, memory_mode: str) -> None:
    if node not in NODES:
        raise ValueError(f"unknown node {node!r}; choose one of {', '.join(NODES)}")
    allowed = ("reversible", "none") if node == "reversible" else ("none", "checkpoint")
    if memory_mode not in allowed:
        raise ValueError(f"memory_mode {memory_mode!r} is not available with node={node!r}; "
                         f"choose one of {', '.join(allowed)}")


def make_node(node: str, memory_mode: str = "none", backward: str = "streamlined") -> nnx.Module:
    """The spiking node layer: plain LIF or the reversible node (same neuron constants)."""
    if node == "reversible":
        return ReversibleNode(REV_NODE, memory_mode=memory_mode, backward=backward)
    if node == "lif":
        return SpikingNeuron(LIF_NODE)
    raise ValueError(f"unknown node {node!r}; choose one of {', '.join(NODES)}")


class ConvUnit(nnx.Module):
    """``conv3x3 -> BN -> node`` on ``[T, B, H, W, C]`` (conv and BN fold time into batch)."""

    def __init__(self, in_features: int, out_features: int, node: str, memory_mode: str, *,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.conv = Conv2d(in_features, out_features, 3, padding=1, param_dtype=param_dtype,
                           rngs=rngs)
        self.bn = BatchNorm(out_features, param_dtype=param_dtype)
        self.node = make_node(node, memory_mode)

    def __call__(self, x: Array) -> Array:
        return self.node(self.bn(self.conv(x)))


def _call(module: nnx.Module, x: Array) -> Array:
    return module(x)


def _run(module: nnx.Module, x: Array, memory_mode: str) -> Array:
    if memory_mode == "checkpoint":
        return nnx.remat(_call)(module, x)
    return module(x)


class SpikingVGG11(nnx.Module):
    """Spiking VGG-11 for static images ``[B, 32, 32, C]`` (module docstring)."""

    def __init__(self, *, num_classes: int = 10, time_steps: int = 4, node: str = "lif",
                 memory_mode: str = "none", widths: Sequence[int] = VGG11_WIDTHS,
                 in_channels: int = 3, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs) -> None:
        _check_node(node, memory_mode)
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5 or min(widths) < 2 or any(w % 2 for w in widths):
            raise ValueError(f"VGG-11 needs 5 even stage widths, got {widths}")
        self.node_kind = node
        self.memory_mode = memory_mode
        self.event_input = False
        self.stem = StaticStem(in_channels, widths[0], time_steps, param_dtype=param_dtype,
                               rngs=rngs)
        self.stem_node = make_node(node, memory_mode)
        plan = [widths[0], "M", widths[1], "M", widths[2], widths[2], "M", widths[3],
                widths[3], "M", widths[4], widths[4], "M"]
        layers: list[Any] = []
        c = widths[0]
        for item in plan[1:]:
            if item == "M":
                layers.append("M")
            else:
                layers.append(ConvUnit(c, item, node, memory_mode, param_dtype=param_dtype,
                                       rngs=rngs))
                c = item
        self.pools = tuple(i for i, item in enumerate(layers) if item == "M")
        self.units = nnx.List([u for u in layers if u != "M"])
        self.plan = tuple("M" if u == "M" else "C" for u in layers)
        self.fc = Linear(c, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        if (self.node_kind, self.memory_mode) == ("reversible", "reversible") and (
                not self.stem.bn.use_running_average):
            return self.fc(global_avg_pool(self._linked(x))).mean(axis=0)
        x = self.stem_node(self.stem(x))
        units = iter(self.units)
        for item in self.plan:
            x = avg_pool(x, 2, 2, 0) if item == "M" else _run(next(units), x, self.memory_mode)
        return self.fc(global_avg_pool(x)).mean(axis=0)

    def _linked(self, x: Array) -> Array:
        """The reversible path in training: every ``BN -> node -> pools -> next conv`` is one
        :func:`revsnn_jax.revnode_block.node_link`, which keeps the BN's input and the node's
        bits but neither the node's input nor its output."""
        z = self.stem.bn(self.stem.conv(x))  # static: the node repeats it over T
        link = dict(node=self.stem_node, bn=None, pools=0, time_steps=self.stem.time_steps)
        units = iter(self.units)
        for item in self.plan:
            if item == "M":
                link["pools"] += 1
                continue
            unit = next(units)
            z = node_link(z, conv=unit.conv, **link)
            link = dict(node=unit.node, bn=unit.bn, pools=0)
        return node_link(z, **link)


class BasicBlock(nnx.Module):
    """``node(BN(conv(node(BN(conv(x))))) + shortcut(x))``, first conv strided."""

    def __init__(self, in_features: int, out_features: int, node: str, memory_mode: str, *,
                 stride: int = 1, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.conv1 = Conv2d(in_features, out_features, 3, stride=stride, padding=1,
                            param_dtype=param_dtype, rngs=rngs)
        self.bn1 = BatchNorm(out_features, param_dtype=param_dtype)
        self.node1 = make_node(node, memory_mode)
        self.conv2 = Conv2d(out_features, out_features, 3, padding=1, param_dtype=param_dtype,
                            rngs=rngs)
        self.bn2 = BatchNorm(out_features, param_dtype=param_dtype)
        self.node2 = make_node(node, memory_mode)
        self.has_shortcut = stride != 1 or in_features != out_features
        if self.has_shortcut:
            self.shortcut_conv = Conv2d(in_features, out_features, 1, stride=stride,
                                        param_dtype=param_dtype, rngs=rngs)
            self.shortcut_bn = BatchNorm(out_features, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        out = self.bn2(self.conv2(self.node1(self.bn1(self.conv1(x)))))
        if self.has_shortcut:
            x = self.shortcut_bn(self.shortcut_conv(x))
        return self.node2(out + x)


class SpikingResNet19(nnx.Module):
    """Spiking ResNet-19 (tdBN style) for static images ``[B, 32, 32, C]``."""

    def __init__(self, *, num_classes: int = 10, time_steps: int = 4, node: str = "lif",
                 memory_mode: str = "none", widths: Sequence[int] = RESNET19_WIDTHS,
                 blocks: Sequence[int] = RESNET19_BLOCKS, in_channels: int = 3,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        _check_node(node, memory_mode)
        widths, blocks = tuple(int(w) for w in widths), tuple(int(b) for b in blocks)
        if len(widths) != len(blocks) or any(w % 2 for w in widths) or min(blocks) < 1:
            raise ValueError(f"need one even width per stage and >= 1 block each, got widths "
                             f"{widths}, blocks {blocks}")
        self.node_kind = node
        self.memory_mode = memory_mode
        self.event_input = False
        self.stem = StaticStem(in_channels, widths[0], time_steps, param_dtype=param_dtype,
                               rngs=rngs)
        self.stem_node = make_node(node, memory_mode)
        layers = []
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c, w, node, memory_mode, stride=stride,
                                         param_dtype=param_dtype, rngs=rngs))
                c = w
        self.layers = nnx.List(layers)
        self.fc = Linear(c, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = self.stem_node(self.stem(x))
        for block in self.layers:
            x = _run(block, x, self.memory_mode)
        return self.fc(global_avg_pool(x)).mean(axis=0)


# --------------------------------------------------------------------------- registry
_CIFAR = dict(input_shape=(32, 32, 3), default_time_steps=4, default_num_classes=10)


def _widths(widths: Sequence[int] | None, width: int | None, default: tuple[int, ...]):
    if widths is not None:
        return tuple(widths)
    if width is not None:
        return tuple(width * w // default[0] for w in default)
    return default


def _vgg(node: str, default_mode: str):
    def build(*, num_classes: int = 10, time_steps: int = 4, memory_mode: str = default_mode,
              rngs: nnx.Rngs | None = None, widths: Sequence[int] | None = None,
              width: int | None = None, in_channels: int = 3,
              param_dtype: Dtype = jnp.float32) -> SpikingVGG11:
        return SpikingVGG11(num_classes=num_classes, time_steps=time_steps, node=node,
                            memory_mode=memory_mode, in_channels=in_channels,
                            widths=_widths(widths, width, VGG11_WIDTHS),
                            param_dtype=param_dtype, rngs=rngs or nnx.Rngs(0))

    return build


def _resnet19(node: str, default_mode: str):
    def build(*, num_classes: int = 10, time_steps: int = 4, memory_mode: str = default_mode,
              rngs: nnx.Rngs | None = None, widths: Sequence[int] | None = None,
              width: int | None = None, blocks: Sequence[int] | None = None,
              in_channels: int = 3, param_dtype: Dtype = jnp.float32) -> SpikingResNet19:
        return SpikingResNet19(num_classes=num_classes, time_steps=time_steps, node=node,
                               memory_mode=memory_mode, in_channels=in_channels,
                               widths=_widths(widths, width, RESNET19_WIDTHS),
                               blocks=tuple(blocks or RESNET19_BLOCKS),
                               param_dtype=param_dtype, rngs=rngs or nnx.Rngs(0))

    return build


vgg11 = register(
    "vgg11", family="vgg", reversible=False, **_CIFAR,
    description="Spiking VGG-11, CIFAR 32x32, plain LIF node (tau 2, soft reset)")(
        _vgg("lif", "none"))
vgg11_revnode = register(
    "vgg11_revnode", family="vgg", reversible=True, counterpart="vgg11", **_CIFAR,
    description="Spiking VGG-11, CIFAR 32x32, reversible node (Lei et al., our reading)")(
        _vgg("reversible", "reversible"))
resnet19 = register(
    "resnet19", family="resnet19", reversible=False, **_CIFAR,
    description="Spiking ResNet-19 (tdBN style), CIFAR 32x32, plain LIF node")(
        _resnet19("lif", "none"))
resnet19_revnode = register(
    "resnet19_revnode", family="resnet19", reversible=True, counterpart="resnet19", **_CIFAR,
    description="Spiking ResNet-19, CIFAR 32x32, reversible node (Lei et al., our reading)")(
        _resnet19("reversible", "reversible"))
