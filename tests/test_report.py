"""The README's generated sections (experiments/report.py) are in sync with their sources."""

import importlib.util
import json
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "experiments" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_report()
README = (ROOT / "README.md").read_text()


def _section(text, markers):
    start, end = markers
    return text.split(start, 1)[1].split(end, 1)[0]


def test_readme_results_section_matches_the_committed_json():
    wanted = report.replace_between(README, report.RESULTS_MARKERS, report.results_markdown())
    assert wanted == README, (
        "README's results section is stale: run `PYTHONPATH=. python experiments/report.py` "
        "and commit README.md")


def test_readme_api_reference_is_current():
    wanted = report.replace_between(README, report.API_MARKERS, report.api_markdown())
    assert wanted == README, (
        "README's API reference is stale (a public name was added, removed or re-documented): "
        "run `PYTHONPATH=. python experiments/report.py` and commit README.md")


def test_every_exported_public_name_is_in_the_api_reference():
    api = _section(README, report.API_MARKERS)
    exported = report.exported_names()
    assert "revsnn_jax.energy" in exported and "revsnn_jax.reversible" in exported
    missing = [f"{module}.{name}" for module, names in exported.items() for name in names
               if f"`{name}" not in api]
    assert not missing, f"not in README's API reference: {missing}"
    for module in exported:
        assert f"**`{module}`**" in api


def test_results_quote_the_measured_ratios():
    section = _section(README, report.RESULTS_MARKERS)
    resnet = json.loads((ROOT / "experiments/results/memory_resnet.json").read_text())
    rev = next(r for r in resnet if r["model"] == "revsresnet37"
               and r["memory_mode"] == "reversible")["bytes_per_image"]
    plain = next(r for r in resnet if r["model"] == "msresnet34"
                 and r["memory_mode"] == "none")["bytes_per_image"]
    assert f"**{plain / rev:.2f}x**" in section and "3.79x" in section
    assert "(experiments/results/memory_vs_depth.png)" in section
    assert (ROOT / "experiments/results/memory_vs_depth.png").exists()


def _results_copy(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "experiments" / "results", results,
                    ignore=shutil.ignore_patterns("neurons.json", "*.png", "*.log"))
    return results


def test_neurons_json_is_rendered_when_present_and_skipped_when_absent(tmp_path):
    results = _results_copy(tmp_path)
    (results / "neurons.json").unlink(missing_ok=True)
    assert "Neuron speed against other libraries" not in report.results_markdown(results)
    rows = [{"library": "revsnn-jax", "variant": "lif scan", "case": "T=16 B=32 N=4096",
             "device": "cpu", "dtype": "float32", "median_seconds": 0.01234,
             "compile_seconds": 1.5, "peak_bytes": 3 * 2**20},
            {"library": "snntorch", "variant": "Leaky eager", "case": "T=16 B=32 N=4096",
             "device": "cpu", "dtype": "float32", "median_seconds": 0.5, "compile_seconds": None,
             "peak_bytes": None}]
    (results / "neurons.json").write_text(json.dumps(rows))
    text = report.results_markdown(results)
    assert "Neuron speed against other libraries" in text
    assert "| revsnn-jax | lif scan | T=16 B=32 N=4096 | cpu | float32 | 12.3 | 1.5 | 3.00 |" in text
    assert "| snntorch | Leaky eager | T=16 B=32 N=4096 | cpu | float32 | 500 |  |  |" in text
    (results / "neurons.json").write_text(json.dumps({"rows": [{"library": "x"}]}))
    with pytest.raises(ValueError, match="lacks"):
        report.results_markdown(results)


def test_check_mode_and_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\n<!-- results:start -->\nold\n<!-- results:end -->\n"
                      "<!-- api:start -->\n<!-- api:end -->\n")
    results = _results_copy(tmp_path)
    quiet = [].append
    assert report.main(["--check", "--readme", str(readme), "--results", str(results)],
                       out=quiet) == 1
    assert report.main(["--readme", str(readme), "--results", str(results)], out=quiet) == 0
    assert (results / "memory_vs_depth.png").stat().st_size > 10_000
    assert report.main(["--check", "--readme", str(readme), "--results", str(results)],
                       out=quiet) == 0
    with pytest.raises(ValueError, match="exactly one"):
        report.replace_between("no markers", report.RESULTS_MARKERS, "x")
