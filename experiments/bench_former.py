"""Training memory of RevSFormer vs Spikingformer (compile only) and a timed reduced-width run.

Three parts, every row from :func:`revsnn_jax.memory.benchmark.measure_training_step` (one full
training step, forward + backward + SGD-momentum update; memory per image = slope of XLA's
compiled peak between batch B and 2B, docs/memory.md):

1. ``pair``: RevSFormer-4-384 (reversible, checkpoint, none) and Spikingformer-4-384 (none,
   checkpoint) at CIFAR shape (32x32x3), T=4, batch B (default 64), 10 classes.
2. ``depth``: RevSFormer-L-384 (reversible) and Spikingformer-L-384 (none) for L in 2, 4, 8, 16
   at the same shape (``depth=`` override).
3. ``timed``: a reduced-width RevSFormer (D=64, 4 heads, 4 blocks) at CIFAR shape, T=4, batch 8,
   run on random data for every memory mode; median step seconds after compiling.

Usage::

    XLA_FLAGS=--xla_backend_optimization_level=0 PYTHONPATH=. \\
        python experiments/bench_former.py --json experiments/results/memory_former.json

(XLA's memory plan does not depend on the LLVM optimisation level; the timed part is run
separately without that flag, ``--parts timed``, so that its step times are optimised code.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

from revsnn_jax.core.modes import MEMORY_MODES, PLAIN_MEMORY_MODES
from revsnn_jax.memory import benchmark

MiB = 2 ** 20


def _row(name: str, mode: str, batch: int, **model_kwargs) -> dict:
    row = benchmark.measure_training_step(name, batch=batch, time_steps=4, num_classes=10,
                                          memory_mode=mode, model_kwargs=model_kwargs or None)
    row["model_kwargs"] = model_kwargs
    print(f"{name} {model_kwargs or ''} / {mode}: {row['bytes_per_image'] / MiB:.2f} MiB/image "
          f"(compile {row['compile_seconds']:.1f} s)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--depths", default="2,4,8,16")
    parser.add_argument("--parts", default="pair,depth,timed")
    parser.add_argument("--timed-steps", type=int, default=5)
    parser.add_argument("--json", default="experiments/results/memory_former.json")
    args = parser.parse_args()
    parts = args.parts.split(",")
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[f"meta_{'_'.join(parts)}"] = {
        "device": jax.devices()[0].device_kind, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }

    def save():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))

    if "pair" in parts:
        rows = [_row("revsformer_4_384", m, args.batch)
                for m in MEMORY_MODES]
        rows += [_row("spikingformer_4_384", m, args.batch) for m in PLAIN_MEMORY_MODES]
        rev, plain = rows[0]["bytes_per_image"], rows[3]["bytes_per_image"]
        results["pair"] = {"batch": args.batch, "rows": rows,
                           "ratio_spikingformer_none_over_revsformer_reversible": plain / rev,
                           "ratio_peak_per_image": (rows[3]["peak_bytes"] / rows[0]["peak_bytes"])}
        print(f"ratio Spikingformer-4-384 / RevSFormer-4-384 per image: {plain / rev:.2f}x")
        save()
    if "depth" in parts:
        rows = []
        for depth in (int(d) for d in args.depths.split(",")):
            rows.append(_row("revsformer_4_384", "reversible", args.batch, depth=depth))
            rows.append(_row("spikingformer_4_384", "none", args.batch, depth=depth))
            results["depth"] = {"batch": args.batch, "rows": rows}
            save()
        rev = [r["bytes_per_image"] for r in rows if r["memory_mode"] == "reversible"]
        results["depth"]["revsformer_max_over_min"] = max(rev) / min(rev)
        save()
    if "timed" in parts:
        kwargs = dict(dim=64, heads=4, depth=4)
        rows = []
        for mode in MEMORY_MODES:
            row = benchmark.measure_training_step(
                "revsformer_4_384", batch=8, time_steps=4, num_classes=10, memory_mode=mode,
                time_it=True, timed_steps=args.timed_steps, model_kwargs=kwargs)
            row["model_kwargs"] = kwargs
            rows.append(row)
            print(f"timed {mode}: {row['step_seconds']:.3f} s/step", flush=True)
        none = rows[2]["step_seconds"]
        results["timed"] = {"rows": rows, "ratio_reversible_over_none":
                            rows[0]["step_seconds"] / none,
                            "ratio_checkpoint_over_none": rows[1]["step_seconds"] / none}
        save()


if __name__ == "__main__":
    main()
