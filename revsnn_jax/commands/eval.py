"""``revsnn eval --workdir DIR``: score the latest checkpoint of a run on the test split."""

from __future__ import annotations

import argparse
import json
import sys

from revsnn_jax.commands._args import concise_warnings, non_negative_int, positive_int

HELP = "evaluate the latest checkpoint in --workdir on the test split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="run directory written by revsnn train")
    parser.add_argument("--step", type=non_negative_int, default=None,
                        help="checkpoint step (default latest)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: the run's)")
    parser.add_argument("--eval-batch-size", type=positive_int, default=None)


def run(args: argparse.Namespace) -> int:
    from revsnn_jax import data
    from revsnn_jax import training as train
    from revsnn_jax.training import checkpoint as checkpointing
    from revsnn_jax.training.loop import quiet_absl

    overrides = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.eval_batch_size is not None:
        overrides["eval_batch_size"] = args.eval_batch_size
    try:
        with quiet_absl(), concise_warnings("eval", (
                checkpointing.CorruptCheckpointWarning, data.CorruptFrameCacheWarning,
                data.IncompleteDataWarning)):
            result = train.evaluate(args.workdir, overrides, step=args.step)
    except (ValueError, FileNotFoundError) as err:
        print(f"revsnn eval: error: {err}", file=sys.stderr)
        return 2
    print(f"{result['model']} on {result['dataset']} at step {result['step']}: test accuracy "
          f"{100 * result['test_accuracy']:.2f}% ({result['test_examples']} examples), "
          f"loss {result['test_loss']:.4f}")
    print(json.dumps(result))
    return 0
