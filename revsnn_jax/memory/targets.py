"""Where a training step is compiled for: the targets of :func:`revsnn_jax.memory.compile_step`
(``cpu``, ``gpu``, one chip of a TPU generation compiled by libtpu without a TPU), the HBM of
each chip (``revsnn plan``'s default budget) and where TPU plans are cached.
:mod:`revsnn_jax.memory` re-exports every name here."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib

import jax

__all__ = ["HBM_GIB", "TARGETS", "TPU_TOPOLOGIES", "Target", "TargetUnavailableError",
           "check_available", "default_cache_dir", "get_target", "keep_host_on_cpu"]

#: HBM of one chip, GiB (Google Cloud's per-chip figures); ``revsnn plan``'s default budget.
HBM_GIB: dict[str, float] = {"tpu-v4": 32, "tpu-v5e": 16, "tpu-v5p": 95, "tpu-v6e": 32}

#: The TPU slice each target describes to the compiler; the plan is for its first chip.
TPU_TOPOLOGIES: dict[str, str] = {"tpu-v4": "v4:2x2x1", "tpu-v5e": "v5e:2x2",
                                  "tpu-v5p": "v5p:2x2x1", "tpu-v6e": "v6e:2x2"}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a step is compiled for: ``platform`` ``cpu``/``gpu`` (this machine's device) or
    ``tpu`` (one chip of ``topology``, compiled without a TPU)."""

    name: str
    platform: str
    topology: str | None = None
    hbm_gib: float | None = None

    @property
    def hbm_bytes(self) -> int | None:
        return None if self.hbm_gib is None else int(self.hbm_gib * 2 ** 30)


TARGETS: dict[str, Target] = {
    "cpu": Target("cpu", "cpu"),
    "gpu": Target("gpu", "gpu"),
    **{name: Target(name, "tpu", TPU_TOPOLOGIES[name], HBM_GIB[name]) for name in HBM_GIB},
}


class TargetUnavailableError(RuntimeError):
    """The target cannot be compiled for on this machine; the message says what to install."""


def get_target(name: str) -> Target:
    """The :data:`TARGETS` entry ``name`` (``ValueError`` naming the choices otherwise)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}") from None


def check_available(target: str | Target) -> Target:
    """Fail at once (:class:`TargetUnavailableError`) when ``target`` cannot be compiled for here.

    A TPU target needs libtpu to be installed; it is looked up without importing it.
    """
    target = get_target(target) if isinstance(target, str) else target
    if target.platform == "tpu" and importlib.util.find_spec("libtpu") is None:
        raise TargetUnavailableError(
            f"target {target.name} needs the TPU compiler (libtpu), which is not installed; "
            f"install the tpu extra: pip install -e \".[tpu]\" (or pip install "
            f"\"jax[tpu]=={jax.__version__}\", the libtpu matching this jax)")
    if target.platform == "gpu":
        try:
            jax.devices("gpu")
        except RuntimeError:
            raise TargetUnavailableError(
                "target gpu compiles for this machine's GPU, and jax sees none; on a machine "
                "with an NVIDIA GPU install the cuda extra: pip install -e \".[cuda]\"") from None
    return target


def keep_host_on_cpu() -> None:
    """Select jax's CPU backend for this process (unless ``JAX_PLATFORMS`` is set), before any
    backend starts: for a ``cpu`` or TPU target nothing else is needed here, and jax would
    otherwise initialise every installed plugin, libtpu included (seconds, and error lines on a
    machine without a TPU). No effect once jax's backends have started."""
    if "JAX_PLATFORMS" not in os.environ:
        jax.config.update("jax_platforms", "cpu")


def default_cache_dir() -> pathlib.Path:
    """Where TPU plans are cached: ``$REVSNN_JAX_CACHE_DIR``, else ``~/.cache/revsnn-jax/tpu-plans``."""
    env = os.environ.get("REVSNN_JAX_CACHE_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "revsnn-jax" / "tpu-plans"
