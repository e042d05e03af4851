"""``revsnn memory``: training memory per image of registered models, per memory mode.

Compiles one full training step (forward, backward, SGD-momentum update) at batch ``B`` and
``2B`` for every model and memory mode, without allocating anything large (compile only unless
``--time``), and writes one JSON row per model x mode. The logic lives in
:mod:`revsnn_jax.memory.benchmark`.

``--target`` picks the compiler (:data:`revsnn_jax.memory.TARGETS`): ``cpu`` (default), ``gpu``
(this machine's GPU), ``tpu-v4``/``tpu-v5e``/``tpu-v5p``/``tpu-v6e``: one chip of that TPU
generation, compiled by libtpu on a machine without a TPU (needs ``pip install -e ".[tpu]"``),
or ``gpu-v100``/``gpu-a100-40g``/``gpu-a100-80g``/``gpu-l4``/``gpu-rtx4090``/``gpu-h100``/
``gpu-h200``: one NVIDIA card, compiled by XLA's GPU compiler on a machine without a GPU (needs
``pip install -e ".[cuda]"``). Plans of these compile-only targets are cached, see
:mod:`revsnn_jax.memory`.
"""

from __future__ import annotations

import argparse
import json

from revsnn_jax.commands._args import UsageError, int_list, names_from, positive_int
from revsnn_jax.core.modes import MEMORY_MODES, PLAIN_MEMORY_MODES

TPU_TARGET_NAMES = ("tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e")
GPU_TARGET_NAMES = ("gpu-v100", "gpu-a100-40g", "gpu-a100-80g", "gpu-l4", "gpu-rtx4090",
                    "gpu-h100", "gpu-h200")
TARGET_NAMES = ("cpu", "gpu", *TPU_TARGET_NAMES, *GPU_TARGET_NAMES)

HELP = "training memory per image (slope B -> 2B of the compiled step's peak) per model and mode"


def _model_names() -> list[str]:
    from revsnn_jax.models import list_models

    return [info.name for info in list_models()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, type=names_from(_model_names, "model"),
                        help="comma-separated registered names, e.g. revsresnet37,msresnet34")
    parser.add_argument("--batch", type=positive_int, default=32,
                        help="B; the slope uses B and 2B")
    add_memory_modes_argument(parser, "; modes a model does not offer are skipped")
    add_model_shape_arguments(parser)
    parser.add_argument("--time", action="store_true",
                        help="also run the step on random data and report the median step time")
    parser.add_argument("--timed-steps", type=positive_int, default=5,
                        help="steps timed with --time")
    parser.add_argument("--json", dest="json_path", default=None, metavar="PATH",
                        help="write the rows to this JSON file (rewritten after every row)")
    parser.add_argument("--plot", default=None, metavar="PATH",
                        help="PNG of memory per image against depth for both families")
    add_target_arguments(parser)


def add_memory_modes_argument(parser: argparse.ArgumentParser, extra_help: str = "") -> None:
    """``--memory-modes`` (shared with ``revsnn plan``)."""
    parser.add_argument("--memory-modes", type=names_from(MEMORY_MODES, "memory mode"),
                        default=(), help="comma-separated subset of reversible,checkpoint,none "
                        "(default: reversible,none for reversible models, none,checkpoint "
                        f"otherwise){extra_help}")


def add_model_shape_arguments(parser: argparse.ArgumentParser, blocks_help: str = "") -> None:
    """``--time-steps``, ``--image-size``, ``--num-classes``, ``--widths``, ``--blocks``
    (shared with ``revsnn plan``)."""
    parser.add_argument("--time-steps", type=positive_int, default=None,
                        help="T (default: the model's)")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="square input size (default: the model's)")
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes (default: the model's)")
    parser.add_argument("--widths", type=int_list, default=None,
                        help="override stage widths, e.g. 8,16 (reduced models)")
    parser.add_argument("--blocks", type=int_list, default=None,
                        help=f"override blocks per stage, e.g. 1,2{blocks_help}")


def add_target_arguments(parser: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    """``--target``, ``--cache-dir``, ``--no-cache`` (shared with ``revsnn plan``)."""
    parser.add_argument("--target", type=_target_name, default=default,
                        required=default is None,
                        help=f"compile for: cpu (this machine{', default' if default else ''}), "
                        "gpu (this machine's "
                        "GPU), tpu-v4, tpu-v5e, tpu-v5p, tpu-v6e (one chip, compiled by libtpu "
                        "without a TPU; needs pip install -e '.[tpu]'), gpu-v100, gpu-a100-40g, "
                        "gpu-a100-80g, gpu-l4, gpu-rtx4090, gpu-h100, gpu-h200 (one NVIDIA card, "
                        "compiled without a GPU; needs pip install -e '.[cuda]')")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="where TPU and gpu-* plans are cached (default "
                        "$REVSNN_JAX_CACHE_DIR, else ~/.cache/revsnn-jax/tpu-plans)")
    parser.add_argument("--no-cache", action="store_true",
                        help="compile TPU and gpu-* plans afresh and store nothing")


def _target_name(text: str) -> str:
    return names_from(TARGET_NAMES, "target")(text)[0] if "," not in text else _one_target(text)


def _one_target(text: str) -> str:
    raise argparse.ArgumentTypeError(f"one target, got {text!r}; choose from "
                                     f"{', '.join(TARGET_NAMES)}")


def check_target(name: str) -> None:
    """A target this machine cannot compile for (no libtpu, no CUDA plugin, no GPU): a usage
    error, at once. For every target but ``gpu`` this process keeps to jax's CPU backend (never
    libtpu or the CUDA plugin: compile-only targets compile in the worker subprocess)."""
    from revsnn_jax import memory

    if name != "gpu":
        memory.keep_host_on_cpu()
    try:
        memory.check_available(name)
    except memory.TargetUnavailableError as err:
        raise UsageError(f"argument --target: {err}") from err


def print_plan(plan) -> None:
    """One progress line per compile."""
    how = "cached" if plan.cached else f"{plan.compile_seconds:.1f} s"
    what = ("refused by the compiler: does not fit the device" if plan.memory is None
            else f"peak {plan.memory.peak_bytes / 2**20:.1f} MiB")
    print(f"  compiled batch {plan.batch} for {plan.target} ({plan.device_kind}): {what} "
          f"({how})", flush=True)


def _check_model_kwargs(names: tuple[str, ...], model_kwargs: dict) -> None:
    """--widths/--blocks that a model's constructor rejects (an unknown keyword, or values it
    refuses such as stage lists of different lengths): a usage error."""
    from revsnn_jax.models import abstract_model

    for name in names:
        try:
            abstract_model(name, **model_kwargs)
        except (TypeError, ValueError) as err:
            flags = "/".join(f"--{k}" for k in model_kwargs)
            raise UsageError(f"argument {flags}: model {name} rejects "
                             f"{model_kwargs}: {err}") from err


def run(args: argparse.Namespace) -> int:
    from revsnn_jax import memory
    from revsnn_jax.memory import benchmark
    from revsnn_jax.models import get_info

    names, requested = args.models, args.memory_modes
    check_target(args.target)
    if args.time and memory.get_target(args.target).compile_only:
        raise UsageError(f"argument --time: runs the step, and target {args.target} only "
                         "compiles it (use --target cpu or gpu)")
    model_kwargs = {}
    if args.widths:
        model_kwargs["widths"] = args.widths
    if args.blocks:
        model_kwargs["blocks"] = args.blocks
    if model_kwargs:
        _check_model_kwargs(names, model_kwargs)

    rows = []
    for name in names:
        info = get_info(name)
        offered = MEMORY_MODES if info.reversible else PLAIN_MEMORY_MODES
        modes = requested or benchmark.default_memory_modes(name)
        for mode in modes:
            if mode not in offered:
                print(f"skipping {name} / {mode}: not offered by this model")
                continue
            try:
                row = benchmark.measure_training_step(
                    name, batch=args.batch, time_steps=args.time_steps,
                    image_size=args.image_size, num_classes=args.num_classes, memory_mode=mode,
                    time_it=args.time, timed_steps=args.timed_steps, model_kwargs=model_kwargs,
                    target=args.target, progress=print_plan, cache_dir=args.cache_dir,
                    use_cache=not args.no_cache)
            except memory.DoesNotFitError as err:
                raise UsageError(f"argument --batch: {name} / {mode}: {err} (the slope needs "
                                 f"batches {args.batch} and {2 * args.batch}; try a smaller "
                                 "--batch, or revsnn plan for the largest)") from err
            rows.append(row)
            print(f"{name} / {mode} on {row['target']} ({row['device_kind']}): "
                  f"{row['bytes_per_image'] / 2**20:.2f} MiB per image "
                  f"(compiled in {row['compile_seconds']:.1f} s)", flush=True)
            if args.json_path:
                with open(args.json_path, "w") as fh:
                    json.dump(rows, fh, indent=2)
    print()
    print(benchmark.format_table(rows))
    if args.plot and rows:
        benchmark.plot_memory(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0
