"""Measure the memory of a compiled JAX computation, and the memory one more example costs.

On every backend the compiled executable's :meth:`memory_analysis` gives XLA's static plan:

* ``temp_bytes`` -- scratch buffers live during the computation (activations kept for the
  backward pass live here);
* ``argument_bytes`` / ``output_bytes`` -- inputs and results (parameters, optimizer state, batch);
* ``alias_bytes`` -- outputs that reuse (donated) input buffers, counted once.

``peak_bytes = temp + argument + output - alias`` is the planned peak. Compiling is enough:
nothing is allocated at full size. On GPU/TPU the allocator's measured peak
(``device.memory_stats()['peak_bytes_in_use']``) can be read after running the step
(:func:`device_peak_bytes`).

Memory per example (docs/memory.md) is the slope of the peak between batch ``B`` and ``2B``:
parameters, gradients and optimizer state do not grow with the batch, so they drop out, and
"does not grow with depth" can be tested honestly. The intercept is the static memory.

Targets (:data:`TARGETS`): the plan depends on the compiler, so :func:`compile_step`, the one
function through which the CLI (``revsnn memory``, ``revsnn plan``), the benchmarks and
:meth:`revsnn_jax.training.Trainer.memory_per_image` compile a step, takes a ``target``:

* ``cpu`` -- XLA:CPU on this machine (the default of ``revsnn memory``);
* ``gpu`` -- the local GPU (needs one, and jax's CUDA build: ``pip install -e ".[cuda]"``);
* ``tpu-v4``, ``tpu-v5e``, ``tpu-v5p``, ``tpu-v6e`` -- one chip of that TPU generation,
  compiled by the TPU compiler (libtpu) for a described TPU slice
  (:func:`jax.experimental.topologies.get_topology_desc`) on a machine WITHOUT a TPU. This needs
  the ``tpu`` extra (``pip install -e ".[tpu]"``: ``jax[tpu]``, a libtpu matching the installed
  jax). The compile runs in a subprocess (``python -m revsnn_jax.memory.worker``) with
  ``JAX_PLATFORMS=cpu``, so this process never imports or initialises libtpu; the step is
  described there by a :class:`StepProgram` (an importable builder and JSON arguments).
* ``gpu-v100``, ``gpu-a100-40g``, ``gpu-a100-80g``, ``gpu-l4``, ``gpu-rtx4090``, ``gpu-h100``,
  ``gpu-h200`` -- one NVIDIA card, compiled by XLA's GPU compiler (the CUDA plugin:
  ``pip install -e ".[cuda]"``) for a device described by its published facts
  (:data:`GPU_SPECS`, a ``GpuTargetConfig``) on a machine WITHOUT a GPU, in the same worker
  subprocess as the TPU targets (with ``JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1`` and
  ``XLA_FLAGS=--xla_gpu_autotune_level=0``: no autotuning, which needs the card). What such a
  plan leaves out (the autotuned algorithms' workspaces, the CUDA context, fragmentation):
  docs/gpu.md.

Plans of compile-only targets (TPU, GPU) are cached on disk, keyed by the SHA-256 of the lowered
program (StableHLO text), the target (a GPU's target config and XLA flags too) and the compiler
versions (jax, jaxlib, libtpu, the CUDA plugin, cuDNN): a plan compiled once is read back in
milliseconds.
JAX's own persistent compilation cache cannot serve here: it writes entries for these
compile-only TPU executables but cannot load them back (jax 0.10.2: "PjRtCompiler must be
constructed with a Client to call DeserializeLoadedExecutable"), so the memory plan itself
(``memory_analysis()`` and FLOPs) is what is cached. Directory: ``$REVSNN_JAX_CACHE_DIR``, else
``~/.cache/revsnn-jax/tpu-plans`` (``revsnn memory/plan --cache-dir``; ``--no-cache`` compiles
afresh).

HBM per chip (:data:`HBM_GIB`, used by ``revsnn plan``): v4 32 GiB, v5e 16 GiB, v5p 95 GiB,
v6e 32 GiB (Google Cloud's published per-chip figures).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from revsnn_jax.memory.targets import (
    HBM_GIB,
    TARGETS,
    Target,
    TargetUnavailableError,
    check_available,
    default_cache_dir,
    get_target,
    gpu_target_config,
    keep_host_on_cpu,
)

__all__ = ["HBM_GIB", "TARGETS", "CompiledMemory", "DoesNotFitError", "PerExampleMemory",
           "StepPlan", "StepProgram", "Target", "TargetUnavailableError", "analyse_compiled",
           "check_available", "compile_step", "compiled_memory", "default_cache_dir",
           "device_peak_bytes", "get_target", "is_refusal", "keep_host_on_cpu",
           "per_example_memory"]


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """XLA's memory plan of one compiled computation, in bytes."""

    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    flops: float | None

    @property
    def peak_bytes(self) -> int:
        return self.temp_bytes + self.argument_bytes + self.output_bytes - self.alias_bytes


def _cost_flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # pragma: no cover - a backend without cost analysis
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return None if flops is None else float(flops)


def compiled_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CompiledMemory:
    """Compile ``fn(*args, **kwargs)`` (jitting it if needed) and read XLA's memory plan.

    ``args`` may be arrays or :class:`jax.ShapeDtypeStruct`, so nothing large is allocated.
    ``flops`` is XLA's ``cost_analysis()`` count; note that it counts a loop body (``lax.scan``)
    once, not once per iteration.
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return analyse_compiled(jitted.lower(*args, **kwargs).compile())


def analyse_compiled(compiled: Any) -> CompiledMemory:
    """XLA's memory plan and FLOP count of an already compiled executable
    (``jax.jit(fn).lower(...).compile()``), e.g. one that is also run and timed."""
    analysis = compiled.memory_analysis()
    if analysis is None:  # pragma: no cover - backend without memory analysis
        raise RuntimeError(
            f"the {jax.default_backend()} backend gives no compiled memory analysis"
        )
    return CompiledMemory(
        temp_bytes=int(analysis.temp_size_in_bytes),
        argument_bytes=int(analysis.argument_size_in_bytes),
        output_bytes=int(analysis.output_size_in_bytes),
        alias_bytes=int(analysis.alias_size_in_bytes),
        flops=_cost_flops(compiled),
    )


@dataclasses.dataclass(frozen=True)
class PerExampleMemory:
    """Memory of a step at batch ``B`` and ``2B``, and the per-example slope between them."""

    batch: int
    at_batch: CompiledMemory
    at_double_batch: CompiledMemory

    @property
    def bytes_per_example(self) -> float:
        """Peak memory one more example costs (activation memory)."""
        return (self.at_double_batch.peak_bytes - self.at_batch.peak_bytes) / self.batch

    @property
    def static_bytes(self) -> float:
        """The intercept: memory at batch 0 (parameters, gradients, optimizer state)."""
        return self.at_batch.peak_bytes - self.bytes_per_example * self.batch

    @property
    def temp_bytes_per_example(self) -> float:
        return (self.at_double_batch.temp_bytes - self.at_batch.temp_bytes) / self.batch


def per_example_memory(make_args: Callable[[int], tuple[Any, ...]],
                       fn: Callable[..., Any], batch: int,
                       target: str | None = None) -> PerExampleMemory:
    """Compile ``fn(*make_args(batch))`` and ``fn(*make_args(2 * batch))``; return both plans.

    ``make_args(b)`` returns the arguments at batch ``b`` (arrays or ``ShapeDtypeStruct``).
    ``target``: ``None`` (jax's default device) or a local target (``cpu``/``gpu``); a TPU
    target needs an importable builder (:class:`StepProgram`, :func:`compile_step`).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    at_b, at_2b = compile_step(StepProgram(lambda: (fn, make_args)), (batch, 2 * batch),
                               target)
    return PerExampleMemory(batch=batch, at_batch=at_b.memory, at_double_batch=at_2b.memory)


def device_peak_bytes(device: jax.Device | None = None) -> int | None:
    """The allocator's peak bytes in use on ``device`` (GPU/TPU); ``None`` where not reported."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # pragma: no cover - CPU backends may raise
        return None
    if not stats:
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


# --------------------------------------------------------------------------- compiling a step
@dataclasses.dataclass(frozen=True)
class StepProgram:
    """A step to compile, as ``builder(**kwargs) -> (fn, make_args)``.

    ``fn`` is the step (jitted with its donation, or a plain function, then jitted);
    ``make_args(batch)`` returns its arguments at that batch (``ShapeDtypeStruct`` or arrays,
    without sharding: :func:`compile_step` places them on the target's device). ``builder`` is
    a callable (compiled in this process only) or ``"module:function"``, which TPU targets need:
    their compile runs in a subprocess that imports the builder and calls it with ``kwargs``
    (JSON values).
    """

    builder: str | Callable[..., tuple[Callable[..., Any], Callable[[int], tuple[Any, ...]]]]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def build(self) -> tuple[Any, Callable[[int], tuple[Any, ...]]]:
        builder = self.builder
        if isinstance(builder, str):
            module, _, attr = builder.partition(":")
            builder = getattr(importlib.import_module(module), attr)
        fn, make_args = builder(**self.kwargs)
        return (fn if hasattr(fn, "trace") else jax.jit(fn)), make_args


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """The compiled plan of a step at one batch for one target.

    ``refused``: the compiler's message when it refused the program because it does not fit the
    device's memory (a TPU compiler's ``RESOURCE_EXHAUSTED``); ``memory`` is then ``None``.
    """

    batch: int
    memory: CompiledMemory | None
    target: str
    device_kind: str
    compile_seconds: float  # lowering + compiling (for a cached plan: when it was compiled)
    cached: bool = False
    refused: str | None = None

    @property
    def fits_device(self) -> bool:
        """False when the compiler refused the program as larger than the device's memory."""
        return self.refused is None

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch,
                "memory": None if self.memory is None else dataclasses.asdict(self.memory),
                "target": self.target, "device_kind": self.device_kind,
                "compile_seconds": self.compile_seconds, "cached": self.cached,
                "refused": self.refused}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepPlan:
        mem = data["memory"]
        return cls(batch=int(data["batch"]), memory=None if mem is None else CompiledMemory(**mem),
                   target=data["target"], device_kind=data["device_kind"],
                   compile_seconds=float(data["compile_seconds"]), cached=bool(data["cached"]),
                   refused=data.get("refused"))


class DoesNotFitError(RuntimeError):
    """The compiler refused the step at some batch: it needs more memory than the device has.
    ``plans`` holds every batch's plan (the refused ones with ``memory=None``)."""

    def __init__(self, message: str, plans: Sequence[StepPlan]) -> None:
        super().__init__(message)
        self.plans = list(plans)


#: What a compiler's error says when a program does not fit the device's memory (libtpu:
#: "RESOURCE_EXHAUSTED: ... Ran out of memory in memory space hbm ...").
_REFUSAL_MARK = "RESOURCE_EXHAUSTED"


def is_refusal(error: BaseException) -> bool:
    """Whether a compile error is the compiler refusing a program too large for the device."""
    return _REFUSAL_MARK in str(error)


def compile_step(program: StepProgram, batches: Sequence[int], target: str | None = "cpu", *,
                 progress: Callable[[StepPlan], None] | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True, allow_refusal: bool = False,
                 dump_dir: str | os.PathLike | None = None) -> list[StepPlan]:
    """THE way a step is compiled for its memory plan: ``program`` at each of ``batches``, for
    ``target`` (a :data:`TARGETS` name, or ``None`` for jax's default device as it is).

    ``cpu``/``gpu`` compile here. Compile-only targets (TPU, ``gpu-*``) compile in a worker
    subprocess (module docstring) whose plans are cached in ``cache_dir`` (default :func:`default_cache_dir`; ``use_cache=False``
    compiles afresh and stores nothing). ``progress`` is called with each plan as it comes.
    Raises :class:`TargetUnavailableError` at once when the target cannot be compiled for here.

    A compiler that refuses the program at a batch because it does not fit the device's memory
    (:func:`is_refusal`) gives that batch a plan with ``refused`` set and ``memory=None``; the
    other batches are compiled as usual. With ``allow_refusal=False`` (default) such a plan
    raises :class:`DoesNotFitError` once every batch is compiled (it carries all the plans);
    with ``True`` the refused plans are returned (``revsnn plan`` counts them as "does not fit").

    ``dump_dir``: also write the compiler's own account of each batch's program to
    ``dump_dir/batch<B>/`` (XLA's ``xla_dump_to``: the optimised HLO with its layouts, the buffer
    assignment, the live buffers at the peak, a memory-usage report); such a compile skips the
    cache's read (a cached plan has no dump).
    """
    plans = _compile_step(program, batches, target, progress, cache_dir, use_cache, dump_dir)
    refused = [p for p in plans if not p.fits_device]
    if refused and not allow_refusal:
        first = refused[0]
        raise DoesNotFitError(
            f"batch {', '.join(str(p.batch) for p in refused)} does not fit {first.target} "
            f"({first.device_kind}): the compiler refused it: {_first_line(first.refused)}",
            plans)
    return plans


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def _compile_step(program: StepProgram, batches: Sequence[int], target: str | None,
                  progress: Callable[[StepPlan], None] | None,
                  cache_dir: str | os.PathLike | None, use_cache: bool,
                  dump_dir: str | os.PathLike | None = None) -> list[StepPlan]:
    batches = [int(b) for b in batches]
    if any(b < 1 for b in batches):
        raise ValueError(f"batches must be >= 1, got {batches}")
    if target is None:
        fn, make_args = program.build()
        device = jax.devices()[0]
        return list(_compile_batches(fn, make_args, batches, None, device.platform,
                                     _device_kind(device), None, progress=progress,
                                     dump_dir=dump_dir))
    spec = check_available(target)
    if spec.compile_only:
        directory = (cache_dir or default_cache_dir()) if use_cache else None
        return _compile_in_worker(program, batches, spec, directory, progress, dump_dir)
    fn, make_args = program.build()
    device = jax.devices(spec.platform)[0]
    # A target that is jax's default platform compiles exactly as jax's default device does.
    place = None if device == jax.devices()[0] else device
    return list(_compile_batches(fn, make_args, batches, place, spec.name, _device_kind(device),
                                 None, progress=progress, dump_dir=dump_dir))


def _device_kind(device: Any) -> str:
    return str(getattr(device, "device_kind", "") or device.platform)


def _placed(args: Any, device: Any) -> Any:
    """Every array-like leaf of ``args`` as a ``ShapeDtypeStruct`` on ``device``."""
    sharding = jax.sharding.SingleDeviceSharding(device)

    def place(x: Any) -> Any:
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding,
                                    weak_type=bool(getattr(x, "weak_type", False)))

    return jax.tree_util.tree_map(place, args)


def _compile_batches(fn: Any, make_args: Callable[[int], tuple[Any, ...]],
                     batches: Sequence[int], device: Any, target: str, device_kind: str,
                     cache: _PlanCache | None, *, lowering_platforms: tuple[str, ...] | None = None,
                     progress: Callable[[StepPlan], None] | None = None,
                     dump_dir: str | os.PathLike | None = None):
    """Compile ``fn`` at each batch (arguments placed on ``device`` unless ``None``); yields plans."""
    for batch in batches:
        args = make_args(batch)
        if device is not None:
            args = _placed(args, device)
        start = time.perf_counter()
        traced = fn.trace(*args)
        lowered = (traced.lower(lowering_platforms=lowering_platforms) if lowering_platforms
                   else traced.lower())
        key = cache.key(lowered) if cache is not None else None
        hit = cache.get(key) if key is not None and dump_dir is None else None
        if hit is not None:
            plan = dataclasses.replace(hit, batch=batch, cached=True)
        else:
            mem, refused = None, None
            try:
                options = (None if dump_dir is None else
                           {"xla_dump_to": str(pathlib.Path(dump_dir) / f"batch{batch}")})
                mem = analyse_compiled(lowered.compile(compiler_options=options))
            except Exception as err:  # the compiler's refusal is an answer, not a failure
                if not is_refusal(err):
                    raise
                refused = f"{type(err).__name__}: {err}"[:2000]  # its head says why
            plan = StepPlan(batch=batch, memory=mem, target=target, device_kind=device_kind,
                            compile_seconds=time.perf_counter() - start, refused=refused)
            if key is not None:
                cache.put(key, plan)
        if progress is not None:
            progress(plan)
        yield plan


class _PlanCache:
    """Memory plans on disk, one JSON file per (program, target, compiler versions)."""

    def __init__(self, directory: str | os.PathLike, target: Target) -> None:
        self.directory = pathlib.Path(directory)
        salt = [target.name, target.topology, _compiler_versions(),
                os.environ.get("LIBTPU_INIT_ARGS", "")]
        if target.gpu_spec is not None:
            salt += [gpu_target_config(target.gpu_spec), _GPU_XLA_FLAGS]
        self.salt = json.dumps(salt)

    def key(self, lowered: Any) -> str:
        import hashlib

        digest = hashlib.sha256(self.salt.encode())
        digest.update(lowered.as_text().encode())
        return digest.hexdigest()

    def get(self, key: str) -> StepPlan | None:
        path = self.directory / f"{key}.json"
        try:
            return StepPlan.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # a torn or foreign file: compile again
            return None

    def put(self, key: str, plan: StepPlan) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(plan.to_json()))
        os.replace(tmp, self.directory / f"{key}.json")


def _compiler_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "jax-cuda12-pjrt",
                 "nvidia-cudnn-cu12"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = ""
    return versions


#: XLA flags of the GPU worker: no autotuning (it runs candidate kernels on the device), so each
#: convolution and GEMM gets the compiler's default algorithm.
_GPU_XLA_FLAGS = "--xla_gpu_autotune_level=0"


def _compile_in_worker(program: StepProgram, batches: Sequence[int], target: Target,
                       cache_dir: str | os.PathLike | None,
                       progress: Callable[[StepPlan], None] | None,
                       dump_dir: str | os.PathLike | None = None) -> list[StepPlan]:
    """Run ``python -m revsnn_jax.memory.worker`` with ``JAX_PLATFORMS=cpu``: the job as JSON on
    its stdin, one JSON line per plan back on its stdout (its stderr, the compilers' chatter, is
    kept and shown only if it fails)."""
    import tempfile

    if not isinstance(program.builder, str):
        raise ValueError(f"target {target.name} compiles in a subprocess: give the step's builder "
                         f"as 'module:function' (StepProgram), not {program.builder!r}")
    job = {"builder": program.builder, "kwargs": dict(program.kwargs), "batches": list(batches),
           "target": target.name, "cache_dir": None if cache_dir is None else str(cache_dir),
           "x64": bool(jax.config.jax_enable_x64),
           "dump_dir": None if dump_dir is None else str(pathlib.Path(dump_dir).resolve())}
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # host CPU/GPU flags
    # ALLOW_MULTIPLE_LIBTPU_LOAD: libtpu may already be loaded by this process (jax initialises
    # every installed plugin unless JAX_PLATFORMS says otherwise) and would hold its lock file.
    env.update(JAX_PLATFORMS="cpu", ALLOW_MULTIPLE_LIBTPU_LOAD="1", TPU_SKIP_MDS_QUERY="1",
               TPU_WORKER_HOSTNAMES="localhost",
               PYTHONPATH=os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p))
    if target.gpu_spec is not None:  # no cuInit at the plugin's start-up; no autotuning
        env.update(JAX_SKIP_CUDA_CONSTRAINTS_CHECK="1", XLA_FLAGS=_GPU_XLA_FLAGS)
    plans: list[StepPlan] = []
    error = None
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "revsnn_jax.memory.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:  # something else printed to stdout: not ours
                continue
            if message.get("event") == "plan":
                plan = StepPlan.from_json(message["plan"])
                plans.append(plan)
                if progress is not None:
                    progress(plan)
            elif message.get("event") == "error":
                error = message["message"]
        code = proc.wait()
        stderr.seek(0)
        log = stderr.read()
    if code != 0 or error is not None or len(plans) != len(batches):
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise RuntimeError(f"compiling for {target.name} failed (exit status {code}): "
                           f"{error or 'no error message'}\n{tail}")
    return plans
