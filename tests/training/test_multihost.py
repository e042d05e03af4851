"""Several hosts, proven on one machine: two ``revsnn train`` processes joined by
``jax.distributed`` over a loopback coordinator, one CPU device each.

Both must finish; only process 0 writes the logs and the summary (the work directory is shared,
as a shared file system would be); the checkpoint they wrote restores in a single process; and
the loss curve equals that of one process with two CPU devices, to rounding. Every process has
a timeout, and a process left behind is killed, so the test stops by itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml
from small_runs import SMALL

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 4
TIMEOUT = 300  # seconds per run; the runs take ~20-60 s on 2 loaded cores


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra: str) -> dict[str, str]:
    """The environment of one process with ``devices`` CPU devices (LLVM level 0 compiles
    faster, as in the rest of the suite)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "REVSNN_")) and k != "XLA_FLAGS"}
    extra["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                          "--xla_backend_optimization_level=0")
    pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(pythonpath),
               PYTHONUNBUFFERED="1", **extra)
    return env


def _train_cmd(config: pathlib.Path, workdir: pathlib.Path) -> list[str]:
    # `python -m revsnn_jax` is the `revsnn` command (the same entry point, no PATH lookup)
    return [sys.executable, "-m", "revsnn_jax", "train", "--config", str(config),
            "--workdir", str(workdir), "--no-progress"]


def _start(cmd: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen:
    """Start ``cmd`` with its stdout and stderr in files (a pipe nobody reads could block it)."""
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)


def _run_all(procs: dict[pathlib.Path, subprocess.Popen],
             timeout: float) -> dict[pathlib.Path, tuple[int, str, str]]:
    """Wait for every process under one deadline. A process that fails, or the deadline,
    kills the others (a peer of a dead process would wait for it); nothing outlives this."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs.values()):
            failed = [p for p in procs.values() if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    results = {log: (p.returncode, log.with_suffix(".out").read_text(),
                     log.with_suffix(".err").read_text()) for log, p in procs.items()}
    if time.monotonic() > deadline:
        pytest.fail(f"training processes did not finish in {timeout} s: "
                    + " | ".join(err[-1500:] for _, _, err in results.values()))
    return results


def _metrics(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _losses(workdir: pathlib.Path) -> list[float]:
    return [m["train_loss"] for m in _metrics(workdir) if "train_loss" in m]


_RESTORE = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    from revsnn_jax import training as train
    assert jax.process_count() == 1 and len(jax.devices()) == 1, jax.devices()
    leaves = {}
    for name in sys.argv[1:]:
        trainer, step = train.restore(name)
        assert step == int(STEPS), step
        leaves[name] = [np.asarray(a) for a in jax.tree.leaves(trainer.params)]
    a, b = leaves.values()
    print(json.dumps({"max_abs_param_diff": max(float(np.max(np.abs(x - y)))
                                                for x, y in zip(a, b))}))
""").replace("STEPS", str(STEPS))


def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
    cfg = dict(SMALL, steps=STEPS)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    start = time.monotonic()

    # two processes, one CPU device each, joined through a loopback coordinator
    multi = tmp_path / "two_processes"
    port = _free_port()
    procs = {tmp_path / f"process{i}": _start(
        _train_cmd(config, multi),
        _env(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
             JAX_PROCESS_ID=str(i)), tmp_path / f"process{i}") for i in range(2)}
    # one process, two CPU devices
    single = tmp_path / "one_process"
    procs[tmp_path / "single"] = _start(_train_cmd(config, single), _env(2),
                                        tmp_path / "single")
    results = list(_run_all(procs, TIMEOUT).values())
    for i, (code, _, err) in enumerate(results):
        assert code == 0, f"process {i} exited with {code}: {err[-3000:]}"

    # process 0 alone writes: one summary (printed by process 0 only), one metrics line per
    # step (both writing to the shared file would double them), one TensorBoard event file
    out0, out1 = results[0][1], results[1][1]
    assert "summary: " in out0 and "summary: " not in out1, (out0[-500:], out1[-500:])
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["steps"] == STEPS, summary
    steps_logged = [m["step"] for m in _metrics(multi) if "train_loss" in m]
    assert steps_logged == sorted(set(steps_logged)) and len(steps_logged) == STEPS
    assert len(list((multi / "tb").iterdir())) == 1
    one = json.loads((single / "summary.json").read_text())
    assert one["devices"] == 2

    # the same loss curve as one process with two devices, to rounding
    curve, reference = _losses(multi), _losses(single)
    assert len(curve) == STEPS and curve[-1] != curve[0]
    np.testing.assert_allclose(curve, reference, rtol=1e-5, atol=1e-6)
    assert summary["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1e-6)

    # the checkpoint written by two processes restores in one process with one device
    proc = subprocess.run([sys.executable, "-c", _RESTORE, str(multi), str(single)],
                          env=_env(1),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff = json.loads(proc.stdout.strip().splitlines()[-1])["max_abs_param_diff"]
    assert diff < 1e-5, diff
    print(f"two processes {curve} vs one {reference}: max param diff {diff:.2e}, "
          f"{time.monotonic() - start:.1f} s")
