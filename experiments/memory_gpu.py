"""NVIDIA GPU memory plans without a GPU (H100, A100-40G), for docs/gpu.md and the README.

Runs (or, with ``--collect DIR``, only gathers the JSON that these commands wrote in DIR), for
``T`` in ``gpu-h100`` and ``gpu-a100-40g`` (files ``{h100,a100-40g}_KEY.json``)::

    revsnn memory --models revsresnet37 --memory-modes reversible,none --batch 32 --target T
    revsnn memory --models msresnet34 --memory-modes none --batch 32 --target T
    revsnn memory --models revsformer_4_384 --memory-modes reversible --batch 64 --target T
    revsnn memory --models spikingformer_4_384 --memory-modes none --batch 64 --target T
    revsnn memory --models trevsnn_small --memory-modes reversible,none --batch 32 \\
        --image-size 64 --time-steps 4 --target T
    revsnn memory --models vgg11_revnode,vgg11 --batch 32 --target T

then the largest batch on one card (``plan_{h100,a100-40g}_{revsresnet37,msresnet34}.json``)::

    revsnn plan --model revsresnet37 --memory-modes reversible --target T
    revsnn plan --model msresnet34 --memory-modes none --target T

and the longest T at batch 64 on the H100 (``sweep_h100_{revsresnet37,msresnet34}.json``)::

    revsnn plan --model revsresnet37 --memory-modes reversible --target gpu-h100 \\
        --sweep time-steps --batch 64
    revsnn plan --model msresnet34 --memory-modes none --target gpu-h100 \\
        --sweep time-steps --batch 64

and writes ``experiments/results/memory_gpu.json``: ``{"gpu-h100": rows, "gpu-a100-40g": rows,
"plans": rows, "sweeps": rows, "checks": rows, "plans_earlier_search": rows}``. ``checks`` are single compiles that close a
search's bracket where its 6 compiles did not (``check_*.json``, :data:`CHECKS`: the
RevSResNet37 sweep ended with T = 108 over and T = 8 the largest compiled fit, MS-ResNet34's with
T = 101 over and T = 52 fitting). Each full-model compile takes 20-100 s on 2 loaded cores
(plans are cached, see :mod:`revsnn_jax.memory`; ``--cache-dir`` is passed on).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

TARGETS = {"gpu-h100": "h100", "gpu-a100-40g": "a100-40g"}
RUNS = {
    "revsresnet37": ["--models", "revsresnet37", "--memory-modes", "reversible,none",
                     "--batch", "32"],
    "msresnet34": ["--models", "msresnet34", "--memory-modes", "none", "--batch", "32"],
    "revsformer": ["--models", "revsformer_4_384", "--memory-modes", "reversible",
                   "--batch", "64"],
    "spikingformer": ["--models", "spikingformer_4_384", "--memory-modes", "none",
                      "--batch", "64"],
    "trevsnn": ["--models", "trevsnn_small", "--memory-modes", "reversible,none", "--batch",
                "32", "--image-size", "64", "--time-steps", "4"],
    "vgg11": ["--models", "vgg11_revnode,vgg11", "--batch", "32"],
}
PLANS = {"revsresnet37": ["--model", "revsresnet37", "--memory-modes", "reversible"],
         "msresnet34": ["--model", "msresnet34", "--memory-modes", "none"]}
SWEEP = ["--sweep", "time-steps", "--batch", "64"]
OUT = pathlib.Path(__file__).resolve().parent / "results" / "memory_gpu.json"


def _cli(argv: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "revsnn_jax.cli", *argv], check=True)


def _run(directory: pathlib.Path, cache: list[str]) -> None:
    for target, short in TARGETS.items():
        for key, argv in RUNS.items():
            _cli(["memory", *argv, "--target", target, *cache, "--json",
                  str(directory / f"{short}_{key}.json")])
    for target, short in TARGETS.items():
        for key, argv in PLANS.items():
            _cli(["plan", *argv, "--target", target, *cache, "--json",
                  str(directory / f"plan_{short}_{key}.json")])
    for key, argv in PLANS.items():
        _cli(["plan", *argv, "--target", "gpu-h100", *SWEEP, *cache, "--json",
              str(directory / f"sweep_h100_{key}.json")])


#: Single compiles (model, mode, T) at batch 64 on the H100 plan that close the brackets the
#: two time-step sweeps left open.
CHECKS = (("revsresnet37", "reversible", 107), ("msresnet34", "none", 58),
          ("msresnet34", "none", 59), ("msresnet34", "none", 60))


def check(directory: pathlib.Path, cache: list[str]) -> None:
    """Compile each of :data:`CHECKS` for the H100 plan (``check_*.json``)."""
    from revsnn_jax import memory
    from revsnn_jax.memory import benchmark

    for model, mode, time_steps in CHECKS:
        program = benchmark.step_program(model, memory_mode=mode, time_steps=time_steps)
        (plan,) = memory.compile_step(program, [64], "gpu-h100",
                                      cache_dir=cache[1] if cache else None)
        row = {"model": model, "memory_mode": mode, "time_steps": time_steps,
               "why": f"closes the bracket of sweep_h100_{model}", **plan.to_json()}
        path = directory / f"check_h100_{model}_T{time_steps}.json"
        path.write_text(json.dumps([row], indent=2))


def collect(directory: pathlib.Path) -> dict:
    def rows(pattern: str) -> list[dict]:
        return [r for path in sorted(directory.glob(pattern))
                for r in json.loads(path.read_text())]

    out = {target: [r for key in RUNS for r in rows(f"{short}_{key}.json")]
           for target, short in TARGETS.items()}
    out["plans"] = rows("plan_*.json")
    out["sweeps"] = rows("sweep_*.json")
    out["checks"] = rows("check_*.json")
    # plans of an earlier variant of the 1% search (0.9 g and g as its second pair), kept
    # because docs/gpu.md quotes the H100 RevSResNet37 answer from it
    out["plans_earlier_search"] = rows("v1_plan_*.json")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="gpu_runs", help="where the commands write their JSON")
    parser.add_argument("--collect", action="store_true", help="only gather --dir's JSON")
    parser.add_argument("--cache-dir", default=None, help="passed to revsnn memory/plan")
    args = parser.parse_args()
    directory = pathlib.Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    if not args.collect:
        cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
        _run(directory, cache)
        check(directory, cache)
    out = collect(directory)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    mib = 2 ** 20
    for target in TARGETS:
        for r in out[target]:
            print(f"{target:<13} {r['model']:<20} {r['memory_mode']:<10} "
                  f"{r['bytes_per_image'] / mib:8.2f} MiB/image")
    for r in out["plans"] + out["sweeps"]:
        print(f"{r['target']:<13} {r['model']:<20} {r['memory_mode']:<10} {r['sweep']:<10} "
              f"largest {r['largest']} ({r['compiles']} compiles, {r['seconds']:.0f} s)")
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
