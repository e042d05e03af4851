"""The ``revsnn`` command line: one subcommand per module in :mod:`revsnn_jax.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``revsnn --help`` starts fast.

Invalid arguments end as one line on stderr and exit status 2, never a traceback: argparse
``type=`` validators and :class:`revsnn_jax.commands._args.UsageError` (see that module);
anything else a command raises keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module implementing it
COMMANDS: dict[str, str] = {
    "demo": "revsnn_jax.commands.demo",
    "models": "revsnn_jax.commands.models",
    "memory": "revsnn_jax.commands.memory",
    "plan": "revsnn_jax.commands.plan",
    "train": "revsnn_jax.commands.train",
    "eval": "revsnn_jax.commands.eval",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revsnn",
        description="Reversible spiking neural networks in JAX: train, evaluate, measure memory.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from revsnn_jax.commands._args import UsageError

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        print(f"revsnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
