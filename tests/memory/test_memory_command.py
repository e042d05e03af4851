"""``revsnn models`` and ``revsnn memory``: output formats (compile-only, tiny configs)."""

import json

import pytest

from revsnn_jax import cli
from revsnn_jax.memory import benchmark

FIELDS = {"model", "params", "batch", "time_steps", "image_size", "num_classes", "memory_mode",
          "bytes_per_image", "peak_bytes", "static_bytes", "temp_bytes", "argument_bytes",
          "output_bytes", "flops", "compile_seconds", "step_seconds", "device", "target",
          "device_kind"}


def test_models_json_lists_every_model_with_counted_params(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert all(set(r) == {"name", "params", "family", "reversible"} for r in rows)
    assert by_name["revsresnet37"] == {"name": "revsresnet37", "params": 23_510_154,
                                       "family": "revsresnet", "reversible": True}
    assert by_name["msresnet20"]["params"] == 272_330
    assert by_name["msresnet34"]["reversible"] is False


def test_memory_command_writes_rows_with_exact_fields(tmp_path, capsys):
    out = tmp_path / "mem.json"
    plot = tmp_path / "mem.png"
    argv = ["memory", "--models", "revsresnet21", "--batch", "1", "--time-steps", "2",
            "--image-size", "8", "--num-classes", "5", "--widths", "2", "--blocks", "1",
            "--memory-modes", "reversible", "--json", str(out), "--plot", str(plot)]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())
    assert [r["memory_mode"] for r in rows] == ["reversible"]
    for r in rows:
        assert set(r) == FIELDS
        assert list(r) == list(benchmark.ROW_FIELDS)
        assert (r["model"], r["batch"], r["time_steps"], r["image_size"], r["num_classes"]) == (
            "revsresnet21", 1, 2, 8, 5)
        assert r["params"] == 3 * 4 * 9 + 8 + 4 * (2 * 2 * 9 + 4) + 4 * 5 + 5
        assert r["bytes_per_image"] > 0 and r["peak_bytes"] > 0
        assert r["peak_bytes"] == r["temp_bytes"] + r["argument_bytes"] + r["output_bytes"] or (
            r["peak_bytes"] < r["temp_bytes"] + r["argument_bytes"] + r["output_bytes"])
        assert r["step_seconds"] is None and r["compile_seconds"] > 0
        assert isinstance(r["device"], str)
        assert (r["target"], r["device_kind"], r["device"]) == ("cpu", "cpu", "cpu:cpu")
    assert plot.stat().st_size > 1000
    out = capsys.readouterr().out
    assert "MiB/image" in out and "device kind" in out


def test_memory_command_rejects_unknown_model_and_mode(capsys):
    """Usage errors, not tracebacks (exit 2; every command: tests/commands/test_reliability_cli.py)."""
    for argv, message in ((["--models", "resnet9000"], "unknown model 'resnet9000'"),
                          (["--models", "msresnet18", "--memory-modes", "revesible"],
                           "unknown memory mode 'revesible'")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["memory", *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_cli_target_names_are_the_library_targets():
    """The CLI spells the targets without importing jax; they must be memory.TARGETS' keys."""
    from revsnn_jax import memory
    from revsnn_jax.commands.memory import TARGET_NAMES

    assert tuple(memory.TARGETS) == TARGET_NAMES
