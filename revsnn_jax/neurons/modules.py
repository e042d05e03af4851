"""The NNX neuron family every model uses: :class:`IF`, :class:`LIF`, :class:`PLIF`,
:class:`Quantizer`, thin modules over the functions of :mod:`revsnn_jax.neurons`.

Each module holds its configuration (and PLIF its learnable ``w``); ``__call__`` runs the
multi-step neuron over a time-major input ``x`` shaped ``[T, ...]`` with ``jax.lax.scan``. The
membrane state is explicit, as in the functions: there is no hidden state and nothing to reset.
``v_init`` (shaped like one step ``x.shape[1:]`` or a scalar; by default SpikingJelly's start,
``v_reset`` for a hard reset and 0 for a soft one) goes in, and with
``return_state=True`` the final potential comes out; ``return_trace=True`` adds the potential
after every step's reset.

Every module honours ``unroll`` (the time scan's, :func:`revsnn_jax.neurons.scan_unroll`) and
``backward`` (``"autodiff"``, ``"lean"``, ``"recompute"``: :mod:`revsnn_jax.neurons.backward`;
PLIF is autodiff only), and always records its firing rate, the mean spike count per neuron
and step, as ``nnx.Intermediate`` ``firing_rate`` (collected by
:func:`revsnn_jax.core.nnx_utils.call_capturing`). ``x`` may also be a tuple of arrays (e.g. the two
channel halves of a reversible stream): each gets the neuron, the spikes come back as a tuple,
and the module records one rate over all of them. :func:`from_config` builds the module a
:class:`revsnn_jax.neurons.NeuronConfig` describes.

Equations (SpikingJelly's names and defaults; ``X`` input, ``V`` potential, ``S`` spike):

* IF:    ``H[t] = V[t-1] + X[t]``
* LIF:   ``H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau``   (``decay_input=True``)
         ``H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]``     (``decay_input=False``)
* PLIF:  as LIF with ``1 / tau = sigmoid(w)``, ``w`` an :class:`flax.nnx.Param`
* fire:  ``S[t] = Heaviside(H[t] - V_th)`` (``Heaviside(0) = 1``), surrogate derivative backward
* reset: hard ``V[t] = H[t] (1 - S[t]) + V_reset S[t]``; soft (``v_reset=None``)
         ``V[t] = H[t] - V_th S[t]`` (and ``V_reset`` reads 0 in the LIF leak);
         ``detach_reset=True`` stops the gradient through the spike in the reset term.
* Quantizer (T-RevSNN, stateless): ``S = floor(clip(X, 0, 1) + 0.5)``, gradient 1 on ``[0, 1]``.

Example::

    from flax import nnx
    from revsnn_jax.neurons.modules import LIF, PLIF

    lif = LIF(tau=2.0, surrogate="sigmoid")
    spikes = lif(x)                                    # x: [T, B, ...] -> spikes [T, B, ...]
    spikes, v_final = lif(x, v_init, return_state=True)
    plif = PLIF(tau=2.0)                               # nnx.Param w, 1/tau = sigmoid(w)
    lean = LIF(tau=2.0, backward="lean", chunk=4)      # same values and gradients
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from revsnn_jax.core.nnx_utils import sow_intermediate
from revsnn_jax.neurons import multistep as neurons
from revsnn_jax.neurons import surrogate as surrogate_lib

__all__ = ["IF", "LIF", "PLIF", "Quantizer", "from_config"]

Array = jax.Array


class _Neuron(nnx.Module):
    """What every neuron module shares: tuples of inputs, the firing rate, the outputs asked for.

    A subclass defines ``_run(x, v_init, return_trace) -> (spikes, v_final[, v_trace])``."""

    def __call__(self, x: Array | tuple[Array, ...], v_init: Array | None = None, *,
                 return_state: bool = False, return_trace: bool = False):
        if isinstance(x, tuple):
            if v_init is not None or return_state or return_trace:
                raise ValueError("a tuple of inputs takes no v_init, return_state or "
                                 "return_trace (call the neuron on each array instead)")
            spikes = tuple(self._run(part, None, False)[0] for part in x)
            self._record(spikes)
            return spikes
        out = self._run(x, v_init, return_trace)
        self._record((out[0],))
        if return_trace:
            return out  # (spikes, v_final, v_trace)
        if return_state:
            return out[0], out[1]
        return out[0]

    def _record(self, spikes: tuple[Array, ...]) -> None:
        total = sum(jax.lax.stop_gradient(s).sum() for s in spikes)
        # the count as a float: past 2**31 spikes (a large batch) an int overflows int32
        sow_intermediate(self, "firing_rate", total / float(sum(s.size for s in spikes)))


def _check_reset(v_threshold: float, v_reset: float | None) -> None:
    neurons._check_threshold(v_threshold)
    if v_reset is not None:  # None means soft reset
        concrete = neurons._concrete(v_reset)
        if concrete is not None and not np.all(np.isfinite(concrete)):
            raise ValueError(f"v_reset must be finite or None (soft reset), got {v_reset}")


class _Spiking(_Neuron):
    """Fire-and-reset settings shared by IF, LIF and PLIF."""

    def __init__(self, v_threshold: float, v_reset: float | None, detach_reset: bool,
                 surrogate: surrogate_lib.SurrogateLike, unroll: neurons.Unroll,
                 backward: str = "autodiff", chunk: int | None = None) -> None:
        _check_reset(v_threshold, v_reset)
        neurons.scan_unroll(1, unroll)  # rejects a bad value at construction
        if backward not in neurons.BACKWARDS:
            raise ValueError(f"unknown backward {backward!r}; choose one of "
                             f"{', '.join(neurons.BACKWARDS)}")
        self.unroll = unroll
        self.backward = backward
        self.chunk = chunk
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.detach_reset = bool(detach_reset)
        # resolve now, so an unknown surrogate name fails at construction
        self.surrogate = surrogate_lib.get(surrogate)

    def _reset_kwargs(self) -> dict[str, Any]:
        kwargs = dict(v_threshold=self.v_threshold, v_reset=self.v_reset,
                      detach_reset=self.detach_reset, surrogate=self.surrogate,
                      unroll=self.unroll)
        if self.backward != "autodiff":
            kwargs.update(backward=self.backward, chunk=self.chunk)
        return kwargs


class IF(_Spiking):
    """Integrate-and-fire: ``H[t] = V[t-1] + X[t]``, then fire and reset (module docstring).

    ``IF()(x)`` on ``x`` shaped ``[T, ...]`` returns the spikes ``[T, ...]``;
    ``return_state=True`` returns ``(spikes, v_final)``, ``return_trace=True``
    ``(spikes, v_final, v_trace)``. ``unroll`` is passed to the scan over time
    (:func:`revsnn_jax.neurons.scan_unroll`: by default ``T <= 16`` is unrolled); ``backward``
    and ``chunk`` choose the backward pass (module docstring).
    """

    def __init__(self, *, v_threshold: float = 1.0, v_reset: float | None = 0.0,
                 detach_reset: bool = False,
                 surrogate: surrogate_lib.SurrogateLike = "sigmoid",
                 unroll: neurons.Unroll = None, backward: str = "autodiff",
                 chunk: int | None = None) -> None:
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, unroll, backward, chunk)

    def _run(self, x, v_init, return_trace):
        return neurons.if_multistep(x, v_init=v_init, return_trace=return_trace,
                                    **self._reset_kwargs())


class LIF(_Spiking):
    """Leaky integrate-and-fire with a fixed time constant ``tau > 0``.

    ``decay_input=True``: ``H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau``;
    ``decay_input=False``: ``H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]``; then fire and
    reset (module docstring). Call as :class:`IF`.
    """

    def __init__(self, *, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, detach_reset: bool = False,
                 surrogate: surrogate_lib.SurrogateLike = "sigmoid",
                 unroll: neurons.Unroll = None, backward: str = "autodiff",
                 chunk: int | None = None) -> None:
        neurons._check_tau(tau)
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, unroll, backward, chunk)
        self.tau = tau
        self.decay_input = bool(decay_input)

    def _run(self, x, v_init, return_trace):
        return neurons.lif_multistep(x, tau=self.tau, decay_input=self.decay_input,
                                     v_init=v_init, return_trace=return_trace,
                                     **self._reset_kwargs())


class PLIF(_Spiking):
    """Parametric LIF (Fang et al., 2021): LIF with a learnable ``1 / tau = sigmoid(w)``.

    ``w`` is an :class:`flax.nnx.Param` initialised from ``tau > 1`` by
    :func:`revsnn_jax.neurons.plif_w_from_tau` (``w = -log(tau - 1)``). ``shape=()`` (default)
    shares one ``w`` over all neurons as SpikingJelly does; e.g. ``shape=(C,)`` learns one per
    channel (it must broadcast to one time step). Call as :class:`IF`.
    """

    def __init__(self, *, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, detach_reset: bool = False,
                 surrogate: surrogate_lib.SurrogateLike = "sigmoid",
                 shape: tuple[int, ...] = (), param_dtype: Any = jnp.float32,
                 unroll: neurons.Unroll = None, backward: str = "autodiff") -> None:
        if backward != "autodiff":
            raise ValueError("PLIF learns tau: its backward is 'autodiff' only")
        if not (isinstance(tau, numbers.Real) and tau > 0):
            raise ValueError(f"tau must be positive, got {tau!r}")
        w0 = neurons.plif_w_from_tau(float(tau))  # also rejects 0 < tau <= 1
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, unroll)
        self.decay_input = bool(decay_input)
        self.w = nnx.Param(jnp.full(tuple(shape), w0, dtype=param_dtype))

    @property
    def tau(self) -> Array:
        """The current time constant ``1 / sigmoid(w)``."""
        return 1 / jax.nn.sigmoid(self.w[...])

    def _run(self, x, v_init, return_trace):
        return neurons.plif_multistep(x, self.w[...], decay_input=self.decay_input,
                                      v_init=v_init, return_trace=return_trace,
                                      **self._reset_kwargs())


class Quantizer(_Neuron):
    """T-RevSNN's stateless spiking neuron: ``S = floor(clip(X, 0, 1) + 0.5)``.

    Gradient 1 on ``[0, 1]`` and 0 elsewhere, the same formula in training and evaluation
    (:func:`revsnn_jax.neurons.quantize_spike`). It keeps no membrane state, so ``v_init`` must
    be None; ``return_state=True`` returns ``(spikes, None)`` for drop-in use with the others.
    Elementwise: the leading axis may be time or (inside a T-RevSNN column) the batch.
    """

    def __call__(self, x: Array | tuple[Array, ...], v_init: Array | None = None, *,
                 return_state: bool = False):
        return super().__call__(x, v_init, return_state=return_state)

    def _run(self, x, v_init, return_trace):
        if v_init is not None:
            raise ValueError("Quantizer is stateless: it takes no v_init")
        x = neurons._check_floating(x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(
                f"Quantizer takes a time-major input [T, ...] with T >= 1, got shape {x.shape}"
            )
        return neurons.quantize_spike(x), None


def from_config(config: neurons.NeuronConfig) -> IF | LIF | Quantizer:
    """The module of ``config`` (kind ``"if"``, ``"lif"`` or ``"quant"``), with its
    ``unroll`` and ``backward``; what every model builds its neurons with."""
    if not isinstance(config, neurons.NeuronConfig):
        raise TypeError(f"config must be a NeuronConfig, got {type(config).__name__}")
    reset = dict(v_threshold=config.v_threshold, v_reset=config.v_reset,
                 detach_reset=config.detach_reset, surrogate=config.surrogate,
                 unroll=config.unroll, backward=config.backward)
    if config.kind == "if":
        return IF(**reset)
    if config.kind == "lif":
        return LIF(tau=config.tau, decay_input=config.decay_input, **reset)
    if config.kind == "quant":
        return Quantizer()
    raise ValueError(f"unknown neuron kind {config.kind!r}; choose 'if', 'lif' or 'quant'")
