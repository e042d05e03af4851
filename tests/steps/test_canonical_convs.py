"""Every convolution of every family's compiled XLA:CPU training step is in XLA:CPU's canonical
form (``dim_labels=b01f_01io->b01f``), in every memory mode.

XLA:CPU runs any other form inside a loop (a reversible stage, a time or column scan) through
a slow generic path (revsnn_jax.core.conv); the models route every convolution through
:func:`revsnn_jax.core.conv.conv2d`, whose backward is laid out canonically. The check parses
the compiled HLO text, so it sees what XLA:CPU will run, not the jaxpr.
"""

from __future__ import annotations

import collections
import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from revsnn_jax import steps
from revsnn_jax.core.conv import CANONICAL_DIM_LABELS
from revsnn_jax.core.modes import MEMORY_MODES, PLAIN_MEMORY_MODES
from revsnn_jax.models import create, get_info

_DIM_LABELS = re.compile(r"dim_labels=([^,\s}]+)")

_REVNODE_MODES = ("reversible", "none")  # the reversible node has no checkpoint mode

#: (model, reduced-size overrides, input [H, W, C], memory modes or None for the registry's);
#: one per family, a one-block stage, and the event stem. Maps of a few pixels (a 3x3 kernel
#: over 2x2) are included on purpose: XLA swaps such convolutions' operands.
CASES = (
    ("revsresnet21", dict(widths=(4, 4, 8, 8)), (8, 8, 3), None),
    ("revsresnet21", dict(widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1)), (8, 8, 3), None),
    ("revsresnet24", dict(widths=(4, 4, 8), blocks=(1, 1, 1)), (16, 16, 2), None),
    ("msresnet18", dict(widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1)), (8, 8, 3), None),
    ("revsformer_2_384", dict(dim=16, depth=2, heads=2), (16, 16, 3), None),
    ("spikingformer_2_384", dict(dim=16, depth=1, heads=2), (16, 16, 3), None),
    ("trevsnn_tiny", dict(channels=(4, 8, 8, 8), kernel=3), (32, 32, 3), None),
    ("vgg11_revnode", dict(width=4), (32, 32, 3), _REVNODE_MODES),
    ("vgg11", dict(width=4), (32, 32, 3), None),
    ("resnet19_revnode", dict(widths=(4, 8, 8)), (8, 8, 3), _REVNODE_MODES),
)
#: Run by default (the rest is marked slow): a one-block stage and the depthwise family.
_FAST = {("revsresnet21", "reversible", (1, 1, 1, 1)), ("trevsnn_tiny", "reversible", ())}


def conv_dim_labels(name: str, mode: str, overrides: dict, input_shape: tuple,
                    batch: int = 2, time_steps: int = 2) -> collections.Counter:
    """``dim_labels`` of every convolution in the compiled CPU training step, counted."""
    model = create(name, memory_mode=mode, time_steps=time_steps, num_classes=3,
                   rngs=nnx.Rngs(0), **overrides)
    fns, params, state = steps.split_model(model)
    opt = optax.sgd(0.1, momentum=0.9)
    step = jax.jit(steps.make_train_step(fns, opt))
    lead = (time_steps, batch) if getattr(model, "event_input", False) else (batch,)
    x = jnp.zeros((*lead, *input_shape), jnp.float32)
    y = jnp.zeros((batch,), jnp.int32)
    text = step.lower(params, state, opt.init(params), x, y).compile().as_text()
    return collections.Counter(_DIM_LABELS.findall(text))


def _params():
    for name, overrides, shape, modes in CASES:
        if modes is None:
            modes = MEMORY_MODES if get_info(name).reversible else PLAIN_MEMORY_MODES
        blocks = tuple(overrides.get("blocks", ()))
        for mode in modes:
            marks = () if (name, mode, blocks) in _FAST else (pytest.mark.slow,)
            yield pytest.param(name, mode, overrides, shape, marks=marks,
                               id="-".join([name, mode, *map(str, blocks)]))


@pytest.mark.parametrize(("name", "mode", "overrides", "input_shape"), list(_params()))
def test_every_convolution_is_canonical(name, mode, overrides, input_shape):
    labels = conv_dim_labels(name, mode, overrides, input_shape)
    assert labels[CANONICAL_DIM_LABELS] > 0, f"no convolution found in {name}/{mode}: {labels}"
    others = {k: v for k, v in labels.items() if k != CANONICAL_DIM_LABELS}
    assert not others, f"{name}/{mode}: non-canonical convolutions {others} (all: {labels})"


def test_the_check_sees_autodiffs_layout():
    """The parse is not vacuous: autodiff of a scanned ``lax`` convolution compiles to the
    non-canonical forms the models avoid."""

    def loss(ws, x):
        def body(x, w):
            y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.tanh(y), None

        return jnp.sum(jax.lax.scan(body, x, ws)[0])

    text = jax.jit(jax.grad(loss)).lower(jnp.ones((2, 3, 3, 4, 4)),
                                         jnp.ones((2, 8, 8, 4))).compile().as_text()
    labels = collections.Counter(_DIM_LABELS.findall(text))
    assert set(labels) - {CANONICAL_DIM_LABELS}, labels
