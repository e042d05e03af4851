"""``revsnn models``: every registered model with its parameter count, family and reversibility.

Parameter counts come from the initialised model under :func:`flax.nnx.eval_shape` (nothing is
allocated), never from a table.
"""

from __future__ import annotations

import argparse
import json

from revsnn_jax.commands._args import positive_int

HELP = "list the registered models with parameter counts (counted from the model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {name, params, family, reversible}")
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="count with this many classes (default: each model's own)")


def run(args: argparse.Namespace) -> int:
    from revsnn_jax import models

    rows = []
    for info in models.list_models():
        num_classes = args.num_classes or info.default_num_classes
        model = models.abstract_model(info.name, num_classes=num_classes)
        rows.append({"name": info.name, "params": models.count_params(model),
                     "family": info.family, "reversible": info.reversible,
                     "num_classes": num_classes, "counterpart": info.counterpart,
                     "description": info.description})
    if args.json:
        print(json.dumps([{k: r[k] for k in ("name", "params", "family", "reversible")}
                          for r in rows], indent=2))
        return 0
    print(f"{'model':<16} {'family':<12} {'reversible':<10} {'classes':>7} {'params':>12}  "
          f"description")
    for r in rows:
        print(f"{r['name']:<16} {r['family']:<12} {r['reversible']!s:<10} "
              f"{r['num_classes']:>7} {r['params']:>12,}  {r['description']}")
    return 0
