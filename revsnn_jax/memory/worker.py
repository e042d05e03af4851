"""The TPU compile worker: ``python -m revsnn_jax.memory.worker`` (started by
:func:`revsnn_jax.memory.compile_step` for a TPU target; not meant to be run by hand).

Reads one job as JSON on stdin (``builder``, ``kwargs``, ``batches``, ``target``, ``cache_dir``,
``x64``, ``dump_dir``), describes the target's TPU slice with
:func:`jax.experimental.topologies.get_topology_desc`, compiles the step at each batch for its
first chip with the TPU compiler (libtpu) and writes one JSON line per plan on stdout
(``{"event": "plan", "plan": ...}``); on failure ``{"event": "error", "message": ...}`` and exit
status 1. It expects ``JAX_PLATFORMS=cpu`` (set by the caller), so the host backend is CPU and no
TPU is looked for.
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


def main() -> int:
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    job = json.load(sys.stdin)
    try:
        import jax

        jax.config.update("jax_enable_x64", bool(job.get("x64", False)))
        from jax.experimental import topologies

        from revsnn_jax.memory import compiled as memory

        target = memory.get_target(job["target"])
        topology = topologies.get_topology_desc(platform="tpu", topology_name=target.topology)
        device = topology.devices[0]
        cache = (memory._PlanCache(job["cache_dir"], target) if job.get("cache_dir") else None)
        fn, make_args = memory.StepProgram(job["builder"], job.get("kwargs") or {}).build()
        for plan in memory._compile_batches(fn, make_args, job["batches"], device, target.name,
                                            memory._device_kind(device), cache,
                                            lowering_platforms=("tpu",),
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
