"""Small neuromorphic recordings written in each data set's own on-disk format, laid out as
tonic extracts its downloads (DVS128 Gesture ``.npy``, N-MNIST ATIS ``.bin``, CIFAR10-DVS
AEDAT 4.0), so tests read them back through the real readers (tonic's, and ``aedat``'s)."""

from __future__ import annotations

import pathlib
import struct

import numpy as np

SENSOR = {"dvs128_gesture": (128, 128), "cifar10_dvs": (128, 128), "nmnist": (34, 34)}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def random_events(rng: np.random.Generator, n: int, height: int, width: int,
                  duration_us: int = 300_000) -> dict[str, np.ndarray]:
    """``n`` events in time order, timestamps in microseconds from a random start."""
    start = int(rng.integers(0, 1000))
    return {"t": np.sort(rng.integers(start, start + duration_us, n)),
            "x": rng.integers(0, width, n), "y": rng.integers(0, height, n),
            "p": rng.integers(0, 2, n)}


# --------------------------------------------------------------------------- file formats
def write_gesture_npy(path: pathlib.Path, events: dict, dtype=np.int64) -> None:
    """tonic's DVS128 Gesture: an ``[N, 4]`` array of columns x, y, p, t in milliseconds."""
    arr = np.stack([events["x"], events["y"], events["p"], events["t"] // 1000], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr.astype(dtype))


def write_nmnist_bin(path: pathlib.Path, events: dict, overflow_at: int | None = None) -> None:
    """N-MNIST's ATIS format, 5 bytes per event: x, y, then p (bit 7) and the 23-bit timestamp.

    ``overflow_at``: a timestamp-overflow marker (y = 240) goes before that event; the events
    after it are written 2**13 us earlier (a reader adds 2**13 back at the marker)."""
    rows = []
    for k in range(len(events["t"])):
        t = int(events["t"][k])
        if overflow_at is not None and k >= overflow_at:
            if k == overflow_at:
                rows.append(bytes([0, 240, 0, 0, 0]))
            t -= 2 ** 13
        rows.append(bytes([int(events["x"][k]), int(events["y"][k]),
                           (int(events["p"][k]) << 7) | ((t >> 16) & 127), (t >> 8) & 255,
                           t & 255]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(rows))


_AEDAT4_DESCRIPTION = (
    '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
    '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
    '<attr key="compression" type="string">NONE</attr>'
    '<attr key="typeIdentifier" type="string">EVTS</attr>'
    '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
    '<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
    '</node></node></node></dv>'
)


def _ioheader(description: str) -> bytes:
    """The AEDAT 4 IOHeader flatbuffer: compression and data position left at their defaults
    (none, -1: packets to the end of the file), the XML description of the streams."""
    text = description.encode()
    buf = struct.pack("<I", 20) + b"IOHE"  # root table at 20, file identifier
    buf += struct.pack("<HHHHH", 10, 8, 0, 0, 4) + b"\0\0"  # vtable at 8: only field 2 set
    buf += struct.pack("<iI", 20 - 8, 28 - 24)  # table at 20: its vtable, the string at 28
    buf += struct.pack("<I", len(text)) + text + b"\0"
    return buf + b"\0" * (-len(buf) % 4)


def _event_packet(events: dict, index: np.ndarray) -> bytes:
    """A size-prefixed ``EventPacket`` flatbuffer ("EVTS"): a vector of 16-byte ``Event``
    structs (int64 t, int16 x, int16 y, bool on, 3 bytes padding)."""
    n = len(index)
    elements = np.zeros(n, np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"),
                                     ("pad", "V3")]))
    for key, field in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on")):
        elements[field] = events[key][index]
    body = struct.pack("<I", 20 - 4) + b"EVTS"  # root table at 20 (offset from 4), identifier
    body += struct.pack("<HHH", 6, 8, 4) + b"\0\0"  # vtable at 12: one field at offset 4
    body += struct.pack("<iI", 20 - 12, 28 - 24)  # table at 20: its vtable, the vector at 28
    body += struct.pack("<I", n) + elements.tobytes()  # length at 28, structs 8-aligned at 32
    return struct.pack("<I", len(body)) + body


def write_aedat4(path: pathlib.Path, events: dict, width: int = 128, height: int = 128,
                 packets: int = 2) -> None:
    """An AEDAT 4.0 file: one uncompressed polarity-event stream (id 0) in ``packets`` packets."""
    header = _ioheader(_AEDAT4_DESCRIPTION.format(width=width, height=height))
    out = b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(header)) + header
    for index in np.array_split(np.arange(len(events["t"])), packets):
        payload = _event_packet(events, index)
        out += struct.pack("<II", 0, len(payload)) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)


# --------------------------------------------------------------------------- data sets
def write_dataset(root: pathlib.Path, name: str, per_class: dict[str, int],
                  rng: np.random.Generator, events: tuple[int, int] = (200, 400)
                  ) -> dict[str, dict[pathlib.Path, dict]]:
    """Write ``per_class[split]`` recordings of every class of data set ``name`` under
    ``root`` in tonic's layout (CIFAR10-DVS has no split on disk: ``per_class['all']``);
    each has an odd number of events in ``events``. Returns ``{split: {path: events}}``."""
    height, width = SENSOR[name]
    written: dict[str, dict[pathlib.Path, dict]] = {}

    def draw() -> dict:
        return random_events(rng, int(rng.integers(*events)) | 1, height, width)

    for split, count in per_class.items():
        out = written.setdefault(split, {})
        if name == "dvs128_gesture":
            folder = root / "DVSGesture" / ("ibmGestureTrain" if split == "train"
                                            else "ibmGestureTest")
            for user in range(count):
                lighting = ("led", "fluorescent", "natural")[user % 3]
                for c in range(11):
                    path = folder / f"user{user + 1:02d}_{lighting}" / f"{c}.npy"
                    ev = draw()
                    ev["t"] = ev["t"] // 1000 * 1000  # tonic's copy keeps milliseconds
                    write_gesture_npy(path, ev)
                    out[path] = ev
        elif name == "nmnist":
            folder = root / "NMNIST" / ("Train" if split == "train" else "Test")
            for c in range(10):
                for i in range(count):
                    path = folder / str(c) / f"{i:05d}.bin"
                    ev = draw()
                    write_nmnist_bin(path, ev, overflow_at=len(ev["t"]) // 2 if i == 0 else None)
                    out[path] = ev
        elif name == "cifar10_dvs":
            for cls in CIFAR10_CLASSES:
                for i in range(count):
                    path = root / "CIFAR10DVS" / cls / f"cifar10_{cls}_{i}.aedat4"
                    ev = draw()
                    write_aedat4(path, ev)
                    out[path] = ev
        else:
            raise ValueError(name)
    return written
