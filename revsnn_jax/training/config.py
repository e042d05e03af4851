"""Training configurations: one dataclass, YAML files, command-line overrides.

A configuration is a :class:`TrainConfig`. Files are YAML mappings of its fields (one file per
experiment row, shipped with the package in ``revsnn_jax/configs/``); ``load_config("NAME")``
reads ``revsnn_jax/configs/NAME.yaml`` (or any path to a ``.yaml``/``.yml``/``.json`` file), and
a file may name a ``base:`` file (relative to itself) whose fields it overrides. Unknown keys fail fast, listing the
known ones. Every field can be overridden (``--batch-size 64`` on the command line,
``overrides={"batch_size": 64}`` in Python); values are converted to the field's type (lists
and mappings are written in YAML flow style, e.g. ``--milestones "[100, 150]"``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import pathlib
import typing
from typing import Any

import yaml

__all__ = ["TrainConfig", "check_field", "config_dir", "field_names", "list_configs",
           "load_config", "parse_value"]

# numeric fields with a lower bound: (bound, inclusive, what the bound means)
_MINIMUM: dict[str, tuple[float, bool, str]] = {
    "batch_size": (1, True, ""), "eval_batch_size": (0, True, " (0: batch_size)"),
    "time_steps": (1, True, ""), "steps": (0, True, " (0: train for epochs)"),
    "epochs": (0, False, ""), "log_every": (1, True, ""), "checkpoint_every": (1, True, ""),
    "keep_checkpoints": (1, True, ""), "eval_every": (0, True, " (0: only at the end)"),
    "memory_batch": (0, True, " (0: the per-device batch)"),
    "input_channels": (0, True, " (0: the data set's own)"),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Epoch-valued fields are converted to steps with
    ``steps_per_epoch = len(train split) // batch_size``."""

    description: str = ""
    # model
    model: str = "spiking_mlp"
    model_overrides: dict = dataclasses.field(default_factory=dict)  # e.g. {widths: [8, 16]}
    time_steps: int = 4
    memory_mode: str = "none"  # "reversible", "checkpoint" or "none"
    # data
    dataset: str = "digits"
    data_dir: str | None = None  # TFDS / event data directory (default: TFDS default)
    # event data sets: how a recording's events are integrated into the time_steps frames,
    # SpikingJelly's split_by: "number" (equal event counts, RevSNN's recipe) or "time"
    split_by: str = "number"
    batch_size: int = 32  # global batch, split over all devices
    eval_batch_size: int = 0  # 0: batch_size
    crop_padding: int | None = None  # None: the data set's recipe value (CIFAR 4)
    hflip: bool = True
    input_channels: int = 0  # > 0: tile grey images to this many channels (RGB stems)
    mean: list | None = None  # None: the data set's recipe value
    std: list | None = None
    mixup_alpha: float = 0.0  # 0: no mixup
    mixup_prob: float = 1.0
    mixup_off_epoch: float | None = None  # mixup switched off from this epoch on
    label_smoothing: float = 0.0
    num_threads: int = 4  # grain reader threads
    prefetch: int = 64  # examples buffered ahead of the training step
    # optimisation
    epochs: float = 200.0
    steps: int = 0  # > 0 overrides epochs
    loss: str = "cross_entropy"  # or "intermediate_supervision" / "tet" (multi-head models)
    optimizer: str = "sgd"  # "sgd" (momentum, coupled L2 as PyTorch), "adamw" or "lamb"
    clip_grad_norm: float = 0.0  # > 0: clip the global gradient norm (timm's Lamb uses 1.0)
    adaptive_clip: float = 0.0  # > 0: adaptive gradient clipping factor (T-RevSNN: 0.02)
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "multistep"  # "multistep", "cosine" or "constant"
    milestones: list = dataclasses.field(default_factory=list)  # epochs (multistep)
    gamma: float = 0.1  # multistep decay factor
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0  # cosine floor
    seed: int = 0
    # bookkeeping
    log_every: int = 50  # steps between progress/metrics records
    eval_every: int = 0  # steps between test evaluations (0: only at the end)
    checkpoint_every: int = 1000  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3
    measure_memory: bool = True  # compile-only memory per image of the model and its plain twin
    memory_batch: int = 0  # batch of the memory measurement (0: the per-device batch)
    # reliability (README "Resuming and failures")
    skip_nonfinite: bool = False  # skip batches with a non-finite loss/gradient (else: stop)
    drift_check_every: int = 0  # > 0: every K steps, reversible vs plain-autodiff gradients
    drift_threshold: float = 1e-4  # relative gradient error that triggers the drift warning

    def __post_init__(self) -> None:
        for name in _MINIMUM:
            problem = check_field(name, getattr(self, name))
            if problem:
                raise ValueError(f"config field {name} {problem}")

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**dataclasses.asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_HINTS = typing.get_type_hints(TrainConfig)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _unknown(keys: list[str], where: str) -> ValueError:
    return ValueError(
        f"unknown config key(s) {', '.join(sorted(keys))} in {where}; known keys: "
        f"{', '.join(field_names())}"
    )


def check_field(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` (e.g. ``"must be >= 1, got 0"``), or
    ``None``: the range check of :class:`TrainConfig`, for messages that name a flag."""
    if name not in _MINIMUM or not isinstance(value, (int, float)):
        return None
    bound, inclusive, meaning = _MINIMUM[name]
    if value > bound or (inclusive and value == bound):
        return None
    return f"must be {'>=' if inclusive else '>'} {bound}{meaning}, got {value}"


def parse_value(name: str, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a YAML value) to field ``name``'s type."""
    if name not in _HINTS:
        raise _unknown([name], "overrides")
    hint = _HINTS[name]
    kind = getattr(hint, "__name__", None) or str(hint)  # int, float, list, "str | None"
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    base = typing.get_origin(base) or base
    if isinstance(value, str) and optional and value.strip().lower() in ("none", "null", "~", ""):
        return None
    if isinstance(value, str) and base is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem", None) or type(err).__name__
            raise ValueError(f"config field {name} expects {kind} (lists and mappings in YAML "
                             f"flow style, e.g. [1, 2] or {{a: 1}}); {value!r} is not valid "
                             f"YAML: {mark}") from None
    if value is None:
        if optional:
            return None
        raise ValueError(f"config field {name} cannot be null")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            if value in (0, 1):
                return bool(value)
            raise ValueError
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if base is list:
            if isinstance(value, (list, tuple)):
                return [float(v) if isinstance(v, str) else v for v in value]
            raise ValueError
        if base is dict:
            if isinstance(value, dict):
                return dict(value)
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"config field {name} expects {kind}, got {value!r}") from None
    return value


def from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    unknown = [k for k in values if k not in _HINTS]
    if unknown:
        raise _unknown(unknown, where)
    return TrainConfig(**{k: parse_value(k, v) for k, v in values.items()})


def config_dir() -> pathlib.Path:
    """``$REVSNN_CONFIG_DIR`` or the configs shipped in the package (``revsnn_jax/configs``)."""
    env = os.environ.get("REVSNN_CONFIG_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(str(importlib.resources.files("revsnn_jax") / "configs"))


def list_configs() -> list[str]:
    folder = config_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _read(path: pathlib.Path) -> dict[str, Any]:
    text = path.read_text()
    values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of fields, got {type(values)}")
    base = values.pop("base", None)
    if base is not None:
        values = {**_read(_resolve(str(base), path.parent)), **values}
    return values


def _resolve(name: str, relative_to: pathlib.Path | None = None) -> pathlib.Path:
    candidates = [pathlib.Path(name)]
    if relative_to is not None:
        candidates.append(relative_to / name)
    candidates += [config_dir() / name, config_dir() / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise ValueError(
        f"unknown config {name!r}: no such file and not in {config_dir()}; "
        f"known configs: {', '.join(list_configs()) or '(none)'}"
    )


def load_config(name: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config ``name`` (a file in :func:`config_dir` or a path) with ``overrides``."""
    path = _resolve(name)
    values = _read(path)
    unknown = [k for k in values if k not in _HINTS]
    if unknown:
        raise _unknown(unknown, str(path))
    values.update(overrides or {})
    return from_dict(values, str(path))
