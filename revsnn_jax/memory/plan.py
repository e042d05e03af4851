"""Plan a training run for one chip from compiled memory plans, without the chip.

:func:`largest_fitting` finds the largest integer ``n`` (a batch size, a number of blocks, a
number of time steps) whose compiled step fits a memory budget, from XLA's plans
(:func:`revsnn_jax.memory.compile_step`): it compiles at ``n0`` and ``2 n0``, fits a line (the
slope is the memory one more unit costs, the intercept the static memory), compiles at the
line's answer and one more, and repeats inside the bracket (interpolating, then bisecting) until
it holds a value that fits and its successor that does not. Padding (a TPU tiles the batch into
blocks of 8 or 128) makes the peak a staircase, not a line, so the answer is always a compiled
one, never an extrapolation. The TPU's peak is not even monotone in the batch (a larger batch
can plan a smaller peak; docs/tpu.md), so the answer is a value that fits with its successor
over the budget, found from the first bracket; a larger value past a dip may fit too.

That exact bracket costs many compiles near the answer (minutes each for a full model on a TPU
plan), so by default the planners answer within a tolerance ``tol`` (1%) instead
(:func:`largest_fitting` with ``tolerance``), in at most 6 compiles: ``n0`` and ``2 n0`` give the
line's answer ``g1``; compiling ``0.85 g1`` and ``0.95 g1`` gives values near the answer and,
most often, below the budget (the peak is not quite a line over a 100x range: padding,
algorithms that change with the shape; and on a GPU plan it bends and wobbles just above the
budget, where the compiler schedules against a memory limit of its own). The line through the
largest fitting value and one at least 20% below it (or, when no fitting value is that close,
through the bracket's ends) gives ``g2``, checked by a window one tolerance wide centred on it:
``a = floor(g2 / (1 + tol / 2))`` and ``max(a + 1, floor(a (1 + tol)) + 1)``. Once some ``n``
fits and a value ``m <= floor(n (1 + tol)) + 1`` does not, the exact answer ``n*`` (the largest
fitting value below ``m``, on a peak that grows with ``n``) satisfies ``n <= n* < m``, so
``n* - n <= tol n``. If the check fails, the answer is the
largest value compiled that fits, and the row says how far the exact one may be (``within``);
``revsnn plan --exact`` runs the exact bracket.

"Fits" means the compiled plan's peak (temporaries + arguments + outputs - aliased outputs) is
at most the budget. A value the compiler refuses outright because the program does not fit the
device's memory (the TPU compiler's ``RESOURCE_EXHAUSTED``, :func:`revsnn_jax.memory.is_refusal`)
does not fit: its peak is recorded as ``None`` and the search goes on below it. A real run
needs a little more: the runtime and its allocator's fragmentation take some of the HBM, so
leave a margin (``revsnn plan --hbm-gib``).

:func:`plan_batch` and :func:`plan_sweep` apply it to a registered model's training step;
``revsnn plan`` (:mod:`revsnn_jax.commands.plan`) is the command line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from revsnn_jax.memory import compiled as memory

__all__ = ["Fit", "largest_fitting", "plan_batch", "plan_sweep"]

SWEEPS = ("blocks", "time-steps")


@dataclasses.dataclass(frozen=True)
class Fit:
    """The answer of :func:`largest_fitting`: ``largest`` fits (0: not even 1 fits); with
    ``limit`` reached, ``largest == limit`` and nothing above was tried."""

    largest: int
    budget_bytes: int
    peaks: dict[int, int | None]  # every value compiled -> its planned peak bytes (None: the
    # compiler refused it as larger than the device's memory)
    limit_reached: bool = False
    exact: bool = True  # the search ran to the exact bracket (else within a tolerance)

    @property
    def above(self) -> int | None:
        """The smallest value compiled above ``largest`` that does not fit (``None``: none)."""
        over = [v for v, p in self.peaks.items()
                if v > self.largest and (p is None or p > self.budget_bytes)]
        return min(over, default=None)

    @property
    def within(self) -> float | None:
        """How far the exact answer may lie above ``largest``, relative to it: the exact one is
        at most ``largest * (1 + within)`` (0: exact; ``None`` when unbounded or nothing
        fits)."""
        above = self.above
        if above is None or self.largest < 1:
            return None if self.largest >= 1 and not self.limit_reached else 0.0
        return (above - 1 - self.largest) / self.largest

    @property
    def peak_bytes(self) -> int | None:
        """Peak at ``largest`` (``None`` when nothing fits)."""
        return self.peaks.get(self.largest)

    @property
    def next_peak_bytes(self) -> int | None:
        """Peak at ``largest + 1`` (over the budget; ``None`` at the limit or when refused)."""
        return self.peaks.get(self.largest + 1)

    @property
    def next_refused(self) -> bool:
        """Whether ``largest + 1`` was refused by the compiler (rather than planned over)."""
        return self.largest + 1 in self.peaks and self.peaks[self.largest + 1] is None


def largest_fitting(peaks_at: Callable[[Sequence[int]], Mapping[int, int | None]], first: int,
                    budget_bytes: int, *, limit: int | None = None,
                    max_rounds: int = 16, tolerance: float | None = None) -> Fit:
    """The largest ``n >= 1`` with ``peaks_at([n])[n] <= budget_bytes`` and ``n + 1`` over it.

    ``peaks_at(values)`` compiles at each value and returns ``{value: peak_bytes}`` (values are
    asked for two at a time, so one subprocess can compile both); ``None`` for a value means
    the compiler refused it (does not fit). The peak is assumed to grow with ``n``;
    ``RuntimeError`` if no answer is bracketed within ``max_rounds``.

    ``tolerance`` (e.g. 0.01): answer within it instead, in at most 6 compiles (module
    docstring); the :class:`Fit` says how close it is (``within``, ``exact=False``).
    """
    if first < 1:
        raise ValueError(f"first must be >= 1, got {first}")
    if tolerance is not None:
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
        return _within_tolerance(peaks_at, first, budget_bytes, limit, tolerance)
    known: dict[int, int | None] = {}

    def ask(values: Sequence[int]) -> None:
        _ask(peaks_at, known, values, limit)

    def fits(peak: int | None) -> bool:
        return peak is not None and peak <= budget_bytes

    ask([first, 2 * first] if limit is None or 2 * first <= limit else [first, first + 1])
    for round_ in range(max_rounds):
        fitting = [v for v, p in known.items() if fits(p)]
        lo = max(fitting, default=0)
        above = [v for v, p in known.items() if not fits(p) and v > lo]
        hi = min(above, default=None)
        if hi == lo + 1 or (lo == 0 and hi == 1):
            return Fit(lo, budget_bytes, dict(sorted(known.items())))
        if limit is not None and lo >= limit:
            return Fit(lo, budget_bytes, dict(sorted(known.items())), limit_reached=True)
        guess = _next_guess(known, lo, hi, budget_bytes, bisect=round_ >= 6)
        if limit is not None:
            guess = min(guess, limit - 1)
        before = len(known)
        ask([guess, guess + 1])
        if len(known) == before:  # pragma: no cover - a guess always adds a value
            break
    raise RuntimeError(f"no largest fitting value bracketed after {max_rounds} rounds; "
                       f"compiled peaks: {dict(sorted(known.items()))}")


def _ask(peaks_at: Callable[[Sequence[int]], Mapping[int, int | None]],
         known: dict[int, int | None], values: Sequence[int], limit: int | None) -> None:
    """Compile the ``values`` not yet in ``known`` (those in ``1..limit``) and record their peaks
    (``None``: refused by the compiler)."""
    todo = sorted({v for v in values if v >= 1 and v not in known
                   and (limit is None or v <= limit)})
    if todo:
        got = peaks_at(todo)
        known.update({int(v): None if got[v] is None else int(got[v]) for v in todo})


def _within_tolerance(peaks_at: Callable[[Sequence[int]], Mapping[int, int | None]],
                      first: int, budget: int, limit: int | None, tolerance: float,
                      rounds: int = 2) -> Fit:
    """:func:`largest_fitting` within ``tolerance``: the first two values, then ``0.85 g`` and
    ``0.95 g`` below the line's answer ``g`` (a secant near the answer), then a window around
    the new line's answer ``g`` (:func:`_secant_guess`): ``a = floor(g / (1 + tolerance / 2))`` and ``max(a + 1, floor(a (1 +
    tolerance)) + 1)`` (if ``a`` fits and that does not, ``a`` is within the tolerance; so is the
    bracket's own end when it is that close); ``rounds`` rounds after the first two values."""
    known: dict[int, int | None] = {}

    def ask(values: Sequence[int]) -> None:
        _ask(peaks_at, known, values, limit)

    def fits(v: int) -> bool:
        return known[v] is not None and known[v] <= budget

    def bracket() -> tuple[int, int | None]:
        lo = max((v for v in known if fits(v)), default=0)
        return lo, min((v for v in known if not fits(v) and v > lo), default=None)

    def close_enough(lo: int, hi: int | None) -> bool:
        if hi is None:
            return limit is not None and lo >= limit
        return hi <= max(lo + 1, int(lo * (1 + tolerance)) + 1)

    def result() -> Fit:
        lo, _ = bracket()
        return Fit(lo, budget, dict(sorted(known.items())),
                   limit_reached=limit is not None and lo >= limit, exact=False)

    ask([first, 2 * first] if limit is None or 2 * first <= limit else [first, first + 1])
    for round_ in range(rounds):
        lo, hi = bracket()
        if close_enough(lo, hi):
            break
        guess = _secant_guess(known, lo, hi, budget)
        if limit is not None:
            guess = min(guess, limit)
        if round_ < rounds - 1:  # two values just below the line's answer: a secant near it
            ask([max(lo + 1, int(0.85 * guess)), max(lo + 1, int(0.95 * guess))])
        else:  # the last round: a window one tolerance wide centred on the answer
            low = max(lo + 1, int(guess / (1 + tolerance / 2)))
            high = max(low + 1, int(low * (1 + tolerance)) + 1)
            ask([v for v in (low, high) if hi is None or v < hi])
    return result()


def _secant_guess(known: Mapping[int, int | None], lo: int, hi: int | None,
                  budget: int) -> int:
    """The largest value under ``budget`` on a line, kept strictly inside the bracket
    ``(lo, hi)``. Above the budget a GPU plan's peak can bend (the compiler schedules against a
    memory limit of its own) and wobble, so where the largest fitting value ``lo`` is near the
    bracket's top (``lo >= 0.75 hi``) the line is the secant through ``lo`` and the largest
    fitting value at least 20% below it (extrapolation from below the budget); else through
    the bracket's ends when both are planned; else through the two planned values whose peaks
    are nearest the budget and at least 10% apart (else the two farthest apart); the midpoint
    when fewer than two are planned."""
    planned = {v: p for v, p in known.items() if p is not None}
    below = sorted((v for v, p in planned.items() if p <= budget), reverse=True)
    under = [v for v in below[1:] if v <= 0.8 * lo]
    if len(planned) < 2:
        guess = (lo + hi) // 2 if hi is not None else 2 * max(lo, 1)
    elif lo in planned and under and (hi is None or lo >= 0.75 * hi):
        a = under[0]
        slope = (planned[lo] - planned[a]) / (lo - a)
        guess = lo + int((budget - planned[lo]) // slope) if slope > 0 else 2 * lo
    elif lo in planned and hi in planned:
        slope = (planned[hi] - planned[lo]) / (hi - lo)
        guess = lo + int((budget - planned[lo]) // slope) if slope > 0 else (lo + hi) // 2
    else:
        by_nearness = sorted(planned, key=lambda v: abs(planned[v] - budget))
        b = by_nearness[0]
        far = [v for v in by_nearness[1:] if abs(v - b) >= 0.1 * b]
        if far:
            a = far[0]
        else:
            values = sorted(planned)
            a, b = values[0], values[-1]
        slope = (planned[b] - planned[a]) / (b - a)
        if slope <= 0:
            guess = (lo + hi) // 2 if hi is not None else 2 * max(lo, 1)
        else:
            guess = a + int((budget - planned[a]) // slope)
    # Unbracketed, at most 256x the largest fitting value (a slope near 0 would send it far).
    upper = hi - 1 if hi is not None else max(256 * max(lo, 1), lo + 2)
    return int(min(max(guess, lo + 1), max(upper, lo + 1)))


def _next_guess(known: Mapping[int, int | None], lo: int, hi: int | None, budget: int,
                bisect: bool) -> int:
    """The next value to compile: on the line through the bracket's ends (or, unbracketed, or
    when the compiler refused ``hi``, through the smallest and largest value planned), kept
    strictly inside (lo, hi); the midpoint once ``bisect``, or when fewer than two values were
    planned."""
    planned = {v: p for v, p in known.items() if p is not None}
    if hi is not None and (bisect or len(planned) < 2):
        return max(lo + 1, (lo + hi) // 2)
    if hi is None and len(planned) < 2:  # pragma: no cover - every value fits, so is planned
        return 2 * max(lo, 1)
    known = planned
    values = sorted(known)
    if hi is not None and lo > 0 and hi in known:
        a, b = lo, hi
    else:  # all fit, none does, or hi was refused: the two planned values farthest apart
        # (neighbours on a padding staircase would give a step's height for a slope)
        a, b = values[0], values[-1]
    slope = (known[b] - known[a]) / (b - a) if b != a else 0.0
    if slope <= 0:
        guess = 2 * max(lo, 1) if hi is None else (lo + hi) // 2
    else:
        guess = a + int((budget - known[a]) // slope)
    if hi is not None and lo > 0:  # inside a bracket: keep a quarter away from its ends, so
        # that it shrinks by a quarter at least (interpolation alone crawls on a curved peak)
        quarter = (hi - lo) // 4
        return int(min(max(guess, lo + max(1, quarter)), max(hi - 1 - quarter, lo + 1)))
    # Unbracketed, at most 16x the largest fitting value: a slope near 0 (a peak set by
    # something that does not grow) would otherwise send the next compile to a huge value.
    upper = hi - 1 if hi is not None else max(16 * max(lo, 1), lo + 2)
    return int(min(max(guess, lo + 1), max(upper, lo + 1)))


# --------------------------------------------------------------------------- model plans
def _row(name: str, target: str, mode: str | None, sweep: str, fit: Fit, program_kw: dict,
         device_kind: str, hbm_gib: float, extra: dict[str, Any],
         seconds: float) -> dict[str, Any]:
    above = fit.above
    return {
        "model": name, "target": target, "device_kind": device_kind, "memory_mode": mode,
        "sweep": sweep, **extra, "largest": fit.largest, "peak_bytes": fit.peak_bytes,
        "next_peak_bytes": fit.next_peak_bytes, "next_refused": fit.next_refused,
        "above": above, "above_peak_bytes": None if above is None else fit.peaks[above],
        "exact": fit.exact, "within": fit.within, "seconds": seconds,
        "budget_bytes": fit.budget_bytes,
        "hbm_gib": hbm_gib, "limit_reached": fit.limit_reached,
        "time_steps": program_kw["time_steps"], "image_size": program_kw["image_size"],
        "num_classes": program_kw["num_classes"],
        "model_kwargs": program_kw["model_kwargs"], "compiles": len(fit.peaks),
        "peaks": {str(k): v for k, v in fit.peaks.items()},
    }


def _compiler(target: str, progress: Callable[[Any, str], None] | None, label: str,
              cache_dir: str | None, use_cache: bool):
    def report(plan: memory.StepPlan) -> None:
        if progress is not None:
            progress(plan, label)

    return dict(progress=report, cache_dir=cache_dir, use_cache=use_cache, allow_refusal=True)


def _peak(plan: memory.StepPlan) -> int | None:
    """A plan's peak; ``None`` when the compiler refused it (does not fit the device)."""
    return None if plan.memory is None else plan.memory.peak_bytes


def plan_batch(name: str, target: str, budget_bytes: int, *, memory_mode: str | None = None,
               first_batch: int = 32, time_steps: int | None = None,
               image_size: int | None = None, num_classes: int | None = None,
               model_kwargs: dict[str, Any] | None = None, hbm_gib: float | None = None,
               progress: Callable[[memory.StepPlan, str], None] | None = None,
               cache_dir: str | None = None, use_cache: bool = True,
               tolerance: float | None = 0.01) -> dict[str, Any]:
    """The largest batch of model ``name``'s training step that fits ``budget_bytes`` on
    ``target``; one row (``largest`` is the batch; ``bytes_per_image``/``static_bytes``: the
    slope and intercept between ``first_batch`` and twice it, ``None`` when the compiler
    refused either). ``tolerance``: answer within it in at most 6 compiles (``None``: the exact
    bracket; :func:`largest_fitting`); the row's ``seconds`` is the search's wall time."""
    from revsnn_jax.memory import benchmark

    program = benchmark.step_program(name, time_steps=time_steps, image_size=image_size,
                                     num_classes=num_classes, memory_mode=memory_mode,
                                     model_kwargs=model_kwargs)
    kinds: list[str] = []
    options = _compiler(target, progress, f"{name} / {memory_mode}", cache_dir, use_cache)

    def peaks_at(batches: Sequence[int]) -> dict[int, int]:
        plans = memory.compile_step(program, batches, target, **options)
        kinds.append(plans[0].device_kind)
        return {p.batch: _peak(p) for p in plans}

    start = time.perf_counter()
    fit = largest_fitting(peaks_at, first_batch, budget_bytes, tolerance=tolerance)
    seconds = time.perf_counter() - start
    b0, b1 = first_batch, 2 * first_batch
    p0, p1 = fit.peaks[b0], fit.peaks[b1]
    # The slope needs both first plans; a refused one leaves it unknown.
    slope = None if p0 is None or p1 is None else (p1 - p0) / first_batch
    return _row(name, target, memory_mode, "batch", fit, dict(program.kwargs), kinds[0],
                hbm_gib, {"batch": fit.largest, "first_batch": first_batch,
                          "bytes_per_image": slope,
                          "static_bytes": None if slope is None else p0 - slope * b0},
                seconds)


def plan_sweep(name: str, target: str, budget_bytes: int, sweep: str, batch: int, *,
               memory_mode: str | None = None, first: int, stages: int = 1,
               time_steps: int | None = None, image_size: int | None = None,
               num_classes: int | None = None, model_kwargs: dict[str, Any] | None = None,
               hbm_gib: float | None = None, limit: int | None = None,
               progress: Callable[[memory.StepPlan, str], None] | None = None,
               cache_dir: str | None = None, use_cache: bool = True,
               tolerance: float | None = 0.01) -> dict[str, Any]:
    """The deepest (``sweep="blocks"``: ``blocks=(n,) * stages``) or longest
    (``sweep="time-steps"``: ``T = n``) variant of model ``name`` whose training step at
    ``batch`` fits ``budget_bytes`` on ``target``; one row (``largest`` is ``n``;
    ``tolerance`` as in :func:`plan_batch`)."""
    from revsnn_jax.memory import benchmark

    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {SWEEPS}, got {sweep!r}")
    kinds: list[str] = []
    kw: dict[str, Any] = {}

    def program_for(n: int) -> memory.StepProgram:
        extra = dict(model_kwargs or {})
        t = time_steps
        if sweep == "blocks":
            extra["blocks"] = (n,) * stages
        else:
            t = n
        program = benchmark.step_program(name, time_steps=t, image_size=image_size,
                                         num_classes=num_classes, memory_mode=memory_mode,
                                         model_kwargs=extra)
        kw.setdefault("program", dict(program.kwargs))
        return program

    def peaks_at(values: Sequence[int]) -> dict[int, int]:
        out = {}
        for n in values:
            options = _compiler(target, progress, f"{name} / {memory_mode} / {sweep} {n}",
                                cache_dir, use_cache)
            (plan,) = memory.compile_step(program_for(n), [batch], target, **options)
            kinds.append(plan.device_kind)
            out[n] = _peak(plan)
        return out

    start = time.perf_counter()
    fit = largest_fitting(peaks_at, first, budget_bytes, limit=limit, tolerance=tolerance)
    seconds = time.perf_counter() - start
    program_kw = kw["program"]
    if sweep == "time-steps":
        program_kw = dict(program_kw, time_steps=fit.largest)
    else:
        program_kw = dict(program_kw, model_kwargs=dict(program_kw["model_kwargs"],
                                                       blocks=[fit.largest] * stages))
    return _row(name, target, memory_mode, sweep, fit, program_kw, kinds[0], hbm_gib,
                {"batch": batch}, seconds)
