"""Event streams integrated into a fixed number of frames, exactly as SpikingJelly does.

A recording is ``N`` events ``(t_k, x_k, y_k, p_k)``, ``k = 0..N-1``, in file order. It becomes
``M`` frames (``M`` = the config's ``time_steps``) of shape ``[2, H, W]``; frame ``j`` counts
the events with index in ``[lo_j, hi_j)``:

.. math::

    F_j(c, y, x) = \\sum_{k = lo_j}^{hi_j - 1} [\\,[p_k \\neq 0] = c,\\ y_k = y,\\ x_k = x\\,]

``split_by='number'`` (RevSNN's recipe, SpikingJelly's ``split_by='number'``): equal counts,
the last frame also takes the remainder,

.. math::

    lo_j = j \\lfloor N / M \\rfloor, \\quad
    hi_j = lo_j + \\lfloor N / M \\rfloor \\ (j < M - 1), \\quad hi_{M-1} = N.

``split_by='time'`` (SpikingJelly's ``split_by='time'``): equal time spans
``\\Delta = \\lfloor (t_{N-1} - t_0) / M \\rfloor`` (floor division in the timestamps' own
dtype), bin ``j`` is ``[t_0 + j\\Delta, t_0 + j\\Delta + \\Delta)``,

.. math::

    lo_j = \\min\\{k : t_k \\in \\text{bin}_j\\}, \\quad
    hi_j = \\max\\{k : t_k \\in \\text{bin}_j\\} + 1 \\ (j < M - 1), \\quad hi_{M-1} = N,

so the last frame also takes the events after the last bin (``t \\geq t_0 + M\\Delta``).
Where SpikingJelly raises (an empty time bin, e.g. a recording shorter than ``M`` time units,
or no events at all) these frames are defined instead: an empty bin gives an empty frame, and
an empty last bin starts at the first event at or after its start time.

Not tonic's ``ToFrame``: ``ToFrame(n_event_bins=M)`` drops the remainder ``N mod M`` events
and its time bins drop trailing events; it also returns int16 ``[T, P, H, W]``. SpikingJelly's
frames are float64 ``[T, 2, H, W]``; :func:`integrate_frames` returns exactly those (the tests
compare them bit for bit with SpikingJelly's ``integrate_events_by_fixed_frames_number``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPLIT_METHODS", "check_split_method", "frame_bounds", "integrate_counts",
           "integrate_frames"]

SPLIT_METHODS = ("number", "time")


def check_split_method(split_by: str) -> None:
    """Raise ``ValueError`` unless ``split_by`` is ``'number'`` or ``'time'``."""
    if split_by not in SPLIT_METHODS:
        raise ValueError(f"split_by must be one of {', '.join(map(repr, SPLIT_METHODS))}, "
                         f"got {split_by!r}")


def _check_method(split_by: str, frames: int) -> None:
    check_split_method(split_by)
    if isinstance(frames, bool) or int(frames) != frames or frames < 1:
        raise ValueError(f"the number of frames must be an integer >= 1, got {frames!r}")


def frame_bounds(t: np.ndarray, frames: int, split_by: str) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``, int64 ``[frames]``: frame ``j`` integrates events ``lo[j]:hi[j]``.

    See the module docstring for the two rules; ``t`` is only used by ``split_by='time'``.
    """
    _check_method(split_by, frames)
    t = np.asarray(t)
    if t.ndim != 1:
        raise ValueError(f"timestamps must be one-dimensional, got shape {t.shape}")
    n = t.shape[0]
    lo = np.zeros(frames, np.int64)
    hi = np.zeros(frames, np.int64)
    if split_by == "number":
        per_frame = n // frames
        lo[:] = np.arange(frames, dtype=np.int64) * per_frame
        hi[:] = lo + per_frame
        hi[-1] = n
        return lo, hi
    if n == 0:
        return lo, hi
    t0 = t[0]
    span = (t[-1] - t0) // frames  # numpy scalar arithmetic: the timestamps' dtype, as SJ
    ordered = bool(np.all(t[1:] >= t[:-1]))
    starts = [span * j + t0 for j in range(frames)]  # `span * j`: j a Python int, as SJ
    for j, start in enumerate(starts):
        end = start + span
        if ordered:  # the first and last event inside [start, end) by binary search
            first = int(np.searchsorted(t, start, side="left"))
            stop = int(np.searchsorted(t, end, side="left"))
            if first < stop:
                lo[j], hi[j] = first, stop
        else:
            inside = np.flatnonzero((t >= start) & (t < end))
            if inside.size:
                lo[j], hi[j] = inside[0], inside[-1] + 1
        if j == frames - 1 and lo[j] == hi[j]:  # empty last bin (SpikingJelly raises)
            after = np.flatnonzero(t >= start)
            lo[j] = after[0] if after.size else n
    hi[-1] = n
    return lo, hi


def integrate_counts(events: dict, frames: int, split_by: str, height: int, width: int
                     ) -> np.ndarray:
    """Event counts, int64 ``[frames, 2, height, width]``, of ``events`` (a mapping with arrays
    ``t``, ``x``, ``y``, ``p`` of one length; polarity channel ``int(p != 0)``)."""
    t, x, y, p = (np.asarray(events[key]) for key in ("t", "x", "y", "p"))
    n = t.shape[0]
    if not (x.shape == y.shape == p.shape == (n,)):
        raise ValueError(f"events t, x, y, p must be one-dimensional arrays of one length, got "
                         f"shapes {t.shape}, {x.shape}, {y.shape}, {p.shape}")
    lo, hi = frame_bounds(t, frames, split_by)
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    if n and (xi.min() < 0 or xi.max() >= width or yi.min() < 0 or yi.max() >= height):
        raise ValueError(f"event coordinates out of the {width}x{height} sensor: x in "
                         f"{xi.min()}..{xi.max()}, y in {yi.min()}..{yi.max()}")
    plane = height * width
    position = (p != 0).astype(np.int64) * plane + yi * width + xi
    out = np.empty((frames, 2 * plane), np.int64)
    for j in range(frames):
        out[j] = np.bincount(position[lo[j]:hi[j]], minlength=2 * plane)
    return out.reshape(frames, 2, height, width)


def integrate_frames(events: dict, frames: int, split_by: str, height: int, width: int
                     ) -> np.ndarray:
    """SpikingJelly's frames: float64 ``[frames, 2, height, width]`` event counts (equal, bit
    for bit, to ``spikingjelly.datasets.integrate_events_by_fixed_frames_number(events,
    split_by, frames, height, width)`` wherever that is defined)."""
    return integrate_counts(events, frames, split_by, height, width).astype(np.float64)
