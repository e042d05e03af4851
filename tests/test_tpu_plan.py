"""TPU memory plans without a TPU: ``revsnn memory --target tpu-v5e`` and ``revsnn plan``.

The TPU compiler (libtpu, the ``tpu`` extra) compiles for one chip of a described v5e slice in a
subprocess (:func:`revsnn_jax.memory.compile_step`); these tests skip where libtpu is absent,
except the one checking that its absence is a clear usage error. The models are tiny so that
each compile takes seconds; plans are shared through one cache directory per module.
"""

from __future__ import annotations

import json
import sys

import pytest

from revsnn_jax import benchmark, cli, memory
from revsnn_jax.plan import largest_fitting

# A reduced RevSResNet (one 8-wide stage of one block, T = 2, 8x8 inputs): its TPU compiles take
# seconds (32x32 inputs: a minute on 2 loaded cores). Its activations are too small to reach HBM
# (the chip keeps them on-core, which the plan does not count), so its plan grows with the
# parameters (blocks), not the batch; the reversible stage below has HBM-sized activations.
REDUCED = ["--time-steps", "2", "--image-size", "8", "--num-classes", "5", "--widths", "8"]
TINY = ["--models", "revsresnet21", *REDUCED, "--blocks", "1"]


def _libtpu():
    pytest.importorskip("libtpu", reason="libtpu (the tpu extra: pip install -e '.[tpu]') "
                        "is not installed: no TPU compiler")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tpu_plans"))


@pytest.fixture(autouse=True)
def float32_programs():
    """The TPU worker builds the step with this process's ``jax_enable_x64``; conftest turns it
    on for the CPU suite, but TPU programs are meant in 32 bits (as the CLI builds them)."""
    import jax

    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", old)


# --------------------------------------------------------------------------- no TPU compiler
def test_missing_libtpu_is_a_usage_error_saying_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "libtpu", None)  # hidden: import libtpu would fail
    for argv in (["memory", *TINY, "--target", "tpu-v5e"],
                 ["plan", "--model", "revsresnet21", "--target", "tpu-v4", "--hbm-gib", "1"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "needs the TPU compiler (libtpu), which is not installed" in err
        assert 'pip install -e ".[tpu]"' in err
    with pytest.raises(memory.TargetUnavailableError, match="libtpu"):
        memory.check_available("tpu-v5e")


def test_plan_rejects_bad_arguments(capsys):
    cases = ((["--model", "revsresnet21", "--target", "tpu-v9"], "unknown target 'tpu-v9'"),
             (["--model", "revsresnet21", "--target", "cpu", "--hbm-gib", "-1"],
              "must be a number > 0"),
             (["--model", "revsresnet21,msresnet18", "--target", "cpu"], "one model"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["plan", *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    for argv, message in ((["--target", "cpu"], "required for target cpu"),
                          (["--target", "cpu", "--hbm-gib", "1", "--sweep", "blocks"],
                           "needs --batch"),
                          (["--target", "cpu", "--hbm-gib", "1", "--memory-modes", "reversible",
                            "--model", "msresnet18"], "does not offer reversible")):
        argv = ["plan", "--model", "revsresnet21", *argv] if "--model" not in argv else [
            "plan", *argv]
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- the search
def _fake(peak):
    calls = []

    def peaks_at(values):
        calls.append(list(values))
        return {v: peak(v) for v in values}

    return peaks_at, calls


@pytest.mark.parametrize("peak", [lambda b: 1000 + 10 * b,            # a line
                                  lambda b: 1000 + 80 * ((b + 7) // 8),  # a staircase (padding)
                                  lambda b: 1000 + b * b])              # convex
def test_largest_fitting_brackets_the_answer(peak):
    budget = 5000
    peaks_at, calls = _fake(peak)
    fit = largest_fitting(peaks_at, 4, budget)
    best = max(b for b in range(1, 10_000) if peak(b) <= budget)
    assert fit.largest == best
    assert fit.peak_bytes <= budget < fit.next_peak_bytes
    assert len(calls) <= 8


def test_largest_fitting_when_nothing_fits_and_at_the_limit():
    fit = largest_fitting(_fake(lambda b: 100 + b)[0], 8, 50)
    assert fit.largest == 0 and fit.peak_bytes is None and fit.peaks[1] > 50
    fit = largest_fitting(_fake(lambda b: b)[0], 2, 10**9, limit=40)
    assert fit.largest == 40 and fit.limit_reached


# --------------------------------------------------------------------------- the TPU compiler
def _reduced(blocks=1):
    return benchmark.step_program("revsresnet21", time_steps=2, image_size=8, num_classes=5,
                                  memory_mode="reversible",
                                  model_kwargs={"widths": (8,), "blocks": (blocks,)})


def test_memory_command_for_tpu_v5e_rows_and_cache(tmp_path, capsys, cache_dir):
    _libtpu()
    out = tmp_path / "rows.json"
    argv = ["memory", *TINY, "--batch", "1", "--memory-modes", "reversible", "--target",
            "tpu-v5e", "--cache-dir", cache_dir, "--json", str(out)]
    assert cli.main(argv) == 0
    (row,) = json.loads(out.read_text())
    assert list(row) == list(benchmark.ROW_FIELDS)
    assert (row["target"], row["device_kind"], row["device"]) == (
        "tpu-v5e", "TPU v5 lite", "tpu:TPU v5 lite")
    assert row["peak_bytes"] > 0 and row["step_seconds"] is None
    printed = capsys.readouterr().out
    assert "compiled batch 1 for tpu-v5e (TPU v5 lite)" in printed
    assert "compiled batch 2 for tpu-v5e (TPU v5 lite)" in printed
    assert "TPU v5 lite" in printed.splitlines()[-1]  # the table shows the device kind
    assert cli.main(argv) == 0  # the same program again: read from the cache
    assert printed.count("(cached)") == 0 and capsys.readouterr().out.count("(cached)") == 2
    assert json.loads(out.read_text())[0]["peak_bytes"] == row["peak_bytes"]
    assert cli.main([*argv[:-2], "--time"]) == 2  # --time needs a device that runs the step
    assert "only compiles it" in capsys.readouterr().err


def test_plan_sweep_blocks_on_tpu_v5e_fits_and_one_more_does_not(tmp_path, capsys, cache_dir):
    """``revsnn plan --sweep blocks``: the most blocks that fit a budget set between the plans
    of 1 and 2 blocks; compiled again without the cache, the answer fits and one more does not.
    A budget under one example's plan: ``largest`` 0 from the batch plan."""
    _libtpu()
    (one,) = memory.compile_step(_reduced(1), [1], "tpu-v5e", cache_dir=cache_dir)
    (two,) = memory.compile_step(_reduced(2), [1], "tpu-v5e", cache_dir=cache_dir)
    assert two.memory.peak_bytes > one.memory.peak_bytes  # one more block's parameters
    budget = (one.memory.peak_bytes + two.memory.peak_bytes) // 2
    out = tmp_path / "plan.json"
    argv = ["plan", "--model", "revsresnet21", *REDUCED, "--blocks", "1", "--target",
            "tpu-v5e", "--memory-modes", "reversible", "--hbm-gib", repr(budget / 2**30),
            "--cache-dir", cache_dir, "--json", str(out)]
    assert cli.main([*argv, "--sweep", "blocks", "--batch", "1"]) == 0
    (row,) = json.loads(out.read_text())
    assert (row["target"], row["device_kind"], row["sweep"], row["batch"]) == (
        "tpu-v5e", "TPU v5 lite", "blocks", 1)
    assert row["largest"] == 1 and row["model_kwargs"]["blocks"] == [1]
    assert row["budget_bytes"] == budget or abs(row["budget_bytes"] - budget) <= 1
    printed = capsys.readouterr().out
    assert printed.count("compiled batch") == row["compiles"]  # one progress line per compile
    (fits,) = memory.compile_step(_reduced(1), [1], "tpu-v5e", use_cache=False)
    (over,) = memory.compile_step(_reduced(2), [1], "tpu-v5e", use_cache=False)
    assert fits.memory.peak_bytes == row["peak_bytes"] <= row["budget_bytes"]
    assert over.memory.peak_bytes == row["next_peak_bytes"] > row["budget_bytes"]

    low = one.memory.peak_bytes - 1
    assert cli.main([*argv[:argv.index("--hbm-gib") + 1], repr(low / 2**30),
                     *argv[argv.index("--hbm-gib") + 2:], "--first-batch", "1"]) == 0
    (row,) = json.loads(out.read_text())
    assert (row["sweep"], row["largest"], row["peak_bytes"]) == ("batch", 0, None)
    assert row["peaks"]["1"] == one.memory.peak_bytes > row["budget_bytes"]


def _stage(depth, mode):
    return memory.StepProgram("tpu_programs:stage_step", {"depth": depth, "memory_mode": mode})


def test_reversible_stage_on_tpu_is_flat_in_depth_and_its_plain_twin_grows(cache_dir):
    """Memory per example (slope B=64 -> 128) of a training step through a reversible stage of
    2 and 8 blocks, on the v5e plan (tests/tpu_programs.py: activations big enough for HBM)."""
    _libtpu()
    per = {}
    for mode in ("reversible", "none"):
        for depth in (2, 8):
            at_b, at_2b = memory.compile_step(_stage(depth, mode), [64, 128], "tpu-v5e",
                                              cache_dir=cache_dir)
            assert (at_b.target, at_b.device_kind) == ("tpu-v5e", "TPU v5 lite")
            per[mode, depth] = (at_2b.memory.peak_bytes - at_b.memory.peak_bytes) / 64
    print("\nbytes per example on tpu-v5e:", per)
    assert per["reversible", 8] <= 1.1 * per["reversible", 2]
    assert per["none", 8] >= 2 * per["none", 2]
    assert per["none", 2] > per["reversible", 2]


def test_largest_batch_of_a_reversible_stage_on_tpu_fits_and_one_more_does_not(cache_dir):
    """The batch plan (:func:`revsnn_jax.plan.largest_fitting` over compiled TPU plans) of the
    stage, with a budget between its plans at 64 and 128 examples."""
    _libtpu()
    program = _stage(2, "reversible")
    low, high = memory.compile_step(program, [64, 128], "tpu-v5e", cache_dir=cache_dir)
    budget = (low.memory.peak_bytes + high.memory.peak_bytes) // 2

    def peaks_at(batches):
        plans = memory.compile_step(program, batches, "tpu-v5e", cache_dir=cache_dir)
        return {p.batch: p.memory.peak_bytes for p in plans}

    fit = largest_fitting(peaks_at, 64, budget)
    assert 64 <= fit.largest < 128
    assert set(fit.peaks) >= {fit.largest, fit.largest + 1}  # both compiled
    assert fit.peaks[fit.largest] <= budget < fit.peaks[fit.largest + 1]
