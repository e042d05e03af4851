"""The hand-written backward passes of the neuron core (``backward="lean"`` and
``"recompute"``, revsnn_jax.neurons.backward) and the fused CPU kernels (revsnn_jax.neurons.kernels):
values and gradients equal the plain scan's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import load_script

from revsnn_jax import neurons
from revsnn_jax.memory import compiled_memory
from revsnn_jax.neurons import NeuronConfig
from revsnn_jax.neurons import backward as neuron_backward
from revsnn_jax.neurons.kernels import cpu
from revsnn_jax.neurons.kernels import fused as kernels_fused
from revsnn_jax.neurons.modules import IF, LIF, from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = [
    NeuronConfig(),  # LIF, hard reset, sigmoid
    NeuronConfig(v_reset=None, surrogate="atan"),  # soft reset
    NeuronConfig(detach_reset=True, surrogate="triangle", tau=1.5),
    NeuronConfig(decay_input=False, v_reset=0.2, surrogate="fast_sigmoid"),
    NeuronConfig(decay_input=False, v_reset=None, detach_reset=True, surrogate="rectangle"),
    NeuronConfig(kind="if", v_threshold=0.8),
    NeuronConfig(kind="if", v_reset=None, detach_reset=True, surrogate="atan"),
]


def _plain(config, x, v_init):
    kw = dict(v_threshold=config.v_threshold, v_reset=config.v_reset,
              detach_reset=config.detach_reset, surrogate=config.surrogate, v_init=v_init)
    if config.kind == "if":
        return neurons.if_multistep(x, **kw)
    return neurons.lif_multistep(x, tau=config.tau, decay_input=config.decay_input, **kw)


def _data(dtype, t=13, shape=(3, 7)):
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    x = jax.random.normal(keys[0], (t, *shape), dtype) * 1.5 + 0.4
    v0 = jax.random.normal(keys[1], shape, dtype) * 0.5
    g_s = jax.random.normal(keys[2], (t, *shape), dtype)
    g_v = jax.random.normal(keys[3], shape, dtype)
    return x, v0, g_s, g_v


def _value_and_vjp(f, args, cotangent):
    def run(args, cotangent):
        out, vjp = jax.vjp(f, *args)
        return out, vjp(cotangent)
    return jax.jit(run)(args, cotangent)


def _compare(f_plain, f_lean, args, cotangent, rtol, atol, exact_value=True):
    """Values bit-equal (``exact_value``; else within ``rtol``/``atol``: a convolution laid out
    differently sums in another order) and gradients within ``rtol``/``atol``."""
    out_p, grads_p = _value_and_vjp(f_plain, args, cotangent)
    out_l, grads_l = _value_and_vjp(f_lean, args, cotangent)
    for a, b in zip(jax.tree_util.tree_leaves(out_p), jax.tree_util.tree_leaves(out_l),
                    strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        if exact_value:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=rtol, atol=atol)
    for a, b in zip(jax.tree_util.tree_leaves(grads_p), jax.tree_util.tree_leaves(grads_l),
                    strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=rtol, atol=atol)
    return out_p


def _name(c):
    return f"{c.kind}-{c.v_reset}-{c.detach_reset}-{c.decay_input}-{c.surrogate}"


@pytest.mark.parametrize("config,chunk", [(c, None) for c in CONFIGS]
                         + [(CONFIGS[0], 1), (CONFIGS[0], 13), (CONFIGS[1], 5), (CONFIGS[5], 5)],
                         ids=lambda v: _name(v) if isinstance(v, NeuronConfig) else str(v))
def test_lean_multistep_equals_plain_float64(config, chunk):
    """T = 13: the default chunk 4 leaves a shorter last chunk; 1, 5 and 13 cover the rest."""
    x, v0, g_s, g_v = _data(jnp.float64)
    out = _compare(lambda x, v: _plain(config, x, v),
                   lambda x, v: neuron_backward.lean_multistep(x, config, v_init=v, chunk=chunk),
                   (x, v0), (g_s, g_v), rtol=1e-12, atol=1e-13)
    rate = float(out[0].mean())
    assert 0.05 < rate < 0.95, f"test input should make neurons fire sometimes, rate {rate}"


@pytest.mark.parametrize("backward", ["lean", "recompute"])
@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_backward_choice_equals_autodiff_float64(config, backward):
    """``backward=`` of the public functions: the same values, gradients equal to rounding,
    from a given initial potential and from SpikingJelly's default one."""
    x, v0, g_s, g_v = _data(jnp.float64)
    kw = dict(v_threshold=config.v_threshold, v_reset=config.v_reset,
              detach_reset=config.detach_reset, surrogate=config.surrogate)
    if config.kind == "lif":
        kw.update(tau=config.tau, decay_input=config.decay_input)
    f = neurons.if_multistep if config.kind == "if" else neurons.lif_multistep
    _compare(lambda x, v: f(x, v_init=v, **kw), lambda x, v: f(x, v_init=v, backward=backward, **kw),
             (x, v0), (g_s, g_v), rtol=1e-12, atol=1e-13)
    _compare(lambda x: f(x, **kw), lambda x: f(x, backward=backward, **kw),
             (x,), (g_s, g_v), rtol=1e-12, atol=1e-13)
    spikes = neurons.neuron_multistep(x, config._replace(backward=backward))
    np.testing.assert_array_equal(np.asarray(spikes), np.asarray(f(x, **kw)[0]))


@pytest.mark.parametrize("backward", ["lean", "recompute"])
def test_modules_honour_backward_and_record_rates(backward):
    """The NNX family runs the backward it is given (same gradients) and records one firing
    rate, also for a tuple of inputs (the halves of a reversible stream)."""
    from revsnn_jax.core.nnx_utils import call_capturing, firing_rates

    x, _, g_s, _ = _data(jnp.float64)
    for plain, other in ((LIF(tau=1.5), LIF(tau=1.5, backward=backward)),
                         (IF(v_reset=None), IF(v_reset=None, backward=backward))):
        _compare(plain, other, (x,), g_s, rtol=1e-12, atol=1e-13)
        (a, b), sown = call_capturing(other.__call__, (x, 2 * x))
        both = jnp.concatenate([a.ravel(), b.ravel()])
        np.testing.assert_allclose(firing_rates(sown), [both.mean()], rtol=1e-12)
    assert from_config(NeuronConfig(backward=backward)).backward == backward
    with pytest.raises(ValueError, match="unknown backward"):
        LIF(backward="adjoint")
    with pytest.raises(ValueError, match="return_trace"):
        neurons.lif_multistep(x, backward=backward, return_trace=True)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2], CONFIGS[5]], ids=_name)
def test_lean_multistep_equals_plain_float32(config):
    x, v0, g_s, g_v = _data(jnp.float32, t=24)
    _compare(lambda x, v: _plain(config, x, v),
             lambda x, v: neuron_backward.lean_multistep(x, config, v_init=v, chunk=5),
             (x, v0), (g_s, g_v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recompute_pre", [False, True], ids=["keep-X", "recompute-X"])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[6]], ids=_name)
def test_linear_lif_equals_plain_composition(config, recompute_pre):
    t, b, i, n = 11, 2, 5, 6
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    w = jax.random.normal(keys[0], (i, n), jnp.float64)
    bias = jax.random.normal(keys[1], (n,), jnp.float64) * 0.3
    inputs = jax.random.normal(keys[2], (t, b, i), jnp.float64)
    g_s = jax.random.normal(keys[3], (t, b, n), jnp.float64)

    def plain(w, bias, inputs):
        return _plain(config, jnp.einsum("tbi,io->tbo", inputs, w) + bias, None)[0]

    def fused(w, bias, inputs):
        return kernels_fused.linear_lif(w, bias, inputs, config, chunk=3,
                               recompute_pre=recompute_pre)[0]

    _compare(plain, fused, (w, bias, inputs), g_s, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("recompute_pre", [False, True], ids=["keep-X", "recompute-X"])
def test_conv_lif_equals_plain_composition(recompute_pre):
    config = NeuronConfig(detach_reset=True)
    t, b, h, c_in, c_out = 6, 2, 5, 3, 4
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    kernel = jax.random.normal(keys[0], (3, 3, c_in, c_out), jnp.float64) * 0.5
    bias = jnp.full((c_out,), 0.1, jnp.float64)
    inputs = jax.random.normal(keys[1], (t, b, h, h, c_in), jnp.float64)
    g_s = jax.random.normal(keys[2], (t, b, h, h, c_out), jnp.float64)

    def plain(kernel, bias, inputs):
        y = jax.lax.conv_general_dilated(inputs.reshape(t * b, h, h, c_in), kernel, (1, 1),
                                         "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return _plain(config, y.reshape(t, b, h, h, c_out) + bias, None)[0]

    def fused(kernel, bias, inputs):
        return kernels_fused.conv_lif(kernel, bias, inputs, config, chunk=4,
                             recompute_pre=recompute_pre)[0]

    _compare(plain, fused, (kernel, bias, inputs), g_s, rtol=1e-12, atol=1e-12,
             exact_value=False)


@pytest.mark.parametrize("stride,padding,kernel_hw", [
    (1, "VALID", (3, 2)), (1, "SAME", (3, 2)), (1, ((2, 0), (0, 1)), (3, 2)),
    (1, ((3, 0), (0, 2)), (3, 2)),  # pads > kernel - 1: the input gradient crops
    (1, ((-1, 2), (1, -1)), (3, 2)),  # negative pads crop the input
    (1, "SAME", (1, 1)), (1, "SAME", (5, 5)),
    (2, "SAME", (3, 2)), (2, ((0, 1), (2, 0)), (3, 2))])
def test_conv_nhwc_gradients_equal_autodiff(stride, padding, kernel_hw):
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(keys[0], (2, 7, 6, 3), jnp.float64)
    kernel = jax.random.normal(keys[1], (*kernel_hw, 3, 4), jnp.float64)
    pads = tuple(jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], (stride, stride),
                                         padding)) if isinstance(padding, str) else padding

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    out = reference(x, kernel)
    g = jax.random.normal(keys[2], out.shape, jnp.float64)
    _compare(reference, lambda x, k: cpu.conv_nhwc(x, k, stride, pads), (x, kernel), g,
             rtol=1e-12, atol=1e-12, exact_value=False)


@pytest.mark.parametrize("unrolled_max", [8, 1])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv_nhwc_in_image_groups_equals_autodiff(monkeypatch, padding, unrolled_max):
    """A batch larger than ``ROWS_GROUP_BYTES`` runs in groups of images (5 images: for the
    kernel gradient, whose operand is the padded input, groups of 2 -- unrolled static slices
    2 + 2 + 1, or with ``UNROLLED_GROUPS_MAX`` below 3 a ``lax.map`` over 3 zero-padded groups;
    for the forward a map over 2 groups of 3 at SAME, 3 of 2 at VALID): same value and
    gradients as the ungrouped convolution."""
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    x = jax.random.normal(keys[0], (5, 6, 5, 3), jnp.float64)
    kernel = jax.random.normal(keys[1], (3, 3, 3, 2), jnp.float64)
    pads = tuple(jax.lax.padtype_to_pads(x.shape[1:3], (3, 3), (1, 1), padding))
    image_bytes = (6 + sum(pads[0])) * (5 + sum(pads[1])) * 3 * 8
    monkeypatch.setattr(cpu, "ROWS_GROUP_BYTES", 2 * image_bytes)
    monkeypatch.setattr(cpu, "UNROLLED_GROUPS_MAX", unrolled_max)

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    g = jax.random.normal(keys[2], reference(x, kernel).shape, jnp.float64)
    _compare(reference, lambda x, k: cpu.conv_nhwc(x, k, 1, pads), (x, kernel), g,
             rtol=1e-12, atol=1e-12, exact_value=False)
    forward = str(jax.make_jaxpr(lambda x, k: cpu.conv_nhwc(x, k, 1, pads))(x, kernel))
    assert "scan" in forward  # the forward's groups really ran as a map
    xp = cpu._pad_hw(x, pads)
    kernel_grad = str(jax.make_jaxpr(
        lambda xp, g: cpu._kernel_grad_flat(xp, g, kernel.shape))(xp, g))
    if unrolled_max >= 3:
        assert "scan" not in kernel_grad and kernel_grad.count("dot_general") == 3
    else:
        assert "scan" in kernel_grad and kernel_grad.count("dot_general") == 1


def test_lean_lowers_training_memory_at_long_horizon():
    """fwd+bwd of Linear + LIF at T = 100 (XLA's compiled plan): lean >= 3x below plain."""
    t, b, i, n = 100, 2, 8, 256
    args = (jax.ShapeDtypeStruct((i, n), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.float32),
            jax.ShapeDtypeStruct((t, b, i), jnp.float32))

    def plain(w, bias, inputs):
        return neurons.neuron_multistep(jnp.einsum("tbi,io->tbo", inputs, w) + bias,
                                        NeuronConfig()).sum()

    def fused(w, bias, inputs):
        return kernels_fused.linear_lif(w, bias, inputs)[0].sum()

    def fused_recompute(w, bias, inputs):
        return kernels_fused.linear_lif(w, bias, inputs, recompute_pre=True)[0].sum()

    mem = {name: compiled_memory(jax.grad(f, argnums=(0, 1)), *args).temp_bytes
           for name, f in (("plain", plain), ("lean", fused), ("recompute", fused_recompute))}
    assert mem["lean"] * 3 <= mem["plain"], mem
    # recomputing X (256 per step) from the inputs (8 per step) keeps less than keeping X
    assert mem["recompute"] < mem["lean"], mem


def test_dense_equals_matmul_float64():
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    x = jax.random.normal(keys[0], (4, 3, 5), jnp.float64)
    w = jax.random.normal(keys[1], (5, 7), jnp.float64)
    g = jax.random.normal(keys[2], (4, 3, 7), jnp.float64)
    _compare(lambda x, w: x @ w, cpu.dense, (x, w), g, rtol=1e-13, atol=1e-13)


def test_default_chunk():
    assert neuron_backward.default_chunk(500) in (20, 25)
    assert neuron_backward.default_chunk(16) == 4
    assert neuron_backward.default_chunk(13) == 4  # prime: round(sqrt(13)), shorter last chunk
    assert neuron_backward.default_chunk(1) == 1
    with pytest.raises(ValueError, match="T >= 1"):
        neuron_backward.default_chunk(0)


def test_lean_rejects_bad_input():
    x = jnp.ones((4, 3), jnp.float32)
    with pytest.raises(ValueError, match="kind 'if' and 'lif'"):
        neuron_backward.lean_multistep(x, NeuronConfig(kind="quant"))
    with pytest.raises(TypeError, match="Python number"):
        neuron_backward.lean_multistep(x, NeuronConfig(tau=jnp.ones(3)))
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        neuron_backward.lean_multistep(x, chunk=0)
    with pytest.raises(TypeError, match="floating"):
        neuron_backward.lean_multistep(jnp.ones((4, 3), jnp.int32))
    with pytest.raises(ValueError, match="features"):
        kernels_fused.linear_lif(jnp.ones((5, 2)), None, jnp.ones((4, 1, 3)))
    with pytest.raises(ValueError, match="v_init has shape"):
        neuron_backward.lean_multistep(x, v_init=jnp.ones(4))
    with pytest.raises(TypeError, match="recompute_pre must be a bool"):
        kernels_fused.linear_lif(jnp.ones((3, 2)), None, jnp.ones((4, 1, 3)), recompute_pre="yes")


@pytest.mark.parametrize("tau,decay_input", [(2.0, True), (3.0, False), (None, True)])
def test_associative_integrator_equals_sequential(tau, decay_input):
    x, v0, _, _ = _data(jnp.float64, t=37)
    v = jax.jit(lambda x, v0: neurons.leaky_integrate_associative(
        x, tau=tau, decay_input=decay_input, v_init=v0))(x, v0)
    # a soft-reset neuron that never reaches its threshold is the non-resetting integrator
    far = 1e9
    if tau is None:
        trace = jax.jit(lambda x, v0: neurons.if_multistep(
            x, v_threshold=far, v_reset=None, v_init=v0, return_trace=True)[2])(x, v0)
    else:
        trace = jax.jit(lambda x, v0: neurons.lif_multistep(
            x, tau=tau, decay_input=decay_input, v_threshold=far, v_reset=None, v_init=v0,
            return_trace=True)[2])(x, v0)
    np.testing.assert_allclose(np.asarray(v), np.asarray(trace), rtol=1e-12, atol=1e-12)
    spikes, v2 = jax.jit(lambda x, v0: neurons.lif_no_reset_associative(
        x, tau=tau, decay_input=decay_input, v_init=v0))(x, v0)
    np.testing.assert_array_equal(np.asarray(spikes), np.asarray(v2 >= 1.0, np.float64))
    grad = jax.jit(jax.grad(lambda x: neurons.lif_no_reset_associative(x, tau=tau)[0].sum()))(x)
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).sum()) > 0


def test_bench_neurons_quick_ours():
    """The benchmark's CI mode: our two variants only (one subprocess each, so one case keeps
    the test short), the JSON schema, and equal lean / plain gradients in both cases."""
    bench_neurons = load_script("bench_neurons")
    out = os.path.join(os.environ.get("PYTEST_TMPDIR", "/tmp"), f"bench_{os.getpid()}.json")
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_ENABLE_X64="0")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "bench_neurons.py"),
                           "--quick", "--libraries", "revsnn_jax", "--cases", "linear_lif",
                           "--json", out, "--warmup", "0", "--iters", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out) as f:
        rows = json.load(f)
    os.remove(out)
    assert {(r["variant"], r["case"]) for r in rows} == {("plain", "linear_lif"),
                                                         ("lean", "linear_lif")}
    for row in rows:
        assert tuple(row) == bench_neurons.ROW_KEYS
        assert row["library"] == "revsnn_jax" and row["dtype"] == "float32"
        assert row["median_seconds"] > 0 and row["compile_seconds"] > 0
        assert isinstance(row["peak_bytes"], int) and row["peak_bytes"] >= 0
    for case in ("linear_lif", "conv_lif"):
        size = dict(bench_neurons.QUICK[case], I=16)
        assert bench_neurons.lean_plain_gradient_gap(case, size) < 1e-5


def test_bench_neurons_rounds(capsys):
    """``--rounds``: rows combine the rounds (median time and compile time, largest peak, each
    round's median in ``round_seconds``, ``null`` for a round without a row), and the printout
    counts the rounds lean was faster in, over rounds where both have a time."""
    bench_neurons = load_script("bench_neurons")

    def got(library, variant, seconds, peak, compile_s=0.5):
        row = dict(library=library, variant=variant, case="conv_lif", device="cpu",
                   dtype="float32", median_seconds=seconds, compile_seconds=compile_s,
                   peak_bytes=peak)
        return row, {"memory_method": "test"}

    lean_rounds = [got("revsnn_jax", "lean", 1.0, 10, 0.2), got("revsnn_jax", "lean", 3.0, 30),
                   None, got("revsnn_jax", "lean", 2.0, 20, 0.9)]
    row, extra = bench_neurons._combine_rounds(lean_rounds)
    assert tuple(row)[:len(bench_neurons.ROW_KEYS)] == bench_neurons.ROW_KEYS
    assert row["median_seconds"] == 2.0 and row["compile_seconds"] == 0.5
    assert row["peak_bytes"] == 30 and row["round_seconds"] == [1.0, 3.0, None, 2.0]
    assert extra == {"memory_method": "test"}
    torch_rounds = [got("spikingjelly", "default", t, 5, None) for t in (1.5, 2.5, 1.0, 1.9)]
    other, _ = bench_neurons._combine_rounds(torch_rounds)
    assert other["compile_seconds"] is None and other["median_seconds"] == pytest.approx(1.7)
    bench_neurons._print_rounds([row, other])
    out = capsys.readouterr().out
    # round 1 is lean's (1.0 < 1.5), rounds 2 and 4 are not, round 3 has no lean time
    assert "lean faster than spikingjelly/default in 1 of 3 rounds" in out
    with pytest.raises(SystemExit, match="--rounds must be >= 1"):
        bench_neurons.main(["--rounds", "0", "--libraries", "revsnn_jax"])


@pytest.mark.parametrize("v_reset", [-0.1, None])
def test_default_initial_potential_is_spikingjelly_s(v_reset):
    # no input, no spike: the potential stays where it started, v_reset (hard) or 0 (soft)
    x = jnp.zeros((4, 3), jnp.float32)
    config = NeuronConfig(v_threshold=0.5, v_reset=v_reset)
    _, v_final = neuron_backward.lean_multistep(x, config)
    np.testing.assert_allclose(np.asarray(v_final), 0.0 if v_reset is None else -0.1,
                               rtol=0, atol=1e-7)
    _, v_plain = neurons.lif_multistep(x, v_threshold=0.5, v_reset=v_reset)
    np.testing.assert_array_equal(np.asarray(v_final), np.asarray(v_plain))
