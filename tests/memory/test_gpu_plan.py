"""NVIDIA GPU memory plans without a GPU: ``revsnn memory --target gpu-h100``, ``revsnn plan``.

XLA's GPU compiler (jax's CUDA plugin, the ``cuda`` extra) compiles for a card described by its
published facts in the compile worker subprocess (:func:`revsnn_jax.memory.compile_step`); these
tests skip where the plugin is absent, except the one checking that its absence is a clear usage
error. The programs are tiny (a reduced RevSResNet, a reversible stage on small tensors) so that
each compile takes seconds; plans are shared through one cache directory per module.
"""

from __future__ import annotations

import json
import sys

import pytest

from revsnn_jax import cli, memory
from revsnn_jax.memory import benchmark
from revsnn_jax.memory.plan import largest_fitting

REDUCED = ["--time-steps", "2", "--image-size", "8", "--num-classes", "5", "--widths", "8",
           "--blocks", "1"]
H100 = "NVIDIA H100 80GB HBM3"
GiB = 2 ** 30


def _cuda():
    pytest.importorskip("jax_cuda12_plugin", reason="jax's CUDA plugin (the cuda extra: pip "
                        "install -e '.[cuda]') is not installed: no GPU compiler")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("gpu_plans"))


@pytest.fixture(autouse=True)
def float32_programs():
    """The worker builds the step with this process's ``jax_enable_x64`` (on in this suite, see
    conftest); GPU programs are meant in 32 bits, as the CLI builds them."""
    import jax

    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", old)


# --------------------------------------------------------------------------- no GPU compiler
def test_missing_cuda_plugin_is_a_usage_error_saying_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "jax_cuda12_plugin", None)  # hidden: not importable
    for argv in (["memory", "--models", "revsresnet21", *REDUCED, "--target", "gpu-h100"],
                 ["plan", "--model", "revsresnet21", "--target", "gpu-a100-40g"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "needs XLA's GPU compiler (jax-cuda12-plugin), which is not installed" in err
        assert 'pip install -e ".[cuda]"' in err
    with pytest.raises(memory.TargetUnavailableError, match="jax-cuda12-plugin"):
        memory.check_available("gpu-l4")


def test_gpu_budget_is_jax_preallocation_less_a_margin(monkeypatch):
    """``f x M - 1 GiB``: JAX's default 0.75, ``$XLA_PYTHON_CLIENT_MEM_FRACTION``, or an explicit
    fraction; every card's target config names it and its compute capability."""
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    budget = memory.gpu_budget("gpu-a100-40g")
    assert budget.budget_bytes == int((0.75 * 40 - 1) * GiB)
    assert "JAX's default preallocation" in budget.describe()
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    assert memory.gpu_budget("gpu-h100").budget_bytes == int((0.5 * 80 - 1) * GiB)
    assert memory.gpu_budget("gpu-h100", 0.9).budget_bytes == int((0.9 * 80 - 1) * GiB)
    with pytest.raises(ValueError, match="fraction"):
        memory.gpu_budget("gpu-h100", 1.5)
    with pytest.raises(ValueError, match="not a compile-only GPU"):
        memory.gpu_budget("tpu-v5e")
    for name, spec in memory.GPU_SPECS.items():
        text = memory.gpu_target_config(spec)
        major, minor = spec.compute_capability
        assert f'device_description_str: "{spec.device_kind}"' in text, name
        assert f"cuda_compute_capability {{ major: {major} minor: {minor} }}" in text, name
        assert memory.get_target(name).compile_only


def test_plan_gpu_budget_flags(capsys):
    """``--mem-fraction`` only for gpu-* targets and not with ``--hbm-gib``; both usage errors."""
    for extra, message in ((["--target", "tpu-v5e", "--mem-fraction", "0.5"],
                            "only for gpu-* targets"),
                           (["--target", "gpu-h100", "--mem-fraction", "0.5", "--hbm-gib", "9"],
                            "drop one"),
                           (["--target", "gpu-h100", "--mem-fraction", "1.5"], "fraction")):
        if "tpu" in extra[1]:
            pytest.importorskip("libtpu")
        else:
            _cuda()
        assert cli.main(["plan", "--model", "revsresnet21", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


# --------------------------------------------------------------------------- the fast search
def _bends(b):
    """A peak like RevSResNet37's on the H100 plan: a line, flattening past 5182 images (the
    compiler trading memory for recomputation near the card's memory)."""
    gib = 2 ** 30
    return int(0.35 * gib + b * 11.6 * 2 ** 20) if b <= 5182 else int(59.05 * gib + b * 1e5)


MiB = 2 ** 20


def _wobbles(b):
    """Like MS-ResNet34's peak on the H100 plan: a line up to just past the budget, then not
    monotone (2077 images 60.72 GiB, 2098 60.69, 2137 59.75)."""
    line = GiB + 28 * MiB * b
    return line if line <= 59.4 * GiB else int(60.7 * GiB - (b % 97) * 20 * MiB)


@pytest.mark.parametrize("peak", [lambda b: GiB // 2 + 11 * MiB * b,                 # a line
                                  lambda b: GiB // 2 + 88 * MiB * ((b + 7) // 8),     # padding
                                  lambda b: GiB // 2 + 10 * MiB * b + 40 * b * b,     # convex
                                  lambda b: GiB // 2 + int(14 * MiB * b ** 0.97),     # concave
                                  _bends, _wobbles])
@pytest.mark.parametrize("budget", [7 * GiB, 59 * GiB])
def test_largest_fitting_within_one_percent_in_six_compiles(peak, budget):
    """The default search of ``revsnn plan``: at most 6 values compiled, the answer fits and
    the exact largest is at most 1% above it (``within``), on lines, staircases, mild curves
    and a bend above the budget. (A strongly curved peak can leave the gap open: ``within``
    then says how wide it is, and ``--exact`` closes it.)"""
    calls = []

    def peaks_at(values):
        calls.extend(values)
        return {v: peak(v) for v in values}

    fit = largest_fitting(peaks_at, 32, budget, tolerance=0.01)
    lo, hi = 1, 10**7
    while lo < hi:  # the exact answer, by bisection on the (growing) peak
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if peak(mid) <= budget else (lo, mid - 1)
    assert len(calls) <= 6 and not fit.exact
    assert fit.peak_bytes <= budget and fit.largest <= lo <= fit.largest * 1.01
    assert fit.within is not None and fit.within <= 0.01
    assert lo <= fit.largest * (1 + fit.within)


# --------------------------------------------------------------------------- the GPU compiler
def test_memory_command_for_gpu_h100_rows_name_the_device_and_are_cached(tmp_path, capsys,
                                                                          cache_dir):
    _cuda()
    out = tmp_path / "rows.json"
    argv = ["memory", "--models", "revsresnet21", *REDUCED, "--batch", "2", "--memory-modes",
            "reversible", "--target", "gpu-h100", "--cache-dir", cache_dir, "--json", str(out)]
    assert cli.main(argv) == 0
    (row,) = json.loads(out.read_text())
    assert list(row) == list(benchmark.ROW_FIELDS)
    assert (row["target"], row["device_kind"], row["device"]) == ("gpu-h100", H100,
                                                                  f"gpu:{H100}")
    assert row["peak_bytes"] > 0 and row["bytes_per_image"] > 0
    printed = capsys.readouterr().out
    assert f"compiled batch 4 for gpu-h100 ({H100})" in printed
    assert cli.main(argv) == 0  # the same program again: read from the cache
    assert capsys.readouterr().out.count("(cached)") == 2
    assert json.loads(out.read_text())[0]["peak_bytes"] == row["peak_bytes"]
    assert cli.main([*argv, "--time"]) == 2  # --time needs a device that runs the step
    assert "only compiles it" in capsys.readouterr().err


def _stage(depth, mode):
    return memory.StepProgram("tpu_programs:stage_step", {
        "depth": depth, "memory_mode": mode, "half": 32, "length": 16})


def test_reversible_stage_on_gpu_is_flat_in_depth_and_its_plain_twin_grows(cache_dir):
    """Memory per example (slope B = 8 -> 16) of a training step through a reversible stage of
    2 and 8 blocks, on the H100 plan; the plain autodiff twin keeps every block's activations."""
    _cuda()
    per = {}
    for mode in ("reversible", "none"):
        for depth in (2, 8):
            at_b, at_2b = memory.compile_step(_stage(depth, mode), [8, 16], "gpu-h100",
                                              cache_dir=cache_dir)
            assert (at_b.target, at_b.device_kind) == ("gpu-h100", H100)
            per[mode, depth] = (at_2b.memory.peak_bytes - at_b.memory.peak_bytes) / 8
    print("\nbytes per example on gpu-h100:", per)
    assert per["reversible", 8] <= 1.1 * per["reversible", 2]
    assert per["none", 8] >= 2 * per["none", 2]
    assert per["none", 2] > per["reversible", 2]


def test_plan_on_gpu_returns_a_batch_that_fits_and_one_more_that_does_not(tmp_path, capsys,
                                                                          cache_dir):
    """``revsnn plan --target gpu-h100`` with a budget between the plans at 8 and 16 images:
    within 1% of an answer this small is the exact one, found in at most 6 compiles; compiled
    again without the cache, the answer fits and one more does not."""
    _cuda()
    program = benchmark.step_program("revsresnet21", time_steps=2, image_size=8, num_classes=5,
                                     memory_mode="reversible",
                                     model_kwargs={"widths": (8,), "blocks": (1,)})
    low, high = memory.compile_step(program, [8, 16], "gpu-h100", cache_dir=cache_dir)
    budget = (low.memory.peak_bytes + high.memory.peak_bytes) // 2
    out = tmp_path / "plan.json"
    assert cli.main(["plan", "--model", "revsresnet21", *REDUCED, "--target", "gpu-h100",
                     "--memory-modes", "reversible", "--hbm-gib", repr(budget / GiB),
                     "--first-batch", "8", "--cache-dir", cache_dir, "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert (row["target"], row["device_kind"]) == ("gpu-h100", H100)
    assert 8 <= row["largest"] < 16 and row["compiles"] <= 6 and not row["exact"]
    assert row["within"] == 0 and row["above"] == row["largest"] + 1
    printed = capsys.readouterr().out
    assert "budget" in printed and "--hbm-gib" in printed and " s)" in printed
    fits, over = memory.compile_step(program, [row["largest"], row["largest"] + 1], "gpu-h100",
                                     use_cache=False, allow_refusal=True)
    assert fits.memory.peak_bytes == row["peak_bytes"] <= row["budget_bytes"]
    assert over.memory.peak_bytes == row["above_peak_bytes"] > row["budget_bytes"]
