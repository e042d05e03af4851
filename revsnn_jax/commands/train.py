"""``revsnn train``: train a configuration (revsnn_jax/configs/NAME.yaml) in a work directory.

``revsnn train --config NAME --workdir DIR [--field value ...]``: every field of
:class:`revsnn_jax.training.config.TrainConfig` is a flag (``--batch-size 64``, ``--memory-mode none``,
``--milestones "[100, 150]"``, ``--model-overrides "{hidden: [128]}"``). On a work directory that
already holds checkpoints the run resumes from the latest one; without ``--config`` the work
directory's saved configuration is used.

Exit status: 0 done; 2 bad configuration or input (the message names the fix);
3 (:data:`revsnn_jax.training.EXIT_NONFINITE`) stopped at a non-finite loss or gradient, the last
good checkpoint kept; 75 (:data:`revsnn_jax.training.EXIT_PREEMPTED`) stopped by SIGTERM after
saving a checkpoint: run the same command again to resume.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "train a model from a config (resumes from the latest checkpoint in --workdir)"

# stricter than the config file on the command line: `steps: 0` there means "train for epochs";
# a flag `--steps 0` (or negative) is a mistake
_CLI_MINIMUM = {"steps": (1, "leave --steps out to train for --epochs")}


def config_value(name: str):
    """The ``type=`` of flag ``--NAME``: the value converted to the field's type and range
    checked (:func:`revsnn_jax.training.config.parse_value`, :func:`revsnn_jax.training.config.check_field`); a bad
    one is a usage error naming the flag."""
    from revsnn_jax.training.config import check_field, parse_value

    def parse(text: str):
        try:
            value = parse_value(name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).replace(f"config field {name} ", "")
                                             ) from None
        low, meaning = _CLI_MINIMUM.get(name, (None, ""))
        if low is not None and value < low:
            problem = f"must be >= {low} ({meaning}), got {value}"
        else:
            problem = check_field(name, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    from revsnn_jax.training.config import TrainConfig, field_names

    group = parser.add_argument_group(
        "config fields (override the config file; lists/mappings in YAML flow style)")
    defaults = TrainConfig().to_dict()
    for name in field_names():
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg_{name}", metavar="V",
                           type=config_value(name), default=argparse.SUPPRESS,
                           help=f"(default {defaults[name]!r})")


def config_overrides(args: argparse.Namespace) -> dict:
    """The config fields given as flags (already converted by :func:`config_value`)."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config name in revsnn_jax/configs, or a path "
                        "(default: the work directory's saved config, else 'default')")
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    import pathlib

    from revsnn_jax import data
    from revsnn_jax import training as train
    from revsnn_jax.commands._args import concise_warnings
    from revsnn_jax.training import checkpoint as checkpointing
    from revsnn_jax.training.config import load_config
    from revsnn_jax.training.loop import quiet_absl

    _WARNINGS = (checkpointing.CorruptCheckpointWarning, train.ReconstructionDriftWarning,
                 data.CorruptFrameCacheWarning, data.IncompleteDataWarning)
    try:
        overrides = config_overrides(args)
        if args.config is None and (pathlib.Path(args.workdir) / "config.yaml").exists():
            cfg = train.load_workdir_config(args.workdir).replace(**overrides)
        else:
            cfg = load_config(args.config or "default", overrides)
        with quiet_absl(), concise_warnings("train", _WARNINGS):
            summary = train.train(cfg, args.workdir, progress=not args.no_progress)
    except train.NonFiniteError as err:
        print(f"revsnn train: error: {err}", file=sys.stderr)
        return train.EXIT_NONFINITE
    except (ValueError, FileNotFoundError) as err:
        print(f"revsnn train: error: {err}", file=sys.stderr)
        return 2
    if summary.get("preempted"):
        print(f"revsnn train: stopped by SIGTERM at step {summary['steps']} after saving a "
              f"checkpoint; run the same command again to resume", file=sys.stderr)
        return train.EXIT_PREEMPTED
    import jax

    if jax.process_index() != 0:  # several processes: process 0 alone reports, as it writes
        return 0
    print(train.format_summary(summary))
    print(f"summary: {pathlib.Path(args.workdir) / 'summary.json'}")
    print(json.dumps(summary, indent=None))
    return 0
