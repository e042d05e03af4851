"""Spiking ResNet-19 for CIFAR (32x32), with a plain LIF node or the reversible node.

The second network of the reversible-node comparison (:mod:`revsnn_jax.models.vgg` has VGG-11,
the nodes and the shared pieces): tdBN style (Zheng et al. 2021), stem to ``w0 = 128``, stages
of basic blocks ``node(BN(conv(node(BN(conv(x))))) + shortcut(x))`` with 3, 3, 2 blocks at
widths 128, 256, 512 (stride 2 at the start of stages 2 and 3; shortcut ``conv1x1(stride) ->
BN`` on a change), then pool and ``Linear``. (The original head has an extra FC-256; ours goes
straight to the classes.) ``node="lif"`` offers ``memory_mode`` ``"none"`` / ``"checkpoint"``,
``node="reversible"`` ``"reversible"`` / ``"none"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.layers import BatchNorm, Conv2d, Linear, global_avg_pool, run_blocks
from revsnn_jax.models.vgg import _check_node, init_stem, make_node, register_nodes

__all__ = ["RESNET19_BLOCKS", "RESNET19_WIDTHS", "BasicBlock", "SpikingResNet19"]

Array = jax.Array
Dtype = Any

RESNET19_WIDTHS = (128, 256, 512)
RESNET19_BLOCKS = (3, 3, 2)


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
        init_stem(self, node, memory_mode, in_channels, widths[0], time_steps, param_dtype, rngs)
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
        x = run_blocks(self.layers, x, self.memory_mode)
        return self.fc(global_avg_pool(x)).mean(axis=0)


register_nodes("resnet19", SpikingResNet19, (
    ("resnet19", "lif", "none", None,
     "Spiking ResNet-19 (tdBN style), CIFAR 32x32, plain LIF node"),
    ("resnet19_revnode", "reversible", "reversible", "resnet19",
     "Spiking ResNet-19, CIFAR 32x32, reversible node (Lei et al., our reading)"),
), RESNET19_WIDTHS, RESNET19_BLOCKS)
