"""Neuromorphic data sets read from tonic's download: layout, readers, frame cache, pipeline.

Recordings are written by the tests in each data set's own format (``event_writers``); the
frames' parity with SpikingJelly is in ``test_event_frames_parity.py``.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import warnings

import numpy as np
import pytest
from event_writers import CIFAR10_CLASSES, write_dataset, write_gesture_npy

from revsnn_jax import data
from revsnn_jax.data import datasets as datasets_module
from revsnn_jax.data import frame_cache, recordings

TONIC_CLASS = {"dvs128_gesture": "DVSGesture", "cifar10_dvs": "CIFAR10DVS", "nmnist": "NMNIST"}


def _load(root, name, split, **kw):
    kw.setdefault("time_steps", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", recordings.IncompleteDataWarning)
        return data.load_source(name, split, str(root), progress=False, **kw)


def _tonic_dataset(monkeypatch, name, root, split):
    """tonic's own Dataset class over ``root``, told that the download is there (tonic
    otherwise checks for its archives and a minimum file count, and would download)."""
    tonic = pytest.importorskip("tonic")
    cls = getattr(tonic.datasets, TONIC_CLASS[name])
    monkeypatch.setattr(cls, "_check_exists", lambda self: True)
    monkeypatch.setattr(cls, "download", lambda self: pytest.fail("tonic tried to download"))
    if name == "cifar10_dvs":
        return cls(str(root))
    return cls(str(root), train=split == "train")


@pytest.mark.parametrize("name", ["dvs128_gesture", "cifar10_dvs", "nmnist"])
def test_recordings_and_events_are_tonics(tmp_path, monkeypatch, name):
    """The recordings found and the events read are those of tonic's own data set class."""
    rng = np.random.default_rng(1)
    per_class = {"all": 11} if name == "cifar10_dvs" else {"train": 2, "test": 1}
    written = write_dataset(tmp_path, name, per_class, rng)
    if name == "dvs128_gesture":  # a float file too: tonic scales in place, then casts
        path = next(iter(written["train"]))
        write_gesture_npy(path, written["train"][path], dtype=np.float64)
    splits = ("train", "test")
    ours = {}
    for split in splits:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", recordings.IncompleteDataWarning)
            found, _ = recordings.find_recordings(name, split, tmp_path)
        ours[split] = {str(r.path): r.label for r in found}
    for split in ("all",) if name == "cifar10_dvs" else splits:
        theirs = _tonic_dataset(monkeypatch, name, tmp_path, split)
        mine = ({**ours["train"], **ours["test"]} if split == "all" else ours[split])
        assert {str(p): t for p, t in zip(theirs.data, theirs.targets, strict=True)} == mine
        for i, path in enumerate(theirs.data):
            events, label = theirs[i]
            assert label == mine[str(path)]
            read = recordings.read_events(name, path)
            for key in ("t", "x", "y", "p"):
                np.testing.assert_array_equal(read[key], events[key], err_msg=f"{path} {key}")
            # and the events are those written (N-MNIST's overflow marker is dropped)
            for key in ("t", "x", "y", "p"):
                np.testing.assert_array_equal(read[key], written[split][pathlib.Path(path)][key])
    if name == "cifar10_dvs":  # RevSNN's split: the first 90% of each class in name order
        test_names = sorted(p.split("/")[-1] for p in ours["test"])
        assert test_names == sorted(f"cifar10_{c}_9.aedat4" for c in CIFAR10_CLASSES)
        assert len(ours["train"]) == 10 * 10


@pytest.mark.parametrize("name", ["dvs128_gesture", "cifar10_dvs", "nmnist"])
def test_the_missing_data_message_names_the_files_and_the_tonic_command(tmp_path, name):
    layout = recordings.EVENT_DATASETS[name]
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_source(name, "train", str(tmp_path), time_steps=4)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / layout.pattern["train"].split(" ")[0]) in message
    assert f"tonic.datasets.{layout.tonic_class}('{tmp_path}'" in message
    assert f"--data-dir {tmp_path}" in message
    assert str(tmp_path / name / "train.npz") in message  # the npz route is named too


def test_a_partial_download_says_what_is_missing(tmp_path):
    # the archive downloaded but not extracted
    (tmp_path / "DVSGesture").mkdir()
    (tmp_path / "DVSGesture" / "ibmGestureTrain.tar.gz").write_bytes(b"partial")
    with pytest.raises(data.DataNotFoundError, match=r"ibmGestureTrain\.tar\.gz but not its "
                       r"extracted files"):
        data.load_source("dvs128_gesture", "train", str(tmp_path), time_steps=4)
    # a class missing: an error naming it; fewer recordings than a full download: a warning
    rng = np.random.default_rng(2)
    written = write_dataset(tmp_path, "nmnist", {"train": 1}, rng)
    for path in written["train"]:
        if path.parent.name == "7":
            path.unlink()
    with pytest.raises(data.DataNotFoundError, match=r"no recordings of class\(es\) 7 under"):
        data.load_source("nmnist", "train", str(tmp_path), time_steps=4)
    write_dataset(tmp_path, "nmnist", {"train": 1}, rng)
    with pytest.warns(recordings.IncompleteDataWarning, match="10 recordings under .*"
                      "a complete download has 60,000"):
        data.load_source("nmnist", "train", str(tmp_path), time_steps=4, progress=False)


def test_cache_is_reused_keyed_by_t_and_method_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    write_dataset(tmp_path, "dvs128_gesture", {"train": 1, "test": 1}, rng)
    reads = []
    real_read = recordings.read_events
    monkeypatch.setattr(recordings, "read_events",
                        lambda name, path: reads.append(path) or real_read(name, path))
    first = _load(tmp_path, "dvs128_gesture", "test", time_steps=5)
    assert len(reads) == 11 and len(first) == 11
    reference = np.stack([first[i][0] for i in range(11)])
    npy, meta = frame_cache.cache_paths(tmp_path, "dvs128_gesture", "test", 5, "number")
    assert npy.exists() and meta.exists() and not list(npy.parent.glob(".*"))  # no temp left
    # reused: nothing read again
    again = _load(tmp_path, "dvs128_gesture", "test", time_steps=5)
    assert len(reads) == 11
    np.testing.assert_array_equal(np.stack([again[i][0] for i in range(11)]), reference)
    # keyed by T and by the method: other entries, built from the recordings
    t7 = _load(tmp_path, "dvs128_gesture", "test", time_steps=7)
    assert len(reads) == 22 and t7[0][0].shape == (7, 128, 128, 2)
    _load(tmp_path, "dvs128_gesture", "test", time_steps=5, split_by="time")
    assert len(reads) == 33
    assert sorted(p.name for p in npy.parent.iterdir()) == [
        "test-T5-number.json", "test-T5-number.npy", "test-T5-time.json", "test-T5-time.npy",
        "test-T7-number.json", "test-T7-number.npy"]
    # corrupt: one flipped bit in the frames, a torn metadata file, a missing metadata file
    raw = bytearray(npy.read_bytes())
    raw[-5] ^= 1
    npy.write_bytes(bytes(raw))
    with pytest.warns(frame_cache.CorruptFrameCacheWarning, match="SHA-256"):
        rebuilt = _load(tmp_path, "dvs128_gesture", "test", time_steps=5)
    assert len(reads) == 44
    np.testing.assert_array_equal(np.stack([rebuilt[i][0] for i in range(11)]), reference)
    meta.write_text(meta.read_text()[:-20])
    with pytest.warns(frame_cache.CorruptFrameCacheWarning, match="cannot be read"):
        _load(tmp_path, "dvs128_gesture", "test", time_steps=5)
    meta.unlink()
    with pytest.warns(frame_cache.CorruptFrameCacheWarning, match="cannot be read"):
        _load(tmp_path, "dvs128_gesture", "test", time_steps=5)
    assert len(reads) == 66
    # the recordings changed (one more user): rebuilt with them
    write_dataset(tmp_path, "dvs128_gesture", {"test": 2}, rng)
    with pytest.warns(frame_cache.CorruptFrameCacheWarning, match="recordings on disk changed"):
        assert len(_load(tmp_path, "dvs128_gesture", "test", time_steps=5)) == 22
    assert json.loads(meta.read_text())["shape"] == [22, 5, 2, 128, 128]
    # a read-only data directory: the cache goes where REVSNN_FRAME_CACHE says
    elsewhere = tmp_path / "cache"
    monkeypatch.setenv("REVSNN_FRAME_CACHE", str(elsewhere))
    assert len(_load(tmp_path, "dvs128_gesture", "train", time_steps=3)) == 11
    assert (elsewhere / "dvs128_gesture" / "frames" / "train-T3-number.npy").exists()
    assert not (npy.parent / "train-T3-number.npy").exists()


def test_a_cache_stands_in_for_recordings_removed_after_it_was_built(tmp_path):
    write_dataset(tmp_path, "nmnist", {"test": 1}, np.random.default_rng(5))
    built = _load(tmp_path, "nmnist", "test")
    shutil.rmtree(tmp_path / "NMNIST")
    kept = _load(tmp_path, "nmnist", "test")
    np.testing.assert_array_equal(kept[3][0], built[3][0])
    with pytest.raises(data.DataNotFoundError, match=r"NMNIST/Test/<digit>/\*\.bin"):
        _load(tmp_path, "nmnist", "test", time_steps=6)  # no cache for T=6


def test_npz_frames_take_precedence_over_recordings(tmp_path):
    write_dataset(tmp_path, "nmnist", {"test": 1}, np.random.default_rng(6))
    (tmp_path / "nmnist").mkdir()
    np.savez(tmp_path / "nmnist" / "test.npz", frames=np.ones((3, 2, 2, 34, 34), np.uint8),
             labels=np.arange(3))
    source = _load(tmp_path, "nmnist", "test")
    assert len(source) == 3 and source[0][0].shape == (2, 34, 34, 2)


def test_pipeline_same_flip_for_every_frame_and_multihost_slices(tmp_path, monkeypatch):
    write_dataset(tmp_path, "nmnist", {"train": 2}, np.random.default_rng(8))
    source = _load(tmp_path, "nmnist", "train", time_steps=6)
    spec = data.get_spec("nmnist")
    assert spec.image_shape == (34, 34, 2) and spec.num_classes == 10
    augment = datasets_module.make_augment(spec, train=True, crop_padding=2, hflip=True)
    clean = source[3][0]
    flips = []
    for seed in range(12):
        x, _ = augment(source[3], np.random.default_rng(seed))
        # the augmentation draws one crop offset, then one flip decision, for the whole
        # [T, H, W, 2] stack: every frame is shifted and flipped alike
        rng = np.random.default_rng(seed)
        top, left = rng.integers(0, 5, size=2)
        flips.append(bool(rng.random() < 0.5))
        np.testing.assert_array_equal(x, _shift(clean, top, left, flips[-1]))
        assert not np.array_equal(x, _shift(clean, top, left, not flips[-1]))
    assert any(flips) and not all(flips)
    # multi-host: the two processes' slices interleave to the one-process batch
    kw = dict(batch_size=4, seed=0, num_threads=1, prefetch=2)
    whole = next(data.make_train_iterator(source, spec, **kw))
    parts = []
    for process in (0, 1):
        monkeypatch.setattr(datasets_module, "_process_slice", lambda p=process: (p, 2))
        parts.append(next(data.make_train_iterator(source, spec, **kw)))
    assert whole[0].shape == (4, 6, 34, 34, 2) and parts[0][0].shape == (2, 6, 34, 34, 2)
    np.testing.assert_array_equal(whole[1], np.stack([parts[0][1], parts[1][1]], 1).ravel())
    np.testing.assert_array_equal(whole[0][0::2], parts[0][0])
    np.testing.assert_array_equal(whole[0][1::2], parts[1][0])


def _shift(frames, top, left, flip, pad=2):
    """``frames`` [T, H, W, C] zero-padded by ``pad``, cropped at (top, left), maybe flipped."""
    h, w = frames.shape[1:3]
    padded = np.pad(frames, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    out = padded[:, top:top + h, left:left + w]
    return out[:, :, ::-1] if flip else out


def test_without_tonic_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    write_dataset(tmp_path, "nmnist", {"test": 1}, np.random.default_rng(9))
    monkeypatch.setitem(sys.modules, "tonic", None)  # import tonic fails
    monkeypatch.setitem(sys.modules, "tonic.io", None)
    with pytest.raises(data.DataNotFoundError, match=r"reading nmnist's recordings needs tonic"
                       r".*pip install 'revsnn-jax\[events\]'"):
        _load(tmp_path, "nmnist", "test")
    assert list((tmp_path / "nmnist" / "frames").iterdir()) == []  # nothing half-written
