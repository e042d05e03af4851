"""Our event frames against SpikingJelly's own integration, bit for bit.

For recordings written in each data set's format (DVS128 Gesture ``.npy``, CIFAR10-DVS AEDAT 4,
N-MNIST ``.bin``) and read back through the real readers, the frames of
:func:`revsnn_jax.data.integrate.integrate_frames` -- and the frames the pipeline serves from
its cache -- equal ``spikingjelly.datasets.utils.integrate_events_by_fixed_frames_number`` for
``split_by='number'`` and ``'time'``, several T, odd event counts, in value and dtype.

SpikingJelly's ``spikingjelly.datasets`` package imports torchvision; where the installed
torchvision cannot load (a CUDA build next to the CPU torch), SpikingJelly's three integration
functions are compiled from its installed ``datasets/utils.py`` itself (they use only NumPy).
Skipped only when SpikingJelly is not installed (the ``parity`` extra).
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import warnings
from collections.abc import Callable
from typing import Optional, Union

import numpy as np
import pytest
from event_writers import SENSOR, random_events, write_dataset

from revsnn_jax import data
from revsnn_jax.data import integrate, recordings

SJ_FUNCTIONS = ("integrate_events_segment_to_frame", "cal_fixed_frames_number_segment_index",
                "integrate_events_by_fixed_frames_number")


@pytest.fixture(scope="module")
def spikingjelly_integrate():
    """SpikingJelly's ``integrate_events_by_fixed_frames_number``."""
    spec = importlib.util.find_spec("spikingjelly")
    if spec is None:
        pytest.skip("spikingjelly is not installed (pip install 'revsnn-jax[parity]')")
    try:
        from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number
        return integrate_events_by_fixed_frames_number
    except Exception:  # torchvision that cannot load: run SpikingJelly's own source
        pass
    path = pathlib.Path(spec.origin).parent / "datasets" / "utils.py"
    tree = ast.parse(path.read_text(), str(path))
    functions = [node for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name in SJ_FUNCTIONS]
    assert sorted(f.name for f in functions) == sorted(SJ_FUNCTIONS), path
    namespace = {"np": np, "Optional": Optional, "Union": Union, "Callable": Callable}
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["integrate_events_by_fixed_frames_number"]


@pytest.mark.parametrize("name", ["dvs128_gesture", "cifar10_dvs", "nmnist"])
def test_frames_equal_spikingjelly_for_each_format(tmp_path, name, spikingjelly_integrate):
    rng = np.random.default_rng(7)
    per_class = {"all": 1} if name == "cifar10_dvs" else {"train": 1}
    written = write_dataset(tmp_path, name, per_class, rng, events=(201, 331))
    height, width = SENSOR[name]
    checked = 0
    for path in list(next(iter(written.values())))[:4]:
        events = recordings.read_events(name, path)  # the real reader (tonic's / np.load)
        assert len(events["t"]) % 2 == 1
        for split_by in ("number", "time"):
            for frames in (1, 3, 10, 16):
                ours = integrate.integrate_frames(events, frames, split_by, height, width)
                theirs = spikingjelly_integrate(events, split_by, frames, height, width)
                assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
                np.testing.assert_array_equal(ours, theirs, err_msg=f"{path} {split_by} T={frames}")
                checked += 1
    assert checked == 4 * 2 * 4


@pytest.mark.parametrize("split_by", ["number", "time"])
def test_cached_frames_served_by_the_pipeline_equal_spikingjelly(tmp_path, split_by,
                                                                 spikingjelly_integrate):
    rng = np.random.default_rng(3)
    written = write_dataset(tmp_path, "nmnist", {"train": 2, "test": 1}, rng, events=(101, 251))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", recordings.IncompleteDataWarning)
        source = data.load_source("nmnist", "test", str(tmp_path), time_steps=7,
                                  split_by=split_by, progress=False)
    paths = sorted(written["test"], key=lambda p: (int(p.parent.name), p.name))
    assert len(source) == len(paths) == 10
    for i, path in enumerate(paths):
        x, y = source[i]
        theirs = spikingjelly_integrate(recordings.read_events("nmnist", path), split_by, 7,
                                        34, 34)
        assert y == int(path.parent.name)
        # the pipeline serves [T, H, W, 2] float32; the counts are exact in float32
        np.testing.assert_array_equal(np.moveaxis(x, -1, 1).astype(np.float64), theirs)


def test_spikingjelly_rules_on_edge_cases(spikingjelly_integrate):
    rng = np.random.default_rng(11)
    # fewer events than frames: SpikingJelly's last frame takes them all
    few = random_events(rng, 5, 34, 34)
    for frames in (4, 5, 8):
        np.testing.assert_array_equal(
            integrate.integrate_frames(few, frames, "number", 34, 34),
            spikingjelly_integrate(few, "number", frames, 34, 34))
    # events out of time order (the first and last the earliest and latest, so that
    # SpikingJelly's span is positive), and the uint64 timestamps of AEDAT 4 files
    events = random_events(rng, 301, 34, 34)
    order = np.concatenate([[0], 1 + rng.permutation(299), [300]])
    shuffled = {k: v[order] for k, v in events.items()}
    unsigned = {**events, "t": events["t"].astype(np.uint64)}
    for ev in (shuffled, unsigned):
        for split_by in ("number", "time"):
            for frames in (2, 3, 5):
                np.testing.assert_array_equal(
                    integrate.integrate_frames(ev, frames, split_by, 34, 34),
                    spikingjelly_integrate(ev, split_by, frames, 34, 34))
    # where SpikingJelly raises (an empty time bin), ours is defined: empty frames, and the
    # last frame takes every event from its start on
    gap = {"t": np.array([0, 1, 2, 100]), "x": np.array([0, 1, 2, 3]),
           "y": np.zeros(4, int), "p": np.array([1, 0, 1, 1])}
    with pytest.raises(IndexError):
        spikingjelly_integrate(gap, "time", 4, 1, 4)
    frames = integrate.integrate_frames(gap, 4, "time", 1, 4)
    np.testing.assert_array_equal(frames.sum(axis=(1, 2, 3)), [3, 0, 0, 1])
    np.testing.assert_array_equal(frames[0, :, 0], [[0, 1, 0, 0], [1, 0, 1, 0]])


def test_tonic_frames_differ_where_the_issue_says():
    """tonic's ToFrame drops the remainder events that SpikingJelly's 'number' split keeps."""
    tonic_transforms = pytest.importorskip("tonic.transforms")
    rng = np.random.default_rng(5)
    ev = random_events(rng, 103, 34, 34)
    structured = np.zeros(103, np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    for key in "xytp":
        structured[key] = ev[key]
    theirs = tonic_transforms.ToFrame(sensor_size=(34, 34, 2), n_event_bins=10)(structured)
    ours = integrate.integrate_frames(ev, 10, "number", 34, 34)
    assert ours.sum() == 103 and theirs.sum() < 103


def test_bad_requests_are_refused():
    ev = random_events(np.random.default_rng(0), 11, 4, 4)
    with pytest.raises(ValueError, match="split_by must be one of 'number', 'time'"):
        integrate.integrate_frames(ev, 4, "events", 4, 4)
    with pytest.raises(ValueError, match="number of frames"):
        integrate.integrate_frames(ev, 0, "number", 4, 4)
    with pytest.raises(ValueError, match="out of the 3x4 sensor"):
        integrate.integrate_frames(ev, 2, "number", 4, 3)
