"""Layer 7, measurement: a model's training step compiled for a target, and what it costs.

* :mod:`~revsnn_jax.memory.compiled` -- XLA's compiled memory analysis of a step
  (:func:`compiled_memory`, :func:`per_example_memory`: the slope between batch ``B`` and
  ``2B``), and :func:`compile_step` for any target (this machine, or a chip compiled for without
  one), with a plan cache;
* :mod:`~revsnn_jax.memory.targets` -- the compile targets and their memory budgets;
* :mod:`~revsnn_jax.memory.worker` -- the compile worker subprocess (``python -m
  revsnn_jax.memory.worker``) that compiles for a chip this machine does not have;
* :mod:`~revsnn_jax.memory.benchmark` -- the training-step programs of the registered models
  and one row of measurements per model and memory mode (``revsnn memory``);
* :mod:`~revsnn_jax.memory.plan` -- the largest batch (or depth, or ``T``) that fits one chip
  (``revsnn plan``);
* :mod:`~revsnn_jax.memory.energy` -- synaptic operations and the energy estimate of a forward
  pass.

Imports ``steps``, ``models`` and below.
"""

from revsnn_jax.memory.compiled import (
    HBM_GIB,
    TARGETS,
    CompiledMemory,
    DoesNotFitError,
    PerExampleMemory,
    StepPlan,
    StepProgram,
    Target,
    TargetUnavailableError,
    analyse_compiled,
    check_available,
    compile_step,
    compiled_memory,
    default_cache_dir,
    device_peak_bytes,
    get_target,
    is_refusal,
    keep_host_on_cpu,
    per_example_memory,
)
from revsnn_jax.memory.targets import GPU_SPECS, GpuSpec, gpu_budget, gpu_target_config

__all__ = ["GPU_SPECS", "HBM_GIB", "TARGETS", "CompiledMemory", "DoesNotFitError", "GpuSpec",
           "PerExampleMemory", "StepPlan", "StepProgram", "Target", "TargetUnavailableError",
           "analyse_compiled", "check_available", "compile_step", "compiled_memory",
           "default_cache_dir", "device_peak_bytes", "get_target", "gpu_budget",
           "gpu_target_config", "is_refusal", "keep_host_on_cpu", "per_example_memory"]
