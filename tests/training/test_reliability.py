"""Reliability of `revsnn train`: killed runs resume to the uninterrupted result, SIGTERM saves
and exits, corrupt checkpoints are set aside (training resumes from the last one that verifies,
eval refuses them), NaN/Inf stop or skip, reconstruction drift warns, bad input fails fast, and the same
seed gives the same run (README "Resuming and failures").

The kill tests run `revsnn train` in subprocesses (a small spiking MLP on the bundled digits,
16 steps, a checkpoint every 4) and compare, bitwise, with one uninterrupted subprocess run
started in parallel. Two test hooks that tests/hooked_train.py patches into those processes make
the kill points deterministic: REVSNN_TEST_PAUSE_IN_SAVE holds a checkpoint after its files are
written and before its commit, REVSNN_TEST_STEP_DELAY slows the steps so a signal lands
mid-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest
from small_runs import small

from revsnn_jax import cli
from revsnn_jax import training as train
from revsnn_jax.training import checkpoint as checkpointing
from revsnn_jax.training import resume as trainer_checkpoint
from revsnn_jax.training.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 16
CLI_ARGS = ["--config", "digits_mlp", "--steps", str(STEPS), "--model-overrides",
            "{hidden: [32]}", "--memory-mode", "none", "--measure-memory", "false",
            "--log-every", "1", "--checkpoint-every", "4", "--keep-checkpoints", "10",
            "--num-threads", "2", "--prefetch", "16", "--no-progress"]
DELAY = "0.12"  # seconds per step in the runs a test signals (REVSNN_TEST_STEP_DELAY)


# in-process runs below compile the same small steps again: share XLA's cache
pytestmark = pytest.mark.usefixtures("xla_compilation_cache")


# --------------------------------------------------------------------------- subprocess runs
@pytest.fixture(scope="module")
def subprocess_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("subprocess_xla_cache")
    return dict(os.environ, JAX_PLATFORMS="cpu",
                XLA_FLAGS=os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0"),
                PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
                JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


class Run:
    """`revsnn train` on ``workdir`` in a subprocess (tests/hooked_train.py: ``hooks`` are its
    environment variables); output goes to files (no pipe stalls)."""

    def __init__(self, workdir: pathlib.Path, env: dict, **hooks: str):
        self.workdir = workdir
        workdir.parent.mkdir(parents=True, exist_ok=True)
        n = len(list(workdir.parent.glob(f"{workdir.name}.*.out")))
        self.out = workdir.parent / f"{workdir.name}.{n}.out"
        self.err = workdir.parent / f"{workdir.name}.{n}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "hooked_train.py"), "train",
                 "--workdir", str(workdir),
                 *CLI_ARGS], env={**env, **hooks}, stdout=out, stderr=err, cwd=ROOT)

    def stdout(self) -> str:
        return self.out.read_text()

    def log(self) -> str:
        return f"stdout:\n{self.stdout()[-2000:]}\nstderr:\n{self.err.read_text()[-3000:]}"

    def wait_until(self, done, what: str, timeout: float = 240.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}) before {what}\n{self.log()}"
            assert time.monotonic() < end, f"timed out waiting for {what}\n{self.log()}"
            time.sleep(0.02)

    def wait_for_step(self, step: int) -> None:
        self.wait_until(lambda: max(_logged_steps(self.workdir), default=0) >= step,
                        f"step {step}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 300.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"did not finish in {timeout} s\n{self.log()}") from None


def _records(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            out.append(json.loads(line))
    return out


def _logged_steps(workdir: pathlib.Path) -> list[int]:
    return [r["step"] for r in _records(workdir) if "train_loss" in r]


def _checkpoints(workdir: pathlib.Path) -> tuple[list[int], list[str]]:
    """(finalised steps, other entries such as half-written temporary directories)."""
    entries = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    return sorted(int(e) for e in entries if e.isdigit()), [e for e in entries if not e.isdigit()]


def _checkpoint_arrays(workdir: pathlib.Path, step: int) -> dict:
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "model")


def _assert_same_run(workdir: pathlib.Path, reference: pathlib.Path) -> None:
    """Bitwise: final parameters, model and optimizer state, summary metrics and the loss curve
    (one record per step: a resumed run drops the records of the steps it lost)."""
    ours, ref = _checkpoint_arrays(workdir, STEPS), _checkpoint_arrays(reference, STEPS)
    paths = jax.tree_util.tree_flatten_with_path(ref)[0]
    assert jax.tree.structure(ours) == jax.tree.structure(ref)
    for (path, a), b in zip(paths, jax.tree.leaves(ours), strict=True):
        np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))
    s_ours = json.loads((workdir / "summary.json").read_text())
    s_ref = json.loads((reference / "summary.json").read_text())
    for key in ("steps", "test_accuracy", "test_loss", "final_train_loss",
                "final_train_accuracy", "firing_rate", "skipped_batches"):
        assert s_ours[key] == s_ref[key], key
    curve = [(r["step"], r["train_loss"], r["train_accuracy"], r["learning_rate"])
             for r in _records(workdir) if "train_loss" in r]
    ref_curve = [(r["step"], r["train_loss"], r["train_accuracy"], r["learning_rate"])
                 for r in _records(reference) if "train_loss" in r]
    assert [c[0] for c in curve] == list(range(1, STEPS + 1))
    assert curve == ref_curve


@pytest.fixture(scope="module")
def reference(tmp_path_factory, subprocess_env):
    """One uninterrupted run, started at once and awaited by the first test that needs it."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    run = Run(workdir, subprocess_env)
    state = {}

    def result() -> pathlib.Path:
        if "rc" not in state:
            state["rc"] = run.finish()
        assert state["rc"] == 0, run.log()
        return workdir

    yield result
    if run.proc.poll() is None:
        run.proc.kill()


def test_sigkill_mid_checkpoint_write_and_at_a_random_step_resume_bitwise(
        tmp_path, subprocess_env, reference):
    seed = random.randrange(2**31)
    kill_at = random.Random(seed).randint(9, STEPS - 3)
    msg = f"(random kill step {kill_at}, seed {seed})"
    workdir = tmp_path / "run"

    # 1. SIGKILL while checkpoint 8 is being written: its files are there, not yet committed
    run = Run(workdir, subprocess_env, REVSNN_TEST_PAUSE_IN_SAVE="8", REVSNN_TEST_STEP_DELAY=DELAY)
    run.wait_until(lambda: "REVSNN_TEST paused in save of step 8" in run.stdout(),
                   "the pause inside checkpoint 8")
    run.kill()
    assert run.finish() == -signal.SIGKILL
    steps, others = _checkpoints(workdir)
    assert steps == [4], (steps, others)
    assert any(o.startswith("8.orbax-checkpoint-tmp") for o in others), others
    tmp = next(o for o in others if o.startswith("8.orbax-checkpoint-tmp"))
    assert (workdir / "checkpoints" / tmp / "model").is_dir()  # written, not committed
    assert max(_logged_steps(workdir)) >= 8  # training had gone on past it

    # 2. restart: resumes from the last complete checkpoint (4), never from the half-written 8,
    #    whose directory is deleted; SIGKILL it again at a random step
    run = Run(workdir, subprocess_env, REVSNN_TEST_STEP_DELAY=DELAY)
    run.wait_until(lambda: "resuming" in run.stdout(), "resuming")
    assert f"resuming {workdir} from step 4" in run.stdout(), run.log()
    run.wait_for_step(kill_at)
    run.kill()
    assert run.finish() == -signal.SIGKILL, msg
    steps, others = _checkpoints(workdir)
    complete = max(steps)
    assert complete >= 4 and complete % 4 == 0, (steps, msg)
    # the only temporary directories left are this run's own saves still in flight (under
    # load the kill can land while checkpoint 8 or 12 is being written), never step 4's past
    assert all(int(o.split(".")[0]) > complete for o in others), (steps, others, msg)
    killed_after = max(_logged_steps(workdir))
    assert killed_after >= kill_at, msg

    # 3. restart: resumes from the latest complete checkpoint and ends where an uninterrupted
    #    run ends, bitwise
    run = Run(workdir, subprocess_env)
    assert run.finish() == 0, run.log()
    assert f"resuming {workdir} from step {complete}" in run.stdout(), (run.log(), msg)
    assert _checkpoints(workdir)[1] == []  # every leftover temporary directory cleaned
    _assert_same_run(workdir, reference())


def test_sigterm_saves_a_checkpoint_and_exits_then_resumes_bitwise(
        tmp_path, subprocess_env, reference):
    seed = random.randrange(2**31)
    term_at = random.Random(seed).randint(5, STEPS - 4)
    msg = f"(SIGTERM at step {term_at}, seed {seed})"
    workdir = tmp_path / "run"
    run = Run(workdir, subprocess_env, REVSNN_TEST_STEP_DELAY=DELAY)
    run.wait_for_step(term_at)
    sent = time.monotonic()
    run.kill(signal.SIGTERM)
    rc = run.finish(timeout=60)
    seconds = time.monotonic() - sent
    assert rc == train.EXIT_PREEMPTED == 75, (run.log(), msg)
    assert seconds < 30, seconds  # about 0.1-1 s here; generous for a loaded machine
    print(f"SIGTERM at step >= {term_at}: checkpoint saved and exit {rc} after {seconds:.2f} s")
    assert "stopped by SIGTERM" in run.err.read_text()
    event = [r for r in _records(workdir) if r.get("event") == "preempted"]
    assert len(event) == 1, msg
    stopped = event[0]["step"]
    assert stopped == max(_logged_steps(workdir)) and term_at <= stopped < STEPS, msg
    assert stopped in _checkpoints(workdir)[0], msg  # saved at the step it stopped
    assert not (workdir / "summary.json").exists()

    run = Run(workdir, subprocess_env)
    assert run.finish() == 0, run.log()
    assert f"resuming {workdir} from step {stopped}" in run.stdout(), run.log()
    _assert_same_run(workdir, reference())


# --------------------------------------------------------------------------- in-process runs
def _losses(workdir) -> list[float]:
    return [r["train_loss"] for r in _records(pathlib.Path(workdir)) if "train_loss" in r]


def test_a_leftover_temporary_checkpoint_is_ignored_and_cleaned(tmp_path, capsys):
    cfg = small(steps=4, checkpoint_every=2)
    train.train(cfg, tmp_path, progress=False)
    # what a kill during the write of checkpoint 6 leaves behind (no commit, torn files)
    tmp = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp"
    (tmp / "model").mkdir(parents=True)
    (tmp / "model" / "garbage").write_bytes(b"\x00half written")
    assert train.restore(tmp_path)[1] == 4  # never loaded
    capsys.readouterr()
    summary = train.train(cfg.replace(steps=6), tmp_path, progress=False)
    assert f"resuming {tmp_path} from step 4" in capsys.readouterr().out
    assert summary["steps"] == 6
    assert _checkpoints(tmp_path) == ([2, 4, 6], [])


class _InjectNonFinite:
    """Wrap Trainer.train_iterator: the ``at``-th batch drawn (0-based) is filled with ``value``."""

    def __init__(self, monkeypatch, at: int, value: float = np.nan):
        original = train.Trainer.train_iterator
        self.at, self.value, self.drawn = at, value, 0

        def patched(trainer):
            it = original(trainer)
            inject = self

            class Wrapped:
                def __iter__(self):
                    return self

                def __next__(self):
                    x, y = next(it)
                    if inject.drawn == inject.at:
                        x = np.full_like(x, inject.value)
                    inject.drawn += 1
                    return x, y

                def get_state(self):
                    return it.get_state()

                def set_state(self, state):
                    it.set_state(state)

            return Wrapped()

        monkeypatch.setattr(train.Trainer, "train_iterator", patched)


def test_nan_stops_naming_the_step_keeps_the_last_good_checkpoint_then_skip_resumes(
        tmp_path, monkeypatch, capsys):
    workdir = str(tmp_path / "run")
    args = ["train", "--config", "digits_mlp", "--workdir", workdir, "--steps", "12",
            "--model-overrides", "{hidden: [32]}", "--memory-mode", "none",
            "--measure-memory", "false", "--log-every", "10", "--checkpoint-every", "4",
            "--num-threads", "2", "--prefetch", "16", "--no-progress"]
    _InjectNonFinite(monkeypatch, at=5)  # the batch of step 6
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == train.EXIT_NONFINITE == 3, err
    assert "non-finite loss or gradients at step 6" in err
    assert "last good checkpoint is step 4" in err and "skip_nonfinite" in err
    # detected at the check before checkpoint 8 (no log in between): 8 was never saved
    assert _checkpoints(tmp_path / "run") == ([4], [])
    # (NaN inputs give no spikes, so here the loss stays finite and the gradients are not)
    assert [r["step"] for r in _records(tmp_path / "run") if r.get("event") == "nonfinite"] == [6]
    params = _checkpoint_arrays(tmp_path / "run", 4)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))

    # the fix the message names: skip such batches; the resumed run replays steps 5-12 and
    # the same bad batch (the second drawn after resuming at 4) is skipped
    _InjectNonFinite(monkeypatch, at=1)
    rc = cli.main([*args, "--skip-nonfinite", "true", "--log-every", "1"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["skipped_batches"] == 1
    records = {r["step"]: r for r in _records(tmp_path / "run") if "train_loss" in r}
    assert records[6]["train_loss"] is None and records[6]["skipped_batches"] == 1
    assert records[5]["skipped_batches"] == 0 and records[12]["skipped_batches"] == 1
    assert all(np.isfinite(leaf).all()
               for leaf in jax.tree.leaves(_checkpoint_arrays(tmp_path / "run", 12)))


@pytest.fixture(scope="module")
def skipping_trainer():
    return train.Trainer(small(skip_nonfinite=True))


def _host(tree):
    return [np.array(leaf) for leaf in jax.tree.leaves(jax.device_get(tree))]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_skipped_batch_leaves_parameters_state_and_optimizer_untouched(skipping_trainer,
                                                                         value):
    trainer = skipping_trainer
    x, y = next(iter(trainer.train_iterator()))
    before = _host((trainer.params, trainer.state, trainer.opt_state))
    params_before = _host(trainer.params)
    metrics = trainer.train_step(np.full_like(x, value), y, step=0)
    assert not bool(metrics["finite"])
    after = _host((trainer.params, trainer.state, trainer.opt_state))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    metrics = trainer.train_step(x, y, step=0)  # a good batch still trains
    assert bool(metrics["finite"])
    changed = _host(trainer.params)
    assert any(not np.array_equal(a, b) for a, b in zip(params_before, changed, strict=True))


# --------------------------------------------------------------------------- corruption
def _flip_bytes(path: pathlib.Path, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def _corrupt_an_array_file(workdir: pathlib.Path, step: int) -> None:
    """Flip bytes in the largest OCDBT data file of the checkpoint's arrays (a bad sector)."""
    files = [p for p in (workdir / "checkpoints" / str(step) / "model").rglob("*")
             if p.is_file() and p.parent.name == "d"]
    _flip_bytes(max(files, key=lambda p: p.stat().st_size))


def _corrupt_the_metadata(workdir: pathlib.Path, step: int) -> None:
    """Change one value of the checkpoint's JSON metadata: still valid JSON (a torn copy)."""
    path = workdir / "checkpoints" / str(step) / "meta" / "metadata"
    meta = json.loads(path.read_text())
    meta["train_seconds"] += 1.0
    path.write_text(json.dumps(meta))


def _truncate_the_tree_metadata(workdir: pathlib.Path, step: int) -> None:
    """Cut orbax's own metadata of the arrays (model/_METADATA) in half."""
    path = workdir / "checkpoints" / str(step) / "model" / "_METADATA"
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def test_a_corrupt_checkpoint_is_set_aside_resumed_from_the_last_good_one_and_refused_by_eval(
        tmp_path, capsys):
    cfg = small(steps=12, checkpoint_every=4, keep_checkpoints=10, log_every=4)
    reference = tmp_path / "reference"  # interrupted at the good step 8, then resumed
    train.train(cfg, reference, progress=False, max_steps_this_run=8)
    train.train(cfg, reference, progress=False)
    workdir = tmp_path / "run"
    train.train(cfg, workdir, progress=False)
    capsys.readouterr()
    aside = []
    for corrupt, expected, renamed in (
            (_corrupt_an_array_file, r"1 of 13 arrays do not match their SHA-256 checksums",
             "12.corrupt-arrays"),
            (_corrupt_the_metadata, r"its metadata \(meta/\) does not match its SHA-256 "
                                    r"checksum", "12.corrupt-metadata"),
            (_truncate_the_tree_metadata, r"its arrays cannot be read \(JSONDecodeError",
             "12.corrupt-arrays-2")):
        what = corrupt.__name__
        corrupt(workdir, 12)
        with pytest.warns(checkpointing.CorruptCheckpointWarning,
                          match=rf"checkpoint 12 in .* fails verification: {expected}.*"
                                rf"moved aside to .*{renamed}$"):
            summary = train.train(cfg, workdir, progress=False)
        assert f"resuming {workdir} from step 8" in capsys.readouterr().out, what
        aside.append(renamed)
        assert _checkpoints(workdir) == ([4, 8, 12], sorted(aside))  # the bad one kept, renamed
        assert summary["steps"] == 12
        ours, ref = _checkpoint_arrays(workdir, 12), _checkpoint_arrays(reference, 12)
        assert jax.tree.structure(ours) == jax.tree.structure(ref)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=what)
        assert summary["test_loss"] == json.loads(
            (reference / "summary.json").read_text())["test_loss"]

    # eval refuses a corrupt checkpoint, names the newest good one, and evaluates it on request
    _corrupt_an_array_file(workdir, 12)
    assert cli.main(["eval", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("revsnn eval: error: checkpoint 12 in ") and "fails verification" in err
    assert "the newest checkpoint that verifies is step 8" in err and "--step 8" in err
    assert _checkpoints(workdir) == ([4, 8, 12], sorted(aside))  # eval renames nothing
    assert cli.main(["eval", "--workdir", str(workdir), "--step", "8"]) == 0
    assert '"step": 8' in capsys.readouterr().out
    assert cli.main(["eval", "--workdir", str(workdir), "--step", "5"]) == 2
    assert "no checkpoint of step 5" in capsys.readouterr().err


def test_a_checkpoint_without_a_record_is_used_with_a_warning_and_all_corrupt_is_an_error(
        tmp_path):
    workdir = tmp_path / "run"
    train.train(small(steps=4, checkpoint_every=2, keep_checkpoints=10), workdir, progress=False)
    # as written before integrity records: no integrity/ item, no integrity_format in meta
    shutil.rmtree(workdir / "checkpoints" / "4" / "integrity")
    meta_path = workdir / "checkpoints" / "4" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    del meta["integrity_format"]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(checkpointing.CorruptCheckpointWarning,
                      match="checkpoint 4 .* without an integrity record .* used unverified"):
        train.train(small(steps=6, checkpoint_every=2, keep_checkpoints=10), workdir,
                    progress=False)
    assert _checkpoints(workdir) == ([2, 4, 6], [])
    # every checkpoint bad: an error (nothing is trained over them), all kept aside
    workdir = tmp_path / "all_bad"
    cfg = small(steps=4, checkpoint_every=2, keep_checkpoints=10)
    train.train(cfg, workdir, progress=False)
    for step in (2, 4):
        _corrupt_an_array_file(workdir, step)
    with pytest.warns(checkpointing.CorruptCheckpointWarning), pytest.raises(
            ValueError, match=r"no checkpoint in .* verifies \(all moved aside: .*4\.corrupt-"
                              r"arrays.*; run again to start from scratch"):
        train.train(cfg, workdir, progress=False)
    assert _checkpoints(workdir) == ([], ["2.corrupt-arrays", "4.corrupt-arrays"])


def test_the_nonfinite_message_names_a_checkpoint_that_verifies(tmp_path, monkeypatch, capsys):
    """Checkpoint 8 is damaged on disk after it was written; a NaN batch at step 10 then stops
    the run: the message (and the error's last_checkpoint) name step 4, not 8."""
    workdir = tmp_path / "run"
    save = trainer_checkpoint.save

    def save_then_corrupt(manager, trainer, step, *args, **kwargs):
        save(manager, trainer, step, *args, **kwargs)
        if step == 8:
            manager.wait_until_finished()
            _corrupt_an_array_file(workdir, 8)

    monkeypatch.setattr(trainer_checkpoint, "save", save_then_corrupt)
    _InjectNonFinite(monkeypatch, at=9)  # the batch of step 10
    with pytest.raises(train.NonFiniteError, match=r"at step 10 .*nothing after step 8 was "
                       r"saved; the last good checkpoint is step 4 .*\(verified;") as err:
        train.train(small(steps=12, checkpoint_every=4, keep_checkpoints=10, log_every=12),
                    workdir, progress=False)
    assert err.value.last_checkpoint == 4


# --------------------------------------------------------------------------- drift
DRIFT = dict(model_overrides={"widths": [4], "blocks": [2]}, batch_size=8, time_steps=2,
             eval_batch_size=120, steps=4, log_every=1, measure_memory=False, num_threads=2,
             prefetch=8, drift_check_every=2)


def test_reconstruction_drift_is_quiet_in_float32_and_warns_above_the_threshold(tmp_path):
    cfg = load_config("digits_revsresnet37", DRIFT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.ReconstructionDriftWarning)
        summary = train.train(cfg, tmp_path / "quiet", progress=False)
    assert summary["drift_checks"] == 2 and summary["drift_warnings"] == 0
    drift = [r for r in _records(tmp_path / "quiet") if "drift_grad_params_rel" in r]
    assert [r["step"] for r in drift] == [2, 4]
    for r in drift:  # float32: rounding-level differences, far below the default 1e-4
        assert 0.0 < r["drift_grad_params_rel"] < 1e-5 and r["drift_grad_input_rel"] < 1e-5
        assert r["drift_exceeded"] is False and r["drift_threshold"] == 1e-4
    # the same model and batches against a threshold that rounding already exceeds: the
    # check must speak up (what bfloat16 streams or a tiny T-RevSNN alpha do for real)
    with pytest.warns(train.ReconstructionDriftWarning,
                      match=r"reconstruction drift at step [24]: .* above drift_threshold 1\.0e-12"):
        summary = train.train(cfg.replace(drift_threshold=1e-12), tmp_path / "loud",
                              progress=False)
    assert summary["drift_warnings"] == 2
    loud = [r for r in _records(tmp_path / "loud") if "drift_grad_params_rel" in r]
    assert [r["drift_exceeded"] for r in loud] == [True, True]
    assert [r["drift_grad_params_rel"] for r in loud] == [r["drift_grad_params_rel"]
                                                         for r in drift]  # deterministic
    # a model without reconstruction has nothing to check
    with pytest.raises(ValueError, match=r"drift_check_every .* memory_mode: reversible"):
        train.Trainer(small(drift_check_every=5))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case", ["shape", "dtype", "labels_range", "labels_dtype"])
def test_a_bad_batch_fails_fast_naming_the_problem_and_the_fix(skipping_trainer, case):
    trainer = skipping_trainer
    x = np.zeros((32, 8, 8, 1), np.float32)
    y = np.arange(32, dtype=np.int32) % 10
    bad, match = {
        "shape": ((np.zeros((32, 9, 8, 1), np.float32), y), r"shape .*\(8, 8, 1\).*fix: resize"),
        "dtype": ((x.astype(np.float64), y), r"float32.*fix: x.astype\(np.float32\)"),
        "labels_range": ((x, y + 1), r"labels out of range: found 1..10 .* 10 classes"),
        "labels_dtype": ((x, y.astype(np.float32)), r"integer class indices; fix"),
    }[case]
    before = _host(trainer.params)
    with pytest.raises(ValueError, match=match):
        trainer.train_step(*bad, step=0)
    for a, b in zip(before, _host(trainer.params), strict=True):
        np.testing.assert_array_equal(a, b)  # nothing ran


def _events(folder: pathlib.Path, n: int, labels=None, frames_dtype=np.uint8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        frames = np.zeros((n, 2, 2, 4, 4), frames_dtype)
        np.savez(folder / f"{split}.npz", frames=frames,
                 labels=np.arange(n) % 11 if labels is None else labels)


def test_bad_data_sets_fail_fast_naming_the_problem_and_the_fix(tmp_path):
    cfg = small(dataset="dvs128_gesture", data_dir=str(tmp_path), batch_size=4,
                eval_batch_size=4)
    _events(tmp_path / "dvs128_gesture", 0)
    with pytest.raises(ValueError, match=r"train split of dataset 'dvs128_gesture' is empty"):
        train.Trainer(cfg)
    _events(tmp_path / "dvs128_gesture", 8, labels=np.arange(8) + 5)  # 11 classes: 0..10
    with pytest.raises(ValueError, match=r"labels out of range: found 5..12 .* 11 classes"):
        train.Trainer(cfg)
    _events(tmp_path / "dvs128_gesture", 8, labels=np.linspace(0, 3, 8))
    with pytest.raises(ValueError, match=r"labels must be integer .*labels.astype\(np.int32\)"):
        train.Trainer(cfg)
    _events(tmp_path / "dvs128_gesture", 8, frames_dtype=np.complex64)
    with pytest.raises(ValueError, match=r"frames must hold event counts .*complex64"):
        train.Trainer(cfg)
    # a model that cannot take the examples: grey digits into an RGB stem
    grey = load_config("digits_revsresnet37", {**DRIFT, "input_channels": 0,
                                               "drift_check_every": 0})
    with pytest.raises(ValueError, match=r"cannot take the examples .*\(8, 8, 1\).*"
                                         r"input_channels: 3"):
        train.Trainer(grey)


def test_bad_configs_and_mismatched_checkpoints_fail_fast(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown config key.*skip_nonfinit\b.*known keys"):
        load_config("digits_mlp", {"skip_nonfinit": True})
    with pytest.raises(ValueError, match=r"unknown model 'revsresnet38'.*revsresnet37"):
        train.Trainer(small(model="revsresnet38"))
    with pytest.raises(ValueError, match=r"drift_check_every .* must be >= 0"):
        train.Trainer(small(drift_check_every=-1))
    # another model in the same work directory
    workdir = tmp_path / "w"
    train.train(small(steps=2), workdir, progress=False)
    rc = cli.main(["train", "--config", "digits_revsresnet37", "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert rc == 2 and "holds a run with a different configuration" in err
    assert "model = 'spiking_mlp' there, 'revsresnet37' now" in err and "new --workdir" in err
    # ... also when its config.yaml is gone: the checkpoint itself names its model
    (workdir / "config.yaml").unlink()
    with pytest.raises(ValueError, match=r"checkpoints in .* hold another model "
                                         r"\(model_overrides differ.*new --workdir"):
        train.train(small(steps=2, model_overrides={"hidden": [16]}), workdir, progress=False)
    # the checkpoint is untouched and still loads with the right settings
    train.train(small(steps=3), workdir, progress=False)
    assert _checkpoints(workdir)[0][-1] == 3
    # another optimizer state (no config.yaml to tell): a misfit, not corruption: nothing set aside
    (workdir / "config.yaml").unlink()
    with pytest.raises(ValueError, match=r"checkpoint 3 in .* does not fit 'spiking_mlp' .*"
                                         r"opt_state"):
        train.train(small(steps=4, optimizer="adamw"), workdir, progress=False)
    assert _checkpoints(workdir) == ([2, 3], [])


# --------------------------------------------------------------------------- determinism
def test_same_seed_and_config_give_the_same_run_twice(tmp_path):
    cfg = small(steps=8, mixup_alpha=0.5, model_overrides={"hidden": [32, 16]})
    a = train.train(cfg, tmp_path / "a", progress=False)
    b = train.train(cfg, tmp_path / "b", progress=False)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert len(set(_losses(tmp_path / "a"))) > 1
    assert a["test_loss"] == b["test_loss"] and a["firing_rate"] == b["firing_rate"]
    for x, y in zip(jax.tree.leaves(_checkpoint_arrays(tmp_path / "a", 8)),
                    jax.tree.leaves(_checkpoint_arrays(tmp_path / "b", 8)), strict=True):
        np.testing.assert_array_equal(x, y)
    c = train.train(cfg.replace(seed=1), tmp_path / "c", progress=False)
    assert _losses(tmp_path / "c") != _losses(tmp_path / "a") and c["steps"] == 8
