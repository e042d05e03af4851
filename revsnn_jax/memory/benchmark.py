"""Training-memory (and optional speed) benchmark of registered models, one row per model x mode.

For each model and memory mode :func:`measure_training_step` compiles ONE full training step
(forward, backward, SGD-momentum update; :func:`revsnn_jax.steps.make_train_step`) at batch
``B`` and ``2B`` and reads XLA's memory plan (:mod:`revsnn_jax.memory`). Nothing large is
allocated: the model is built under :func:`flax.nnx.eval_shape` and every argument is a
:class:`jax.ShapeDtypeStruct`. Memory per image is the slope of the step's peak between ``B``
and ``2B`` (docs/memory.md): parameters, gradients and optimizer state drop out, so "does not grow
with depth" can be checked honestly; the intercept is reported as ``static_bytes``.

With ``time=True`` the model is materialised, random data of batch ``B`` is fed, and the
median wall time of several steps after compilation is reported (and, on GPU/TPU, the
allocator's measured peak replaces the compiled plan's peak in ``peak_bytes``).

Row fields (:data:`ROW_FIELDS`): ``model, params, batch, time_steps, image_size, num_classes,
memory_mode, bytes_per_image, peak_bytes, static_bytes, temp_bytes, argument_bytes,
output_bytes, flops, compile_seconds, step_seconds, device, target, device_kind``: ``target`` is
the :data:`revsnn_jax.memory.TARGETS` name the step was compiled for (``cpu``, ``gpu``,
``tpu-v5e``, ...), ``device_kind`` the compiled-for device's kind (``cpu``, ``TPU v5 lite``, ...),
``device`` ``platform:kind`` of that device (of this machine for ``cpu``/``gpu``).
``compile_seconds`` is lowering + compiling at ``B`` (a cached TPU plan reports the time it took
when it was compiled). ``temp/argument/output_bytes`` are
the compiled plan at batch ``B``; ``flops`` is XLA's ``cost_analysis()`` of that step, which
counts a ``lax.scan`` body once (compare FLOPs only between builds with the same loop structure).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from revsnn_jax import steps
from revsnn_jax.core.modes import PLAIN_MEMORY_MODES
from revsnn_jax.memory import compiled as memory
from revsnn_jax.models import abstract_model, count_params, create, get_info

__all__ = ["ROW_FIELDS", "default_memory_modes", "format_table", "measure_training_step",
           "model_depth", "plot_memory", "step_program", "training_step_program"]

ROW_FIELDS = ("model", "params", "batch", "time_steps", "image_size", "num_classes",
              "memory_mode", "bytes_per_image", "peak_bytes", "static_bytes", "temp_bytes",
              "argument_bytes", "output_bytes", "flops", "compile_seconds", "step_seconds",
              "device", "target", "device_kind")

MiB = 2 ** 20


def default_memory_modes(name: str) -> tuple[str, ...]:
    """The modes worth comparing for ``name``: reversible models against their plain twin
    (``reversible, none``), non-reversible ones against per-block remat (``none, checkpoint``)."""
    return ("reversible", "none") if get_info(name).reversible else PLAIN_MEMORY_MODES


def model_depth(name: str) -> int | None:
    """The depth in a model's name (``revsresnet37`` -> 37), ``None`` when it has none."""
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else None


def _input_shape(model: nnx.Module, batch: int, time_steps: int, image_size: int,
                 channels: int) -> tuple[int, ...]:
    if getattr(model, "event_input", False):
        return (time_steps, batch, image_size, image_size, channels)
    return (batch, image_size, image_size, channels)


def _optimizer() -> optax.GradientTransformation:
    return optax.sgd(0.1, momentum=0.9)


def training_step_program(name: str, *, time_steps: int, image_size: int, num_classes: int,
                          memory_mode: str | None = None,
                          model_kwargs: dict[str, Any] | None = None):
    """The :class:`revsnn_jax.memory.StepProgram` builder of a registered model's training step
    (forward, backward, SGD-momentum update; parameters, state and optimizer state donated).

    Returns ``(step, make_args)``; ``make_args(b)`` gives abstract arguments at batch ``b``.
    Built under :func:`flax.nnx.eval_shape`: nothing large is allocated.
    """
    info = get_info(name)
    kwargs = dict(model_kwargs or {}, num_classes=num_classes, time_steps=time_steps)
    if memory_mode is not None:
        kwargs["memory_mode"] = memory_mode
    model = abstract_model(name, **kwargs)
    fns, params, state = steps.split_model(model)
    opt = _optimizer()
    opt_state = jax.eval_shape(opt.init, params)
    step = jax.jit(steps.make_train_step(fns, opt), donate_argnums=(0, 1, 2))
    channels = info.input_shape[-1]

    def make_args(b: int) -> tuple[Any, ...]:
        x = jax.ShapeDtypeStruct(_input_shape(model, b, time_steps, image_size, channels),
                                 jnp.float32)
        y = jax.ShapeDtypeStruct((b,), jnp.int32)
        return params, state, opt_state, x, y

    return step, make_args


def step_program(name: str, *, time_steps: int | None = None, image_size: int | None = None,
                 num_classes: int | None = None, memory_mode: str | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> memory.StepProgram:
    """The training step of model ``name`` as a :class:`revsnn_jax.memory.StepProgram` (``None``
    arguments: the model's registered defaults), compilable for any target."""
    info = get_info(name)
    return memory.StepProgram("revsnn_jax.memory.benchmark:training_step_program", {
        "name": name, "time_steps": time_steps or info.default_time_steps,
        "image_size": image_size or info.input_shape[0],
        "num_classes": num_classes or info.default_num_classes,
        "memory_mode": memory_mode,
        "model_kwargs": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in (model_kwargs or {}).items()},
    })


def measure_training_step(
    name: str,
    *,
    batch: int = 32,
    time_steps: int | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    memory_mode: str | None = None,
    time_it: bool = False,
    timed_steps: int = 5,
    model_kwargs: dict[str, Any] | None = None,
    target: str = "cpu",
    progress: Any = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Compile one training step of model ``name`` at batch ``B`` and ``2B`` for ``target``
    (:func:`revsnn_jax.memory.compile_step`); return one row.

    ``None`` arguments take the model's registered defaults (``memory_mode``: the model's own
    default). ``model_kwargs`` go to the constructor (e.g. ``widths=``, ``blocks=``).
    ``time_it`` runs the step, so it needs a local target (``cpu``, ``gpu``), not a
    compile-only one (``tpu-*``, ``gpu-*``).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    spec = memory.get_target(target)
    if time_it and spec.compile_only:
        raise ValueError(f"time_it runs the step: target {target} only compiles it")
    program = step_program(name, time_steps=time_steps, image_size=image_size,
                           num_classes=num_classes, memory_mode=memory_mode,
                           model_kwargs=model_kwargs)
    kw = program.kwargs
    time_steps, image_size, num_classes = kw["time_steps"], kw["image_size"], kw["num_classes"]
    kwargs = dict(model_kwargs or {}, num_classes=num_classes, time_steps=time_steps)
    if memory_mode is not None:
        kwargs["memory_mode"] = memory_mode
    model = abstract_model(name, **kwargs)  # shapes only: the row's parameter count and mode
    memory_mode = getattr(model, "memory_mode", memory_mode)
    params = steps.split_model(model)[1]

    at_b, at_2b = memory.compile_step(program, (batch, 2 * batch), target, progress=progress,
                                      cache_dir=cache_dir, use_cache=use_cache)
    per = memory.PerExampleMemory(batch=batch, at_batch=at_b.memory,
                                  at_double_batch=at_2b.memory)

    peak = at_b.memory.peak_bytes
    step_seconds = None
    if time_it:
        step, make_args = program.build()
        step_seconds, device_peak = _time_steps(name, kwargs, step, make_args(batch),
                                                timed_steps)
        if device_peak is not None:
            peak = device_peak

    row = {
        "model": name,
        "params": count_params(params),
        "batch": batch,
        "time_steps": time_steps,
        "image_size": image_size,
        "num_classes": num_classes,
        "memory_mode": memory_mode,
        "bytes_per_image": per.bytes_per_example,
        "peak_bytes": peak,
        "static_bytes": per.static_bytes,
        "temp_bytes": at_b.memory.temp_bytes,
        "argument_bytes": at_b.memory.argument_bytes,
        "output_bytes": at_b.memory.output_bytes,
        "flops": at_b.memory.flops,
        "compile_seconds": at_b.compile_seconds,
        "step_seconds": step_seconds,
        "device": f"{spec.platform}:{at_b.device_kind}",
        "target": at_b.target,
        "device_kind": at_b.device_kind,
    }
    assert tuple(row) == ROW_FIELDS
    return row


def _time_steps(name: str, kwargs: dict[str, Any], step: Any, abstract_args: tuple[Any, ...],
                timed_steps: int) -> tuple[float, int | None]:
    """Materialise the model and a random batch; median seconds per step after compiling."""
    model = create(name, rngs=nnx.Rngs(0), **kwargs)
    fns, params, state = steps.split_model(model)
    del fns  # the jitted step was built from the abstract twin; graphs are identical
    opt_state = _optimizer().init(params)
    x_spec, y_spec = abstract_args[3], abstract_args[4]
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, x_spec.shape, jnp.float32)
    y = jax.random.randint(ky, y_spec.shape, 0, kwargs["num_classes"], jnp.int32)
    params, state, opt_state, metrics = step(params, state, opt_state, x, y)  # compile + warm
    jax.block_until_ready(metrics)
    times = []
    for _ in range(max(1, timed_steps)):
        start = time.perf_counter()
        params, state, opt_state, metrics = step(params, state, opt_state, x, y)
        jax.block_until_ready((params, metrics))
        times.append(time.perf_counter() - start)
    device_peak = None if jax.default_backend() == "cpu" else memory.device_peak_bytes()
    return statistics.median(times), device_peak


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A readable fixed-width table of benchmark rows (memory in MiB)."""
    header = (f"{'model':<14} {'mode':<10} {'target':<8} {'device kind':<12} {'params':>11} "
              f"{'MiB/image':>10} {'peak MiB':>10} {'static MiB':>10} {'GFLOP':>8} "
              f"{'compile s':>9} {'step s':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        flops = "-" if r["flops"] is None else f"{r['flops'] / 1e9:.1f}"
        step_s = "-" if r["step_seconds"] is None else f"{r['step_seconds']:.3f}"
        lines.append(
            f"{r['model']:<14} {r['memory_mode']:<10} {r.get('target', '-'):<8} "
            f"{r.get('device_kind', '-'):<12} {r['params']:>11,} "
            f"{r['bytes_per_image'] / MiB:>10.2f} {r['peak_bytes'] / MiB:>10.1f} "
            f"{r['static_bytes'] / MiB:>10.1f} {flops:>8} {r['compile_seconds']:>9.1f} "
            f"{step_s:>8}")
    return "\n".join(lines)


def plot_memory(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Memory per image (MiB) against depth, one line per family and memory mode (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        depth = model_depth(r["model"])
        if depth is None:
            continue
        family = get_info(r["model"]).family
        series.setdefault(f"{family} ({r['memory_mode']})", []).append(
            (depth, r["bytes_per_image"] / MiB))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        for d, m in points:
            ax.annotate(f"{m:.1f}", (d, m), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    first = rows[0] if rows else {}
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("training memory per image (MiB)")
    ax.set_title(f"Memory per image, T={first.get('time_steps')}, "
                 f"{first.get('image_size')}x{first.get('image_size')}, "
                 f"slope B={first.get('batch')}->{2 * first.get('batch', 0)}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
