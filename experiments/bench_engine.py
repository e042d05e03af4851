"""Benchmark the reversible engine: memory and step time of the three memory modes vs depth.

A stage of ``N`` reversible blocks at a CIFAR-like shape (T=4 time steps, batch 8, 16x16,
64 channels: two halves of 32) whose F and G are RevSResNet's spiking branch,
``IF -> conv3x3 -> BN -> IF -> conv3x3 -> BN`` (IF neuron with atan(2) surrogate, BatchNorm on
batch statistics with running statistics in the state), written with plain ``jax.lax`` ops.
One training step is forward, backward and an SGD update. For every memory mode
(``reversible``, ``checkpoint``, ``none``) and depth (2, 4, 8, 16, 32 blocks) it reports

* memory, from XLA's compiled plan (``revsnn_jax.memory``; docs/memory.md): the activation memory
  one more example costs (the slope of the peak between batch B and 2B), the peak and temp
  bytes at batch B, and the static intercept;
* FLOPs from ``cost_analysis()``. XLA counts a loop (``lax.scan``) body once, not once per
  iteration; the three modes share the loop structure, so the ratio between modes is per block
  and the absolute counts are *not* per-step totals;
* compile time, and the median wall time of several jitted steps after one warm-up step;
* the bfloat16 round-trip drift of the stage over depth, all-bf16 and with float32 coupling
  streams (bf16 parameters and F/G compute).

Usage::

    PYTHONPATH=. python experiments/bench_engine.py             # full run, ~10 min on 2 cores
    PYTHONPATH=. python experiments/bench_engine.py --quick     # depths 2 and 8, fewer repeats
    ... --json experiments/results/engine.json                  # where results go (default)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from revsnn_jax.memory import PerExampleMemory, analyse_compiled
from revsnn_jax.reversible import MEMORY_MODES, reversible_stage, reversible_stage_inverse
from revsnn_jax.reversible.demo import init_stage, make_train_step, spiking_branch

MIB = 2**20


# --------------------------------------------------------------------------- measurements
def measure(mode, depth, args, repeats):
    t, b, hw, c = args.time_steps, args.batch, args.size, args.channels
    params, state = init_stage(jax.random.key(0), depth, c // 2)
    x = 2.0 * jax.random.normal(jax.random.key(1), (t, b, hw, hw, c), jnp.float32)
    step = jax.jit(make_train_step(mode))

    start = time.perf_counter()
    compiled = step.lower(params, state, x).compile()
    compile_s = time.perf_counter() - start
    at_b = analyse_compiled(compiled)
    x2 = jax.ShapeDtypeStruct((t, 2 * b, hw, hw, c), jnp.float32)
    at_2b = analyse_compiled(step.lower(params, state, x2).compile())
    per_example = PerExampleMemory(batch=b, at_batch=at_b, at_double_batch=at_2b)

    out = compiled(params, state, x)  # warm-up
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = compiled(params, state, x)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    loss = float(out[2])
    return {
        "mode": mode, "depth": depth,
        "bytes_per_example": per_example.bytes_per_example,
        "temp_bytes_per_example": per_example.temp_bytes_per_example,
        "static_bytes": per_example.static_bytes,
        "peak_bytes": at_b.peak_bytes, "temp_bytes": at_b.temp_bytes,
        "argument_bytes": at_b.argument_bytes, "output_bytes": at_b.output_bytes,
        "flops_loop_body_once": at_b.flops,
        "compile_s": compile_s,
        "step_s_median": statistics.median(times), "step_s_all": times,
        "loss": loss,
    }


def bf16_drift(args, depths):
    """Relative max-abs round-trip error of a bf16 stage per depth (one compile per variant:
    shallower stages are the deepest one with identity blocks past ``depth``)."""
    t, b, hw, c = args.time_steps, args.batch, args.size, args.channels

    def mixed(p, s, x, key):
        out, new_s = spiking_branch(p, s, x.astype(jnp.bfloat16), key)
        return out.astype(x.dtype), new_s

    results = {}
    for name, fn, stream_dtype in (("bf16", spiking_branch, jnp.bfloat16),
                                   ("bf16_f32_streams", mixed, jnp.float32),
                                   ("f32", spiking_branch, jnp.float32)):
        @jax.jit
        def round_trip(params, state, x, fn=fn):
            y, _ = reversible_stage(fn, fn, params, state, x)
            return reversible_stage_inverse(fn, fn, params, state, y)

        param_dtype = jnp.float32 if name == "f32" else jnp.bfloat16
        x = (2.0 * jax.random.normal(jax.random.key(1), (t, b, hw, hw, c), jnp.float32)
             ).astype(stream_dtype)
        errors = {}
        for depth in depths:
            params, state = init_stage(jax.random.key(0), max(depths), c // 2, param_dtype,
                                       live_blocks=depth)
            diff = round_trip(params, state, x).astype(jnp.float32) - x.astype(jnp.float32)
            errors[depth] = float(jnp.max(jnp.abs(diff)) / jnp.max(jnp.abs(x.astype(jnp.float32))))
        results[name] = errors
    return results


# --------------------------------------------------------------------------- report
def table(rows, depths):
    by = {(r["mode"], r["depth"]): r for r in rows}
    lines = ["| depth | " + " | ".join(
        f"{m} MiB/example" for m in MEMORY_MODES) + " | " + " | ".join(
        f"{m} step ms" for m in MEMORY_MODES) + " | rev/none mem | rev/none time | "
        "rev/none FLOPs |",
        "|" + "---|" * (1 + 2 * len(MEMORY_MODES) + 3)]
    for d in depths:
        mem = [by[m, d]["bytes_per_example"] / MIB for m in MEMORY_MODES]
        ms = [by[m, d]["step_s_median"] * 1e3 for m in MEMORY_MODES]
        rev, none = by["reversible", d], by["none", d]
        flop_ratio = (rev["flops_loop_body_once"] / none["flops_loop_body_once"]
                      if rev["flops_loop_body_once"] and none["flops_loop_body_once"] else
                      float("nan"))
        lines.append(
            f"| {d} | " + " | ".join(f"{v:.2f}" for v in mem) + " | "
            + " | ".join(f"{v:.0f}" for v in ms) + " | "
            + f"{rev['bytes_per_example'] / none['bytes_per_example']:.2f} | "
            + f"{rev['step_s_median'] / none['step_s_median']:.2f} | {flop_ratio:.2f} |")
    return "\n".join(lines)


def secondary_table(rows, depths):
    by = {(r["mode"], r["depth"]): r for r in rows}
    lines = ["| depth | " + " | ".join(f"{m} temp MiB" for m in MEMORY_MODES) + " | "
             + " | ".join(f"{m} compile s" for m in MEMORY_MODES) + " |",
             "|" + "---|" * (1 + 2 * len(MEMORY_MODES))]
    for d in depths:
        lines.append(f"| {d} | " + " | ".join(
            f"{by[m, d]['temp_bytes'] / MIB:.1f}" for m in MEMORY_MODES) + " | " + " | ".join(
            f"{by[m, d]['compile_s']:.1f}" for m in MEMORY_MODES) + " |")
    return "\n".join(lines)


def machine():
    info = {"platform": platform.platform(), "processor": platform.processor(),
            "python": sys.version.split()[0], "jax": jax.__version__,
            "backend": jax.default_backend(), "device": str(jax.devices()[0]),
            "cpu_count": os.cpu_count()}
    try:
        info["load_average_at_start"] = os.getloadavg()
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        pass
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="depths 2 and 8, 2 repeats")
    parser.add_argument("--json", default="experiments/results/engine.json", help="output path")
    parser.add_argument("--depths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per config")
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=16, help="height = width")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--no-drift", action="store_true", help="skip the bf16 drift study")
    args = parser.parse_args(argv)
    depths = args.depths or ([2, 8] if args.quick else [2, 4, 8, 16, 32])
    repeats = args.repeats or (2 if args.quick else 5)

    info = machine()
    print(f"machine: {info.get('cpu_model')} x{info['cpu_count']} ({info['backend']}), "
          f"jax {info['jax']}, load {info.get('load_average_at_start')}", flush=True)
    rows = []
    for depth in depths:
        for mode in MEMORY_MODES:
            row = measure(mode, depth, args, repeats)
            rows.append(row)
            print(f"{mode:>10} depth {depth:>2}: {row['bytes_per_example'] / MIB:7.2f} MiB/example"
                  f"  temp {row['temp_bytes'] / MIB:7.1f} MiB  step "
                  f"{row['step_s_median'] * 1e3:7.0f} ms  compile {row['compile_s']:5.1f} s",
                  flush=True)
    drift = {} if args.no_drift else bf16_drift(args, depths)

    print("\n" + table(rows, depths))
    print("\n" + secondary_table(rows, depths))
    for name, errors in drift.items():
        print(f"round-trip relative error, {name}: "
              + ", ".join(f"{d}: {e:.1e}" for d, e in errors.items()))

    result = {
        "benchmark": "reversible engine: memory modes vs depth",
        "shape": {"time_steps": args.time_steps, "batch": args.batch, "height": args.size,
                  "width": args.size, "channels": args.channels},
        "branch": "IF(atan 2) -> conv3x3 -> BN -> IF -> conv3x3 -> BN, float32",
        "step": "forward + backward + SGD update, jitted",
        "timing": f"median of {repeats} steps after 1 warm-up; compile time separate",
        "memory": "XLA compiled memory_analysis; bytes_per_example = slope of peak between "
                  "batch B and 2B",
        "flops_note": "cost_analysis counts each scan body once; compare only between modes",
        "machine": info,
        "depths": depths,
        "results": rows,
        "bf16_round_trip_rel_error": {k: {str(d): e for d, e in v.items()}
                                      for k, v in drift.items()},
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
