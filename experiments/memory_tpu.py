"""TPU v5e memory plans against XLA:CPU's, for the README's "Memory plans for TPU" table.

Runs (or, with ``--collect DIR``, only gathers the JSON that these commands wrote in DIR)::

    revsnn memory --models revsresnet37 --memory-modes reversible,none --batch 32 --target T
    revsnn memory --models revsresnet21,revsresnet109 --memory-modes reversible --batch 32 \
        --target T
    revsnn memory --models msresnet34 --memory-modes none --batch 32 --target T
    revsnn memory --models msresnet34 --memory-modes checkpoint --batch 32 --target T
    revsnn memory --models revsformer_4_384 --memory-modes reversible --batch 64 --target T
    revsnn memory --models spikingformer_4_384 --memory-modes none --batch 64 --target T
    revsnn memory --models revsformer_4_384 --memory-modes reversible --batch 128 --target T
    revsnn memory --models trevsnn_small --memory-modes reversible,none --batch 32 \
        --image-size 64 --target T

for ``T`` in ``tpu-v5e`` and ``cpu`` (files ``{tpu,cpu}_{revsresnet37,revsresnet_depth,
msresnet34,msresnet34_checkpoint,revsformer,spikingformer,revsformer128,trevsnn}.json``; RevSFormer's TPU plan at 64 is scheduled unlike
128 and 256, so its slope is taken again at 128, see docs/tpu.md), plus ``plan_*.json`` from ``revsnn plan``), and writes
``experiments/results/memory_tpu.json``: ``{"tpu-v5e": rows, "cpu": rows, "plans": rows,
"estimates": ..., "plan_compiles": ...}`` (``--plan-log``: the compiles of an unfinished plan). ``estimates`` is the largest batch on one 16 GiB chip by the line through
the two compiled batches (``(budget - static) / slope``), which ``revsnn plan`` then checks by
compiling at the answer. The TPU compiles take minutes each on 2 cores (plans are cached, see
:mod:`revsnn_jax.memory`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys

RUNS = {"revsresnet37": ("reversible,none", 32), "revsresnet_depth": ("reversible", 32),
        "msresnet34": ("none", 32), "msresnet34_checkpoint": ("checkpoint", 32),
        "revsformer": ("reversible", 64), "spikingformer": ("none", 64),
        "revsformer128": ("reversible", 128), "trevsnn": ("reversible,none", 32)}
MODELS = {"revsresnet37": "revsresnet37", "revsresnet_depth": "revsresnet21,revsresnet109",
          "msresnet34": "msresnet34", "msresnet34_checkpoint": "msresnet34",
          "revsformer": "revsformer_4_384", "spikingformer": "spikingformer_4_384",
          "revsformer128": "revsformer_4_384", "trevsnn": "trevsnn_small"}
EXTRA = {"trevsnn": ["--image-size", "64", "--time-steps", "4"]}
OUT = pathlib.Path(__file__).resolve().parent / "results" / "memory_tpu.json"
GiB = 2 ** 30


def _run(directory: pathlib.Path) -> None:
    for target, prefix in (("tpu-v5e", "tpu"), ("cpu", "cpu")):
        for key, (modes, batch) in RUNS.items():
            subprocess.run([sys.executable, "-m", "revsnn_jax.cli", "memory", "--models",
                            MODELS[key], "--memory-modes", modes, "--batch", str(batch),
                            "--target", target, *EXTRA.get(key, []), "--json",
                            str(directory / f"{prefix}_{key}.json")], check=True)


def _plan_log(path: pathlib.Path) -> list[dict]:
    """The compiles a ``revsnn plan`` printed (``  LABEL: compiled batch N for T (KIND): peak X
    GiB (...)``), for a plan stopped before it finished."""
    rows = []
    for line in path.read_text().splitlines():
        match = re.match(r"\s*(.+?): compiled batch (\d+) for (\S+) \((.+?)\): peak ([\d.]+) GiB"
                         r" \((.+)\)", line)
        if match:
            label, batch, target, kind, peak, how = match.groups()
            rows.append({"label": label, "batch": int(batch), "target": target,
                         "device_kind": kind, "peak_gib": float(peak), "compile": how})
    return rows


def collect(directory: pathlib.Path, plan_logs: list[pathlib.Path] = ()) -> dict:
    out: dict = {"tpu-v5e": [], "cpu": [], "plans": [], "estimates": [],
                 "plan_compiles": [c for path in plan_logs for c in _plan_log(path)]}
    for prefix, target in (("tpu", "tpu-v5e"), ("cpu", "cpu")):
        for key in RUNS:
            path = directory / f"{prefix}_{key}.json"
            if path.exists():
                out[target].extend(json.loads(path.read_text()))
    for path in sorted(directory.glob("plan_*.json")):
        out["plans"].extend(json.loads(path.read_text()))
    budget = 16 * GiB
    for target in ("tpu-v5e", "cpu"):
        for r in out[target]:
            slope, static = r["bytes_per_image"], r["static_bytes"]
            out["estimates"].append({
                "model": r["model"], "memory_mode": r["memory_mode"], "target": target,
                "budget_bytes": budget, "batches": [r["batch"], 2 * r["batch"]],
                "line_largest_batch": int((budget - static) // slope) if slope > 0 else None})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", type=pathlib.Path, default=None, metavar="DIR",
                        help="only gather the JSON files already written in DIR")
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("."),
                        help="where the runs write their JSON (default: here)")
    parser.add_argument("--plan-log", type=pathlib.Path, action="append", default=[],
                        help="the printed progress of a `revsnn plan` that did not finish")
    args = parser.parse_args()
    directory = args.collect or args.dir
    if args.collect is None:
        _run(directory)
    OUT.write_text(json.dumps(collect(directory, args.plan_log), indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
