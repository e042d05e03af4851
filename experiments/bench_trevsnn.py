"""T-RevSNN training memory and speed vs the number of columns T, reversible vs plain.

One run compiles a full training step (forward, backward through the intermediate-supervision
loss, optax SGD-momentum update) of the same model under ``memory_mode`` ``reversible``,
``checkpoint`` and ``none`` for each T, and reads XLA's compiled memory plan. Memory per image
is the slope of the step's peak between batch B and 2B (parameters, gradients and optimizer
state drop out). ``--time`` also runs the steps and reports the median step time.

    python experiments/bench_trevsnn.py --model trevsnn_small --image-size 64 \
        --time-steps 2,4,8,16 --batch 4 --json experiments/results/trevsnn.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from revsnn_jax import memory
from revsnn_jax.models import create
from revsnn_jax.steps.losses import intermediate_supervision_loss

MiB = 2**20


def make_step(model, optimizer):
    graph, params, state = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, state, x, y):
        m = nnx.merge(graph, params, state, copy=True)
        loss = intermediate_supervision_loss(m.head_outputs(x), y)
        return loss, nnx.state(m, nnx.Not(nnx.Param))

    def step(params, state, opt_state, x, y):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    return jax.jit(step), params, state


def measure(name, time_steps, mode, batch, image_size, num_classes, timed):
    model = nnx.eval_shape(lambda: create(name, num_classes=num_classes, time_steps=time_steps,
                                          memory_mode=mode, rngs=nnx.Rngs(0)))
    optimizer = optax.sgd(0.1, momentum=0.9)
    step, params, state = make_step(model, optimizer)
    opt_state = jax.eval_shape(optimizer.init, params)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

    def args(b):
        return (params, state, opt_state,
                jax.ShapeDtypeStruct((b, image_size, image_size, 3), jnp.float32),
                jax.ShapeDtypeStruct((b,), jnp.int32))

    t0 = time.perf_counter()
    mem = memory.per_example_memory(args, step, batch)
    compile_seconds = (time.perf_counter() - t0) / 2
    step_seconds = None
    if timed:
        real = create(name, num_classes=num_classes, time_steps=time_steps, memory_mode=mode,
                      rngs=nnx.Rngs(0))
        step, p, s = make_step(real, optimizer)
        o = optimizer.init(p)
        x = jax.random.normal(jax.random.key(0), (batch, image_size, image_size, 3), jnp.float32)
        y = jnp.arange(batch, dtype=jnp.int32) % num_classes
        p, s, o, loss = step(p, s, o, x, y)
        jax.block_until_ready(loss)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            p, s, o, loss = step(p, s, o, x, y)
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t)
        step_seconds = statistics.median(times)
    return {
        "model": name, "params": n_params, "batch": batch, "time_steps": time_steps,
        "image_size": image_size, "num_classes": num_classes, "memory_mode": mode,
        "bytes_per_image": mem.bytes_per_example, "peak_bytes": mem.at_batch.peak_bytes,
        "static_bytes": mem.static_bytes, "temp_bytes": mem.at_batch.temp_bytes,
        "argument_bytes": mem.at_batch.argument_bytes, "output_bytes": mem.at_batch.output_bytes,
        "flops": mem.at_batch.flops, "compile_seconds": compile_seconds,
        "step_seconds": step_seconds, "device": jax.devices()[0].device_kind,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="trevsnn_small")
    parser.add_argument("--time-steps", default="2,4,8,16")
    parser.add_argument("--memory-modes", default="reversible,checkpoint,none")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--time", action="store_true", help="also run and time the steps")
    parser.add_argument("--json", default="experiments/results/trevsnn.json")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'model':14s} {'T':>3s} {'mode':>10s} {'MiB/image':>10s} {'peak MiB':>9s} "
          f"{'GFLOP':>7s} {'compile s':>9s} {'step s':>8s}")
    for t in [int(v) for v in args.time_steps.split(",")]:
        for mode in args.memory_modes.split(","):
            row = measure(args.model, t, mode, args.batch, args.image_size, args.num_classes,
                          args.time)
            rows.append(row)
            step = "-" if row["step_seconds"] is None else f"{row['step_seconds']:.3f}"
            print(f"{row['model']:14s} {t:3d} {mode:>10s} {row['bytes_per_image'] / MiB:10.2f} "
                  f"{row['peak_bytes'] / MiB:9.1f} {(row['flops'] or 0) / 1e9:7.2f} "
                  f"{row['compile_seconds']:9.1f} {step:>8s}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
