"""Reliability of the ``revsnn`` command line (README "Resuming and failures"): every command
answers invalid arguments with one clear line on stderr and exit status 2, never a traceback,
while an internal failure keeps its traceback."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from revsnn_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]

# (argv, text the one-line message must contain: the argument it names and what is wrong)
BAD_INPUTS = [
    (["demo", "--steps", "-1"], "argument --steps: must be a positive integer"),
    (["demo", "--hidden", "0"], "argument --hidden: must be a positive integer"),
    (["demo", "--time-steps", "four"], "argument --time-steps: expected an integer"),
    (["models", "--num-classes", "0"], "argument --num-classes: must be a positive integer"),
    (["memory", "--models", "nope"], "argument --models: unknown model 'nope'; choose from"),
    (["memory", "--models", ""], "argument --models: no name"),
    (["memory", "--models", "spiking_mlp", "--batch", "0"],
     "argument --batch: must be a positive integer (>= 1), got 0"),
    (["memory", "--models", "spiking_mlp", "--memory-modes", "foo"],
     "argument --memory-modes: unknown memory mode 'foo'; choose from reversible, checkpoint"),
    (["memory", "--models", "spiking_mlp", "--widths", "8,a"],
     "argument --widths: expected comma-separated positive integers"),
    (["memory", "--models", "spiking_mlp", "--widths", "8,0"],
     "argument --widths: expected comma-separated positive integers"),
    (["memory", "--models", "spiking_mlp", "--blocks", "1,2"],
     "argument --blocks: model spiking_mlp rejects"),
    (["memory", "--models", "revsresnet21", "--widths", "2,4,8,16,32"],
     "argument --widths: model revsresnet21 rejects {'widths': (2, 4, 8, 16, 32)}: blocks"),
    (["memory", "--models", "spiking_mlp", "--timed-steps", "0"], "argument --timed-steps"),
    (["memory", "--models", "spiking_mlp", "--target", "tpu"],
     "argument --target: unknown target 'tpu'; choose from cpu, gpu, tpu-v4"),
    (["memory", "--models", "spiking_mlp", "--target", "gpu"],
     "argument --target: target gpu compiles for this machine's GPU, and jax sees none"),
    (["plan", "--model", "nope", "--target", "cpu"], "argument --model: unknown model 'nope'"),
    (["plan", "--model", "spiking_mlp"], "the following arguments are required: --target"),
    (["plan", "--model", "spiking_mlp", "--target", "cpu", "--hbm-gib", "0"],
     "argument --hbm-gib: must be a number > 0"),
    (["plan", "--model", "spiking_mlp", "--target", "cpu", "--first-batch", "0"],
     "argument --first-batch: must be a positive integer"),
    (["plan", "--model", "spiking_mlp", "--target", "cpu", "--hbm-gib", "1", "--batch", "8"],
     "argument --batch: only with --sweep"),
    (["plan", "--model", "spiking_mlp", "--target", "cpu", "--hbm-gib", "1", "--sweep",
      "blocks", "--batch", "8"], "argument --sweep: spiking_mlp"),
    (["train", "--steps", "-5"], "argument --steps: must be >= 1"),
    (["train", "--steps", "0"], "argument --steps: must be >= 1"),
    (["train", "--steps", "2.5"], "argument --steps: expects int"),
    (["train", "--epochs", "0"], "argument --epochs: must be > 0"),
    (["train", "--epochs", "-1"], "argument --epochs: must be > 0"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["train", "--learning-rate", "abc"], "argument --learning-rate: expects float, got 'abc'"),
    (["train", "--model-overrides", "{hidden: [32"], "argument --model-overrides: expects dict"),
    (["train", "--checkpoint-every", "0"], "argument --checkpoint-every: must be >= 1"),
    (["train", "--config", "no_such_config"], "unknown config 'no_such_config'"),
    (["train", "--config", "digits_mlp", "--memory-mode", "fast"],
     "memory_mode 'fast': choose reversible, checkpoint or none"),
    (["train", "--config", "{bad_config}"], "config field steps must be >= 0"),
    (["eval", "--step", "-1"], "argument --step: must be an integer >= 0, got -1"),
    (["eval", "--eval-batch-size", "0"], "argument --eval-batch-size: must be a positive"),
    (["eval"], "holds no run (no config.yaml)"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """``revsnn ARGV`` in this process: (exit status, stderr). Any exception other than
    argparse's ``SystemExit`` propagates, i.e. would be a traceback."""
    try:
        rc = cli.main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    return rc, capsys.readouterr().err


def test_every_command_rejects_bad_arguments_with_one_line_and_status_2(tmp_path, capsys):
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("base: digits_mlp\nsteps: -5\n")
    workdir = str(tmp_path / "no_run")
    for argv, message in BAD_INPUTS:
        argv = [a.replace("{bad_config}", str(bad_config)) for a in argv]
        if argv[0] in ("train", "eval") and "--workdir" not in argv:
            argv = [argv[0], "--workdir", workdir, *argv[1:]]
        rc, err = _run(argv, capsys)
        assert rc == 2, (argv, err)
        assert "Traceback" not in err, (argv, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"revsnn {argv[0]}: error: "), (argv, err)
        assert message in last, (argv, err)
    assert not pathlib.Path(workdir).exists()  # nothing written for a rejected command


def test_a_usage_error_from_a_command_is_one_line_but_an_internal_failure_keeps_its_traceback(
        monkeypatch, capsys):
    from revsnn_jax.commands import _args, models

    def usage(args):
        raise _args.UsageError("argument --num-classes: stands in for a check in run()")

    monkeypatch.setattr(models, "run", usage)
    assert _run(["models"], capsys) == (
        2, "revsnn models: error: argument --num-classes: stands in for a check in run()\n")

    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(models, "run", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["models"])


def test_the_installed_entry_point_prints_no_traceback_for_bad_input():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-m", "revsnn_jax", "memory", "--models", "nope,x"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "revsnn memory: error: argument --models: unknown model 'nope', 'x'" in proc.stderr


def test_revsnn_warnings_are_one_line_in_the_cli(capsys):
    import warnings

    from revsnn_jax.commands._args import concise_warnings
    from revsnn_jax.training import checkpoint as checkpointing

    with concise_warnings("train", (checkpointing.CorruptCheckpointWarning,)):
        warnings.warn(checkpointing.CorruptCheckpointWarning("checkpoint 20 ... moved aside"),
                      stacklevel=1)
    assert capsys.readouterr().err == "revsnn train: warning: checkpoint 20 ... moved aside\n"
