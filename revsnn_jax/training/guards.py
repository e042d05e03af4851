"""What stops or warns a run: non-finite losses or gradients, preemption (SIGTERM) and
reconstruction drift of the reversible backward.

* A non-finite loss or gradient raises :class:`NonFiniteError` naming the step (checked at every
  log and before every checkpoint, so a bad state is never saved); with ``skip_nonfinite: true``
  the update of such a batch is suppressed inside the jitted step instead and counted.
* SIGTERM sets a flag the loop reads after each step (:class:`PreemptionWatch`); on several
  processes JAX's preemption service (``jax.distributed``) decides the common step.
* ``drift_check_every: K`` differentiates the training objective every K steps twice, through
  the reconstruction (``memory_mode="reversible"``) and through the plain-autodiff twin
  (``memory_mode="none"``, stored activations), and compares them with
  :func:`revsnn_jax.reversible.gradient_gap`, the measure of
  :func:`~revsnn_jax.reversible.check_reversible`::

      grad_params_rel = max |dL/dθ_rev - dL/dθ_none| / max |dL/dθ_none|
      grad_input_rel  = max |dL/dx_rev - dL/dx_none| / max |dL/dx_none|

  above ``drift_threshold`` it warns (:class:`ReconstructionDriftWarning`).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from revsnn_jax import steps
from revsnn_jax.reversible import gradient_gap, relative_gap
from revsnn_jax.steps import losses
from revsnn_jax.training.objective import mixed, time_major
from revsnn_jax.training.workdir import print0

if TYPE_CHECKING:
    from revsnn_jax.training.workdir import Logger

# A revsnn_jax.training.state.Trainer: state.py builds its drift check from this module, so this
# module does not import it back (no import cycle); the functions read the attributes they name.
Trainer = Any

EXIT_PREEMPTED = 75  # `revsnn train` exit status after SIGTERM: checkpoint saved, run it again
EXIT_NONFINITE = 3  # `revsnn train` exit status after a non-finite loss/gradient stopped it


class NonFiniteError(FloatingPointError):
    """Training met a NaN or Inf in the loss or the gradients (``skip_nonfinite`` is off).

    ``step`` is the 1-based step whose batch produced it; ``last_checkpoint`` the last good
    checkpoint's step (``None``: none written yet). Nothing after it was saved.
    """

    def __init__(self, message: str, step: int, last_checkpoint: int | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint


class ReconstructionDriftWarning(UserWarning):
    """The reversible backward's gradients drifted from plain autodiff beyond the threshold."""


def nonfinite_error(step: int, loss: float, last_saved: int, good: int | None,
                    checkpoints: Any) -> NonFiniteError:
    """The error of a non-finite ``step``: what was saved, where to resume, the fixes."""
    where = (f"the last good checkpoint is step {good} in {checkpoints} (verified; rerunning "
             f"resumes from it)" if good is not None else
             "no checkpoint that verifies was written")
    return NonFiniteError(
        f"non-finite loss or gradients at step {step} (loss {loss}): training stopped and "
        f"nothing after step {last_saved} was saved; {where}. Fix: lower learning_rate, set "
        f"clip_grad_norm, check the data for NaN/Inf, or set skip_nonfinite: true to skip such "
        f"batches", step=step, last_checkpoint=good)


# --------------------------------------------------------------------------- preemption
class PreemptionWatch:
    """SIGTERM sets a flag that the training loop reads after each step (one process). On
    several processes JAX's preemption service (``jax.distributed``) catches the signal and
    :meth:`requested` asks for its common sync step instead."""

    def __init__(self) -> None:
        self._flag = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> PreemptionWatch:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self._flag = True

    def requested(self, manager: Any, step: int) -> bool:
        if jax.process_count() > 1:
            return bool(manager.reached_preemption(step))
        return self._flag

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None
                          else signal.SIG_DFL)


# --------------------------------------------------------------------------- drift
@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Reversible backward against plain autodiff on one batch (see
    :func:`reconstruction_drift`).

    ``*_max_abs`` are ``max |g_rev - g_none|`` over the parameter gradients and the input
    gradient; ``*_rel`` divide them by ``max |g_none|`` (the quantities of
    :func:`revsnn_jax.reversible.check_reversible`'s gradient rows, for the whole model).
    ``exceeded``: ``max(grad_params_rel, grad_input_rel) > threshold`` (or not finite).
    """

    step: int
    grad_params_max_abs: float
    grad_params_rel: float
    grad_input_max_abs: float
    grad_input_rel: float
    threshold: float

    @property
    def rel(self) -> float:
        return max(self.grad_params_rel, self.grad_input_rel)

    @property
    def exceeded(self) -> bool:
        return not (self.rel <= self.threshold)  # NaN counts as exceeded

    def record(self) -> dict[str, Any]:
        """The metrics record (``metrics.jsonl``)."""
        return {"drift_grad_params_rel": self.grad_params_rel,
                "drift_grad_input_rel": self.grad_input_rel,
                "drift_threshold": self.threshold, "drift_exceeded": self.exceeded}


def make_drift_step(trainer: Trainer) -> Callable:
    """``drift(params, state, x, y, lam) -> (params_gap, input_gap)``, jitted on the trainer's
    mesh: :func:`~revsnn_jax.reversible.gradient_gap` of the training objective's gradients
    through the reversible model against its plain twin."""
    cfg, spec, k = trainer.cfg, trainer.spec, trainer.num_classes
    plain, _, _ = steps.split_model(trainer.build_model("none", abstract=True))
    loss_fn, method, _ = losses.LOSSES[cfg.loss]

    def grads(fns, params, state, x, y):
        def objective(params, x):
            outputs, _ = fns.apply(params, state, time_major(x, spec), train=True, method=method)
            return loss_fn(outputs, y, cfg.label_smoothing)

        return jax.grad(objective, argnums=(0, 1))(params, x)

    def drift(params, state, x, y, lam):
        x, y = mixed(cfg, x, y, lam, k)
        gp_rev, gx_rev = grads(trainer.fns, params, state, x, y)
        gp_ref, gx_ref = grads(plain, params, state, x, y)
        return gradient_gap(gp_rev, gp_ref), gradient_gap(gx_rev, gx_ref)

    r, b = trainer.replicated, trainer.batch_sharding
    return jax.jit(drift, in_shardings=(r, r, b, b, r), out_shardings=r)


def reconstruction_drift(trainer: Trainer, x: np.ndarray, y: np.ndarray,
                         step: int) -> DriftReport:
    """Gradients of the reversible backward against plain autodiff on one batch.

    With ``memory_mode="reversible"`` the backward pass rebuilds every block's input from its
    output (``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``) instead of storing it; this compares the
    gradients of the training objective of ``(x, y)`` at the current parameters with those of
    plain autodiff (see the module docstring). Synchronises with the host (call it every K
    steps).
    """
    trainer.check_batch(x, y)
    if trainer.cfg.memory_mode != "reversible":
        raise ValueError("reconstruction_drift needs memory_mode: reversible, got "
                         f"{trainer.cfg.memory_mode!r}")
    if trainer._drift_step is None:
        trainer._drift_step = make_drift_step(trainer)
    params_gap, input_gap = jax.device_get(trainer._drift_step(
        trainer.params, trainer.state, *trainer.global_arrays(x, y), trainer.mixup_weight(step)))
    (gp, gp_rel), (gx, gx_rel) = relative_gap(params_gap), relative_gap(input_gap)
    return DriftReport(step=step + 1, grad_params_max_abs=gp, grad_params_rel=gp_rel,
                       grad_input_max_abs=gx, grad_input_rel=gx_rel,
                       threshold=float(trainer.cfg.drift_threshold))


def check_drift(trainer: Trainer, x: np.ndarray, y: np.ndarray, step: int,
                counters: dict[str, Any], logger: Logger) -> DriftReport:
    """One reconstruction-drift check (before the update of 0-based ``step``): count it in
    ``counters`` (``drift_checks``, ``drift_max_rel``, ``drift_warnings``), log its record and
    warn above the threshold."""
    report = reconstruction_drift(trainer, x, y, step)
    counters["drift_checks"] += 1
    rel = report.rel if math.isfinite(report.rel) else float("inf")
    counters["drift_max_rel"] = max(rel, counters["drift_max_rel"] or 0.0)
    logger.write(report.step, report.record())
    if report.exceeded:
        counters["drift_warnings"] += 1
        warnings.warn(ReconstructionDriftWarning(
            f"reconstruction drift at step {report.step}: the reversible backward's gradients "
            f"differ from plain autodiff by {report.grad_params_rel:.2e} (parameters) and "
            f"{report.grad_input_rel:.2e} (input), relative, above drift_threshold "
            f"{report.threshold:.1e}. Reconstructed activations are no longer faithful: keep "
            f"the coupling streams in float32 (bfloat16 only inside F/G), avoid tiny scales "
            f"(e.g. T-RevSNN alpha), or train with memory_mode: checkpoint"), stacklevel=3)
        print0(f"warning: reconstruction drift {rel:.2e} > {report.threshold:.1e} at step "
               f"{report.step}")
    return report
