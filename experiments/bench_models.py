"""Training-step time of the full-size models side by side, with FLOPs per step and GFLOP/s.

Every model's training step (forward, backward, SGD-momentum update; :func:`revsnn_jax.steps
.make_train_step`) is compiled and warmed up, then the models are timed in turns (``A B C ...``,
``--rounds`` rounds), so that load changes on the machine hit all alike; the figure per model is
the median. FLOPs per step are ``3 x`` the forward's: ``2 x`` the multiply-accumulates of every
convolution and matmul of the training-mode forward pass, read from its jaxpr with each scan's
body counted once per iteration (the usual convention, backward = 2 x forward; a reversible
model's recompute is extra work not counted, so its GFLOP/s understates what the machine did).
GFLOP/s = FLOPs per step / median step time: a model far below the others runs some op
through a slow path.

Usage (the table of docs/benchmarks.md)::

    PYTHONPATH=. python experiments/bench_models.py --rounds 5 \\
        --json experiments/results/bench_models.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from revsnn_jax import steps
from revsnn_jax.models import create, get_info

#: (model, overrides): the full sizes, CIFAR-100 for the CIFAR models, ImageNet for T-RevSNN.
MODELS = (
    ("revsresnet37", {"num_classes": 100}),
    ("msresnet34", {"num_classes": 100}),
    ("revsformer_4_384", {"num_classes": 100}),
    ("spikingformer_4_384", {"num_classes": 100}),
    ("trevsnn_small", {}),
    ("vgg11_revnode", {"num_classes": 100}),
)


def build(name: str, batch: int, time_steps: int, overrides: dict, memory_mode: str | None = None):
    """A jitted training step of ``name`` and its arguments ``(params, state, opt_state, x, y)``
    (seed 0), plus the forward ``fn(params, state, x)`` in training mode for counting FLOPs."""
    info = get_info(name)
    kwargs = dict(overrides)
    if memory_mode is not None:
        kwargs["memory_mode"] = memory_mode
    model = create(name, time_steps=time_steps, rngs=nnx.Rngs(0), **kwargs)
    classes = kwargs.get("num_classes", info.default_num_classes)
    fns, params, state = steps.split_model(model)
    opt = optax.sgd(0.1, momentum=0.9)
    step = jax.jit(steps.make_train_step(fns, opt))
    kx, ky = jax.random.split(jax.random.key(0))
    lead = (time_steps, batch) if getattr(model, "event_input", False) else (batch,)
    x = jax.random.normal(kx, (*lead, *info.input_shape), jnp.float32)
    y = jax.random.randint(ky, (batch,), 0, classes)

    def forward(params, state, x):
        return fns.apply(params, state, x, train=True)[0]

    return step, (params, state, opt.init(params), x, y), forward


def _sub_jaxprs(eqn) -> list[Any]:
    found = []
    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                found.append(v.jaxpr)
            elif isinstance(v, jax.extend.core.Jaxpr):
                found.append(v)
    return found


def count_macs(jaxpr) -> float:
    """Multiply-accumulates of every ``conv_general_dilated`` and ``dot_general`` of ``jaxpr``,
    a scan's body counted ``length`` times, a ``cond`` by its largest branch, a while loop's
    body once (none in the models' forward passes)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            rhs = eqn.invars[1].aval.shape
            out_feature = eqn.params["dimension_numbers"].rhs_spec[0]
            total += math.prod(out) * math.prod(rhs) / rhs[out_feature]
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(
                lhs[d] for d in lhs_contract)
        elif name == "scan":
            total += eqn.params["length"] * count_macs(eqn.params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(count_macs(b.jaxpr) for b in eqn.params["branches"])
        else:
            total += sum(count_macs(j) for j in _sub_jaxprs(eqn))
    return total


def step_flops(forward, args) -> float:
    """``3 x 2 x`` the forward's MACs (module docstring)."""
    params, state, _, x, _ = args
    jaxpr = jax.make_jaxpr(forward)(params, state, x)
    return 6.0 * count_macs(jaxpr.jaxpr)


def time_once(step, args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(step(*args))
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS),
                        help="comma-separated registered names (default: the six of the table)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per model")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (one step each)")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.batch < 1 or args.time_steps < 1:
        parser.error("--rounds, --batch and --time-steps must be >= 1, --warmup >= 0")
    known = dict(MODELS)
    names = [m for m in args.models.split(",") if m]
    try:
        for name in names:
            get_info(name)
    except ValueError as err:
        parser.error(str(err))

    built = {}
    for name in names:
        step, step_args, forward = build(name, args.batch, args.time_steps, known.get(name, {}))
        flops = step_flops(forward, step_args)
        start = time.perf_counter()
        for _ in range(max(1, args.warmup)):
            time_once(step, step_args)
        compile_s = time.perf_counter() - start
        built[name] = (step, step_args, flops, compile_s)
        print(f"{name}: {flops / 1e9:.1f} GFLOP per step, compiled and warmed up in "
              f"{compile_s:.1f} s", flush=True)

    times = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            times[name].append(time_once(*built[name][:2]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)

    rows = {}
    print(f"\n{'model':<22} {'median s':>9} {'min s':>8} {'GFLOP':>8} {'GFLOP/s':>8} "
          f"{'compile s':>10}")
    for name in names:
        _, _, flops, compile_s = built[name]
        med = statistics.median(times[name])
        rows[name] = {"median_seconds": med, "min_seconds": min(times[name]),
                      "seconds": times[name], "flops_per_step": flops,
                      "gflops_per_second": flops / med / 1e9, "compile_seconds": compile_s,
                      "overrides": known.get(name, {}),
                      "input_shape": list(get_info(name).input_shape)}
        print(f"{name:<22} {med:>9.3f} {min(times[name]):>8.3f} {flops / 1e9:>8.1f} "
              f"{flops / med / 1e9:>8.1f} {compile_s:>10.1f}")
    summary = {"batch": args.batch, "time_steps": args.time_steps, "rounds": args.rounds,
               "dtype": "float32", "device": jax.devices()[0].platform,
               "machine": platform.machine(), "jax": jax.__version__, "models": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
