"""A run's work directory: its configuration and its metrics log.

::

    DIR/config.yaml      the resolved configuration
    DIR/checkpoints/     orbax checkpoints (revsnn_jax.training.resume)
    DIR/metrics.jsonl    one JSON record per log interval and per evaluation
    DIR/tb/              TensorBoard event files (tensorboardX)
    DIR/summary.json     the final summary (revsnn_jax.training.loop.train)

A directory that holds a run may be trained again only with the same configuration, up to the
settings in :data:`ALLOWED_ON_RESUME`. On resume, ``metrics.jsonl`` records after the restored
step (work that was lost) are dropped, so the file reads like an uninterrupted run's. Only
process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import jax
import yaml

from revsnn_jax.training.config import TrainConfig, from_dict

ALLOWED_ON_RESUME = {
    "description", "steps", "epochs", "data_dir", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "measure_memory", "memory_batch", "num_threads", "prefetch",
    "eval_batch_size", "skip_nonfinite", "drift_check_every", "drift_threshold",
}
# what a checkpoint's arrays depend on: a checkpoint written with other values is another model
CHECKPOINT_IDENTITY = ("model", "model_overrides", "dataset", "input_channels")


def print0(*args: Any) -> None:
    """``print`` on process 0 only (flushed)."""
    if jax.process_index() == 0:
        print(*args, flush=True)


def json_float(value: Any) -> float | None:
    """A float for ``metrics.jsonl``; NaN/Inf become ``null`` (strict JSON)."""
    value = float(value)
    return value if math.isfinite(value) else None


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Write, then rename: a kill never leaves a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_config(path: pathlib.Path) -> TrainConfig:
    return from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


def load_workdir_config(workdir: str | os.PathLike) -> TrainConfig:
    """The configuration of the run in ``workdir`` (its ``config.yaml``)."""
    path = pathlib.Path(workdir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{workdir} holds no run (no config.yaml); train one first with "
                                f"`revsnn train --config NAME --workdir {workdir}`")
    return _read_config(path)


def check_resumable(cfg: TrainConfig, workdir: pathlib.Path) -> None:
    """Refuse ``cfg`` on a ``workdir`` whose run has another configuration (beyond
    :data:`ALLOWED_ON_RESUME`), naming the model fields first."""
    saved_path = workdir / "config.yaml"
    if not saved_path.exists():
        return
    saved, now = _read_config(saved_path).to_dict(), cfg.to_dict()
    changed = {k for k, v in now.items() if saved[k] != v}
    first = {k: i for i, k in enumerate(CHECKPOINT_IDENTITY)}  # the model first
    clash = sorted(changed - ALLOWED_ON_RESUME, key=lambda k: (first.get(k, len(first)), k))
    if clash:
        raise ValueError(
            f"{workdir} holds a run with a different configuration ({', '.join(clash)} "
            f"differ: e.g. {clash[0]} = {saved[clash[0]]!r} there, {now[clash[0]]!r} now); use "
            f"a new --workdir, or pass the same settings (only "
            f"{', '.join(sorted(ALLOWED_ON_RESUME))} may change on resume)")


def write_config(cfg: TrainConfig, workdir: pathlib.Path) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        write_atomic(workdir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def write_summary(summary: dict[str, Any], workdir: pathlib.Path) -> None:
    if jax.process_index() == 0:
        write_atomic(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")


def truncate_metrics(path: pathlib.Path, keep_until: int) -> None:
    """Drop the records after step ``keep_until`` (work a killed run lost; the resumed run
    writes them again) and a torn last line; atomically (write, then rename)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(record, dict) and int(record.get("step", 0)) <= keep_until:
            kept.append(line)
    write_atomic(path, "".join(line + "\n" for line in kept))


class Logger:
    """JSON lines + TensorBoard (tensorboardX), written by process 0 only."""

    def __init__(self, workdir: pathlib.Path, keep_until: int | None = None):
        self.active = jax.process_index() == 0
        self._file = None
        self._tb = None
        if self.active:
            path = workdir / "metrics.jsonl"
            if keep_until is not None and path.exists():
                truncate_metrics(path, keep_until)
            self._file = open(path, "a")  # noqa: SIM115
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(workdir / "tb"))
            except ImportError:  # pragma: no cover - tensorboardX is a dependency
                self._tb = None

    def write(self, step: int, record: dict[str, Any]) -> None:
        if not self.active:
            return
        self._file.write(json.dumps({"step": step, **record}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
