"""``revsnn train --config <DVS config> --data-dir ROOT`` on tonic's download, as it is."""

from __future__ import annotations

import json

import numpy as np
from event_writers import write_dataset

from revsnn_jax import cli


def test_train_a_dvs_config_on_a_tonic_directory(tmp_path, capsys):
    root = tmp_path / "data"
    write_dataset(root, "dvs128_gesture", {"train": 1, "test": 1}, np.random.default_rng(0))
    # the published config, shrunk by flags so that it takes seconds: T = 2 frames, a 16-wide
    # RevSFormer, two steps of batch 2
    argv = ["train", "--config", "revsformer_2_256_dvs128_gesture_t16", "--data-dir", str(root),
            "--workdir", str(tmp_path / "run"), "--steps", "2", "--time-steps", "2",
            "--batch-size", "2", "--eval-batch-size", "11", "--model-overrides",
            "{dim: 16, heads: 2}", "--measure-memory", "false", "--log-every", "1",
            "--num-threads", "1", "--prefetch", "2", "--no-progress"]
    assert cli.main(argv) == 0
    _, err = capsys.readouterr()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dataset"] == "dvs128_gesture" and summary["steps"] == 2
    assert summary["model"] == "revsformer_2_256" and summary["time_steps"] == 2
    # the frames were integrated once into the cache, split_by 'number' (the recipe's)
    frames = root / "dvs128_gesture" / "frames"
    assert sorted(p.name for p in frames.iterdir()) == [
        "test-T2-number.json", "test-T2-number.npy", "train-T2-number.json",
        "train-T2-number.npy"]
    # an incomplete download is one warning line per split, not a traceback
    assert err.count("revsnn train: warning: dvs128_gesture (train split): 11 recordings") == 1
    assert "Traceback" not in err
    # evaluation reads the same cache
    assert cli.main(["eval", "--workdir", str(tmp_path / "run")]) == 0
    assert "dvs128_gesture at step 2: test accuracy" in capsys.readouterr()[0]
    assert len(list(frames.iterdir())) == 4
    # a bad split_by is a one-line usage error
    argv[argv.index("--workdir") + 1] = str(tmp_path / "run2")
    assert cli.main([*argv, "--split-by", "frames"]) == 2
    _, err = capsys.readouterr()
    assert err.strip().splitlines()[-1].startswith("revsnn train: error: split_by 'frames'")


def test_missing_event_data_is_one_line_naming_the_files(tmp_path, capsys):
    argv = ["train", "--config", "nmnist_revsresnet24", "--data-dir", str(tmp_path),
            "--workdir", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(argv) == 2
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("revsnn train: error: neuromorphic data set")
    assert f"{tmp_path}/NMNIST/Train/<digit>/*.bin" in lines[0]
    assert "tonic.datasets.NMNIST(" in lines[0]
