"""Spiking VGG-11 for CIFAR (32x32), with a plain LIF node or the reversible node.

These are the networks the reversible-node paper (Lei et al., arXiv 2308.08649) evaluates on
CIFAR ("VGG and other convnets"; its exact layer tables were not retrieved), built here in the
common SNN style: direct encoding (``conv3x3 -> BN`` on the static image, repeated over ``T``),
then time-folded ``conv3x3 -> BN -> node`` units, head ``global average pool -> Linear`` per
time step with logits averaged over ``T``.

``node`` picks the spiking node after every BN:

* ``"lif"``: SpikingJelly-style multi-step LIF, ``tau = 2``, soft reset, Sigmoid(4) surrogate,
  binary spikes out; ``memory_mode`` ``"none"`` (plain autodiff) or ``"checkpoint"``
  (:func:`revsnn_jax.layers.run_blocks`: tied remat per unit);
* ``"reversible"``: :class:`revsnn_jax.neurons.reversible_node.ReversibleNode` with the same neuron
  constants, real-valued ``[Y1, Y2]`` out; ``memory_mode`` ``"reversible"`` (reconstruct) or
  ``"none"`` (plain autodiff of the same equations).

Only the node changes: convolutions and BatchNorm keep their activations for the backward as
usual (the paper's node does not make weight layers reversible either; a reviewer asked how
VGG's non-invertible layers are handled and the answer was not retrieved).

**VGG-11**: widths ``w = (64, 128, 256, 512, 512)``: ``[w0, M, w1, M, w2, w2, M, w3, w3, M, w4,
w4, M]`` (8 convs; ``M`` = 2x2 average pool), 32x32 -> 1x1, then ``Linear(w4, classes)``.
ResNet-19, with the same nodes, is :mod:`revsnn_jax.models.resnet19`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.modes import PLAIN_MEMORY_MODES
from revsnn_jax.layers import BatchNorm, Conv2d, Linear, avg_pool, global_avg_pool, run_blocks
from revsnn_jax.layers.revnode_block import node_link
from revsnn_jax.models.registry import register
from revsnn_jax.models.resnet import StaticStem
from revsnn_jax.neurons import NeuronConfig, surrogate
from revsnn_jax.neurons.modules import from_config
from revsnn_jax.neurons.reversible_node import ReversibleNode, RevNodeConfig

__all__ = ["LIF_NODE", "NODES", "REV_NODE", "SpikingVGG11", "make_node"]

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


def _check_node(node: str, memory_mode: str) -> None:
    if node not in NODES:
        raise ValueError(f"unknown node {node!r}; choose one of {', '.join(NODES)}")
    allowed = ("reversible", "none") if node == "reversible" else PLAIN_MEMORY_MODES
    if memory_mode not in allowed:
        raise ValueError(f"memory_mode {memory_mode!r} is not available with node={node!r}; "
                         f"choose one of {', '.join(allowed)}")


def make_node(node: str, memory_mode: str = "none", backward: str = "streamlined") -> nnx.Module:
    """The spiking node layer: plain LIF or the reversible node (same neuron constants)."""
    if node == "reversible":
        return ReversibleNode(REV_NODE, memory_mode=memory_mode, backward=backward)
    if node == "lif":
        return from_config(LIF_NODE)
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




def init_stem(module: nnx.Module, node: str, memory_mode: str, in_channels: int, width: int,
              time_steps: int, param_dtype: Dtype, rngs: nnx.Rngs) -> None:
    """The static stem (conv, BN, repeated ``time_steps`` times) and its spiking node, shared by
    VGG-11 and ResNet-19, with the attributes the training loop reads."""
    module.node_kind = node
    module.memory_mode = memory_mode
    module.event_input = False
    module.stem = StaticStem(in_channels, width, time_steps, param_dtype=param_dtype, rngs=rngs)
    module.stem_node = make_node(node, memory_mode)


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
        init_stem(self, node, memory_mode, in_channels, widths[0], time_steps, param_dtype, rngs)
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
            x = avg_pool(x, 2, 2, 0) if item == "M" else run_blocks([next(units)], x, self.memory_mode)
        return self.fc(global_avg_pool(x)).mean(axis=0)

    def _linked(self, x: Array) -> Array:
        """The reversible path in training: every ``BN -> node -> pools -> next conv`` is one
        :func:`revsnn_jax.layers.revnode_block.node_link`, which keeps the BN's input and the node's
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


# --------------------------------------------------------------------------- registry
_CIFAR = dict(input_shape=(32, 32, 3), default_time_steps=4, default_num_classes=10)


def _widths(widths: Sequence[int] | None, width: int | None, default: tuple[int, ...]):
    if widths is not None:
        return tuple(widths)
    if width is not None:
        return tuple(width * w // default[0] for w in default)
    return default


def _builder(cls: type, node: str, default_mode: str, default_widths: tuple[int, ...],
             default_blocks: tuple[int, ...] | None = None):
    """The constructor of one registered network (VGG-11 or ResNet-19) with one node kind:
    overrides ``widths`` (or ``width``, scaling the defaults), ``blocks`` (ResNet-19)."""

    def build(*, num_classes: int = 10, time_steps: int = 4, memory_mode: str = default_mode,
              rngs: nnx.Rngs | None = None, widths: Sequence[int] | None = None,
              width: int | None = None, in_channels: int = 3,
              param_dtype: Dtype = jnp.float32, **blocks: Any) -> nnx.Module:
        if default_blocks is not None:
            blocks = {"blocks": tuple(blocks.pop("blocks", None) or default_blocks), **blocks}
        return cls(num_classes=num_classes, time_steps=time_steps, node=node,
                   memory_mode=memory_mode, in_channels=in_channels,
                   widths=_widths(widths, width, default_widths), param_dtype=param_dtype,
                   rngs=rngs or nnx.Rngs(0), **blocks)

    return build


def register_nodes(family: str, cls: type, rows: tuple[tuple[str, str, str, str | None, str], ...],
                   default_widths: tuple[int, ...],
                   default_blocks: tuple[int, ...] | None = None) -> None:
    """Register one network per row ``(name, node, default memory mode, counterpart,
    description)``; a row with the reversible node is a reversible model."""
    for name, node, mode, counterpart, description in rows:
        register(name, family=family, reversible=node == "reversible", counterpart=counterpart,
                 description=description, **_CIFAR)(
            _builder(cls, node, mode, default_widths, default_blocks))


register_nodes("vgg", SpikingVGG11, (
    ("vgg11", "lif", "none", None,
     "Spiking VGG-11, CIFAR 32x32, plain LIF node (tau 2, soft reset)"),
    ("vgg11_revnode", "reversible", "reversible", "vgg11",
     "Spiking VGG-11, CIFAR 32x32, reversible node (Lei et al., our reading)"),
), VGG11_WIDTHS)
