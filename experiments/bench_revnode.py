"""Benchmark of the reversible spiking node (issue #9): memory, FLOPs and step time in one run.

Writes ``experiments/results/revnode.json`` and prints tables:

1. node-internal stored bytes (what a node keeps for its backward beyond its output) of the
   reversible node vs the plain LIF node under autodiff, at T = 4, 8, 16, 32, for one image's
   worth of a VGG-11 first-layer node (32x32x64). Two views: the residuals JAX's ``jax.vjp``
   keeps (exact, per array), and XLA's compiled plan (temp bytes of the node's gradient,
   compile only);
2. backward FLOPs (XLA ``cost_analysis``, same loop structure in every build): the node's
   streamlined vs naive backward, and the engine's (``reversible_stage``) streamlined vs naive
   vs plain autodiff;
3. whole-network training memory per image of ``vgg11_revnode`` vs ``vgg11`` at T = 4 and 16
   (``revsnn memory``: slope of the compiled step's peak between batch B and 2B);
4. step time of reduced-width networks (median after compile; the machine is shared, so the
   ratio is indicative only).

Usage: ``PYTHONPATH=. python experiments/bench_revnode.py [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax import benchmark, neurons
from revsnn_jax.memory import compiled_memory
from revsnn_jax.models import vgg
from revsnn_jax.reversible import reversible_stage
from revsnn_jax.reversible_node import reversible_node

MiB = 2 ** 20
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _lif(x):
    c = vgg.LIF_NODE
    return neurons.lif_multistep(x, tau=c.tau, v_threshold=c.v_threshold, v_reset=c.v_reset,
                                 surrogate=c.surrogate)[0]


def _revnode(x):
    return reversible_node(x, vgg.REV_NODE)


def _revnode_plain(x):
    return reversible_node(x, vgg.REV_NODE, memory_mode="none")


NODES = {"lif (autodiff)": _lif, "revnode (reversible)": _revnode,
         "revnode (autodiff)": _revnode_plain}


def _nbytes(leaf) -> int:
    return int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize


def node_memory(time_steps, shape=(1, 32, 32, 64)):
    rows = []
    for t in time_steps:
        x = jax.ShapeDtypeStruct((t, *shape), jnp.float32)
        out_bytes = _nbytes(x)
        for name, fn in NODES.items():
            _, vjp = jax.eval_shape(lambda x, fn=fn: jax.vjp(fn, x), x)
            leaves = [leaf for leaf in jax.tree.leaves(vjp) if leaf.shape]
            total = sum(_nbytes(leaf) for leaf in leaves)
            # "beyond the output": drop one output-shaped float array if the node keeps it
            keeps_output = any(leaf.shape == x.shape and leaf.dtype == x.dtype
                               for leaf in leaves) and name.startswith("revnode (rev")
            internal = total - (out_bytes if keeps_output else 0)

            def grad_fn(x, ct, fn=fn):
                return jax.grad(lambda x: jnp.sum(fn(x) * ct))(x)

            plan = compiled_memory(grad_fn, x, x)
            rows.append({"time_steps": t, "node": name, "residual_bytes": total,
                         "internal_bytes": internal, "compiled_temp_bytes": plan.temp_bytes,
                         "residual_arrays": [[list(leaf.shape), str(leaf.dtype)]
                                             for leaf in leaves]})
    for t in time_steps:
        by = {r["node"]: r for r in rows if r["time_steps"] == t}
        ref = by["lif (autodiff)"]
        for r in by.values():
            r["internal_ratio_vs_lif"] = ref["internal_bytes"] / max(r["internal_bytes"], 1)
            r["temp_ratio_vs_lif"] = ref["compiled_temp_bytes"] / max(r["compiled_temp_bytes"], 1)
    return rows


def _flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost["flops"])


def node_flops(shape=(4, 8, 16, 16, 64)):
    # rolled time loops in every build (unroll=1): XLA counts one loop body, the same structure
    # everywhere (unrolled, fusion duplicates cheap producers and blurs the comparison)
    cfg = dataclasses.replace(vgg.REV_NODE, unroll=1)
    lif = vgg.LIF_NODE
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    fwd = _flops(lambda x: jnp.sum(reversible_node(x, cfg) ** 2), x)
    out = {"shape": list(shape), "forward": fwd, "unroll": 1}
    for backward in ("streamlined", "naive"):
        out[backward] = _flops(jax.grad(lambda x, b=backward: jnp.sum(
            reversible_node(x, cfg, backward=b) ** 2)), x)
    out["autodiff"] = _flops(jax.grad(lambda x: jnp.sum(
        reversible_node(x, cfg, memory_mode="none") ** 2)), x)
    out["lif_autodiff"] = _flops(jax.grad(lambda x: jnp.sum(neurons.lif_multistep(
        x, tau=lif.tau, v_threshold=lif.v_threshold, v_reset=lif.v_reset,
        surrogate=lif.surrogate, unroll=1)[0] ** 2)), x)
    out["backward_ratio_streamlined_vs_naive"] = (out["streamlined"] - fwd) / (out["naive"] - fwd)
    return out


def _branch(p, s, x, key, final_bn=True):
    def bn(h):
        return (h - jnp.mean(h, (0, 1))) * jax.lax.rsqrt(jnp.var(h, (0, 1)) + 1e-5)

    h = bn(neurons.if_multistep(x, surrogate="atan", unroll=1)[0] @ p["w1"])
    h = neurons.if_multistep(h, surrogate="atan", unroll=1)[0] @ p["w2"]
    return (bn(h) if final_bn else h), s


def engine_flops(half=64, shape=(4, 16), blocks=2):
    w = jax.ShapeDtypeStruct((blocks, half, half), jnp.float32)
    params = ({"w1": w, "w2": w}, {"w1": w, "w2": w})
    x = jax.ShapeDtypeStruct((*shape, 2 * half), jnp.float32)
    results = {}
    for final_bn in (True, False):
        def br(p, s, x, key, final_bn=final_bn):
            return _branch(p, s, x, key, final_bn)

        def loss(mode, backward="streamlined", br=br):
            def fn(params, x):
                y, _ = reversible_stage(br, br, params, None, x, memory_mode=mode,
                                        backward=backward)
                return jnp.sum(y ** 2)
            return fn

        fwd = _flops(loss("none"), params, x)
        r = {"forward": fwd, "plain": _flops(jax.grad(loss("none")), params, x),
             "streamlined": _flops(jax.grad(loss("reversible")), params, x),
             "naive": _flops(jax.grad(loss("reversible", "naive")), params, x)}
        r["streamlined_vs_plain"] = r["streamlined"] / r["plain"]
        r["backward_ratio_streamlined_vs_naive"] = (r["streamlined"] - fwd) / (r["naive"] - fwd)
        results["branch_ends_in_bn" if final_bn else "branch_ends_in_linear"] = r
    return results


def network_memory(time_steps, batch):
    rows = []
    for t in time_steps:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            path = fh.name
        cmd = [sys.executable, "-m", "revsnn_jax", "memory", "--models", "vgg11,vgg11_revnode",
               "--memory-modes", "reversible,none", "--batch", str(batch), "--time-steps",
               str(t), "--json", path]
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        with open(path) as fh:
            rows += json.load(fh)
        os.unlink(path)
    for t in time_steps:
        ref = next(r for r in rows if r["time_steps"] == t and r["model"] == "vgg11")
        for r in rows:
            if r["time_steps"] == t:
                r["ratio_vs_vgg11"] = ref["bytes_per_image"] / r["bytes_per_image"]
    return rows


def step_times(width, time_steps, batch, steps):
    rows = []
    for name, mode in (("vgg11", "none"), ("vgg11_revnode", "reversible"),
                       ("vgg11_revnode", "none")):
        row = benchmark.measure_training_step(name, batch=batch, time_steps=time_steps,
                                              memory_mode=mode, time_it=True,
                                              timed_steps=steps, model_kwargs={"width": width})
        rows.append(row)
    ref = rows[0]["step_seconds"]
    for r in rows:
        r["time_ratio_vs_vgg11"] = r["step_seconds"] / ref
        r["width"] = width
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller everything (smoke test)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "revnode.json"))
    args = parser.parse_args()
    start = time.time()
    node_t = (4, 8) if args.quick else (4, 8, 16, 32)
    result = {"device": benchmark._device_name(), "jax": jax.__version__}

    result["node_memory"] = node_memory(node_t)
    print("\n1. node-internal stored bytes for one 32x32x64 image (beyond the node's output)")
    print(f"{'T':>3} {'node':<22} {'residual KiB':>13} {'internal KiB':>13} {'ratio':>7} "
          f"{'XLA temp KiB':>13} {'ratio':>7}")
    for r in result["node_memory"]:
        print(f"{r['time_steps']:>3} {r['node']:<22} {r['residual_bytes'] / 1024:>13.1f} "
              f"{r['internal_bytes'] / 1024:>13.1f} {r['internal_ratio_vs_lif']:>7.2f} "
              f"{r['compiled_temp_bytes'] / 1024:>13.1f} {r['temp_ratio_vs_lif']:>7.2f}")

    result["node_flops"] = node_flops()
    nf = result["node_flops"]
    print("\n2a. node FLOPs (XLA cost_analysis, scan bodies counted once)")
    for k in ("forward", "streamlined", "naive", "autodiff", "lif_autodiff"):
        print(f"  {k:<14} {nf[k]:>14,.0f}")
    print(f"  backward FLOPs streamlined / naive: {nf['backward_ratio_streamlined_vs_naive']:.3f}")
    result["engine_flops"] = engine_flops()
    print("\n2b. engine FLOPs (training step of a 2-block reversible stage)")
    for k, r in result["engine_flops"].items():
        print(f"  {k}: plain {r['plain']:,.0f}  streamlined {r['streamlined']:,.0f} "
              f"({r['streamlined_vs_plain']:.3f}x plain)  naive {r['naive']:,.0f}; backward "
              f"streamlined/naive {r['backward_ratio_streamlined_vs_naive']:.3f}")

    result["network_memory"] = network_memory((4,) if args.quick else (4, 16),
                                              batch=2 if args.quick else 8)
    print("\n3. whole-network training memory per image (revsnn memory, slope B -> 2B)")
    for r in result["network_memory"]:
        print(f"  T={r['time_steps']:<3} {r['model']:<14} {r['memory_mode']:<10} "
              f"{r['bytes_per_image'] / MiB:>9.2f} MiB/image  ({r['ratio_vs_vgg11']:.2f}x less "
              f"than vgg11)  peak {r['peak_bytes'] / MiB:.1f} MiB at B={r['batch']}")

    result["step_time"] = step_times(width=8 if args.quick else 16, time_steps=4,
                                     batch=4 if args.quick else 16, steps=3 if args.quick else 7)
    print("\n4. step time (reduced width, shared 2-core CPU: indicative)")
    for r in result["step_time"]:
        print(f"  {r['model']:<14} {r['memory_mode']:<10} width {r['width']}: "
              f"{r['step_seconds'] * 1e3:8.1f} ms/step ({r['time_ratio_vs_vgg11']:.2f}x vgg11), "
              f"compile {r['compile_seconds']:.1f} s")
    result["wall_seconds"] = time.time() - start
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"\nwritten {args.json} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
