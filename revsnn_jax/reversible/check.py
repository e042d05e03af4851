"""Check a user's reversible stage: the inverse's round trip and the gradients against autodiff.

:func:`check_reversible` runs a stage of :func:`revsnn_jax.reversible.reversible_stage` on a
random input and measures

* the round trip ``|reversible_stage_inverse(reversible_stage(x)) - x|``;
* the gradient gap ``|grad_reversible - grad_plain|`` of the parameters and of the input, against
  plain autodiff of the same stage (``memory_mode="none"``);

each as a max-abs error and relative to the reference's largest entry, in a
:class:`ReversibleReport` that passes below a dtype's tolerance. :func:`gradient_gap` is the
gradient measure, shared with the trainer's reconstruction-drift check.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from revsnn_jax.reversible.engine import (
    BlockFn,
    _num_blocks,
    reversible_stage,
    reversible_stage_inverse,
)

__all__ = ["ReversibleReport", "check_reversible", "gradient_gap", "relative_gap"]

PyTree = Any


_DEFAULT_RTOL = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


@dataclasses.dataclass(frozen=True)
class ReversibleReport:
    """What :func:`check_reversible` measured. Errors are max-abs differences; ``*_rel`` divide
    them by the largest entry of the reference (``x`` for the round trip, plain autodiff's
    gradients for the gradients)."""

    dtype: str
    num_blocks: int
    input_shape: tuple[int, ...]
    roundtrip_max_abs: float
    roundtrip_rel: float
    grad_params_max_abs: float
    grad_params_rel: float
    grad_input_max_abs: float
    grad_input_rel: float
    rtol: float
    atol: float

    def _ok(self, max_abs: float, rel: float) -> bool:
        if not (max_abs == max_abs and rel == rel):  # NaN
            return False
        scale = max_abs / rel if rel else 0.0
        return max_abs <= self.atol + self.rtol * scale

    @property
    def roundtrip_ok(self) -> bool:
        return self._ok(self.roundtrip_max_abs, self.roundtrip_rel)

    @property
    def grad_params_ok(self) -> bool:
        return self._ok(self.grad_params_max_abs, self.grad_params_rel)

    @property
    def grad_input_ok(self) -> bool:
        return self._ok(self.grad_input_max_abs, self.grad_input_rel)

    @property
    def passed(self) -> bool:
        return self.roundtrip_ok and self.grad_params_ok and self.grad_input_ok

    def __str__(self) -> str:
        rows = [
            ("inverse round trip", self.roundtrip_max_abs, self.roundtrip_rel, self.roundtrip_ok),
            ("grad params (rev vs none)", self.grad_params_max_abs, self.grad_params_rel,
             self.grad_params_ok),
            ("grad input (rev vs none)", self.grad_input_max_abs, self.grad_input_rel,
             self.grad_input_ok),
        ]
        lines = [
            f"check_reversible: {self.num_blocks} blocks, x {self.dtype}{list(self.input_shape)}, "
            f"rtol {self.rtol:.0e}, atol {self.atol:.0e}",
            f"  {'check':<27}{'max abs':>11}{'relative':>11}  result",
        ]
        lines += [f"  {name:<27}{err:>11.2e}{rel:>11.2e}  {'ok' if ok else 'FAIL'}"
                  for name, err, rel, ok in rows]
        lines.append(f"  {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def _max_abs(tree: PyTree) -> jax.Array:
    """``max |leaf|`` over every non-empty leaf, as a float32 scalar (traceable)."""
    leaves = [jnp.max(jnp.abs(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(tree)
              if leaf.size]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.float32(0.0)


def _tree_max_abs(tree: PyTree) -> float:
    return float(_max_abs(tree))


def _rel(err: float, scale: float) -> float:
    return err / scale if scale else (0.0 if err == 0 else float("inf"))


def gradient_gap(grads: PyTree, reference: PyTree) -> tuple[jax.Array, jax.Array]:
    """``(max |grads - reference|, max |reference|)`` over every leaf of two gradient pytrees
    of the same structure, as float32 scalars; traceable (call it inside :func:`jax.jit`).

    Each difference is taken in the wider of its leaf's dtype and float32, so bfloat16
    gradients are compared without a second rounding. :func:`check_reversible`'s gradient rows
    and the trainer's reconstruction-drift check (``drift_check_every``) both measure with it;
    their ``*_rel`` is the first value divided by the second.
    """
    def diff(a: jax.Array, b: jax.Array) -> jax.Array:
        wide = jnp.promote_types(jnp.promote_types(a.dtype, b.dtype), jnp.float32)
        return a.astype(wide) - b.astype(wide)

    return _max_abs(jax.tree.map(diff, grads, reference)), _max_abs(reference)


def relative_gap(gap: tuple[Any, Any]) -> tuple[float, float]:
    """``(max_abs, rel)`` of a :func:`gradient_gap` result on the host: ``rel`` is
    ``max_abs / max |reference|`` (0 when both are 0, ``inf`` when only the reference is)."""
    err, scale = (float(v) for v in gap)
    return err, _rel(err, scale)


def check_reversible(
    f: BlockFn,
    g: BlockFn,
    params: tuple[PyTree, PyTree],
    state: tuple[PyTree, PyTree] | None,
    x: jax.Array | jax.ShapeDtypeStruct,
    key: Any = None,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    seed: int = 0,
) -> ReversibleReport:
    """Check that your ``F``/``G`` are safe to run under ``memory_mode="reversible"``.

    Measures, on ``x`` (or on a standard normal input when ``x`` is a
    :class:`jax.ShapeDtypeStruct`), under :func:`jax.jit`:

    * the round trip: ``reversible_stage_inverse(reversible_stage(x)) - x``;
    * gradients of ``sum(y * ct)`` (``ct`` a fixed random cotangent) for the parameters and the
      input, ``memory_mode="reversible"`` against plain autodiff (``"none"``).

    Each check passes when ``max_abs <= atol + rtol * max|reference|``. ``rtol`` defaults by
    dtype: 1e-9 (float64), 1e-4 (float32), 1e-2 (float16), 5e-2 (bfloat16). The arguments are
    those of :func:`reversible_stage`. What breaks a check: ``F``/``G`` that are not pure
    functions of ``(params, state, x, key)`` (hidden RNG, Python-side counters, reading mutable
    globals), outputs so much larger than the stream that ``(x + F) - F`` loses ``x``'s digits,
    or low-precision coupling streams (keep them float32 under mixed precision).

    Example::

        report = check_reversible(f, g, params, None, jax.ShapeDtypeStruct((4, 8, 32), jnp.float32))
        print(report)           # a small table; report.passed is a bool
        assert report.passed

    Returns:
      A :class:`ReversibleReport`; ``str(report)`` is a readable table.
    """

    if isinstance(x, jax.ShapeDtypeStruct):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"x must be floating, got dtype {x.dtype}")
        x = jax.random.normal(jax.random.key(seed), x.shape, x.dtype)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating, got dtype {x.dtype}")
    dtype = jnp.dtype(x.dtype).name
    if rtol is None:
        rtol = _DEFAULT_RTOL.get(dtype, 1e-4)
    ct = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 1), x.shape, x.dtype)

    @jax.jit
    def measure(params, state, x, key, ct):
        def loss(mode):
            def fn(params, x):
                y, _ = reversible_stage(f, g, params, state, x, key, memory_mode=mode)
                return jnp.sum(y.astype(jnp.float32) * ct.astype(jnp.float32)).astype(x.dtype)

            return fn

        y, _ = reversible_stage(f, g, params, state, x, key, memory_mode="none")
        x_rec = reversible_stage_inverse(f, g, params, state, y, key)
        g_none = jax.grad(loss("none"), argnums=(0, 1))(params, x)
        g_rev = jax.grad(loss("reversible"), argnums=(0, 1))(params, x)
        return x_rec - x, gradient_gap(g_rev[0], g_none[0]), gradient_gap(g_rev[1], g_none[1])

    rt_diff, params_gap, input_gap = measure(params, state, x, key, ct)
    roundtrip = _tree_max_abs(rt_diff)
    (gp, gp_rel), (gx, gx_rel) = relative_gap(params_gap), relative_gap(input_gap)
    return ReversibleReport(
        dtype=dtype,
        num_blocks=_num_blocks(params),
        input_shape=tuple(x.shape),
        roundtrip_max_abs=roundtrip,
        roundtrip_rel=_rel(roundtrip, _tree_max_abs(x)),
        grad_params_max_abs=gp,
        grad_params_rel=gp_rel,
        grad_input_max_abs=gx,
        grad_input_rel=gx_rel,
        rtol=float(rtol),
        atol=float(atol),
    )
