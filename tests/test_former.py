"""RevSFormer / Spikingformer: exact parameter counts, attention, reversible gradients, memory."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from revsnn_jax import models

# papers-spec §1.7: counts of the PyTorch reference (BN running statistics excluded).
REFERENCE_PARAMS = [
    ("revsformer_2_384", 10, 5_766_586), ("revsformer_4_384", 10, 9_323_962),
    ("spikingformer_2_384", 10, 5_762_746), ("spikingformer_4_384", 10, 9_320_122),
    ("revsformer_2_256", 10, 2_569_226), ("spikingformer_2_256", 10, 2_566_666),
    ("revsformer_2_384", 100, 5_835_796), ("revsformer_4_384", 100, 9_393_172),
    ("spikingformer_2_384", 100, 5_797_396), ("spikingformer_4_384", 100, 9_354_772),
]


@pytest.mark.parametrize(("name", "num_classes", "expected"), REFERENCE_PARAMS)
def test_parameter_count_matches_reference(name, num_classes, expected):
    model = models.abstract_model(name, num_classes=num_classes)  # nothing allocated
    assert models.count_params(model) == expected


def test_registry_heads_and_overrides():
    names = {m.name for m in models.list_models()}
    assert {"revsformer_2_384", "revsformer_4_384", "revsformer_2_256", "spikingformer_2_384",
            "spikingformer_4_384", "spikingformer_2_256"} <= names
    assert models.get_info("revsformer_4_384").counterpart == "spikingformer_4_384"
    assert models.abstract_model("revsformer_2_384", num_classes=10).heads == 12
    assert models.abstract_model("spikingformer_4_384", num_classes=100).heads == 8
    assert models.abstract_model("revsformer_2_256").heads == 16
    small = models.abstract_model("revsformer_4_384", depth=3, dim=32, heads=2)
    assert (small.depth, small.dim, small.heads) == (3, 32, 2)
    assert models.abstract_model("revsformer_4_384", blocks=(6,), widths=(16,), heads=2).depth == 6
    with pytest.raises(ValueError, match="not available"):
        models.create("spikingformer_2_384", memory_mode="reversible")


@pytest.mark.parametrize(("name", "x_shape"), [
    ("revsformer_4_384", (2, 32, 32, 3)), ("spikingformer_4_384", (2, 32, 32, 3)),
    ("revsformer_2_256", (3, 2, 128, 128, 2)), ("spikingformer_2_256", (3, 2, 128, 128, 2)),
])
def test_full_size_output_shape(name, x_shape):
    model = models.abstract_model(name, num_classes=7, time_steps=3)
    tokens = nnx.eval_shape(lambda m, x: m.tokenizer(x), model,
                            jax.ShapeDtypeStruct(x_shape, jnp.float32))
    assert tokens.shape == (3, 2, 64, model.dim)
    out = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct(x_shape, jnp.float32))
    assert out.shape == (2, 7) and out.dtype == jnp.float32
