"""The generated documentation pages (experiments/report.py) are in sync with their sources."""

import json
import shutil

import pytest
from support import ROOT, load_script

report = load_script("report")
RESULTS_PAGE = (ROOT / "docs" / "results.md").read_text()
API_PAGE = (ROOT / "docs" / "api.md").read_text()


def _section(text, markers):
    start, end = markers
    return text.split(start, 1)[1].split(end, 1)[0]


def test_results_page_matches_the_committed_json():
    wanted = report.replace_between(RESULTS_PAGE, report.RESULTS_MARKERS,
                                    report.results_markdown())
    assert wanted == RESULTS_PAGE, (
        "docs/results.md is stale: run `PYTHONPATH=. python experiments/report.py` and commit it")


def test_api_reference_is_current():
    wanted = report.replace_between(API_PAGE, report.API_MARKERS, report.api_markdown())
    assert wanted == API_PAGE, (
        "docs/api.md is stale (a public name was added, removed or re-documented): "
        "run `PYTHONPATH=. python experiments/report.py` and commit it")


def test_every_exported_public_name_is_in_the_api_reference():
    api = _section(API_PAGE, report.API_MARKERS)
    exported = report.exported_names()
    assert "revsnn_jax.memory.energy" in exported and "revsnn_jax.reversible" in exported
    missing = [f"{module}.{name}" for module, names in exported.items() for name in names
               if f"`{name}" not in api]
    assert not missing, f"not in docs/api.md: {missing}"
    for module in exported:
        assert f"**`{module}`**" in api


def test_results_quote_the_measured_ratios():
    section = _section(RESULTS_PAGE, report.RESULTS_MARKERS)
    resnet = json.loads((ROOT / "experiments/results/memory_resnet.json").read_text())
    rev = next(r for r in resnet if r["model"] == "revsresnet37"
               and r["memory_mode"] == "reversible")["bytes_per_image"]
    plain = next(r for r in resnet if r["model"] == "msresnet34"
                 and r["memory_mode"] == "none")["bytes_per_image"]
    assert f"**{plain / rev:.2f}x**" in section and "3.79x" in section
    assert "(../experiments/results/memory_vs_depth.png)" in section
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
    results_page, api_page = tmp_path / "results.md", tmp_path / "api.md"
    results_page.write_text("# t\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    api_page.write_text("# a\n<!-- api:start -->\n<!-- api:end -->\n")
    results = _results_copy(tmp_path)
    quiet = [].append
    pages = ["--pages", str(results_page), str(api_page), "--results", str(results)]
    assert report.main(["--check", *pages], out=quiet) == 1
    assert report.main(pages, out=quiet) == 0
    assert (results / "memory_vs_depth.png").stat().st_size > 10_000
    assert report.main(["--check", *pages], out=quiet) == 0
    assert "old" not in results_page.read_text() and "revsnn_jax" in api_page.read_text()
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("# nothing generated\n")
    with pytest.raises(ValueError, match="no generated section"):
        report.main(["--check", "--pages", str(no_markers)], out=quiet)
    with pytest.raises(ValueError, match="exactly one"):
        report.replace_between("no markers", report.RESULTS_MARKERS, "x")
