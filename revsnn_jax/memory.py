"""Measure the memory of a compiled JAX computation, and the memory one more example costs.

On every backend the compiled executable's :meth:`memory_analysis` gives XLA's static plan:

* ``temp_bytes`` -- scratch buffers live during the computation (activations kept for the
  backward pass live here);
* ``argument_bytes`` / ``output_bytes`` -- inputs and results (parameters, optimizer state, batch);
* ``alias_bytes`` -- outputs that reuse (donated) input buffers, counted once.

``peak_bytes = temp + argument + output - alias`` is the planned peak. Compiling is enough:
nothing is allocated at full size. On GPU/TPU the allocator's measured peak
(``device.memory_stats()['peak_bytes_in_use']``) can be read after running the step
(:func:`device_peak_bytes`).

Memory per example (docs/memory.md) is the slope of the peak between batch ``B`` and ``2B``:
parameters, gradients and optimizer state do not grow with the batch, so they drop out, and
"does not grow with depth" can be tested honestly. The intercept is the static memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["CompiledMemory", "PerExampleMemory", "analyse_compiled", "compiled_memory",
           "device_peak_bytes", "per_example_memory"]


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """XLA's memory plan of one compiled computation, in bytes."""

    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    flops: float | None

    @property
    def peak_bytes(self) -> int:
        return self.temp_bytes + self.argument_bytes + self.output_bytes - self.alias_bytes


def _cost_flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # pragma: no cover - a backend without cost analysis
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return None if flops is None else float(flops)


def compiled_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CompiledMemory:
    """Compile ``fn(*args, **kwargs)`` (jitting it if needed) and read XLA's memory plan.

    ``args`` may be arrays or :class:`jax.ShapeDtypeStruct`, so nothing large is allocated.
    ``flops`` is XLA's ``cost_analysis()`` count; note that it counts a loop body (``lax.scan``)
    once, not once per iteration.
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return analyse_compiled(jitted.lower(*args, **kwargs).compile())


def analyse_compiled(compiled: Any) -> CompiledMemory:
    """XLA's memory plan and FLOP count of an already compiled executable
    (``jax.jit(fn).lower(...).compile()``), e.g. one that is also run and timed."""
    analysis = compiled.memory_analysis()
    if analysis is None:  # pragma: no cover - backend without memory analysis
        raise RuntimeError(
            f"the {jax.default_backend()} backend gives no compiled memory analysis"
        )
    return CompiledMemory(
        temp_bytes=int(analysis.temp_size_in_bytes),
        argument_bytes=int(analysis.argument_size_in_bytes),
        output_bytes=int(analysis.output_size_in_bytes),
        alias_bytes=int(analysis.alias_size_in_bytes),
        flops=_cost_flops(compiled),
    )


@dataclasses.dataclass(frozen=True)
class PerExampleMemory:
    """Memory of a step at batch ``B`` and ``2B``, and the per-example slope between them."""

    batch: int
    at_batch: CompiledMemory
    at_double_batch: CompiledMemory

    @property
    def bytes_per_example(self) -> float:
        """Peak memory one more example costs (activation memory)."""
        return (self.at_double_batch.peak_bytes - self.at_batch.peak_bytes) / self.batch

    @property
    def static_bytes(self) -> float:
        """The intercept: memory at batch 0 (parameters, gradients, optimizer state)."""
        return self.at_batch.peak_bytes - self.bytes_per_example * self.batch

    @property
    def temp_bytes_per_example(self) -> float:
        return (self.at_double_batch.temp_bytes - self.at_batch.temp_bytes) / self.batch


def per_example_memory(make_args: Callable[[int], tuple[Any, ...]],
                       fn: Callable[..., Any], batch: int) -> PerExampleMemory:
    """Compile ``fn(*make_args(batch))`` and ``fn(*make_args(2 * batch))``; return both plans.

    ``make_args(b)`` returns the arguments at batch ``b`` (arrays or ``ShapeDtypeStruct``).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return PerExampleMemory(
        batch=batch,
        at_batch=compiled_memory(fn, *make_args(batch)),
        at_double_batch=compiled_memory(fn, *make_args(2 * batch)),
    )


def device_peak_bytes(device: jax.Device | None = None) -> int | None:
    """The allocator's peak bytes in use on ``device`` (GPU/TPU); ``None`` where not reported."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # pragma: no cover - CPU backends may raise
        return None
    if not stats:
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)
