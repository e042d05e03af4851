"""``revsnn plan``: the largest batch (or the deepest/longest variant) that fits one chip.

For each memory mode, compiles the model's training step for ``--target`` (a TPU generation or
an NVIDIA GPU compiles without the chip, see :mod:`revsnn_jax.memory`) at ``B`` and ``2B``
(``--first-batch``), takes the slope and intercept, then answers within 1% of the largest batch
that fits in at most 6 compiles (a line through two batches near the answer, then the answer
and 1% more checked; :mod:`revsnn_jax.memory.plan`), or with ``--exact`` compiles until the
answer fits and one more does not. A batch the TPU compiler refuses as larger than the chip
(``RESOURCE_EXHAUSTED``) counts as "does not fit". The time the search took is printed.

The budget: ``--hbm-gib`` if given; else for a TPU the chip's HBM
(:data:`revsnn_jax.memory.HBM_GIB`: v4 32 GiB, v5e 16 GiB, v5p 95 GiB, v6e 32 GiB); for a
``gpu-*`` card what a JAX program has of it: ``f x M - 1 GiB``, with ``M`` the card's memory,
``f`` = ``--mem-fraction``, else ``$XLA_PYTHON_CLIENT_MEM_FRACTION``, else JAX's default
preallocation 0.75, less a margin for the autotuned algorithms' workspaces and fragmentation
(:func:`revsnn_jax.memory.gpu_budget`, docs/gpu.md). The budget and where it came from are
printed.

``--sweep blocks --batch 64`` instead finds how many blocks fit at batch 64 (``blocks=(n,)`` per
stage: the number of transformer blocks of a former, blocks in every stage of a ResNet);
``--sweep time-steps --batch 64`` the longest ``T``. One progress line per compile; a table at
the end; ``--json PATH`` writes the rows.
"""

from __future__ import annotations

import argparse
import json

from revsnn_jax.commands._args import (
    UsageError,
    names_from,
    positive_float,
    positive_int,
)
from revsnn_jax.commands.memory import (
    _check_model_kwargs,
    _model_names,
    add_memory_modes_argument,
    add_model_shape_arguments,
    add_target_arguments,
    check_target,
)
from revsnn_jax.core.modes import MEMORY_MODES, PLAIN_MEMORY_MODES

HELP = "largest batch (or deepest/longest variant) whose training step fits one chip's memory"
SWEEPS = ("blocks", "time-steps")
GiB = 2 ** 30


def _one_model(text: str) -> str:
    names = names_from(_model_names, "model")(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"one model, got {', '.join(names)}")
    return names[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=_one_model,
                        help="a registered name, e.g. revsresnet37")
    add_target_arguments(parser, default=None)
    add_memory_modes_argument(parser)
    parser.add_argument("--hbm-gib", type=positive_float, default=None,
                        help="memory budget of one chip in GiB (default: the target's HBM: "
                        "tpu-v4 32, tpu-v5e 16, tpu-v5p 95, tpu-v6e 32; gpu-*: --mem-fraction "
                        "of the card's memory less 1 GiB; gpu: the device's limit; required "
                        "for cpu)")
    parser.add_argument("--mem-fraction", type=positive_float, default=None,
                        help="gpu-* targets: the share of the card's memory JAX preallocates "
                        "for XLA (default $XLA_PYTHON_CLIENT_MEM_FRACTION, else JAX's 0.75)")
    parser.add_argument("--exact", action="store_true",
                        help="compile until the answer fits and one more does not (default: "
                        "within 1%% of it, at most 6 compiles per memory mode)")
    parser.add_argument("--first-batch", type=positive_int, default=32,
                        help="the batch B of the first two compiles (B and 2B) of a batch plan")
    parser.add_argument("--sweep", choices=SWEEPS, default=None,
                        help="instead of the batch: the most blocks (blocks=(n,) per stage) or "
                        "time steps that fit at --batch")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="the batch of a --sweep (required with it)")
    parser.add_argument("--max", dest="limit", type=positive_int, default=None,
                        help="stop a --sweep at this value (report it if it still fits)")
    add_model_shape_arguments(parser, " (with --sweep blocks: the first value tried is its "
                              "largest entry)")
    parser.add_argument("--json", dest="json_path", default=None, metavar="PATH",
                        help="write the rows to this JSON file (rewritten after every row)")


def _budget(args: argparse.Namespace) -> tuple[int, float, str]:
    """The budget in bytes, the chip's GiB for the rows, and how the budget was set."""
    from revsnn_jax import memory

    target = memory.get_target(args.target)
    if args.mem_fraction is not None and target.gpu_spec is None:
        raise UsageError(f"argument --mem-fraction: only for gpu-* targets, not {args.target}")
    if args.mem_fraction is not None and args.hbm_gib is not None:
        raise UsageError("argument --mem-fraction: --hbm-gib sets the whole budget; drop one")
    if args.hbm_gib is not None:
        return int(args.hbm_gib * GiB), args.hbm_gib, "--hbm-gib"
    if target.gpu_spec is not None:
        try:
            budget = memory.gpu_budget(target, args.mem_fraction)
        except ValueError as err:
            raise UsageError(f"argument --mem-fraction: {err}") from err
        return budget.budget_bytes, budget.memory_gib, budget.describe()
    if target.hbm_gib is not None:
        return target.hbm_bytes, target.hbm_gib, f"the chip's HBM ({target.hbm_gib:g} GiB)"
    if target.platform == "gpu":
        import jax

        limit = (jax.devices("gpu")[0].memory_stats() or {}).get("bytes_limit")
        if limit:
            return int(limit), int(limit) / GiB, "the device's limit"
        raise UsageError("argument --hbm-gib: the GPU reports no memory limit; give --hbm-gib")
    raise UsageError(f"argument --hbm-gib: required for target {args.target} (it has no chip "
                     "memory of its own)")


def _closeness(row: dict) -> str:
    """How close ``largest`` is to the exact answer, in words."""
    if row["limit_reached"]:
        return "the limit"
    if row["within"] == 0:
        return "exact" if row["exact"] else "exact: the next value does not fit"
    if row["within"] is None:
        return "NOT bracketed: no larger value was compiled over the budget; try --exact"
    if row["within"] <= 0.01:
        return f"within {100 * row['within']:.2f}% of the exact answer"
    return (f"NOT within 1%: the exact answer is at most {row['above'] - 1} (6 compiles did "
            "not close the gap; --exact brackets it)")


def print_progress(plan, label: str) -> None:
    how = "cached" if plan.cached else f"{plan.compile_seconds:.1f} s"
    what = ("refused by the compiler: does not fit the device" if plan.memory is None
            else f"peak {plan.memory.peak_bytes / GiB:.3f} GiB")
    print(f"  {label}: compiled batch {plan.batch} for {plan.target} ({plan.device_kind}): "
          f"{what} ({how})", flush=True)


def format_table(rows: list[dict]) -> str:
    header = (f"{'model':<20} {'mode':<10} {'target':<12} {'device kind':<22} {'sweep':<10} "
              f"{'batch':>6} {'largest':>8} {'within':>7} {'peak GiB':>9} {'over at':>8} "
              f"{'GiB':>8} {'budget GiB':>10} {'compiles':>8} {'seconds':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / GiB:.3f}"
        above = "-" if r.get("above") is None else str(r["above"])
        over = ("refused" if r.get("above") is not None and r["above_peak_bytes"] is None
                else "-" if r.get("above_peak_bytes") is None
                else f"{r['above_peak_bytes'] / GiB:.3f}")
        within = ("exact" if r.get("within") == 0 else "?" if r.get("within") is None
                  else f"{100 * r['within']:.2f}%")
        largest = f"{r['largest']}{'+' if r['limit_reached'] else ''}"
        lines.append(f"{r['model']:<20} {r['memory_mode']!s:<10} {r['target']:<12} "
                     f"{r['device_kind']:<22} {r['sweep']:<10} {r['batch']:>6} {largest:>8} "
                     f"{within:>7} {peak:>9} {above:>8} {over:>8} "
                     f"{r['budget_bytes'] / GiB:>10.3f} {r['compiles']:>8} "
                     f"{r.get('seconds', 0.0):>8.1f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from revsnn_jax.memory import benchmark, plan
    from revsnn_jax.models import abstract_model, get_info

    check_target(args.target)
    if args.sweep is None and args.batch is not None:
        raise UsageError("argument --batch: only with --sweep (a batch plan searches the batch; "
                         "--first-batch sets where it starts)")
    if args.sweep is not None and args.batch is None:
        raise UsageError(f"argument --sweep: --sweep {args.sweep} needs --batch")
    if args.limit is not None and args.sweep is None:
        raise UsageError("argument --max: only with --sweep")
    if args.sweep == "time-steps" and args.time_steps is not None:
        raise UsageError("argument --time-steps: --sweep time-steps searches T; drop one")
    budget, hbm_gib, budget_source = _budget(args)
    name = args.model
    info = get_info(name)
    model_kwargs = {}
    if args.widths:
        model_kwargs["widths"] = args.widths
    if args.blocks:
        model_kwargs["blocks"] = args.blocks
    if model_kwargs:
        _check_model_kwargs((name,), model_kwargs)
    offered = MEMORY_MODES if info.reversible else PLAIN_MEMORY_MODES
    modes = args.memory_modes or benchmark.default_memory_modes(name)
    bad = [m for m in modes if m not in offered]
    if bad:
        raise UsageError(f"argument --memory-modes: {name} does not offer {', '.join(bad)} "
                         f"(it offers {', '.join(offered)})")

    first, stages = 1, 1
    if args.sweep == "blocks":
        model = abstract_model(name, **model_kwargs)
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, tuple):
            stages, first = len(blocks), max(blocks)
        elif isinstance(getattr(model, "depth", None), int):
            first = model.depth
        else:
            raise UsageError(f"argument --sweep: {name} has no blocks to sweep")
        try:
            abstract_model(name, **dict(model_kwargs, blocks=(first,) * stages))
        except (TypeError, ValueError) as err:
            raise UsageError(f"argument --sweep: {name} rejects blocks=(n,)*{stages}: "
                             f"{err}") from err
    elif args.sweep == "time-steps":
        first = info.default_time_steps

    print(f"planning {name} for {args.target}: budget {budget / GiB:.3f} GiB = "
          f"{budget_source}; {'exact bracket' if args.exact else 'within 1%'}", flush=True)
    common = dict(memory_mode=None, time_steps=args.time_steps, image_size=args.image_size,
                  num_classes=args.num_classes, model_kwargs=model_kwargs, hbm_gib=hbm_gib,
                  progress=print_progress, cache_dir=args.cache_dir,
                  use_cache=not args.no_cache, tolerance=None if args.exact else 0.01)
    rows = []
    for mode in modes:
        common["memory_mode"] = mode
        if args.sweep is None:
            row = plan.plan_batch(name, args.target, budget, first_batch=args.first_batch,
                                  **common)
        else:
            if args.sweep == "blocks":
                common["model_kwargs"] = {k: v for k, v in model_kwargs.items()
                                          if k != "blocks"}
            row = plan.plan_sweep(name, args.target, budget, args.sweep, args.batch,
                                  first=first, stages=stages, limit=args.limit, **common)
        rows.append(row)
        what = "batch" if args.sweep is None else args.sweep
        print(f"{name} / {mode} on {row['target']} ({row['device_kind']}): largest {what} "
              f"that fits {budget / GiB:.3f} GiB: {row['largest']}"
              f"{' (the --max limit)' if row['limit_reached'] else ''} "
              f"({_closeness(row)}; {row['compiles']} compiles, {row['seconds']:.1f} s)",
              flush=True)
        if args.json_path:
            with open(args.json_path, "w") as fh:
                json.dump(rows, fh, indent=2)
    print()
    print(format_table(rows))
    return 0
