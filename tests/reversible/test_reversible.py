"""Tests of the reversible engine (``revsnn_jax.reversible``): inverse, gradients, state,
randomness, memory, FLOPs and errors. Shapes are small; the whole file runs in well under a
minute on a 2-core CPU. ``conftest.py`` enables float64, so every dtype here is explicit."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from revsnn_jax import neurons
from revsnn_jax.memory import compiled_memory
from revsnn_jax.reversible import (
    ReversibleReport,
    ReversibleSequence,
    check_reversible,
    gradient_gap,
    relative_gap,
    reversible_stage,
    reversible_stage_inverse,
)
from revsnn_jax.reversible.demo import make_train_step

T, B, C = 4, 6, 16  # time steps, batch, channels (two halves of 8)
MOMENTUM = 0.9  # BatchNorm running-statistics momentum


# --------------------------------------------------------------------------- a spiking F / G
def _batch_norm(h, scale, bias, eps=1e-5):
    axes = tuple(range(h.ndim - 1))
    mean = h.mean(axes)
    var = h.var(axes)
    return (h - mean) * jax.lax.rsqrt(var + eps) * scale + bias, mean, var


def spiking_branch(p, s, x, key, *, rate=0.0):
    """RevSResNet-like branch on dense features: IF -> linear -> BN -> IF -> linear -> BN.

    ``s`` holds BatchNorm running statistics (updated in the returned state); with ``rate``
    a dropout mask drawn from ``key`` is applied to the hidden spikes."""
    h = neurons.if_multistep(x, surrogate="atan")[0] @ p["w1"]
    h, m1, v1 = _batch_norm(h, p["scale1"], p["bias1"])
    h = neurons.if_multistep(h, surrogate="atan")[0]
    if rate:
        keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
        h = jnp.where(keep, h / (1.0 - rate), 0.0).astype(x.dtype)
    h, m2, v2 = _batch_norm(h @ p["w2"], p["scale2"], p["bias2"])
    new_s = {
        "mean1": MOMENTUM * s["mean1"] + (1 - MOMENTUM) * m1,
        "var1": MOMENTUM * s["var1"] + (1 - MOMENTUM) * v1,
        "mean2": MOMENTUM * s["mean2"] + (1 - MOMENTUM) * m2,
        "var2": MOMENTUM * s["var2"] + (1 - MOMENTUM) * v2,
    }
    return h, new_s


def init_branch(key, num_blocks, half, dtype):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    scale = float(1.0 / np.sqrt(half))
    p = {
        "w1": jax.random.normal(k1, (num_blocks, half, half), dtype) * 2 * scale,
        "w2": jax.random.normal(k2, (num_blocks, half, half), dtype) * scale,
        "scale1": 1 + 0.1 * jax.random.normal(k3, (num_blocks, half), dtype),
        "bias1": 0.1 * jax.random.normal(k4, (num_blocks, half), dtype),
        "scale2": jnp.full((num_blocks, half), 0.5, dtype),
        "bias2": jnp.zeros((num_blocks, half), dtype),
    }
    s = {
        "mean1": jnp.zeros((num_blocks, half), dtype),
        "var1": jnp.ones((num_blocks, half), dtype),
        "mean2": jnp.zeros((num_blocks, half), dtype),
        "var2": jnp.ones((num_blocks, half), dtype),
    }
    return p, s


def init_stage(num_blocks, dtype, seed=0, channels=C, pad_to=None):
    """Stacked ``(params, state)`` of ``num_blocks`` blocks. With ``pad_to``, blocks past
    ``num_blocks`` get a zero output BatchNorm (``F = G = 0``), so they are exact identities in
    any precision: stages of several depths then share one shape and one compilation."""
    kf, kg = jax.random.split(jax.random.key(seed))
    total = pad_to or num_blocks
    pf, sf = init_branch(kf, total, channels // 2, dtype)
    pg, sg = init_branch(kg, total, channels // 2, dtype)
    if total > num_blocks:
        for p in (pf, pg):
            p["scale2"] = p["scale2"].at[num_blocks:].set(0)
            p["bias2"] = p["bias2"].at[num_blocks:].set(0)
    return (pf, pg), (sf, sg)


def random_input(dtype, seed=1, shape=(T, B, C)):
    return (2.0 * jax.random.normal(jax.random.key(seed), shape, jnp.float32)).astype(dtype)


def _numeric(leaf):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return jnp.asarray(leaf, jnp.float64)


def max_abs(a, b):
    return max(float(jnp.max(jnp.abs(_numeric(x) - _numeric(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def max_rel(a, b):
    """Largest absolute difference over the trees, relative to the largest reference entry."""
    scale = max(float(jnp.max(jnp.abs(_numeric(y)))) for y in jax.tree.leaves(b))
    return max_abs(a, b) / scale


def stage_loss(f, g, mode, key=None):
    """Loss of a stage against a fixed random cotangent; returns (loss, new_state)."""

    def loss(params, state, x, ct):
        y, new_state = reversible_stage(f, g, params, state, x, key, memory_mode=mode)
        return jnp.sum(y * ct), new_state

    return loss


# --------------------------------------------------------------------------- inverse
def _dropout_branch(p, s, x, key):
    return spiking_branch(p, s, x, key, rate=0.25)


@jax.jit
def _round_trip(params, state, x, key, key_inverse):
    """A stage with dropout inside F/G, then its inverse with ``key_inverse``."""
    f = _dropout_branch
    y, _ = reversible_stage(f, f, params, state, x, key)
    return y, reversible_stage_inverse(f, f, params, state, y, key_inverse)


def test_inverse_round_trip_float32():
    # One compilation serves 1, 4 and 16 blocks: shorter stages are padded with identities.
    x = random_input(jnp.float32)
    key = jax.random.key(7)
    for num_blocks in (1, 4, 16):
        params, state = init_stage(num_blocks, jnp.float32, pad_to=16)
        y, x_rec = _round_trip(params, state, x, key, key)
        assert y.dtype == x_rec.dtype == jnp.float32
        assert float(jnp.max(jnp.abs(y - x))) > 0.5  # the blocks do something
        rel = float(jnp.max(jnp.abs(x_rec - x)) / jnp.max(jnp.abs(x)))
        assert rel < 1e-5, (num_blocks, rel)
    # The dropout key is replayed: inverting with another key does not reconstruct.
    _, x_bad = _round_trip(params, state, x, key, jax.random.key(8))
    assert float(jnp.max(jnp.abs(x_bad - x)) / jnp.max(jnp.abs(x))) > 1e-2


def _mixed_precision(fn):
    """Run ``fn`` in bfloat16 while the coupling streams stay in the input's dtype."""

    def wrapped(p, s, x, key):
        out, new_s = fn(p, s, x.astype(jnp.bfloat16), key)
        return out.astype(x.dtype), new_s

    return wrapped


def bf16_round_trip_errors(stream_dtype, depths=(1, 4, 16, 32)):
    """Relative max-abs round-trip error per depth of a stage with bfloat16 parameters and F/G
    compute; the coupling streams (``x``, ``y``) are ``stream_dtype``."""
    fn = spiking_branch if stream_dtype == jnp.bfloat16 else _mixed_precision(spiking_branch)

    @jax.jit
    def round_trip(params, state, x):
        y, _ = reversible_stage(fn, fn, params, state, x)
        return reversible_stage_inverse(fn, fn, params, state, y)

    errors = {}
    for depth in depths:
        params, state = init_stage(depth, jnp.bfloat16, pad_to=max(depths))
        x = random_input(stream_dtype)
        diff = jnp.abs(round_trip(params, state, x).astype(jnp.float32) - x.astype(jnp.float32))
        errors[depth] = float(jnp.max(diff) / jnp.max(jnp.abs(x.astype(jnp.float32))))
    return errors


def test_bfloat16_drift_over_depth():
    # All-bf16 (streams too): an 8-bit mantissa makes (x1 + F) - F lose x1's low bits, the
    # reconstructed input then flips spikes in the next F, and the error cascades down the
    # stack. Measured (README): it reaches O(1) by ~8 blocks. Only finiteness and a linear
    # envelope can be asserted; the recipe below is what to use.
    pure = bf16_round_trip_errors(jnp.bfloat16)
    # Mixed precision: bf16 parameters and F/G compute, float32 coupling streams. The
    # reconstructed x2 is off by a float32 ulp and almost always rounds to the same bf16 input,
    # so F replays exactly and the drift stays at float32 level.
    mixed = bf16_round_trip_errors(jnp.float32)
    print("\nbf16 round-trip relative error by depth: all-bf16", pure, "f32 streams", mixed)
    assert all(np.isfinite(e) for e in pure.values()), pure
    unit = max(pure[1], 2.0**-7)
    for depth, err in pure.items():
        assert err <= 4 * depth * unit, (depth, err, pure)
    for depth, err in mixed.items():
        assert err <= 4 * depth * max(mixed[1], 2.0**-24), (depth, err, mixed)
        assert err < 1e-6, mixed


# --------------------------------------------------------------------------- gradients and state
@functools.cache
def _grads(mode, dtype, jit):
    """``(loss, new_state, (param grads, input grads), forward-only state)`` of a 3-block
    spiking stage with BatchNorm (batch statistics; running statistics in the state)."""
    params, state = init_stage(3, dtype)
    x = random_input(dtype)
    ct = jax.random.normal(jax.random.key(3), x.shape, dtype)
    value_and_grad = jax.value_and_grad(stage_loss(spiking_branch, spiking_branch, mode),
                                        argnums=(0, 2), has_aux=True)

    def fn(params, state, x, ct):
        (loss, new_state), grads = value_and_grad(params, state, x, ct)
        forward_only = reversible_stage(spiking_branch, spiking_branch, params, state, x,
                                        memory_mode=mode)[1]
        return loss, new_state, grads, forward_only

    return (jax.jit(fn) if jit else fn)(params, state, x, ct)


@pytest.mark.parametrize(("dtype", "rtol", "modes"), [
    (jnp.float64, 1e-9, ("reversible", "checkpoint")),
    (jnp.float32, 1e-4, ("reversible",)),
])
def test_gradients_match_plain_autodiff_jit(dtype, rtol, modes):
    loss_ref, state_ref, grads_ref, _ = _grads("none", dtype, jit=True)
    assert max_abs(grads_ref, jax.tree.map(jnp.zeros_like, grads_ref)) > 0
    _, state = init_stage(3, dtype)
    assert max_abs(state_ref, state) > 1e-3  # running statistics moved
    for mode in modes:
        loss, new_state, grads, forward_only = _grads(mode, dtype, jit=True)
        assert jax.tree.map(lambda a: a.dtype, grads) == jax.tree.map(lambda a: a.dtype, grads_ref)
        assert abs(float(loss - loss_ref)) <= rtol * abs(float(loss_ref))
        assert max_rel(grads[0], grads_ref[0]) < rtol, (mode, "params")
        assert max_rel(grads[1], grads_ref[1]) < rtol, (mode, "input")
        # Running statistics are updated once, by the forward pass: the state a training step
        # returns is exactly the forward-only state (the backward's recompute does not touch
        # it; PyTorch's reference updates it twice), and equals plain autodiff's.
        assert max_abs(new_state, forward_only) == 0.0, mode
        assert max_abs(new_state, state_ref) <= 10 * rtol


def test_gradients_match_plain_autodiff_eager_float32():
    _, state_ref, grads_ref, _ = _grads("none", jnp.float32, jit=True)
    _, new_state, grads, _ = _grads("reversible", jnp.float32, jit=False)
    assert max_rel(grads[0], grads_ref[0]) < 1e-4
    assert max_rel(grads[1], grads_ref[1]) < 1e-4
    assert max_abs(new_state, state_ref) < 1e-5


# --------------------------------------------------------------------------- training steps
def _train_pure(mode, steps=3):
    """SGD with momentum on a stage whose F/G use dropout from explicit keys."""
    params, state = init_stage(3, jnp.float32)
    x = random_input(jnp.float32)
    ct = jax.random.normal(jax.random.key(3), x.shape, jnp.float32)
    tx = optax.sgd(0.05, momentum=0.9)

    def f(p, s, z, key):
        return spiking_branch(p, s, z, key, rate=0.2)

    @jax.jit
    def step(params, state, opt_state, key):
        def loss(params):
            y, new_state = reversible_stage(f, f, params, state, x, key, memory_mode=mode)
            return jnp.mean((y - ct) ** 2), new_state

        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value

    opt_state = tx.init(params)
    losses = []
    for i in range(steps):
        params, state, opt_state, value = step(params, state, opt_state, jax.random.key(100 + i))
        losses.append(float(value))
    return params, state, losses


def test_three_sgd_steps_with_dropout_keys_equal_across_modes():
    p_ref, s_ref, losses_ref = _train_pure("none")
    p_rev, s_rev, losses_rev = _train_pure("reversible")
    assert losses_ref[-1] < losses_ref[0]  # it trains
    np.testing.assert_allclose(losses_rev, losses_ref, rtol=1e-5)
    assert max_rel(p_rev, p_ref) < 1e-4
    assert max_abs(s_rev, s_ref) < 1e-4


class NNXBranch(nnx.Module):
    """Spiking branch as NNX modules: IF -> Linear -> BatchNorm -> Dropout."""

    def __init__(self, channels, *, rngs):
        kw = {"dtype": jnp.float32, "param_dtype": jnp.float32}
        self.linear = nnx.Linear(channels, channels, rngs=rngs, **kw)
        self.norm = nnx.BatchNorm(channels, rngs=rngs, **kw)
        self.drop = nnx.Dropout(0.2, rngs=rngs)

    def __call__(self, x):
        return self.drop(self.norm(self.linear(neurons.if_multistep(x, surrogate="atan")[0])))


def _train_nnx(mode, steps=3):
    model = ReversibleSequence(lambda r: NNXBranch(C // 2, rngs=r),
                               lambda r: NNXBranch(C // 2, rngs=r), num_blocks=3,
                               rngs=nnx.Rngs(0, dropout=1), memory_mode=mode)
    graph, params, state = nnx.split(model, nnx.Param, ...)
    x = random_input(jnp.float32)
    ct = jax.random.normal(jax.random.key(3), x.shape, jnp.float32)
    tx = optax.sgd(0.05, momentum=0.9)

    @jax.jit
    def step(params, state, opt_state):
        def loss(params):
            stage = nnx.merge(graph, params, state, copy=True)
            value = jnp.mean((stage(x) - ct) ** 2)
            return value, nnx.state(stage, nnx.Not(nnx.Param))

        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, value

    opt_state = tx.init(params)
    losses = []
    for _ in range(steps):
        params, state, opt_state, value = step(params, state, opt_state)
        losses.append(float(value))
    return params, state, losses


def test_three_sgd_steps_nnx_dropout_batchnorm_equal_across_modes():
    p_ref, s_ref, losses_ref = _train_nnx("none")
    p_rev, s_rev, losses_rev = _train_nnx("reversible")
    assert losses_ref[-1] < losses_ref[0]
    assert len(set(losses_ref)) == 3  # dropout masks change per step (RNG counts advance)
    np.testing.assert_allclose(losses_rev, losses_ref, rtol=1e-5)
    assert max_rel(p_rev, p_ref) < 1e-4
    assert max_abs(s_rev, s_ref) < 1e-4  # BatchNorm statistics and RNG counts


def test_reversible_sequence_rejects_bad_arguments():
    with pytest.raises(ValueError, match="memory_mode"):
        ReversibleSequence(lambda r: NNXBranch(2, rngs=r), lambda r: NNXBranch(2, rngs=r), 2,
                           rngs=nnx.Rngs(0), memory_mode="fast")
    with pytest.raises(ValueError, match="num_blocks"):
        ReversibleSequence(lambda r: NNXBranch(2, rngs=r), lambda r: NNXBranch(2, rngs=r), 0,
                           rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------- memory and FLOPs
def _memory_specs(num_blocks, half=32, shape=(4, 256)):
    """Abstract arguments of a training step: a ``[T=4, B=256, 64]`` stage of spiking blocks.
    Activations dominate: one half-tensor is 128 KiB, one block's parameters 17 KiB."""
    params, state = jax.eval_shape(lambda: init_stage(num_blocks, jnp.float32, channels=2 * half))
    return params, state, jax.ShapeDtypeStruct((*shape, 2 * half), jnp.float32)


def _train_step(mode):
    return make_train_step(mode, lr=0.1, branch=spiking_branch)


@pytest.fixture(scope="module")
def step_memory():
    """XLA's compiled plan of a training step, per mode and depth (compiled, not run)."""
    runs = [("none", 2), ("reversible", 2), ("none", 32), ("checkpoint", 32), ("reversible", 32)]
    return {(mode, depth): compiled_memory(_train_step(mode), *_memory_specs(depth))
            for mode, depth in runs}


def test_reversible_memory_does_not_grow_with_depth(step_memory):
    mib = {k: v.temp_bytes / 2**20 for k, v in step_memory.items()}
    print("\ntemp MiB by (mode, depth):", {k: round(v, 2) for k, v in mib.items()})
    rev2, rev32 = mib["reversible", 2], mib["reversible", 32]
    none2, none32 = mib["none", 2], mib["none", 32]
    ck32 = mib["checkpoint", 32]
    assert rev32 <= 1.10 * rev2, (rev2, rev32)
    assert none32 >= 8 * none2, (none2, none32)
    # checkpoint keeps one input per block: between the two.
    assert rev32 < ck32 < none32, (rev32, ck32, none32)


def test_reversible_flops_at_most_1_4x_plain(step_memory):
    # cost_analysis() counts a while-loop (lax.scan) body once, not once per iteration. All
    # three modes share the loop structure -- a forward scan over blocks and a backward scan over
    # blocks, with the neurons' time scans nested inside -- so this ratio is per block. The
    # benchmark (experiments/bench_engine.py) measures the same ratio on a conv branch.
    plain = step_memory["none", 2].flops
    rev = step_memory["reversible", 2].flops
    assert plain and rev
    ratio = rev / plain
    print(f"\nFLOP ratio reversible / none: {ratio:.3f}")
    assert 1.0 < ratio <= 1.4, ratio


# --------------------------------------------------------------------------- errors
def _tiny_stage(num_blocks=2, channels=4):
    return init_stage(num_blocks, jnp.float32, channels=channels)


def test_odd_channel_count_is_rejected():
    params, state = _tiny_stage()
    with pytest.raises(ValueError, match="even channel count"):
        reversible_stage(spiking_branch, spiking_branch, params, state,
                         jnp.zeros((T, B, 5), jnp.float32))


def test_mismatched_stacked_leading_axes_are_rejected():
    (pf, pg), state = _tiny_stage()
    pg = jax.tree.map(lambda leaf: jnp.concatenate([leaf, leaf[:1]]), pg)  # 3 blocks vs 2
    with pytest.raises(ValueError, match="leading block axis"):
        reversible_stage(spiking_branch, spiking_branch, (pf, pg), state,
                         jnp.zeros((T, B, 4), jnp.float32))
    params, (sf, sg) = _tiny_stage()
    sf = jax.tree.map(lambda leaf: leaf[:1], sf)  # state for 1 block, params for 2
    with pytest.raises(ValueError, match="state"):
        reversible_stage(spiking_branch, spiking_branch, params, (sf, sg),
                         jnp.zeros((T, B, 4), jnp.float32))


def test_unknown_memory_mode_is_rejected():
    params, state = _tiny_stage()
    with pytest.raises(ValueError, match="memory_mode"):
        reversible_stage(spiking_branch, spiking_branch, params, state,
                         jnp.zeros((T, B, 4), jnp.float32), memory_mode="reversable")


def test_integer_input_is_rejected():
    params, state = _tiny_stage()
    with pytest.raises(TypeError, match="floating"):
        reversible_stage(spiking_branch, spiking_branch, params, state,
                         jnp.zeros((T, B, 4), jnp.int32))


def test_branch_output_must_match_its_input_half():
    params, state = _tiny_stage()

    def widening(p, s, x, key):
        return jnp.concatenate([x, x], axis=-1), s

    def promoting(p, s, x, key):
        return x.astype(jnp.float64), s

    x = jnp.zeros((T, B, 4), jnp.float32)
    with pytest.raises(ValueError, match="shape"):
        reversible_stage(widening, widening, params, state, x)
    with pytest.raises(TypeError, match="dtype"):
        reversible_stage(promoting, promoting, params, state, x)


# --------------------------------------------------------------------------- check_reversible
def test_check_reversible_passes_on_a_spiking_stage():
    params, state = init_stage(2, jnp.float32)
    report = check_reversible(_dropout_branch, _dropout_branch, params, state,
                              jax.ShapeDtypeStruct((T, B, C), jnp.float32), jax.random.key(0))
    print("\n" + str(report))
    assert isinstance(report, ReversibleReport)
    assert report.passed, report
    assert report.rtol == 1e-4 and report.num_blocks == 2 and report.dtype == "float32"
    assert 0 < report.roundtrip_rel < 1e-5 or report.roundtrip_rel == 0
    assert report.grad_params_rel < 1e-4 and report.grad_input_rel < 1e-4
    text = str(report)
    assert "inverse round trip" in text and "grad params" in text and "PASSED" in text


def _tanh_params(num_blocks=2, half=4, scale=1.0):
    w = jax.random.normal(jax.random.key(0), (num_blocks, half, half), jnp.float32)
    return {"w": w, "scale": jnp.full((num_blocks,), scale, jnp.float32)}


def _tanh_branch(p, s, x, key):
    return p["scale"] * jnp.tanh(x @ p["w"]), s


def test_check_reversible_fails_on_an_impure_branch():
    """F keeps a hidden Python counter, so the backward's recompute (traced again) differs from
    the forward: the inverse does not reconstruct and the gradients disagree."""
    calls = []

    def impure(p, s, x, key):
        calls.append(None)
        return jnp.tanh(x @ p["w"] + 0.5 * len(calls)), s

    x = jax.ShapeDtypeStruct((T, B, 8), jnp.float32)
    p = _tanh_params()
    good = check_reversible(_tanh_branch, _tanh_branch, (p, p), None, x)
    assert good.passed, good
    report = check_reversible(impure, _tanh_branch, (p, p), None, x)
    print("\n" + str(report))
    assert not report.passed
    assert not report.roundtrip_ok and report.roundtrip_rel > 1e-2
    assert not report.grad_input_ok
    assert "FAIL" in str(report) and "FAILED" in str(report)


def test_check_reversible_fails_when_branch_outputs_swamp_the_stream():
    """|F| ~ 1e6 next to |x| ~ 1: in float32 ``(x1 + F) - F`` keeps no digits of ``x1``."""
    p = _tanh_params()
    huge = _tanh_params(scale=1e6)
    report = check_reversible(_tanh_branch, _tanh_branch, (huge, p), None,
                              jax.ShapeDtypeStruct((T, B, 8), jnp.float32))
    print("\n" + str(report))
    assert not report.roundtrip_ok and not report.passed
    # float64 has the digits to spare; a looser rtol lets float32 pass as well.
    x64 = jax.ShapeDtypeStruct((T, B, 8), jnp.float64)
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), (huge, p))
    assert check_reversible(_tanh_branch, _tanh_branch, p64, None, x64, rtol=1e-6).passed


def test_gradient_gap_is_the_largest_difference_and_the_reference_scale():
    """The measure check_reversible and the trainer's drift check share: max |a - b| and
    max |b| over every leaf, under jit too; bfloat16 leaves are subtracted in float32."""
    grads = {"w": jnp.array([1.0, -3.0]), "b": jnp.zeros((0,)), "v": jnp.array([2.0])}
    reference = {"w": jnp.array([1.5, -3.0]), "b": jnp.zeros((0,)), "v": jnp.array([2.0])}
    for gap in (gradient_gap(grads, reference), jax.jit(gradient_gap)(grads, reference)):
        assert relative_gap(gap) == (0.5, 0.5 / 3.0)
    assert relative_gap(gradient_gap({"w": jnp.zeros(2)}, {"w": jnp.zeros(2)})) == (0.0, 0.0)
    assert relative_gap((1e-3, 0.0)) == (1e-3, float("inf"))
    one = jnp.array([1.0], jnp.bfloat16)
    near = jnp.array([1.0 + 2.0**-7], jnp.bfloat16)  # one bfloat16 ulp above 1
    err, scale = gradient_gap(near, one)
    assert err.dtype == jnp.float32 and float(err) == 2.0**-7 and float(scale) == 1.0


# --------------------------------------------------------------------------- docs
def test_engine_page_examples_run():
    """The python blocks of docs/engine.md run, in order."""
    import pathlib
    import re

    section = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "engine.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    exec(compile("\n".join(blocks), "docs/engine.md", "exec"), namespace)
    assert np.isfinite(float(namespace["loss"]))
    assert namespace["y"].shape == namespace["x"].shape
    assert namespace["report"].passed
