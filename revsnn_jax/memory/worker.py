"""The compile worker: ``python -m revsnn_jax.memory.worker`` (started by
:func:`revsnn_jax.memory.compile_step` for a compile-only target, a TPU generation or an NVIDIA
GPU; not meant to be run by hand).

Reads one job as JSON on stdin (``builder``, ``kwargs``, ``batches``, ``target``, ``cache_dir``,
``x64``, ``dump_dir``), describes the target's device with
:func:`jax.experimental.topologies.get_topology_desc` -- a TPU slice by its topology name (the
plan is for its first chip), a GPU by a ``GpuTargetConfig`` text proto
(:func:`revsnn_jax.memory.targets.gpu_target_config`) -- compiles the step at each batch for
that device with its compiler (libtpu; XLA's GPU compiler from the CUDA plugin) and writes one
JSON line per plan on stdout (``{"event": "plan", "plan": ...}``); on failure
``{"event": "error", "message": ...}`` and exit status 1. It expects ``JAX_PLATFORMS=cpu`` (set
by the caller), so the host backend is CPU and no TPU or GPU is looked for; for a GPU target
also ``JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1`` (the CUDA plugin would otherwise call ``cuInit`` as
it loads, and fail without a GPU) and ``XLA_FLAGS=--xla_gpu_autotune_level=0`` (autotuning
runs candidate kernels, which needs the device).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback


def _exit_with_parent() -> None:
    """End this worker when the process that started it is gone (killed, interrupted)."""
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def describe_device(target):
    """The compile-only device of ``target`` (a :class:`revsnn_jax.memory.Target`) and the
    platform to lower for."""
    from jax.experimental import topologies

    from revsnn_jax.memory import targets

    if target.gpu_spec is not None:
        topology = topologies.get_topology_desc(
            platform="cuda", topology_name="",
            target_config=targets.gpu_target_config(target.gpu_spec), topology=target.topology)
        return topology.devices[0], "cuda"
    topology = topologies.get_topology_desc(platform="tpu", topology_name=target.topology)
    return topology.devices[0], "tpu"


def main() -> int:
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    job = json.load(sys.stdin)
    try:
        import jax

        jax.config.update("jax_enable_x64", bool(job.get("x64", False)))

        from revsnn_jax.memory import compiled

        target = compiled.get_target(job["target"])
        device, platform = describe_device(target)
        cache = (compiled._PlanCache(job["cache_dir"], target) if job.get("cache_dir")
                 else None)
        fn, make_args = compiled.StepProgram(job["builder"], job.get("kwargs") or {}).build()
        for plan in compiled._compile_batches(fn, make_args, job["batches"], device,
                                              target.name, compiled._device_kind(device), cache,
                                              lowering_platforms=(platform,),
                                              dump_dir=job.get("dump_dir")):
            print(json.dumps({"event": "plan", "plan": plan.to_json()}), flush=True)
    except Exception as err:  # reported to the caller, which raises it
        traceback.print_exc()
        print(json.dumps({"event": "error", "message": f"{type(err).__name__}: {err}"}),
              flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
