"""The training loop: :func:`train` runs a config in a work directory, resuming where it
stopped, and writes its summary; :func:`format_summary` prints one.

Running it again on the same directory resumes from the newest checkpoint that verifies,
mid-epoch, with the same batches an uninterrupted run would have seen (the data iterator's
position is in the checkpoint). Every ``log_every`` steps the window of step metrics is read
back and checked (non-finite: :class:`~revsnn_jax.training.guards.NonFiniteError`), every
``eval_every`` the test split is scored, every ``checkpoint_every`` a checkpoint is written, and
after every step a SIGTERM is honoured (checkpoint, then return).
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from revsnn_jax.training import checkpoint as checkpointing
from revsnn_jax.training import guards
from revsnn_jax.training import resume as ckpt
from revsnn_jax.training.config import TrainConfig
from revsnn_jax.training.state import Trainer, maybe_initialize_distributed
from revsnn_jax.training.workdir import (
    Logger,
    check_resumable,
    json_float,
    print0,
    write_config,
    write_summary,
)

# what a run counts across resumes (kept in every checkpoint's metadata)
_COUNTERS = {"skipped_batches": 0, "drift_checks": 0, "drift_warnings": 0, "drift_max_rel": None}


class _Run:
    """One call of :func:`train`: the trainer, its checkpoints, its metrics log and where the
    loop stands (``step``, ``last_saved``, the window of metrics not yet read back)."""

    def __init__(self, trainer: Trainer, workdir: pathlib.Path):
        self.trainer, self.cfg, self.workdir = trainer, trainer.cfg, workdir
        self.manager = checkpointing.manager(workdir, self.cfg.keep_checkpoints)
        self.iterator = trainer.train_iterator()
        self.counters = dict(_COUNTERS)
        self.start, self.train_seconds, self.saved_any = 0, 0.0, False
        self.step = self.last_saved = 0
        self.window: list[tuple[int, dict[str, jax.Array]]] = []  # (1-based step, metrics)
        self.last = {"loss": float("nan"), "accuracy": float("nan")}
        self.t_run = self.t_window = time.perf_counter()
        self.logger: Logger | None = None

    def open(self) -> None:
        """Resume from the newest good checkpoint, write the config, open the metrics log."""
        try:
            meta = ckpt.resume(self.manager, self.trainer)
        except BaseException:
            self.manager.close()
            raise
        if meta is not None:
            self.start, self.saved_any = int(meta["step"]), True
            self.train_seconds = float(meta.get("train_seconds", 0.0))
            self.counters.update({k: meta[k] for k in self.counters if k in meta})
            if meta.get("data_iterator") is not None:
                self.iterator.set_state(meta["data_iterator"])
            print0(f"resuming {self.workdir} from step {self.start}")
        write_config(self.cfg, self.workdir)  # after the checkpoint is known to fit
        self.step = self.last_saved = self.start
        self.logger = Logger(self.workdir, keep_until=self.start)

    # ---------------------------------------------------------------- guards
    def check_finite(self) -> list[tuple[int, dict[str, Any]]]:
        """Host copies of the window; without ``skip_nonfinite``, stop at a non-finite step."""
        host = jax.device_get(self.window)
        if self.cfg.skip_nonfinite:
            return host
        for s, m in host:
            if not bool(m["finite"]):
                self.logger.write(s, {"event": "nonfinite", "train_loss": json_float(m["loss"])})
                good = (ckpt.last_good(self.manager, self.trainer, self.last_saved)
                        if self.saved_any else None)
                raise guards.nonfinite_error(s, float(m["loss"]), self.last_saved, good,
                                             self.workdir / "checkpoints")
        return host

    def save(self, at: int) -> None:
        self.check_finite()  # never save a state that came from a non-finite step
        seconds = self.train_seconds + time.perf_counter() - self.t_run
        ckpt.save(self.manager, self.trainer, at, self.iterator, seconds, self.counters)
        self.last_saved, self.saved_any = at, True

    # ---------------------------------------------------------------- steps
    def advance(self) -> None:
        """One training step (after a drift check where one is due)."""
        x, y = next(self.iterator)
        every = self.cfg.drift_check_every
        if every and (self.step + 1) % every == 0:
            guards.check_drift(self.trainer, x, y, self.step, self.counters, self.logger)
        metrics = self.trainer.train_step(x, y, self.step)
        self.step += 1
        self.window.append((self.step, metrics))

    def log(self, bar: Any) -> None:
        """Read the window back, check it, write its record, move the progress bar."""
        cfg, step = self.cfg, self.step
        host = self.check_finite()
        now = time.perf_counter()
        rate = len(host) * cfg.batch_size / max(now - self.t_window, 1e-9)
        good = [m for _, m in host if bool(m["finite"])]
        self.counters["skipped_batches"] += len(host) - len(good)
        self.last = {k: float(np.mean([m[k] for m in good])) if good else float("nan")
                     for k in ("loss", "accuracy")}
        record = {"epoch": step / self.trainer.steps_per_epoch,
                  "train_loss": json_float(self.last["loss"]),
                  "train_accuracy": json_float(self.last["accuracy"]),
                  "learning_rate": float(self.trainer.schedule(step - 1)),
                  "images_per_second": rate}
        if cfg.skip_nonfinite:
            record["skipped_batches"] = self.counters["skipped_batches"]
        self.logger.write(step, record)
        bar.set_postfix(loss=f"{self.last['loss']:.3f}", acc=f"{self.last['accuracy']:.3f}",
                        img_s=f"{rate:.0f}")
        bar.update(len(host))
        self.window, self.t_window = [], now

    def bookkeep(self, stop: int, bar: Any) -> None:
        """What is due after a step: the log, an evaluation, a checkpoint."""
        cfg, step = self.cfg, self.step
        if step % cfg.log_every == 0 or step == stop:
            self.log(bar)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < self.trainer.total_steps:
            self.logger.write(step, self.trainer.evaluate())
        if step % cfg.checkpoint_every == 0 and step < stop:
            self.save(step)

    def loop(self, stop: int, bar: Any) -> bool:
        """Train up to step ``stop`` and save; ``True`` if SIGTERM stopped it first."""
        preempted = False
        self.t_run = self.t_window = time.perf_counter()
        with guards.PreemptionWatch() as preemption:
            while self.step < stop:
                self.advance()
                self.bookkeep(stop, bar)
                if self.step < stop and preemption.requested(self.manager, self.step):
                    preempted = True
                    break
            jax.block_until_ready(self.trainer.params)
            self.train_seconds += time.perf_counter() - self.t_run
            self.t_run = time.perf_counter()
            if self.last_saved != self.step or not self.saved_any:
                self.save(self.step)
            self.manager.wait_until_finished()
        return preempted


# --------------------------------------------------------------------------- summary
def _summary(run: _Run, result: dict[str, Any]) -> dict[str, Any]:
    cfg, trainer, step, seconds = run.cfg, run.trainer, run.step, run.train_seconds
    summary: dict[str, Any] = {
        "model": cfg.model, "dataset": cfg.dataset, "memory_mode": cfg.memory_mode,
        "time_steps": cfg.time_steps, "steps": step, "epochs": step / trainer.steps_per_epoch,
        "batch_size": cfg.batch_size, "devices": len(trainer.devices),
        "test_accuracy": result["test_accuracy"], "test_loss": result["test_loss"],
        "final_train_loss": run.last["loss"], "final_train_accuracy": run.last["accuracy"],
        "train_seconds": seconds,
        "images_per_second": step * cfg.batch_size / seconds if seconds else None,
        "firing_rate": trainer.firing_rate(),
        "parameters": int(sum(np.size(p) for p in jax.tree.leaves(trainer.params))),
        "skipped_batches": run.counters["skipped_batches"],
    }
    if cfg.drift_check_every:
        summary.update({k: run.counters[k] for k in ("drift_checks", "drift_warnings",
                                                     "drift_max_rel")})
    if cfg.measure_memory:
        summary.update(trainer.memory_per_image())
    return summary


def _finish(run: _Run, preempted: bool) -> dict[str, Any]:
    """After the loop: the preemption or early-stop answer, or the final evaluation and the
    summary (written to ``summary.json``)."""
    step, logger = run.step, run.logger
    if preempted:
        logger.write(step, {"event": "preempted", "checkpoint": step})
        logger.close()
        print0(f"preempted (SIGTERM): checkpoint of step {step} saved in "
               f"{run.workdir / 'checkpoints'}; run the same command again to resume")
        return {"steps": step, "stopped_early": True, "preempted": True}
    if step < run.trainer.total_steps:  # stopped early on purpose
        logger.close()
        return {"steps": step, "stopped_early": True}
    result = run.trainer.evaluate()
    logger.write(step, result)
    summary = _summary(run, result)
    logger.close()
    write_summary(summary, run.workdir)
    return summary


def _announce(trainer: Trainer) -> None:
    cfg = trainer.cfg
    print0(f"{cfg.model} ({cfg.memory_mode}) on {cfg.dataset}: {len(trainer.train_source)} "
           f"train / {len(trainer.test_source)} test examples, batch {cfg.batch_size} over "
           f"{len(trainer.devices)} device(s), {trainer.total_steps} steps "
           f"({trainer.steps_per_epoch}/epoch)")


def train(cfg: TrainConfig, workdir: str | os.PathLike, *, progress: bool = True,
          max_steps_this_run: int | None = None, devices: list | None = None) -> dict[str, Any]:
    """Train (or resume) ``cfg`` in ``workdir``; returns the summary also written to
    ``workdir/summary.json``:

    ``model``, ``dataset``, ``memory_mode``, ``steps``, ``epochs`` (completed, fractional),
    ``batch_size``, ``devices``, ``test_accuracy`` (fraction), ``test_loss``,
    ``final_train_loss``, ``final_train_accuracy``, ``train_seconds`` (cumulative over resumes),
    ``images_per_second``, ``firing_rate`` (mean of the spiking layers' recorded firing rates on
    a test batch; ``None`` if the model records none), and the compile-only memory of the
    training step from :func:`revsnn_jax.memory.per_example_memory`: ``bytes_per_image`` (this
    model), ``plain_bytes_per_image`` (its plain twin, ``memory_mode="none"``),
    ``memory_ratio_plain_over_model``, ``peak_bytes``/``plain_peak_bytes`` at ``memory_batch``
    and the papers' ``peak_bytes_per_image`` (peak divided by the batch); ``skipped_batches``
    (non-finite batches skipped under ``skip_nonfinite``, over resumes) and, with
    ``drift_check_every``, ``drift_checks``, ``drift_warnings`` and ``drift_max_rel``.

    ``max_steps_this_run`` stops early (for tests of resuming); the checkpoint is still saved.
    ``devices`` restricts the mesh (default: every device of every process).

    Failures: SIGTERM saves a checkpoint of the current step and returns
    ``{"steps": N, "stopped_early": True, "preempted": True}``; a non-finite loss or gradient
    raises :class:`~revsnn_jax.training.guards.NonFiniteError` (unless ``skip_nonfinite``)
    without saving anything after the last good checkpoint; a checkpoint of another model raises
    ``ValueError``; one that fails verification is set aside (``CorruptCheckpointWarning``) for
    the newest one that verifies.
    """
    from tqdm import tqdm

    maybe_initialize_distributed()
    workdir = pathlib.Path(workdir)
    check_resumable(cfg, workdir)
    # validates: nothing is written for a bad config
    trainer = Trainer(cfg, workdir, devices, progress)
    run = _Run(trainer, workdir)
    run.open()
    total = trainer.total_steps
    stop = total if max_steps_this_run is None else min(total, run.start + max_steps_this_run)
    _announce(trainer)
    bar = tqdm(total=total, initial=run.start,
               disable=not progress or jax.process_index() != 0, dynamic_ncols=True,
               file=sys.stdout, mininterval=1.0)
    try:
        preempted = run.loop(stop, bar)
    finally:
        bar.close()
        run.manager.close()
    return _finish(run, preempted)


# --------------------------------------------------------------------------- console
@contextlib.contextmanager
def quiet_absl() -> Iterator[None]:
    """Keep orbax/absl INFO chatter off the console."""
    try:
        from absl import logging as absl_logging

        old = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.WARNING)
        yield
        absl_logging.set_verbosity(old)
    except ImportError:  # pragma: no cover
        yield


def format_summary(summary: dict[str, Any]) -> str:
    """The console lines of a :func:`train` summary."""
    lines = [f"{summary['model']} on {summary['dataset']}: test accuracy "
             f"{100 * summary['test_accuracy']:.2f}% after {summary['steps']} steps "
             f"({summary['epochs']:.1f} epochs) in {summary['train_seconds']:.1f} s"]
    if summary.get("firing_rate") is not None:
        lines.append(f"  firing rate {summary['firing_rate']:.4f}")
    if "bytes_per_image" in summary:
        mib = 2 ** 20
        ratio = summary.get("memory_ratio_plain_over_model")
        lines.append(
            f"  training memory per image ({summary['memory_mode']}): "
            f"{summary['bytes_per_image'] / mib:.3f} MiB vs plain twin "
            f"{summary['plain_bytes_per_image'] / mib:.3f} MiB"
            + (f", plain / model = {ratio:.2f}x" if ratio and math.isfinite(ratio) else "")
            + f" [compiled, batch {summary['memory_batch']} vs {2 * summary['memory_batch']}]")
    return "\n".join(lines)
