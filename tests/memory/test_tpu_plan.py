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

from revsnn_jax import cli, memory
from revsnn_jax.memory import benchmark
from revsnn_jax.memory.plan import largest_fitting

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


def test_largest_fitting_counts_a_refusal_as_does_not_fit():
    """Values the compiler refuses (``None``) do not fit, whatever the budget; the search goes
    on below them: here everything from 300 on is refused, the budget alone would allow 400."""
    peak = lambda b: None if b >= 300 else 1000 + 10 * b  # noqa: E731
    peaks_at, calls = _fake(peak)
    fit = largest_fitting(peaks_at, 200, 1000 + 10 * 400)
    assert fit.largest == 299 and fit.next_refused and fit.next_peak_bytes is None
    assert fit.peaks[400] is None and len(calls) <= 8  # 2 x 200 was refused at once
    fit = largest_fitting(_fake(lambda b: None)[0], 4, 10**9)  # nothing is accepted
    assert fit.largest == 0 and fit.next_refused
    fit = largest_fitting(_fake(lambda b: 5000 if b < 10 else None)[0], 8, 4000)
    assert fit.largest == 0 and not fit.next_refused  # 1 is planned, over the budget


class _Refusing:
    """Stands in for :func:`revsnn_jax.memory.analyse_compiled`: refuses, as a TPU compiler does
    ("RESOURCE_EXHAUSTED"), every program whose arguments exceed ``limit`` bytes."""

    def __init__(self, limit):
        self.limit, self.real = limit, memory.analyse_compiled

    def __call__(self, compiled):
        mem = self.real(compiled)
        if mem.argument_bytes > self.limit:
            raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM (injected)")
        return mem


def _vector_program():
    import jax.numpy as jnp

    return memory.StepProgram(lambda: (lambda x: jnp.sin(x) * 2.0, lambda b: (
        __import__("jax").ShapeDtypeStruct((b, 1024), jnp.float32),)))


def test_a_refused_batch_does_not_lose_the_other_batches(monkeypatch):
    """One compile_step over three batches, the last refused: with ``allow_refusal`` its plan
    says so and the other two are planned; by default DoesNotFitError carries all three."""
    monkeypatch.setattr(memory.compiled, "analyse_compiled", _Refusing(3 * 4096))
    plans = memory.compile_step(_vector_program(), [1, 2, 4], "cpu", allow_refusal=True)
    assert [p.batch for p in plans] == [1, 2, 4]
    assert [p.fits_device for p in plans] == [True, True, False]
    assert plans[2].memory is None and "RESOURCE_EXHAUSTED" in plans[2].refused
    assert plans[1].memory.argument_bytes == 2 * 4096
    again = memory.StepPlan.from_json(plans[2].to_json())  # a refusal round-trips (the cache)
    assert again == plans[2]
    with pytest.raises(memory.DoesNotFitError, match="batch 4 does not fit cpu") as info:
        memory.compile_step(_vector_program(), [1, 2, 4], "cpu")
    assert [p.fits_device for p in info.value.plans] == [True, True, False]


def test_dump_dir_writes_the_compilers_buffer_assignment_per_batch(tmp_path):
    """``compile_step(..., dump_dir=D)``: XLA's dump of each batch's program in ``D/batch<B>``,
    with the buffer assignment (what the plan's bytes are made of)."""
    plans = memory.compile_step(_vector_program(), [1, 3], "cpu", dump_dir=tmp_path)
    assert [p.batch for p in plans] == [1, 3]
    for batch in (1, 3):
        names = [f.name for f in (tmp_path / f"batch{batch}").iterdir()]
        assert any(n.endswith("buffer-assignment.txt") for n in names), names
        assert any(n.endswith("after_optimizations.txt") for n in names), names


def test_plan_and_memory_commands_treat_a_refusal_as_does_not_fit(monkeypatch, tmp_path,
                                                                  capsys):
    """``revsnn plan`` with a budget that alone would allow a larger batch, on a compiler that
    refuses from batch 6 on: the answer is 5, batch 6 is reported refused. ``revsnn memory`` at
    a refused batch: one line naming --batch, exit 2."""
    (one, two) = memory.compile_step(_reduced(1), [1, 2], "cpu")
    per = two.memory.argument_bytes - one.memory.argument_bytes
    limit = one.memory.argument_bytes + int(4.5 * per)  # batches 1..5 pass, 6.. refused
    monkeypatch.setattr(memory.compiled, "analyse_compiled", _Refusing(limit))
    out = tmp_path / "plan.json"
    assert cli.main(["plan", "--model", "revsresnet21", *REDUCED, "--blocks", "1", "--target",
                     "cpu", "--memory-modes", "reversible", "--hbm-gib", "64",
                     "--first-batch", "4", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["largest"] == 5 and row["next_refused"] and row["next_peak_bytes"] is None
    assert row["peaks"]["8"] is None and row["bytes_per_image"] is None  # 2 x 4 was refused
    printed = capsys.readouterr().out
    assert "compiled batch 6 for cpu (cpu): refused by the compiler" in printed
    assert "refused" in printed.splitlines()[-1]  # the table's "+1" column
    assert cli.main(["memory", *TINY, "--batch", "4", "--memory-modes", "reversible"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --batch" in err and "batch 8 does not fit" in err


# --------------------------------------------------------------------------- the TPU compiler
def test_tpu_compiler_refusal_is_a_plan_and_the_search_goes_on(cache_dir):
    """The real TPU compiler refuses a program larger than the v5e chip's HBM (tests/
    tpu_programs.py ``wide_step``: 256 MiB of temporaries per example); one subprocess compiles
    a fitting and a refused batch, and the batch plan under a budget above the chip's HBM ends
    at the compiler's refusal: the answer was planned, one more was refused."""
    _libtpu()
    program = memory.StepProgram("tpu_programs:wide_step")
    small, big = memory.compile_step(program, [8, 96], "tpu-v5e", cache_dir=cache_dir,
                                     allow_refusal=True)
    assert small.fits_device and small.memory.temp_bytes >= 8 * 2 ** 28
    assert not big.fits_device and "RESOURCE_EXHAUSTED" in big.refused and big.memory is None
    with pytest.raises(memory.DoesNotFitError, match="batch 96 does not fit tpu-v5e"):
        memory.compile_step(program, [8, 96], "tpu-v5e", cache_dir=cache_dir)

    def peaks_at(batches):
        plans = memory.compile_step(program, batches, "tpu-v5e", cache_dir=cache_dir,
                                    allow_refusal=True)
        return {p.batch: None if p.memory is None else p.memory.peak_bytes for p in plans}

    fit = largest_fitting(peaks_at, 16, 32 * 2 ** 30)
    print("\nwide_step on tpu-v5e:", fit)
    assert 16 < fit.largest < 64 and fit.next_refused
    assert fit.peaks[fit.largest] >= fit.largest * 2 ** 28


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
    """The batch plan (:func:`revsnn_jax.memory.plan.largest_fitting` over compiled TPU plans) of the
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
