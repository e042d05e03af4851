"""Training pipeline: loss goes down, checkpoints resume bitwise, bad configs fail fast,
1 and 4 devices give the same loss curve."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from small_runs import SMALL, small

from revsnn_jax import cli
from revsnn_jax import training as train
from revsnn_jax.training.config import list_configs, load_config, parse_value

ROOT = pathlib.Path(__file__).resolve().parents[2]


# the runs below compile the same small steps again and again: share XLA's cache
pytestmark = pytest.mark.usefixtures("xla_compilation_cache")

def _metrics(workdir) -> list[dict]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_few_steps_decrease_the_loss_and_write_everything(tmp_path):
    train.train(small(steps=40, learning_rate=0.3, measure_memory=True,
                      memory_batch=8), tmp_path, progress=False)
    losses = [m["train_loss"] for m in _metrics(tmp_path) if "train_loss" in m]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    written = json.loads((tmp_path / "summary.json").read_text())
    for key in ("model", "dataset", "steps", "test_accuracy", "train_seconds",
                "bytes_per_image", "plain_bytes_per_image", "firing_rate"):
        assert key in written, key
    assert written["steps"] == 40 and written["model"] == "spiking_mlp"
    assert 0.5 < written["test_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    assert 0.0 < written["firing_rate"] < 1.0
    assert written["bytes_per_image"] > 0 and written["plain_bytes_per_image"] > 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "config.yaml").exists()


def test_resume_gives_the_parameters_of_an_uninterrupted_run(tmp_path):
    # checkpoint_every 4, stop after 6 (mid-epoch, between checkpoints), resume to 10;
    # with the transformer recipes' mixup and label smoothing, which must replay too
    cfg = small(steps=10, checkpoint_every=4, keep_checkpoints=2, mixup_alpha=0.5,
                label_smoothing=0.1, model_overrides={"hidden": [32, 16]})
    train.train(cfg, tmp_path / "a", progress=False)
    first = train.train(cfg, tmp_path / "b", progress=False, max_steps_this_run=6)
    assert first == {"steps": 6, "stopped_early": True}
    summary = train.train(cfg, tmp_path / "b", progress=False)
    assert summary["steps"] == 10
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["10", "8"]  # the last keep_checkpoints
    (ta, sa), (tb, sb) = train.restore(tmp_path / "a"), train.restore(tmp_path / "b")
    assert sa == sb == 10
    for name in ("params", "state", "opt_state"):
        for a, b in zip(jax.tree.leaves(getattr(ta, name)), jax.tree.leaves(getattr(tb, name)),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    # and the losses of the resumed steps are those of the uninterrupted run
    la = [m["train_loss"] for m in _metrics(tmp_path / "a") if "train_loss" in m]
    lb = [m["train_loss"] for m in _metrics(tmp_path / "b") if "train_loss" in m]
    assert la == lb


def test_cli_train_then_eval(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    rc = cli.main(["train", "--config", "digits_mlp", "--workdir", workdir, "--steps", "5",
                   "--batch-size", "16", "--model-overrides", "{hidden: [16]}",
                   "--memory-mode", "none", "--measure-memory", "false", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 5
    assert cli.main(["eval", "--workdir", workdir]) == 0
    assert "at step 5: test accuracy" in capsys.readouterr().out


def test_bad_configs_fail_fast_with_clear_messages(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*spiking_mlp"):
        train.Trainer(small(model="nope"))
    with pytest.raises(ValueError, match=r"unknown config key.*learning_rat\b.*known keys"):
        load_config("default", {"learning_rat": 0.1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: spiking_mlp\nbatchsize: 3\n")
    with pytest.raises(ValueError, match=r"unknown config key.*batchsize"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="unknown config 'no_such_config'"):
        load_config("no_such_config")
    with pytest.raises(ValueError, match="batch_size expects"):
        parse_value("batch_size", "3.5")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        train.Trainer(small(dataset="mnist"))
    with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
        train.Trainer(small(dataset="cifar10", data_dir=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="batch_size 2000 exceeds"):
        train.Trainer(small(batch_size=2000))
    # from the command line: an error message, no traceback
    rc = cli.main(["train", "--config", "default", "--workdir", str(tmp_path / "x"),
                   "--model", "nope"])
    assert rc == 2 and "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # a rejected config leaves no work directory
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", "default", "--workdir", str(tmp_path / "x"),
                  "--no-such-field", "1"])
    # a work directory holding a different run is not silently reused
    train.train(small(steps=1), tmp_path / "w", progress=False)
    with pytest.raises(ValueError, match=r"different configuration.*batch_size"):
        train.train(small(steps=1, batch_size=16), tmp_path / "w", progress=False)


def test_every_experiment_config_loads():
    names = list_configs()
    for name in ("default", "digits_mlp", "digits_revsresnet37", "mnist5k_revsresnet37",
                 "revsresnet21_cifar10", "revsresnet37_cifar100",
                 "msresnet18_cifar10", "msresnet34_cifar100"):
        assert name in names
    for name in names:
        cfg = load_config(name)
        if cfg.dataset in ("cifar10", "cifar100") and cfg.model.startswith(("revsresnet",
                                                                             "msresnet")):
            assert (cfg.optimizer, cfg.learning_rate, cfg.momentum, cfg.weight_decay,
                    cfg.batch_size, cfg.epochs) == ("sgd", 0.1, 0.9, 1e-4, 32, 200)
            assert cfg.milestones == ([100, 150] if cfg.dataset == "cifar10" else [60, 120, 160])
    assert parse_value("milestones", "[1, 2]") == [1, 2]
    assert parse_value("weight_decay", "1e-4") == 1e-4
    assert parse_value("data_dir", "none") is None
    assert parse_value("hflip", "false") is False


def test_the_main_job_is_a_reversible_spiking_resnet_on_mnist5k():
    cfg = load_config("default")
    assert cfg.to_dict() == {**load_config("mnist5k_revsresnet37").to_dict(),
                             "description": cfg.description}
    assert (cfg.dataset, cfg.model, cfg.memory_mode) == ("mnist5k", "revsresnet37", "reversible")
    assert cfg.measure_memory and cfg.input_channels == 3 and not cfg.hflip
    trainer = train.Trainer(cfg)  # the model takes the 28x28 examples tiled to 3 channels
    assert (len(trainer.train_source), len(trainer.test_source)) == (4000, 1000)
    assert trainer.example_shape == (28, 28, 3)
    assert load_config("digits_revsresnet37").dataset == "digits"  # digits stays a data set


def test_recipe_schedules_and_mixup():
    cfg = load_config("revsresnet21_cifar100")
    _, schedule = train.make_optimizer(cfg, steps_per_epoch=10, total_steps=2000)
    at = jax.numpy.array([0, 599, 600, 1199, 1200, 1600])
    lrs = jax.jit(jax.vmap(schedule))(at)
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001], rtol=1e-5)
    cosine = cfg.replace(optimizer="adamw", schedule="cosine", learning_rate=5e-4,
                         warmup_epochs=2, warmup_lr=1e-5, min_lr=1e-5)
    _, schedule = train.make_optimizer(cosine, steps_per_epoch=10, total_steps=100)
    np.testing.assert_allclose(jax.jit(jax.vmap(schedule))(jax.numpy.array([0, 20, 100])),
                               [1e-5, 5e-4, 1e-5], rtol=1e-4)
    x = jax.numpy.arange(8, dtype=jax.numpy.float32).reshape(4, 2)
    y = jax.numpy.array([0, 1, 2, 3])
    mix = small(mixup_alpha=0.5, mixup_prob=1.0, mixup_off_epoch=1)
    lams = [train.mixup_lambda(mix, s, steps_per_epoch=10) for s in range(12)]
    assert lams == [train.mixup_lambda(mix, s, steps_per_epoch=10) for s in range(12)]
    assert all(0.0 <= v < 1.0 for v in lams[:10]) and lams[10:] == [1.0, 1.0]  # off at epoch 1
    assert train.mixup_lambda(small(), 0, 10) == 1.0
    xm, ym = train.mixup(x, y, 0.25, 4)
    np.testing.assert_allclose(xm, 0.25 * x + 0.75 * x[::-1], rtol=1e-6)
    np.testing.assert_allclose(ym[0], [0.25, 0, 0, 0.75], rtol=1e-6)


_MULTI = textwrap.dedent("""
    import json, sys
    import jax
    from revsnn_jax import training as train
    from revsnn_jax.training.config import TrainConfig
    cfg = TrainConfig(**json.loads(sys.argv[1]))
    assert len(jax.devices()) == 4, jax.devices()
    try:
        train.Trainer(cfg.replace(batch_size=30))
    except ValueError as err:
        assert "not divisible by the 4 devices" in str(err), err
    else:
        raise AssertionError("batch 30 on 4 devices must fail")
    for n in (1, 4):
        summary = train.train(cfg, f"{sys.argv[2]}/d{n}", progress=False,
                              devices=jax.devices()[:n])
        assert summary["devices"] == n, summary
    trainer, step = train.restore(f"{sys.argv[2]}/d4")  # restore onto the 4-device mesh
    assert step == 8 and len(trainer.devices) == 4
""")


def test_one_and_four_devices_give_the_same_loss_curve(tmp_path):
    """Data parallel over 4 (forced host) devices: the loss curve of 1 device, to rounding."""
    cfg = dict(SMALL, steps=8, model_overrides={"hidden": [32, 32]})
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4 "
                                     "--xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", _MULTI, json.dumps(cfg), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curves = {n: [m["train_loss"] for m in _metrics(tmp_path / f"d{n}") if "train_loss" in m]
              for n in (1, 4)}
    assert len(curves[1]) == 8
    assert curves[1][-1] < curves[1][0]
    np.testing.assert_allclose(curves[1], curves[4], rtol=1e-4, atol=1e-5)
