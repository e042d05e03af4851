"""Where a training step is compiled for: the targets of :func:`revsnn_jax.memory.compile_step`
(``cpu``, ``gpu``, one chip of a TPU generation compiled by libtpu without a TPU, one NVIDIA GPU
compiled by XLA's GPU compiler without a GPU), the memory of each chip (``revsnn plan``'s
default budget) and where compiled plans are cached. :mod:`revsnn_jax.memory` re-exports every
name here.

A compile-only GPU is described to XLA by a ``GpuTargetConfig`` text proto
(:func:`gpu_target_config`) built from :data:`GPU_SPECS`: the facts of each card as NVIDIA
publishes them (datasheets and the CUDA programming guide's per-compute-capability limits).
What the compiler takes from them: the compute capability (which cuDNN/cuBLAS paths and fusions
exist), the number of SMs, threads, registers and shared memory per SM (launch shapes and
fusion limits), L2 size, clock and bandwidth (the cost model). The memory size is recorded but
does not limit the compile: XLA's GPU compiler plans a program of any size.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib

import jax

__all__ = ["GPU_CONTEXT_MARGIN_GIB", "GPU_MEM_FRACTION", "GPU_SPECS", "HBM_GIB", "TARGETS",
           "TPU_TOPOLOGIES", "GpuBudget", "GpuSpec", "Target", "TargetUnavailableError",
           "check_available", "default_cache_dir", "get_target", "gpu_budget",
           "gpu_target_config", "keep_host_on_cpu"]

#: HBM of one chip, GiB (Google Cloud's per-chip figures); ``revsnn plan``'s default budget.
HBM_GIB: dict[str, float] = {"tpu-v4": 32, "tpu-v5e": 16, "tpu-v5p": 95, "tpu-v6e": 32}

#: The TPU slice each target describes to the compiler; the plan is for its first chip.
TPU_TOPOLOGIES: dict[str, str] = {"tpu-v4": "v4:2x2x1", "tpu-v5e": "v5e:2x2",
                                  "tpu-v5p": "v5p:2x2x1", "tpu-v6e": "v6e:2x2"}




@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """One NVIDIA card as its vendor specifies it (the SXM variant where there are several).

    ``device_kind`` is the name the CUDA driver reports (jax's ``device.device_kind``);
    ``memory_gib`` the card's memory as NVIDIA states it (the driver reports a little less:
    ECC and reserved pages); ``bandwidth_gbs`` in 10^9 bytes per second; shared memory per SM
    and the per-block opt-in maximum in KiB; the per-compute-capability limits (1024 threads per
    block, 32 threads per warp, 64 Ki 32-bit registers per SM and per block, 48 KiB of static
    shared memory per block, grids of 2^31 - 1 x 65535 x 65535 blocks) are the same for all.
    """

    device_kind: str
    compute_capability: tuple[int, int]
    sm_count: int
    fp32_cores_per_sm: int
    boost_clock_ghz: float
    memory_gib: float
    bandwidth_gbs: float
    l2_cache_mib: float
    shared_memory_per_sm_kib: int
    shared_memory_per_block_optin_kib: int
    threads_per_sm: int


#: The compile-only GPU targets: NVIDIA's published figures per card.
GPU_SPECS: dict[str, GpuSpec] = {
    # Volta GV100, SXM2 16 GB: 80 SMs x 64 FP32 cores, 1530 MHz boost, HBM2 900 GB/s, 6 MB L2.
    "gpu-v100": GpuSpec("Tesla V100-SXM2-16GB", (7, 0), 80, 64, 1.53, 16, 900, 6, 96, 96, 2048),
    # Ampere GA100, SXM4: 108 SMs x 64, 1410 MHz, 40 MB L2; HBM2 1555 GB/s (40 GB),
    # HBM2e 2039 GB/s (80 GB); 164 KB shared memory per SM, 163 KB per block.
    "gpu-a100-40g": GpuSpec("NVIDIA A100-SXM4-40GB", (8, 0), 108, 64, 1.41, 40, 1555, 40,
                            164, 163, 2048),
    "gpu-a100-80g": GpuSpec("NVIDIA A100-SXM4-80GB", (8, 0), 108, 64, 1.41, 80, 2039, 40,
                            164, 163, 2048),
    # Ada AD104 (L4): 58 SMs x 128, 2040 MHz, 24 GB GDDR6 300 GB/s, 48 MB L2.
    "gpu-l4": GpuSpec("NVIDIA L4", (8, 9), 58, 128, 2.04, 24, 300, 48, 100, 99, 1536),
    # Ada AD102 (GeForce RTX 4090): 128 SMs x 128, 2520 MHz, 24 GB GDDR6X 1008 GB/s, 72 MB L2.
    "gpu-rtx4090": GpuSpec("NVIDIA GeForce RTX 4090", (8, 9), 128, 128, 2.52, 24, 1008, 72,
                           100, 99, 1536),
    # Hopper GH100, SXM5: 132 SMs x 128, 1980 MHz, 50 MB L2, 228 KB shared memory per SM;
    # H100 80 GB HBM3 3.35 TB/s, H200 141 GB HBM3e 4.8 TB/s.
    "gpu-h100": GpuSpec("NVIDIA H100 80GB HBM3", (9, 0), 132, 128, 1.98, 80, 3350, 50,
                        228, 227, 2048),
    "gpu-h200": GpuSpec("NVIDIA H200", (9, 0), 132, 128, 1.98, 141, 4800, 50, 228, 227, 2048),
}

#: JAX's default share of a GPU's memory that XLA preallocates for itself
#: (``XLA_PYTHON_CLIENT_MEM_FRACTION``); the rest is left to the CUDA context and libraries.
GPU_MEM_FRACTION = 0.75

#: Left out of a GPU budget for what the deviceless plan does not count (docs/gpu.md): the
#: workspaces of the convolution algorithms the autotuner picks on the real card (the plan has
#: the untuned defaults, whose workspace is 0), and the allocator's fragmentation.
GPU_CONTEXT_MARGIN_GIB = 1.0


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a step is compiled for: ``platform`` ``cpu``/``gpu`` (this machine's device),
    ``tpu`` (one chip of ``topology``, compiled without a TPU) or ``gpu`` with ``gpu_spec``
    (one NVIDIA card, compiled without a GPU)."""

    name: str
    platform: str
    topology: str | None = None
    hbm_gib: float | None = None
    gpu_spec: GpuSpec | None = None

    @property
    def hbm_bytes(self) -> int | None:
        return None if self.hbm_gib is None else int(self.hbm_gib * 2 ** 30)

    @property
    def compile_only(self) -> bool:
        """Compiled for a chip this machine need not have (in the worker subprocess); such a
        step can be planned, not run."""
        return self.platform == "tpu" or self.gpu_spec is not None


TARGETS: dict[str, Target] = {
    "cpu": Target("cpu", "cpu"),
    "gpu": Target("gpu", "gpu"),
    **{name: Target(name, "tpu", TPU_TOPOLOGIES[name], HBM_GIB[name]) for name in HBM_GIB},
    **{name: Target(name, "gpu", "1x1x1", spec.memory_gib, spec)
       for name, spec in GPU_SPECS.items()},
}


class TargetUnavailableError(RuntimeError):
    """The target cannot be compiled for on this machine; the message says what to install."""


def get_target(name: str) -> Target:
    """The :data:`TARGETS` entry ``name`` (``ValueError`` naming the choices otherwise)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}") from None


def check_available(target: str | Target) -> Target:
    """Fail at once (:class:`TargetUnavailableError`) when ``target`` cannot be compiled for here.

    A TPU target needs libtpu to be installed, a compile-only GPU target jax's CUDA plugin
    (``jax-cuda12-plugin``, the ``cuda`` extra); both are looked up without importing them.
    """
    target = get_target(target) if isinstance(target, str) else target
    if target.gpu_spec is not None:
        if importlib.util.find_spec("jax_cuda12_plugin") is None:
            raise TargetUnavailableError(
                f"target {target.name} needs XLA's GPU compiler (jax-cuda12-plugin), which is "
                f"not installed; install the cuda extra: pip install -e \".[cuda]\" (or pip "
                f"install \"jax[cuda12]=={jax.__version__}\"; no GPU needed)")
        return target
    if target.platform == "tpu" and importlib.util.find_spec("libtpu") is None:
        raise TargetUnavailableError(
            f"target {target.name} needs the TPU compiler (libtpu), which is not installed; "
            f"install the tpu extra: pip install -e \".[tpu]\" (or pip install "
            f"\"jax[tpu]=={jax.__version__}\", the libtpu matching this jax)")
    if target.platform == "gpu" and target.gpu_spec is None:
        try:
            jax.devices("gpu")
        except RuntimeError:
            raise TargetUnavailableError(
                "target gpu compiles for this machine's GPU, and jax sees none; on a machine "
                "with an NVIDIA GPU install the cuda extra: pip install -e \".[cuda]\"") from None
    return target


def keep_host_on_cpu() -> None:
    """Select jax's CPU backend for this process (unless ``JAX_PLATFORMS`` is set), before any
    backend starts: for a ``cpu``, TPU or compile-only GPU target nothing else is needed here,
    and jax would otherwise initialise every installed plugin, libtpu and the CUDA plugin
    included (seconds, and error lines on a machine without a TPU or GPU). No effect once jax's backends have started."""
    if "JAX_PLATFORMS" not in os.environ:
        jax.config.update("jax_platforms", "cpu")


def gpu_target_config(spec: GpuSpec) -> str:
    """The ``GpuTargetConfig`` text proto that describes ``spec`` to XLA's GPU compiler
    (:func:`jax.experimental.topologies.get_topology_desc` ``target_config``). The cuDNN and
    CUDA runtime versions are those of the installed NVIDIA wheels (the libraries a run on the
    card would load), else cuDNN 9.8 / CUDA 12.8."""
    kib, mib, gib = 2 ** 10, 2 ** 20, 2 ** 30
    dnn = _wheel_version("nvidia-cudnn-cu12", (9, 8))
    runtime = _wheel_version("nvidia-cuda-runtime-cu12", (12, 8))
    major, minor = spec.compute_capability
    return "\n".join([
        "gpu_device_info {",
        "  threads_per_block_limit: 1024",
        "  threads_per_warp: 32",
        f"  shared_memory_per_block: {48 * kib}",
        f"  shared_memory_per_core: {spec.shared_memory_per_sm_kib * kib}",
        f"  threads_per_core_limit: {spec.threads_per_sm}",
        f"  core_count: {spec.sm_count}",
        f"  fpus_per_core: {spec.fp32_cores_per_sm}",
        "  block_dim_limit_x: 2147483647",
        "  block_dim_limit_y: 65535",
        "  block_dim_limit_z: 65535",
        f"  memory_bandwidth: {int(spec.bandwidth_gbs * 1e9)}",
        f"  l2_cache_size: {int(spec.l2_cache_mib * mib)}",
        f"  clock_rate_ghz: {spec.boost_clock_ghz}",
        f"  device_memory_size: {int(spec.memory_gib * gib)}",
        f"  shared_memory_per_block_optin: {spec.shared_memory_per_block_optin_kib * kib}",
        f"  cuda_compute_capability {{ major: {major} minor: {minor} }}",
        "  registers_per_core_limit: 65536",
        "  registers_per_block_limit: 65536",
        "}",
        'platform_name: "CUDA"',
        f"dnn_version_info {{ major: {dnn[0]} minor: {dnn[1]} }}",
        f"runtime_version {{ major: {runtime[0]} minor: {runtime[1]} }}",
        f'device_description_str: "{spec.device_kind}"',
        ""])


def _wheel_version(dist: str, default: tuple[int, int]) -> tuple[int, int]:
    from importlib import metadata

    try:
        parts = metadata.version(dist).split(".")
        return int(parts[0]), int(parts[1])
    except (metadata.PackageNotFoundError, ValueError, IndexError):
        return default


@dataclasses.dataclass(frozen=True)
class GpuBudget:
    """What a JAX program may use of one GPU: ``fraction`` of ``memory_gib`` (XLA's
    preallocated pool) less ``margin_gib``; ``source`` names where the fraction came from."""

    memory_gib: float
    fraction: float
    margin_gib: float
    source: str

    @property
    def budget_bytes(self) -> int:
        return int((self.fraction * self.memory_gib - self.margin_gib) * 2 ** 30)

    def describe(self) -> str:
        return (f"{self.fraction:g} ({self.source}) x {self.memory_gib:g} GiB - "
                f"{self.margin_gib:g} GiB margin (autotuned workspaces, fragmentation)")


def gpu_budget(target: str | Target, mem_fraction: float | None = None,
               memory_gib: float | None = None,
               margin_gib: float = GPU_CONTEXT_MARGIN_GIB) -> GpuBudget:
    """The memory budget of a compile-only GPU target:
    ``budget = f * M - margin``, with ``M`` the card's memory (:data:`GPU_SPECS`, or
    ``memory_gib``) and ``f`` ``mem_fraction``, else ``$XLA_PYTHON_CLIENT_MEM_FRACTION``, else
    JAX's default 0.75 (:data:`GPU_MEM_FRACTION`). The CUDA context (a few hundred MiB) lives in
    the ``1 - f`` that XLA leaves alone."""
    target = get_target(target) if isinstance(target, str) else target
    if target.gpu_spec is None:
        raise ValueError(f"target {target.name} is not a compile-only GPU")
    source = "--mem-fraction"
    if mem_fraction is None:
        env = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")
        try:
            mem_fraction, source = float(env), "XLA_PYTHON_CLIENT_MEM_FRACTION"
        except (TypeError, ValueError):
            mem_fraction, source = GPU_MEM_FRACTION, "JAX's default preallocation"
    if not 0 < mem_fraction <= 1:
        raise ValueError(f"memory fraction must be in (0, 1], got {mem_fraction}")
    budget = GpuBudget(memory_gib if memory_gib is not None else target.gpu_spec.memory_gib,
                       mem_fraction, margin_gib, source)
    if budget.budget_bytes <= 0:
        raise ValueError(f"no memory left for {target.name}: {budget.describe()}")
    return budget


def default_cache_dir() -> pathlib.Path:
    """Where compiled plans of compile-only targets (TPU, GPU) are cached:
    ``$REVSNN_JAX_CACHE_DIR``, else ``~/.cache/revsnn-jax/tpu-plans`` (the name it had when it
    held TPU plans only)."""
    env = os.environ.get("REVSNN_JAX_CACHE_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "revsnn-jax" / "tpu-plans"
