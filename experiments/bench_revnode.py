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
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from revsnn_jax import neurons
from revsnn_jax.layers.revnode_block import revnode_block
from revsnn_jax.memory import benchmark
from revsnn_jax.models import vgg
from revsnn_jax.neurons.reversible_node import reversible_node
from revsnn_jax.reversible import reversible_stage

MiB = 2 ** 20
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _lif(x, v_reset=None):
    c = vgg.LIF_NODE
    return neurons.lif_multistep(x, tau=c.tau, v_threshold=c.v_threshold, v_reset=v_reset,
                                 surrogate=c.surrogate)[0]


def _revnode(x):
    return reversible_node(x, vgg.REV_NODE)


def _revnode_plain(x):
    return reversible_node(x, vgg.REV_NODE, memory_mode="none")


def _revnode_linked(x):
    # the node as the networks run it: between layers that rebuild its input and output
    return revnode_block(lambda p, z: z, lambda w, y: y, (), x, (), vgg.REV_NODE)[0]


#: The JAX nodes of the node-level comparison: name -> (function of x [T, N], reset).
JAX_NODES = {
    "revsnn lif, soft reset (autodiff)": (_lif, "soft"),
    "revsnn lif, hard reset to 0 (autodiff)": (functools.partial(_lif, v_reset=0.0), "hard"),
    "revnode (reversible)": (_revnode, "soft"),
    "revnode (autodiff)": (_revnode_plain, "soft"),
    "revnode linked (revnode_block)": (_revnode_linked, "soft"),
}


def _nbytes(leaf) -> int:
    return int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize


def jax_saved_bytes(fn, x) -> dict:
    """What JAX's autodiff keeps from the forward of ``fn`` at ``x`` for its backward.

    The residuals are the array leaves of the VJP closure ``jax.vjp(fn, x)[1]`` (the analogue
    of PyTorch's saved tensors), counted once per device buffer. Returns ``bytes`` (all of them),
    ``input_bytes`` / ``output_bytes`` (the part that is ``x`` itself or equals ``fn(x)``: kept
    by the neighbouring layers anyway in a network) and ``arrays`` (shape, dtype, role).
    """
    x = jnp.asarray(x)
    y, vjp_fn = jax.vjp(fn, x)
    seen, arrays = set(), []
    total = input_bytes = output_bytes = 0
    for leaf in jax.tree.leaves(vjp_fn):
        if not isinstance(leaf, jax.Array):
            continue
        ptr = leaf.unsafe_buffer_pointer()
        if ptr in seen:
            continue
        seen.add(ptr)
        role = "internal"
        if ptr == x.unsafe_buffer_pointer():
            role = "input"
        elif leaf.shape == y.shape and leaf.dtype == y.dtype and bool(jnp.array_equal(leaf, y)):
            role = "output"
        size = _nbytes(leaf)
        total += size
        input_bytes += size if role == "input" else 0
        output_bytes += size if role == "output" else 0
        arrays.append([list(leaf.shape), str(leaf.dtype), role])
    return {"bytes": total, "input_bytes": input_bytes, "output_bytes": output_bytes,
            "arrays": arrays}


def spikingjelly_saved_bytes(time_steps: int, neurons_per_step: int, reset: str,
                             detach_reset: bool) -> dict:
    """What PyTorch's autograd keeps for SpikingJelly's ``LIFNode(step_mode="m")`` (tau 2,
    Sigmoid(4)) on ``x [T, N]``: every tensor the forward saves, through
    ``torch.autograd.graph.saved_tensors_hooks``, counted once per storage (its full size).
    ``output_bytes``: saved storages whose values equal one step of the output spikes.
    Raises ``ImportError`` without torch / SpikingJelly."""
    import torch
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    node = sj_neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=None if reset == "soft" else 0.0,
                             detach_reset=detach_reset, step_mode="m",
                             surrogate_function=sj_surrogate.Sigmoid(alpha=4.0))
    gen = torch.Generator().manual_seed(0)
    x = (1.5 * torch.randn(time_steps, neurons_per_step, generator=gen)).requires_grad_()
    saved: dict[int, Any] = {}

    def pack(t):
        saved.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = node(x)
    total = output_bytes = input_bytes = 0
    arrays = []
    for ptr, t in saved.items():
        size = t.untyped_storage().nbytes()
        role = "internal"
        if ptr == x.untyped_storage().data_ptr():
            role = "input"
        elif t.shape == y.shape[1:] and any(torch.equal(t, y[i]) for i in range(time_steps)):
            role = "output"
        total += size
        input_bytes += size if role == "input" else 0
        output_bytes += size if role == "output" else 0
        arrays.append([list(t.shape), str(t.dtype).removeprefix("torch."), role])
    return {"bytes": total, "input_bytes": input_bytes, "output_bytes": output_bytes,
            "arrays": arrays}


SJ_NODES = {  # name -> (reset, detach_reset)
    "spikingjelly LIFNode, hard reset to 0 (default)": ("hard", False),
    "spikingjelly LIFNode, hard reset, detach_reset": ("hard", True),
    "spikingjelly LIFNode, soft reset": ("soft", False),
    "spikingjelly LIFNode, soft reset, detach_reset": ("soft", True),
}
#: The node the paper's "58.65x less memory than the current SNN node" is set against.
REFERENCE_NODE = "spikingjelly LIFNode, hard reset to 0 (default)"


def _spikingjelly_rows(time_steps, neurons_per_step, torch_python):
    """SpikingJelly's rows, here if torch imports, else in ``torch_python`` (a subprocess)."""
    try:
        import spikingjelly.activation_based.neuron  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        if not torch_python:
            return None, ("torch / SpikingJelly are not importable here and no --torch-python "
                          "was given: SpikingJelly's rows are skipped")
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            path = fh.name
        cmd = [torch_python, os.path.abspath(__file__), "--spikingjelly-only", "--json", path,
               "--node-time-steps", ",".join(map(str, time_steps)),
               "--node-neurons", str(neurons_per_step)]
        proc = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode:
            return None, f"the SpikingJelly subprocess failed: {proc.stderr[-1500:]}"
        with open(path) as fh:
            rows = json.load(fh)
        os.unlink(path)
        return rows, None
    rows = []
    for t in time_steps:
        for name, (reset, detach) in SJ_NODES.items():
            rows.append({"time_steps": t, "node": name, "library": "spikingjelly",
                         "neurons_per_step": neurons_per_step,
                         **spikingjelly_saved_bytes(t, neurons_per_step, reset, detach)})
    return rows, None


def node_claim(time_steps, neurons_per_step=32 * 32 * 64, torch_python=None):
    """Bytes each node keeps for its backward per neuron and time step (module docstring)."""
    rows = []
    for t in time_steps:
        x = 1.5 * jax.random.normal(jax.random.key(0), (t, neurons_per_step), jnp.float32)
        for name, (fn, _) in JAX_NODES.items():
            rows.append({"time_steps": t, "node": name, "library": "revsnn_jax",
                         "neurons_per_step": neurons_per_step, **jax_saved_bytes(fn, x)})
    sj_rows, skipped = _spikingjelly_rows(time_steps, neurons_per_step, torch_python)
    rows += sj_rows or []
    for r in rows:
        n = r["time_steps"] * r["neurons_per_step"]
        r["bytes_per_neuron_step"] = r["bytes"] / n
        r["beyond_output_per_neuron_step"] = (r["bytes"] - r["output_bytes"]) / n
        r["own_per_neuron_step"] = (r["bytes"] - r["output_bytes"] - r["input_bytes"]) / n
    for t in time_steps:
        ref = next((r for r in rows if r["time_steps"] == t and r["node"] == REFERENCE_NODE),
                   None)
        for r in rows:
            if r["time_steps"] == t and ref is not None:
                r["less_than_reference"] = ref["bytes"] / max(r["bytes"], 1)
                r["own_less_than_reference"] = (
                    ref["own_per_neuron_step"] / max(r["own_per_neuron_step"], 1e-9))
    return rows, skipped


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


PARTS = ("node", "flops", "network", "time")


def _print_node_claim(rows, skipped):
    print("\n1. bytes kept for the backward per neuron and time step (node alone, x [T, 65536])")
    print("   (own: beyond the node's input and output, which its neighbours keep in a network)")
    print(f"{'T':>3} {'node':<48} {'B/neuron-step':>13} {'less than SJ':>12} "
          f"{'own':>7} {'less than SJ':>12}")
    for r in rows:
        ratio = r.get("less_than_reference")
        ratio2 = r.get("own_less_than_reference")
        print(f"{r['time_steps']:>3} {r['node']:<48} {r['bytes_per_neuron_step']:>13.3f} "
              f"{'-' if ratio is None else f'{ratio:.2f}x':>12} "
              f"{r['own_per_neuron_step']:>7.3f} "
              f"{'-' if ratio2 is None else f'{ratio2:.2f}x':>12}")
    if skipped:
        print(f"  ({skipped})")


def _print_rows(title, rows, line) -> None:
    print(f"\n{title}")
    for r in rows:
        print(f"  {line(r)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller everything (smoke test)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "revnode.json"),
                        help="results file; a run of some --parts updates only their keys")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--torch-python", default=os.environ.get("REVSNN_TORCH_PYTHON"),
                        help="a Python with torch and SpikingJelly for SpikingJelly's rows when "
                             "this one lacks them (default: $REVSNN_TORCH_PYTHON)")
    parser.add_argument("--node-time-steps", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--node-neurons", type=int, default=32 * 32 * 64, help=argparse.SUPPRESS)
    parser.add_argument("--spikingjelly-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    start = time.time()
    node_t = (4, 8) if args.quick else (4, 8, 16, 32)
    if args.node_time_steps:
        node_t = tuple(int(t) for t in args.node_time_steps.split(","))
    if args.spikingjelly_only:  # the subprocess of _spikingjelly_rows
        rows, _ = _spikingjelly_rows(node_t, args.node_neurons, None)
        with open(args.json, "w") as fh:
            json.dump(rows, fh)
        return 0
    parts = args.parts.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    result = {}
    if os.path.exists(args.json) and set(parts) != set(PARTS):
        with open(args.json) as fh:
            result = json.load(fh)
    result.update({"device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}", "jax": jax.__version__})

    if "node" in parts:
        rows, skipped = node_claim(node_t, args.node_neurons, args.torch_python)
        result["node_claim"] = {"rows": rows, "reference": REFERENCE_NODE,
                                "spikingjelly_skipped": skipped}
        result.pop("node_memory", None)  # the earlier table, superseded by node_claim
        _print_node_claim(rows, skipped)

    if "flops" in parts:
        result["node_flops"] = node_flops()
        nf = result["node_flops"]
        print("\n2a. node FLOPs (XLA cost_analysis, scan bodies counted once)")
        for k in ("forward", "streamlined", "naive", "autodiff", "lif_autodiff"):
            print(f"  {k:<14} {nf[k]:>14,.0f}")
        print(f"  backward FLOPs streamlined / naive: "
              f"{nf['backward_ratio_streamlined_vs_naive']:.3f}")
        result["engine_flops"] = engine_flops()
        print("\n2b. engine FLOPs (training step of a 2-block reversible stage)")
        for k, r in result["engine_flops"].items():
            print(f"  {k}: plain {r['plain']:,.0f}  streamlined {r['streamlined']:,.0f} "
                  f"({r['streamlined_vs_plain']:.3f}x plain)  naive {r['naive']:,.0f}; "
                  f"backward streamlined/naive {r['backward_ratio_streamlined_vs_naive']:.3f}")

    tables = (  # part, result key, rows, title, one line per row
        ("network", "network_memory", lambda: network_memory(
            (4,) if args.quick else (4, 16), batch=2 if args.quick else 8),
         "3. whole-network training memory per image (revsnn memory, slope B -> 2B)",
         lambda r: (f"T={r['time_steps']:<3} {r['model']:<14} {r['memory_mode']:<10} "
                    f"{r['bytes_per_image'] / MiB:>9.2f} MiB/image  ({r['ratio_vs_vgg11']:.3f}x"
                    f" less than vgg11)  peak {r['peak_bytes'] / MiB:.1f} MiB at B={r['batch']}")),
        ("time", "step_time", lambda: step_times(
            width=8 if args.quick else 16, time_steps=4, batch=4 if args.quick else 16,
            steps=3 if args.quick else 7),
         "4. step time (reduced width, shared 2-core CPU: indicative)",
         lambda r: (f"{r['model']:<14} {r['memory_mode']:<10} width {r['width']}: "
                    f"{r['step_seconds'] * 1e3:8.1f} ms/step ({r['time_ratio_vs_vgg11']:.2f}x "
                    f"vgg11), compile {r['compile_seconds']:.1f} s")),
    )
    for part, key, rows, title, line in tables:
        if part in parts:
            result[key] = rows()
            _print_rows(title, result[key], line)
    result["wall_seconds"] = time.time() - start
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"\nwritten {args.json} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
