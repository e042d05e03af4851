"""Neuron-scan benchmark: our plain and lean LIF scans next to Spyx, snnTorch, Norse and
SpikingJelly, forward + backward, time and peak memory (issue #12).

Cases (each library's own default LIF; loss = sum of all output spikes; gradients of the
layer's weight and bias, the input needs none):

* ``linear_lif`` -- the Open Neuromorphic single-layer benchmark: ``Linear(in, N)`` + LIF,
  batch 16, ``T = 500``, ``N = 16,384`` neurons. The benchmark's own input has ``N`` features
  (a 16384 x 16384 Linear, ~4.3 TFLOP per forward); on a 2-core CPU that is over a minute per
  pass, so ``--in-features`` (default 512) sets the Linear's input width. The neuron part
  (T x B x N = 131M neuron-steps) is the benchmark's.
* ``conv_lif`` -- a conv SNN layer at CIFAR shape: ``Conv3x3(C, C)`` + LIF on
  ``[T, B, 32, 32, C]``, ``C = 64``, ``T = 32``, batch 16.

Every torch library applies its Linear / conv once to the merged ``[T * B, ...]`` input (one
large GEMM, the fastest way on CPU) and runs its neuron over time; Spyx runs its
``Sequential(nnx.Linear or nnx.Conv, LIF)`` with ``spyx.nn.run`` (a ``lax.scan`` over steps,
the layer inside the scan).

Measurement: each (library, case) runs in a fresh subprocess. Time: the median of
``--iters`` calls after ``--warmup`` calls; JAX's ``compile_seconds`` is the AOT
``lower().compile()`` time (``null`` for eager torch). Peak memory ``peak_bytes``, the same
method for every library: the process's resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs`` after imports and, for JAX, after compiling) minus the resident set
at that point, over allocating parameters and inputs and all the timed calls. For our JAX rows
the table also prints XLA's compiled memory plan (:mod:`revsnn_jax.memory`).

Usage::

    python experiments/bench_neurons.py [--quick] [--json PATH] [--libraries ...] [--rounds R]

``--rounds R`` repeats the whole sweep R times in the same order (fresh subprocesses each
time), so that the libraries alternate and share the machine's drift: each row's
``median_seconds`` is then the median over rounds, ``peak_bytes`` the largest, and the row
gains ``round_seconds`` (each round's median, ``null`` where a round gave none); the printout
ends with the per-round times and, per case, in how many rounds lean was faster than each
other row.

The other libraries come with the ``bench`` extra (``pip install -e '.[bench]'``); a missing
one prints a line and gives no row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIBRARIES = ("revsnn_jax", "spyx", "snntorch", "norse", "spikingjelly")
CASES = ("linear_lif", "conv_lif")
ROW_KEYS = ("library", "variant", "case", "device", "dtype", "median_seconds",
            "compile_seconds", "peak_bytes")
IMPORT_NAME = {"revsnn_jax": "revsnn_jax", "spyx": "spyx", "snntorch": "snntorch",
               "norse": "norse", "spikingjelly": "spikingjelly"}

FULL = {"linear_lif": dict(T=500, B=16, N=16384), "conv_lif": dict(T=32, B=16, H=32, C=64)}
QUICK = {"linear_lif": dict(T=20, B=2, N=64), "conv_lif": dict(T=4, B=2, H=8, C=4)}


# --------------------------------------------------------------------------- memory
def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Resident-set high-water mark over a region: ``VmHWM`` after it minus ``VmRSS`` before.

    ``VmHWM`` is reset at the start by writing 5 to ``/proc/self/clear_refs`` (Linux); where that
    is refused, the lifetime ``VmHWM`` is used and ``method`` says so."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM reset"
        except OSError:
            self.method = "VmHWM (lifetime; reset refused)"
        self.base = _rss_bytes("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak = _rss_bytes("VmHWM") - self.base
        return False


def _time_calls(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- JAX workers
def _jax_data(case, size, key):
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(key)
    if case == "linear_lif":
        t, b, n, i = size["T"], size["B"], size["N"], size["I"]
        w = jax.random.normal(k1, (i, n), jnp.float32) * (2.0 / i ** 0.5)
        bias = jnp.zeros((n,), jnp.float32)
        x = (jax.random.uniform(k2, (t, b, i)) < 0.3).astype(jnp.float32)
    else:
        t, b, h, c = size["T"], size["B"], size["H"], size["C"]
        w = jax.random.normal(k1, (3, 3, c, c), jnp.float32) * (2.0 / (9 * c) ** 0.5)
        bias = jnp.zeros((c,), jnp.float32)
        x = (jax.random.uniform(k2, (t, b, h, h, c)) < 0.3).astype(jnp.float32)
    return (w, bias), x


def _ours_loss(variant, case):
    from revsnn_jax import neurons
    from revsnn_jax.neurons import NeuronConfig
    from revsnn_jax.neurons.kernels import conv_lif, conv_nhwc, dense, linear_lif

    config = NeuronConfig()  # LIF, tau 2, hard reset to 0, sigmoid(4): SpikingJelly's default

    def pre(params, x):
        w, b = params
        if case == "linear_lif":
            # the same matmul as kernels.linear_lif (its weight gradient in the form XLA:CPU
            # runs fastest), so that plain and lean differ only in the neuron
            return dense(x, w) + b
        t, bsz = x.shape[:2]
        # the same convolution as kernels.conv_lif (XLA:CPU's own kernel-gradient conv is
        # slower), so that plain and lean differ only in the neuron
        y = conv_nhwc(x.reshape((t * bsz, *x.shape[2:])), w, 1, ((1, 1), (1, 1)))
        return y.reshape((t, bsz, *y.shape[1:])) + b

    if variant == "plain":
        def loss(params, x):
            return neurons.neuron_multistep(pre(params, x), config).sum()
    else:
        def loss(params, x):
            fused = linear_lif if case == "linear_lif" else conv_lif
            return fused(params[0], params[1], x, config)[0].sum()
    return loss


def _run_ours(variant, case, size, warmup, iters):
    import jax

    from revsnn_jax.memory import analyse_compiled

    (w, b), x = _jax_data(case, size, jax.random.PRNGKey(0))
    shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), ((w, b), x))
    del w, b, x
    step = jax.jit(jax.value_and_grad(_ours_loss(variant, case)))
    t0 = time.perf_counter()
    compiled = step.lower(*shapes).compile()
    compile_seconds = time.perf_counter() - t0
    plan = analyse_compiled(compiled).peak_bytes
    with PeakRSS() as mem:
        params, x = _jax_data(case, size, jax.random.PRNGKey(0))
        jax.block_until_ready((params, x))
        median = _time_calls(lambda: jax.block_until_ready(compiled(params, x)), warmup, iters)
    return dict(median_seconds=median, compile_seconds=compile_seconds, peak_bytes=mem.peak,
                device=str(jax.devices()[0].platform), extra=dict(xla_plan_bytes=plan,
                                                                  memory_method=mem.method))


def _run_spyx(case, size, warmup, iters):
    import jax
    import jax.numpy as jnp
    import spyx
    from flax import nnx

    t, b = size["T"], size["B"]
    if case == "linear_lif":
        n, i = size["N"], size["I"]
        model = spyx.nn.Sequential(nnx.Linear(i, n, rngs=nnx.Rngs(0)),
                                   spyx.nn.LIF((n,), beta=0.5, rngs=nnx.Rngs(1)))
        step_shape = (i,)
    else:
        h, c = size["H"], size["C"]
        model = spyx.nn.Sequential(nnx.Conv(c, c, (3, 3), padding="SAME", rngs=nnx.Rngs(0)),
                                   spyx.nn.LIF((h, h, c), beta=0.5, rngs=nnx.Rngs(1)))
        step_shape = (h, h, c)
    graphdef, state = nnx.split(model)

    def loss(state, x):
        m = nnx.merge(graphdef, state)
        out, _ = spyx.nn.run(m, x)
        return out.sum()

    shapes = (jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state),
              jax.ShapeDtypeStruct((t, b, *step_shape), jnp.float32))
    step = jax.jit(jax.value_and_grad(loss))
    t0 = time.perf_counter()
    compiled = step.lower(*shapes).compile()
    compile_seconds = time.perf_counter() - t0
    with PeakRSS() as mem:
        x = (jax.random.uniform(jax.random.PRNGKey(2), (t, b, *step_shape)) < 0.3)
        x = x.astype(jnp.float32)
        median = _time_calls(lambda: jax.block_until_ready(compiled(state, x)), warmup, iters)
    return dict(median_seconds=median, compile_seconds=compile_seconds, peak_bytes=mem.peak,
                device=str(jax.devices()[0].platform), extra=dict(memory_method=mem.method))


# --------------------------------------------------------------------------- torch workers
def _torch_layer(case, size):
    import torch

    if case == "linear_lif":
        layer = torch.nn.Linear(size["I"], size["N"])
        x = (torch.rand(size["T"], size["B"], size["I"]) < 0.3).float()
    else:
        c = size["C"]
        layer = torch.nn.Conv2d(c, c, 3, padding=1)
        x = (torch.rand(size["T"], size["B"], c, size["H"], size["H"]) < 0.3).float()
    return layer, x


def _merged(layer, x):
    t, b = x.shape[:2]
    y = layer(x.reshape((t * b, *tuple(x.shape[2:]))))
    return y.reshape((t, b, *tuple(y.shape[1:])))


def _run_torch(library, case, size, warmup, iters):
    import torch

    if size.get("torch_threads"):
        torch.set_num_threads(int(size["torch_threads"]))
    torch.manual_seed(0)
    if library == "snntorch":
        import snntorch

        neuron = snntorch.Leaky(beta=0.5)

        def forward(y):
            mem = neuron.init_leaky()
            out = []
            for t in range(y.shape[0]):
                spk, mem = neuron(y[t], mem)
                out.append(spk)
            return torch.stack(out)
    elif library == "norse":
        import norse.torch as norse_torch

        neuron = norse_torch.LIF()

        def forward(y):
            return neuron(y)[0]
    elif library == "spikingjelly":
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based import neuron as sj_neuron

        node = sj_neuron.LIFNode(step_mode="m")

        def forward(y):
            functional.reset_net(node)
            return node(y)
    else:
        raise ValueError(library)

    with PeakRSS() as mem:
        layer, x = _torch_layer(case, size)

        def step():
            layer.zero_grad(set_to_none=True)
            loss = forward(_merged(layer, x)).sum()
            loss.backward()
            return loss

        median = _time_calls(step, warmup, iters)
    return dict(median_seconds=median, compile_seconds=None, peak_bytes=mem.peak, device="cpu",
                extra=dict(memory_method=mem.method, threads=torch.get_num_threads()))


def _worker(library, variant, case, size, warmup, iters):
    if library == "revsnn_jax":
        result = _run_ours(variant, case, size, warmup, iters)
    elif library == "spyx":
        result = _run_spyx(case, size, warmup, iters)
    else:
        result = _run_torch(library, case, size, warmup, iters)
    row = dict(library=library, variant=variant, case=case, device=result["device"],
               dtype="float32", median_seconds=result["median_seconds"],
               compile_seconds=result["compile_seconds"], peak_bytes=int(result["peak_bytes"]))
    print("ROW " + json.dumps({"row": row, "extra": result["extra"]}), flush=True)


# --------------------------------------------------------------------------- gradient check
def lean_plain_gradient_gap(case: str, size: dict) -> float:
    """Largest |lean - plain| weight/bias gradient difference at ``size`` (float32), relative
    to the largest |plain| gradient entry of the same array."""
    import jax
    import numpy as np

    params, x = _jax_data(case, size, jax.random.PRNGKey(0))
    grads = [jax.jit(jax.grad(_ours_loss(v, case)))(params, x) for v in ("plain", "lean")]
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(a)))
               for a, b in zip(jax.tree_util.tree_leaves(grads[0]),
                               jax.tree_util.tree_leaves(grads[1]), strict=True))


# --------------------------------------------------------------------------- driver
def _variants(library):
    return ("plain", "lean") if library == "revsnn_jax" else ("default",)


def _installed(python, library) -> bool:
    probe = subprocess.run([python, "-c", f"import {IMPORT_NAME[library]}"],
                           capture_output=True, text=True, env=_env())
    return probe.returncode == 0


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_worker(args, python, library, variant, case, size):
    """One (library, variant, case) in a fresh subprocess: ``(row, extra)`` or ``None`` (the
    reason printed)."""
    spec = json.dumps(dict(library=library, variant=variant, case=case, size=size,
                           warmup=args.warmup, iters=args.iters))
    try:
        proc = subprocess.run([python, os.path.abspath(__file__), "--worker", spec],
                              capture_output=True, text=True, env=_env(),
                              timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
        print(f"{library}/{variant}/{case} TIMED OUT after {args.worker_timeout} s "
              "(no row; raise --worker-timeout)", flush=True)
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        print(f"{library}/{variant}/{case} FAILED:\n  " + "\n  ".join(tail), flush=True)
        return None
    got = json.loads(lines[-1][4:])
    return got["row"], got["extra"]


def _combine_rounds(results: list) -> tuple[dict, dict]:
    """One row from a (library, variant, case)'s rounds (``None`` where a round gave no row):
    ``median_seconds`` / ``compile_seconds`` = the median over rounds, ``peak_bytes`` = the
    largest, and with more than one round ``round_seconds`` = each round's median (``null`` for
    a missing round); one round gives the worker's row unchanged."""
    done = [r for r in results if r is not None]
    row = dict(done[0][0])
    row["median_seconds"] = statistics.median(r["median_seconds"] for r, _ in done)
    compiles = [r["compile_seconds"] for r, _ in done if r["compile_seconds"] is not None]
    row["compile_seconds"] = statistics.median(compiles) if compiles else None
    row["peak_bytes"] = max(r["peak_bytes"] for r, _ in done)
    if len(results) > 1:
        row["round_seconds"] = [None if r is None else r[0]["median_seconds"] for r in results]
    return row, done[0][1]


def run_benchmark(args) -> list[dict]:
    """Every (library, variant, case) in a fresh subprocess, the whole sweep ``args.rounds``
    times in the same order (so that the libraries alternate and share the machine's drift);
    returns the rows (with ``round_seconds`` when ``rounds > 1``)."""
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    sizes = {case: dict(QUICK[case] if args.quick else FULL[case]) for case in CASES}
    sizes["linear_lif"]["I"] = 16 if args.quick else args.in_features
    if args.torch_threads:
        for case in CASES:
            sizes[case]["torch_threads"] = args.torch_threads
    plan = []
    for library in args.libraries:
        python = dict(args.python_for or []).get(library, sys.executable)
        if not _installed(python, library):
            print(f"{library} not installed: pip install -e '.[bench]'", flush=True)
            continue
        plan += [(python, library, variant, case) for case in args.cases
                 for variant in _variants(library)]
    results = {key[1:]: [] for key in plan}
    rows, extras = [], []
    for i in range(args.rounds):
        if args.rounds > 1:
            print(f"round {i + 1}/{args.rounds}", flush=True)
        for python, library, variant, case in plan:
            got = _run_worker(args, python, library, variant, case, sizes[case])
            results[(library, variant, case)].append(got)
            if got is None:
                continue
            r = got[0]
            print(f"  done {library:12s} {variant:8s} {case:10s} "
                  f"{r['median_seconds']:.3f} s  {r['peak_bytes'] / 2**20:.0f} MiB", flush=True)
            combined = [_combine_rounds(res) for res in results.values() if any(res)]
            rows, extras = [row for row, _ in combined], [extra for _, extra in combined]
            if args.json:  # after every row, so an interrupted run keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    _print_table(rows, extras, sizes)
    if args.rounds > 1:
        _print_rounds(rows)
    return rows


def _print_rounds(rows):
    """Per case: each row's per-round medians, and in how many rounds our lean scan was faster
    than each other library (rounds where both have a time)."""
    print("\nper round (median s):")
    for row in rows:
        times = " ".join("-" if t is None else f"{t:.3f}" for t in row["round_seconds"])
        print(f"  {row['library']:13s}{row['variant']:9s}{row['case']:11s}{times}")
    for case in CASES:
        lean = [r for r in rows if r["case"] == case and r["variant"] == "lean"]
        if not lean:
            continue
        for other in rows:
            if other["case"] != case or other is lean[0]:
                continue
            pairs = [(a, b) for a, b in zip(lean[0]["round_seconds"], other["round_seconds"],
                                            strict=True) if a is not None and b is not None]
            wins = sum(a < b for a, b in pairs)
            print(f"  {case}: lean faster than {other['library']}/{other['variant']} in "
                  f"{wins} of {len(pairs)} rounds")


def _print_table(rows, extras, sizes):
    print()
    for case in CASES:
        print(f"{case}: {sizes[case]}")
    print(f"\n{'library':13s}{'variant':9s}{'case':11s}{'median s':>10s}{'compile s':>11s}"
          f"{'peak MiB (RSS)':>16s}{'XLA plan MiB':>14s}")
    for row, extra in zip(rows, extras, strict=True):
        comp = "-" if row["compile_seconds"] is None else f"{row['compile_seconds']:.2f}"
        plan = extra.get("xla_plan_bytes")
        plan = "-" if plan is None else f"{plan / 2**20:.0f}"
        print(f"{row['library']:13s}{row['variant']:9s}{row['case']:11s}"
              f"{row['median_seconds']:10.3f}{comp:>11s}{row['peak_bytes'] / 2**20:16.0f}{plan:>14s}")
    if extras:
        print(f"memory method: {extras[0].get('memory_method')}; load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    parser.add_argument("--json", help="write the rows to this path")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--in-features", type=int, default=512,
                        help="input width of the linear_lif Linear (benchmark: = N)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the whole sweep this many times, alternating libraries; rows "
                        "then give the median over rounds and each round's in round_seconds")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the torch libraries (default: torch's); "
                        "on a loaded machine 1 thread avoids OpenMP oversubscription stalls")
    parser.add_argument("--worker-timeout", type=float, default=900,
                        help="seconds one (library, case) subprocess may take")
    parser.add_argument("--python-for", nargs=2, action="append", metavar=("LIBRARY", "PYTHON"),
                        help="run LIBRARY's worker with another interpreter (its own venv)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        _worker(spec["library"], spec["variant"], spec["case"], spec["size"], spec["warmup"],
                spec["iters"])
        return None
    rows = run_benchmark(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {len(rows)} rows to {args.json}")
    return rows


if __name__ == "__main__":
    main()
