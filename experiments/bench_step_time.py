"""Step time of a reversible model against its plain twin, alternated in one process.

Both training steps (forward, backward, SGD-momentum update; :func:`revsnn_jax.steps
.make_train_step`) are built from the same registered model under two memory modes, compiled,
warmed up, and then timed in alternation (``A B A B ...``, ``--rounds`` pairs), so that load
changes on the machine hit both alike. Reported per mode: median, quartiles and min of the step
times; and the median of the per-round ratios (mode 1 / mode 2), with its quartiles, which is the
figure to quote. Values and gradients of the modes are equal (tested elsewhere); only time is
measured here.

Usage::

    PYTHONPATH=. python experiments/bench_step_time.py --model revsresnet37 \\
        --widths 16,16,32,32 --batch 8 --rounds 20 --json experiments/results/step_time.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import bench_models  # experiments/bench_models.py: the benchmarks' one step builder
import jax


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def build(name: str, mode: str, batch: int, time_steps: int, model_kwargs: dict):
    """A jitted step and its (params, state, opt_state, x, y), materialised from seed 0
    (:func:`bench_models.build`, the one builder of the benchmarks)."""
    step, args, _ = bench_models.build(name, batch, time_steps, model_kwargs, memory_mode=mode)
    return step, args


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="revsresnet37")
    parser.add_argument("--modes", default="reversible,none",
                        help="two memory modes, the first divided by the second")
    parser.add_argument("--widths", type=_int_list, default=(16, 16, 32, 32))
    parser.add_argument("--blocks", type=_int_list, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per mode")
    parser.add_argument("--rounds", type=int, default=20, help="timed A/B pairs")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if len(modes) != 2:
        parser.error("--modes takes exactly two memory modes, e.g. reversible,none")
    if args.rounds < 1 or args.warmup < 0 or args.batch < 1:
        parser.error("--rounds and --batch must be >= 1, --warmup >= 0")
    kwargs = {"widths": args.widths} if args.widths else {}
    if args.blocks:
        kwargs["blocks"] = args.blocks

    built, compile_s = {}, {}
    for mode in modes:
        step, step_args = build(args.model, mode, args.batch, args.time_steps, kwargs)
        start = time.perf_counter()
        for _ in range(max(1, args.warmup)):
            bench_models.time_once(step, step_args)
        compile_s[mode] = time.perf_counter() - start
        built[mode] = (step, step_args)
        print(f"{mode}: compiled and warmed up in {compile_s[mode]:.1f} s", flush=True)

    times = {mode: [] for mode in modes}
    for r in range(args.rounds):
        for mode in modes:
            times[mode].append(bench_models.time_once(*built[mode]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{m} {times[m][-1]:.3f} s" for m in modes), flush=True)
    ratios = [a / b for a, b in zip(times[modes[0]], times[modes[1]], strict=True)]

    summary = {"model": args.model, "model_kwargs": {k: list(v) for k, v in kwargs.items()},
               "batch": args.batch, "time_steps": args.time_steps, "rounds": args.rounds,
               "device": jax.devices()[0].platform, "machine": platform.machine(),
               "modes": {}}
    print(f"\n{'mode':<11} {'median s':>9} {'q1':>8} {'q3':>8} {'min':>8} {'compile s':>10}")
    for mode in modes:
        q1, q3 = _quartiles(times[mode])
        med = statistics.median(times[mode])
        summary["modes"][mode] = {"median_seconds": med, "q1_seconds": q1, "q3_seconds": q3,
                                  "min_seconds": min(times[mode]), "seconds": times[mode],
                                  "compile_seconds": compile_s[mode]}
        print(f"{mode:<11} {med:>9.3f} {q1:>8.3f} {q3:>8.3f} {min(times[mode]):>8.3f} "
              f"{compile_s[mode]:>10.1f}")
    r1, r3 = _quartiles(ratios)
    summary["ratio"] = {"of": f"{modes[0]} / {modes[1]}", "median": statistics.median(ratios),
                        "q1": r1, "q3": r3}
    print(f"\n{modes[0]} / {modes[1]} per round: median {statistics.median(ratios):.2f}x "
          f"(quartiles {r1:.2f}-{r3:.2f}) over {args.rounds} rounds")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
