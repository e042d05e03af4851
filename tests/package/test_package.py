"""The package root: a flat API of the names users reach for, imported on first use."""

import subprocess
import sys

import pytest

import revsnn_jax


def test_root_exports_the_main_names():
    from revsnn_jax import memory, models, reversible
    from revsnn_jax.neurons import modules as neuron_modules

    assert revsnn_jax.reversible_stage is reversible.reversible_stage
    assert revsnn_jax.ReversibleSequence is reversible.ReversibleSequence
    assert revsnn_jax.check_reversible is reversible.check_reversible
    assert revsnn_jax.LIF is neuron_modules.LIF and revsnn_jax.Quantizer is neuron_modules.Quantizer
    assert revsnn_jax.create is models.create
    assert revsnn_jax.per_example_memory is memory.per_example_memory
    for name in revsnn_jax.__all__:
        assert getattr(revsnn_jax, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        revsnn_jax.nope  # noqa: B018


def test_importing_the_root_stays_cheap():
    code = ("import sys, revsnn_jax; "
            "assert 'revsnn_jax.models' not in sys.modules; "
            "assert 'flax' not in sys.modules; "
            "revsnn_jax.create; assert 'revsnn_jax.models' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
