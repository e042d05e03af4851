"""Regenerate the documentation's results page and API reference from the committed sources.

* Results: reads the benchmark JSON in ``experiments/results/`` and rewrites ``docs/results.md``
  between ``<!-- results:start -->`` and ``<!-- results:end -->`` (memory and speed tables, the measured
  ratios against the published ones) and draws ``experiments/results/memory_vs_depth.png``.
  ``neurons.json`` (the neuron-library speed comparison: rows ``{library, variant, case,
  device, dtype, median_seconds, compile_seconds, peak_bytes}``) is rendered when present.
* API reference: every public name the package exports (``revsnn_jax.__all__`` and every
  submodule's ``__all__``) with its signature and the first line of its docstring, in
  ``docs/api.md`` between ``<!-- api:start -->`` and ``<!-- api:end -->``.

Usage::

    PYTHONPATH=. python experiments/report.py            # rewrite the pages and the plot
    PYTHONPATH=. python experiments/report.py --check    # exit 1 if a page is out of date

``tests/package/test_report.py`` fails when a page differs from what this script produces, so after
re-running a benchmark (or exporting a new function) run this script and commit.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from revsnn_jax.core.modes import MEMORY_MODES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOCS = ROOT / "docs"
PAGES = (DOCS / "results.md", DOCS / "api.md")
PLOT_NAME = "memory_vs_depth.png"
MiB = 2**20

RESULTS_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
API_MARKERS = ("<!-- api:start -->", "<!-- api:end -->")

#: Published memory ratios (per image, GPU, PyTorch) the benchmarks are compared with.
PUBLISHED = {
    "resnet": (3.79, "RevSNN (Zhang & Zhang, AAAI 2024), RevSResNet37 vs MS-ResNet34"),
    "former": (3.00, "RevSNN, RevSFormer vs Spikingformer"),
    "trevsnn": (8.6, "T-RevSNN (Hu et al., ICML 2024), vs Spike-driven Transformer"),
    "revnode": (58.65, "Lei et al., reversible node vs standard node (node only)"),
}

MODEL_NAMES = {
    "revsresnet21": "RevSResNet21", "revsresnet37": "RevSResNet37",
    "revsresnet109": "RevSResNet109", "msresnet18": "MS-ResNet18", "msresnet34": "MS-ResNet34",
    "msresnet104": "MS-ResNet104", "revsformer_4_384": "RevSFormer-4-384",
    "spikingformer_4_384": "Spikingformer-4-384", "trevsnn_small": "T-RevSNN small",
    "vgg11": "VGG-11 (LIF)", "vgg11_revnode": "VGG-11 (reversible node)",
}


# --------------------------------------------------------------------------- helpers
def _load(results: Path, name: str) -> Any | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l or r)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mib(b: float | None) -> str:
    return "" if b is None else f"{b / MiB:.2f}"


def _name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def _row(rows: Sequence[dict], model: str, mode: str, **match: Any) -> dict:
    for r in rows:
        if (r["model"] == model and r["memory_mode"] == mode
                and all(r.get(k) == v for k, v in match.items())):
            return r
    raise KeyError(f"no row for {model} {mode} {match}")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


# --------------------------------------------------------------------------- sections
def _headline(res: dict[str, Any]) -> str | None:
    rows = []
    if res["resnet"]:
        plain = _row(res["resnet"], "msresnet34", "none")["bytes_per_image"]
        rev = _row(res["resnet"], "revsresnet37", "reversible")["bytes_per_image"]
        rows.append(("RevSResNet37 (reversible) vs MS-ResNet34 (plain)", _mib(rev), _mib(plain),
                     f"**{_ratio(plain, rev)}**", f"{PUBLISHED['resnet'][0]:.2f}x",
                     "`memory_resnet.json`"))
    if res["former"]:
        pair = res["former"]["pair"]["rows"]
        plain = _row(pair, "spikingformer_4_384", "none")["bytes_per_image"]
        rev = _row(pair, "revsformer_4_384", "reversible")["bytes_per_image"]
        rows.append(("RevSFormer-4-384 vs Spikingformer-4-384", _mib(rev), _mib(plain),
                     f"**{_ratio(plain, rev)}**", f"{PUBLISHED['former'][0]:.2f}x",
                     "`memory_former.json`"))
    if res["trevsnn"]:
        for t in sorted({r["time_steps"] for r in res["trevsnn"]}):
            if t not in (4, 16):
                continue
            plain = _row(res["trevsnn"], "trevsnn_small", "none", time_steps=t)["bytes_per_image"]
            rev = _row(res["trevsnn"], "trevsnn_small", "reversible",
                       time_steps=t)["bytes_per_image"]
            rows.append((f"T-RevSNN small, T={t}: reversible vs its plain twin", _mib(rev),
                         _mib(plain), f"**{_ratio(plain, rev)}**",
                         f"{PUBLISHED['trevsnn'][0]:.1f}x (other baseline)", "`trevsnn.json`"))
    if res["revnode"]:
        net = res["revnode"]["network_memory"]
        for t in sorted({r["time_steps"] for r in net}):
            plain = _row(net, "vgg11", "none", time_steps=t)["bytes_per_image"]
            rev = _row(net, "vgg11_revnode", "reversible", time_steps=t)["bytes_per_image"]
            rows.append((f"VGG-11, reversible node vs LIF node, T={t} (whole network)",
                         _mib(rev), _mib(plain), f"**{_ratio(plain, rev)}**",
                         f"{PUBLISHED['revnode'][0]:.2f}x (node only)", "`revnode.json`"))
    if not rows:
        return None
    return ("### Measured memory ratios against the published ones\n\n"
            "MiB per image of a full training step (XLA:CPU compiled plan, slope between batch B "
            "and 2B); the papers measured GPU memory in PyTorch, so compare the ratios.\n\n"
            + _table(("comparison", "reversible MiB / image", "plain MiB / image", "measured",
                      "published", "source"), rows, "lrrrrl"))


def _engine(engine: dict | None) -> str | None:
    if not engine:
        return None
    by = {(r["mode"], r["depth"]): r for r in engine["results"]}
    modes = [m for m in MEMORY_MODES if any(k[0] == m for k in by)]
    header = ["blocks", *[f"{m} MiB / example" for m in modes],
              *[f"{m} step ms" for m in modes], "none / reversible memory"]
    rows = []
    for d in engine["depths"]:
        mem = [_mib(by[(m, d)]["bytes_per_example"]) for m in modes]
        ms = [f"{by[(m, d)]['step_s_median'] * 1e3:.0f}" for m in modes]
        ratio = (_ratio(by[("none", d)]["bytes_per_example"],
                        by[("reversible", d)]["bytes_per_example"])
                 if ("none", d) in by and ("reversible", d) in by else "")
        rows.append((d, *mem, *ms, ratio))
    s = engine["shape"]
    load = engine.get("machine", {}).get("load_average_at_start")
    note = f" Load average at start {load[0]:.1f} on 2 cores: step times are noisy." if load else ""
    return (f"### Engine: memory and step time vs depth (`engine.json`)\n\n"
            f"{engine['branch']}; T={s['time_steps']}, batch {s['batch']}, "
            f"{s['height']}x{s['width']}, {s['channels']} channels; {engine['step']}.{note}\n\n"
            + _table(header, rows))


def _resnet(rows: list | None) -> str | None:
    if not rows:
        return None
    out = [(_name(r["model"]), r["memory_mode"], f"{r['params']:,}",
            _mib(r["bytes_per_image"]), f"{r['peak_bytes'] / MiB:.0f}",
            f"{r['compile_seconds']:.0f}") for r in rows]
    b = rows[0]
    return (f"### RevSResNet vs MS-ResNet (`memory_resnet.json`)\n\nCIFAR {b['image_size']}x"
            f"{b['image_size']}, T={b['time_steps']}, batch {b['batch']} vs {2 * b['batch']}, "
            f"{b['device']}, compile only.\n\n"
            + _table(("model", "mode", "params", "MiB / image", f"peak MiB at B={b['batch']}",
                      "compile s"), out, "llrrrr"))


def _former(former: dict | None) -> str | None:
    if not former:
        return None
    pair = former["pair"]["rows"]
    out = [(_name(r["model"]), r["memory_mode"], f"{r['params']:,}", _mib(r["bytes_per_image"]),
            f"{r['peak_bytes'] / MiB:.0f}") for r in pair]
    b = former["pair"]["batch"]
    text = (f"### RevSFormer vs Spikingformer (`memory_former.json`)\n\nCIFAR 32x32, T=4, batch "
            f"{b} vs {2 * b}, compile only.\n\n"
            + _table(("model", "mode", "params", "MiB / image", f"peak MiB at B={b}"), out,
                     "llrrr"))
    depth = former.get("depth", {}).get("rows")
    if depth:
        levels = sorted({r["model_kwargs"]["depth"] for r in depth})
        rows = []
        for L in levels:
            rev = next(r for r in depth if r["model_kwargs"]["depth"] == L
                       and r["memory_mode"] == "reversible")
            plain = next(r for r in depth if r["model_kwargs"]["depth"] == L
                         and r["memory_mode"] == "none")
            rows.append((L, _mib(rev["bytes_per_image"]), _mib(plain["bytes_per_image"]),
                         _ratio(plain["bytes_per_image"], rev["bytes_per_image"])))
        text += "\n\nOver depth L (D = 384):\n\n" + _table(
            ("L", "RevSFormer reversible MiB / image", "Spikingformer none MiB / image",
             "ratio"), rows)
    return text


def _trevsnn(rows: list | None) -> str | None:
    if not rows:
        return None
    out = []
    for t in sorted({r["time_steps"] for r in rows}):
        rev = _row(rows, "trevsnn_small", "reversible", time_steps=t)
        plain = _row(rows, "trevsnn_small", "none", time_steps=t)
        out.append((t, f"{rev['params']:,}", _mib(rev["bytes_per_image"]),
                    _mib(plain["bytes_per_image"]),
                    _ratio(plain["bytes_per_image"], rev["bytes_per_image"])))
    b = rows[0]
    return (f"### T-RevSNN: memory vs time steps (`trevsnn.json`)\n\ntrevsnn_small, "
            f"{b['image_size']}x{b['image_size']} inputs, batch {b['batch']} vs "
            f"{2 * b['batch']}, compile only.\n\n"
            + _table(("columns T", "params", "reversible MiB / image", "plain MiB / image",
                      "plain / reversible"), out))


def _revnode(revnode: dict | None) -> str | None:
    if not revnode:
        return None
    node = [(r["time_steps"], r["node"], f"{r['bytes_per_neuron_step']:.3f}",
             f"{r['own_per_neuron_step']:.3f}", f"{r.get('own_less_than_reference', 0):.1f}x")
            for r in revnode["node_claim"]["rows"]]
    net = [(r["time_steps"], _name(r["model"]), r["memory_mode"], _mib(r["bytes_per_image"]),
            f"{r['ratio_vs_vgg11']:.3f}x") for r in revnode["network_memory"]]
    return ("### Reversible node (`revnode.json`)\n\nBytes a node keeps for its backward per "
            "neuron and time step (all of it, and its own: beyond its input and output), "
            f"against {revnode['node_claim']['reference']}; and whole-network memory per "
            "image:\n\n"
            + _table(("T", "node", "bytes / neuron-step", "own", "own, less than SpikingJelly"),
                     node, "rlrrr")
            + "\n\n"
            + _table(("T", "model", "mode", "MiB / image", "less than VGG-11 (LIF)"), net,
                     "rllrr"))


def _speed(res: dict[str, Any]) -> str | None:
    rows = []

    def pair(source: str, label: str, data: list | None, model: str, rev_mode: str = "reversible",
             plain_model: str | None = None, plain_mode: str = "none"):
        if not data:
            return
        rev = _row(data, model, rev_mode)
        plain = _row(data, plain_model or model, plain_mode)
        if rev.get("step_seconds") is None or plain.get("step_seconds") is None:
            return
        flops = (f"{rev['flops'] / plain['flops']:.2f}x"
                 if rev.get("flops") and plain.get("flops") else "")
        rows.append((label, f"{rev['step_seconds'] * 1e3:.0f}",
                     f"{plain['step_seconds'] * 1e3:.0f}",
                     _ratio(rev["step_seconds"], plain["step_seconds"]), flops, f"`{source}`"))

    pair("time_resnet_reduced.json", "RevSResNet37 reduced (16/16/32/32), B=8",
         res["time_resnet_reduced"], "revsresnet37")
    pair("time_resnet_reduced_run2.json", "RevSResNet37 reduced, second run",
         res["time_resnet_reduced_run2"], "revsresnet37")
    if res["former"] and res["former"].get("timed"):
        pair("memory_former.json", "RevSFormer-4 (D=64), B=8", res["former"]["timed"]["rows"],
             "revsformer_4_384")
    if res["time_former_run2"]:
        pair("time_former_reduced_run2.json", "RevSFormer-4 (D=64), second run",
             res["time_former_run2"]["timed"]["rows"], "revsformer_4_384")
    pair("trevsnn_time.json", "T-RevSNN small, 64x64, T=4, B=4", res["trevsnn_time"],
         "trevsnn_small")
    if res["revnode"]:
        pair("revnode.json", "VGG-11 width 16: reversible node vs LIF node, B=16",
             res["revnode"]["step_time"], "vgg11_revnode", plain_model="vgg11")
    if res["engine"]:
        by = {(r["mode"], r["depth"]): r for r in res["engine"]["results"]}
        for d in res["engine"]["depths"]:
            if d in (8, 32) and ("reversible", d) in by and ("none", d) in by:
                rev, plain = by[("reversible", d)], by[("none", d)]
                rows.append((f"engine, {d} blocks", f"{rev['step_s_median'] * 1e3:.0f}",
                             f"{plain['step_s_median'] * 1e3:.0f}",
                             _ratio(rev["step_s_median"], plain["step_s_median"]),
                             _ratio(rev["flops_loop_body_once"], plain["flops_loop_body_once"]),
                             "`engine.json`"))
    if not rows:
        return None
    return ("### Step time: reversible vs plain\n\nMedian wall time of a jitted training step "
            "on the project's shared 2-core CPU (other jobs running: treat the ratios as "
            "indicative); XLA's FLOP ratio (`cost_analysis()`, scan bodies counted once, "
            "comparable where both modes run the same loops) is the stable figure.\n\n"
            + _table(("case", "reversible ms", "plain ms", "time ratio", "FLOP ratio", "source"),
                     rows, "lrrrrl"))


def _neurons(rows: list | dict | None) -> str | None:
    """The neuron-library speed comparison, written by another benchmark (optional)."""
    if rows is None:
        return None
    if isinstance(rows, dict):
        rows = rows.get("rows", [])
    if not rows:
        return None
    fields = ("library", "variant", "case", "device", "dtype", "median_seconds",
              "compile_seconds", "peak_bytes")
    out = []
    for r in rows:
        missing = [f for f in fields if f not in r]
        if missing:
            raise ValueError(f"neurons.json row {r} lacks {missing}; rows need {list(fields)}")

        def num(v, scale=1.0, fmt=".3g"):
            return "" if v is None else format(v * scale, fmt)

        def _ms(seconds):
            if seconds is None:
                return ""
            return format(seconds * 1e3, ",.0f" if seconds >= 0.1 else ".3g")

        out.append((r["library"], r["variant"], r["case"], r["device"], r["dtype"],
                    _ms(r["median_seconds"]), num(r["compile_seconds"], 1.0, ".1f"),
                    "" if r["peak_bytes"] is None else _mib(r["peak_bytes"])))
    return ("### Neuron speed against other libraries (`neurons.json`)\n\n"
            + _table(("library", "variant", "case", "device", "dtype", "median ms",
                      "compile s", "peak MiB"), out, "lllllrrr"))


def load_results(results: Path = RESULTS) -> dict[str, Any]:
    """Every benchmark file the report uses (``None`` where absent)."""
    return {
        "engine": _load(results, "engine.json"),
        "resnet": _load(results, "memory_resnet.json"),
        "former": _load(results, "memory_former.json"),
        "trevsnn": _load(results, "trevsnn.json"),
        "trevsnn_time": _load(results, "trevsnn_time.json"),
        "revnode": _load(results, "revnode.json"),
        "time_resnet_reduced": _load(results, "time_resnet_reduced.json"),
        "time_resnet_reduced_run2": _load(results, "time_resnet_reduced_run2.json"),
        "time_former_run2": _load(results, "time_former_reduced_run2.json"),
        "neurons": _load(results, "neurons.json"),
    }


def results_markdown(results: Path = RESULTS) -> str:
    """The generated results section of docs/results.md (between the markers, excluded)."""
    res = load_results(results)
    parts = [
        "_Generated by `python experiments/report.py` from `experiments/results/*.json`; do not "
        "edit by hand (`tests/package/test_report.py` fails when this section is stale)._ All memory "
        "figures are XLA's compiled plan of a full training step (forward, backward, optimizer "
        "update) on CPU, per image = slope of the peak between batch B and 2B; no GPU was "
        "available for these runs. The notebook `notebooks/02_memory.ipynb` plots the same "
        "files and measures a small case live.",
        f"![memory per image against depth and time steps](../experiments/results/{PLOT_NAME})",
    ]
    for section in (_headline(res), _engine(res["engine"]), _resnet(res["resnet"]),
                    _former(res["former"]), _trevsnn(res["trevsnn"]), _revnode(res["revnode"]),
                    _speed(res), _neurons(res["neurons"])):
        if section:
            parts.append(section)
    if res["neurons"] is None:
        parts.append("The neuron-speed comparison with other libraries "
                     "(`experiments/results/neurons.json`) has not been run yet; this section "
                     "shows it once the file exists.")
    return "\n\n".join(parts)


def plot(results: Path = RESULTS, path: Path | None = None) -> Path:
    """Memory per image against depth (engine, ResNets, transformers) and against T (T-RevSNN)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = load_results(results)
    path = path or results / PLOT_NAME
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    if res["engine"]:
        for mode in MEMORY_MODES:
            rows = sorted((r for r in res["engine"]["results"] if r["mode"] == mode),
                          key=lambda r: r["depth"])
            axes[0].plot([r["depth"] for r in rows], [r["bytes_per_example"] / MiB for r in rows],
                         "o-", label=mode)
        axes[0].set(xscale="log", xlabel="blocks", ylabel="MiB / example",
                    title="engine: spiking conv stage")
        axes[0].set_xticks(res["engine"]["depths"], [str(d) for d in res["engine"]["depths"]])
        axes[0].minorticks_off()
        axes[0].legend(fontsize=8)
    if res["resnet"]:
        depth = {"revsresnet21": 21, "revsresnet37": 37, "revsresnet109": 109, "msresnet18": 18,
                 "msresnet34": 34, "msresnet104": 104}
        for prefix, mode, style in (("revsresnet", "reversible", "o-"),
                                    ("msresnet", "none", "s-")):
            rows = sorted((r for r in res["resnet"] if r["model"].startswith(prefix)
                           and r["memory_mode"] == mode), key=lambda r: depth[r["model"]])
            axes[1].plot([depth[r["model"]] for r in rows],
                         [r["bytes_per_image"] / MiB for r in rows], style,
                         label=f"{'RevSResNet' if prefix == 'revsresnet' else 'MS-ResNet'} {mode}")
        axes[1].set(xlabel="depth", ylabel="MiB / image", title="CIFAR ResNets, T=4")
        axes[1].legend(fontsize=8)
    if res["former"] and res["former"].get("depth"):
        rows = res["former"]["depth"]["rows"]
        for model, mode, style in (("revsformer_4_384", "reversible", "o-"),
                                   ("spikingformer_4_384", "none", "s-")):
            sel = sorted((r for r in rows if r["model"] == model and r["memory_mode"] == mode),
                         key=lambda r: r["model_kwargs"]["depth"])
            axes[2].plot([r["model_kwargs"]["depth"] for r in sel],
                         [r["bytes_per_image"] / MiB for r in sel], style,
                         label=f"{_name(model).split('-')[0]} {mode}")
        axes[2].set(xlabel="blocks L (D=384)", ylabel="MiB / image", title="transformers, T=4")
        axes[2].legend(fontsize=8)
    if res["trevsnn"]:
        for mode, style in (("reversible", "o-"), ("none", "s-")):
            sel = sorted((r for r in res["trevsnn"] if r["memory_mode"] == mode),
                         key=lambda r: r["time_steps"])
            axes[3].plot([r["time_steps"] for r in sel], [r["bytes_per_image"] / MiB for r in sel],
                         style, label=mode)
        axes[3].set(xlabel="columns T", ylabel="MiB / image", title="T-RevSNN small, 64x64")
        axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- API reference
def _default(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, tuple) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return repr(value)
    return "..."


def _signature(obj: Any) -> str:
    """Parameter names and simple defaults (no annotations: they vary across versions)."""
    try:
        sig = inspect.signature(obj)
        if inspect.isclass(obj) and [p.kind for p in sig.parameters.values()] == [
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]:
            # Flax NNX modules hide __init__ behind a metaclass: read it directly
            init = inspect.signature(obj.__init__)
            sig = init.replace(parameters=list(init.parameters.values())[1:])
    except (TypeError, ValueError):
        return "(...)"
    parts, star_done = [], False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            parts.append("*" + p.name)
            star_done = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append("**" + p.name)
            continue
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        text = p.name if p.default is p.empty else f"{p.name}={_default(p.default)}"
        parts.append(text)
    return "(" + ", ".join(parts) + ")"


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    line = line.replace("|", "\\|")
    return line if len(line) <= 160 else line[:157].rstrip() + "..."


def public_modules() -> list[str]:
    """``revsnn_jax`` and every submodule that declares ``__all__``, in import-path order."""
    import revsnn_jax

    names = ["revsnn_jax"]
    for info in pkgutil.walk_packages(revsnn_jax.__path__, "revsnn_jax."):
        if info.name.split(".")[-1].startswith("_") or ".commands" in info.name \
                or info.name.endswith(".cli"):
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            names.append(info.name)
    return sorted(names)


def exported_names() -> dict[str, list[str]]:
    """``{module: its __all__}`` for :func:`public_modules`."""
    return {m: list(importlib.import_module(m).__all__) for m in public_modules()}


def _describe(obj: Any) -> tuple[str, str]:
    if inspect.ismodule(obj):
        return "module", _first_line(obj)
    if inspect.isclass(obj):
        return "class", _first_line(obj)
    if callable(obj):
        return "function", _first_line(obj)
    text = repr(obj)
    return "constant", (f"`{text}`" if len(text) <= 80 else f"`{type(obj).__name__}`")


def api_markdown() -> str:
    """The API reference of docs/api.md (between the markers, markers excluded)."""
    parts = ["_Generated by `python experiments/report.py` from the package's `__all__` lists "
             "(signature without annotations, first docstring line); `tests/package/test_report.py` "
             "checks that every exported name is listed._"]
    for module_name, names in exported_names().items():
        module = importlib.import_module(module_name)
        lines = [f"**`{module_name}`** -- {_first_line(module)}", ""]
        for name in names:
            obj = getattr(module, name)
            kind, line = _describe(obj)
            if line.startswith(f"{name}("):  # a dataclass's generated docstring: no text
                line = ""
            ours = str(getattr(obj, "__module__", "")).startswith("revsnn_jax")
            if kind in ("function", "class") and ours:
                head = f"`{name}{_signature(obj)}`"
            elif kind in ("function", "class"):  # made by another library: its signature
                head = f"`{name}`"                  # varies with that library's version
            elif kind == "module":
                head = f"`{name}` (module)"
            else:
                head = f"`{name}`"
            lines.append(f"- {head}: {line}" if line else f"- {head}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- the pages
def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    start, end = markers
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"a page must hold exactly one {start} ... {end} pair (in that order); "
                         "add the markers where the generated section belongs")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def render(page_text: str, results: Path = RESULTS) -> str:
    """``page_text`` with every generated section it holds (results, API) regenerated."""
    sections = [(RESULTS_MARKERS, lambda: results_markdown(results)),
                (API_MARKERS, api_markdown)]
    present = [(m, body) for m, body in sections if m[0] in page_text or m[1] in page_text]
    if not present:
        raise ValueError("the page holds no generated section: add the markers "
                         f"{RESULTS_MARKERS} or {API_MARKERS}")
    for markers, body in present:
        page_text = replace_between(page_text, markers, body())
    return page_text


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a page differs from its generated sections")
    parser.add_argument("--pages", type=Path, nargs="+", default=list(PAGES),
                        help="the pages to regenerate (default: docs/results.md docs/api.md)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true", help="do not redraw the PNG")
    args = parser.parse_args(argv)
    stale = []
    for page in args.pages:
        current = page.read_text()
        wanted = render(current, args.results)
        if wanted != current:
            stale.append(page)
            if not args.check:
                page.write_text(wanted)
                out(f"updated {page}")
    if args.check:
        for page in stale:
            out(f"{page} is out of date: run `PYTHONPATH=. python experiments/report.py`")
        if not stale:
            out("pages are up to date")
        return 1 if stale else 0
    if not args.no_plot:
        out(f"wrote {plot(args.results)}")
    if not stale:
        out("pages already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
