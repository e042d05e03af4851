"""Plain numpy loops of the neuron equations (docs/neurons.md), the oracle for the neuron tests.

Written independently of :mod:`revsnn_jax.neurons`: one Python loop over time, one equation per
line, in the dtype of the inputs (float32 for forward checks, float64 for gradient checks).
"""

from __future__ import annotations

import math

import numpy as np

SURROGATE_DERIVATIVES = {
    "atan": lambda u, a: (a / 2) / (1 + (math.pi / 2 * a * u) ** 2),
    "sigmoid": lambda u, a: a * (1 / (1 + np.exp(-a * u))) * (1 - 1 / (1 + np.exp(-a * u))),
}


def _inv_tau(kind, tau, w, dtype):
    if kind == "if":
        return None
    if kind == "lif":
        return dtype(1) / dtype(tau)
    return dtype(1) / (dtype(1) + np.exp(-np.asarray(w, dtype)))  # plif: sigmoid(w)


def _charge(kind, x, v, k, decay_input, leak_target):
    if kind == "if":
        return v + x
    if decay_input:
        return v + (x - (v - leak_target)) * k
    return v - (v - leak_target) * k + x


def forward(x, kind, *, tau=2.0, w=None, decay_input=True, v_threshold=1.0, v_reset=0.0,
            v_init=None):
    """Returns ``(spikes [T, ...], v_final, v_trace [T, ...])`` of a neuron over ``x [T, ...]``."""
    dtype = x.dtype.type
    k = _inv_tau(kind, tau, w, dtype)
    vth = dtype(v_threshold)
    leak_target = dtype(0) if v_reset is None else dtype(v_reset)
    # SpikingJelly's initial potential: v_reset (hard reset) or 0 (soft reset)
    v0 = 0 if v_reset is None else v_reset
    v = np.full(x.shape[1:], v0, x.dtype) if v_init is None else np.array(v_init, x.dtype)
    spikes, trace = [], []
    for t in range(x.shape[0]):
        h = _charge(kind, x[t], v, k, decay_input, leak_target)
        s = (h - vth >= 0).astype(x.dtype)  # Heaviside(0) = 1
        if v_reset is None:
            v = h - vth * s
        else:
            v = h * (1 - s) + dtype(v_reset) * s
        spikes.append(s)
        trace.append(v)
    return np.stack(spikes), v, np.stack(trace)


def backward(x, kind, a, b, c, *, surrogate=("atan", 2.0), tau=2.0, w=None, decay_input=True,
             v_threshold=1.0, v_reset=0.0, v_init=None, detach_reset=False):
    """Gradients of ``L = sum(a * spikes) + sum(b * v_final) + sum(c * v_trace)``.

    Backpropagation through time by hand, with the closed-form surrogate derivative standing in
    for dS/dH. Returns ``(dL/dx, dL/dv_init, dL/dw)`` (``dL/dw`` summed to a scalar, PLIF only).
    """
    name, alpha = surrogate
    dsurr = SURROGATE_DERIVATIVES[name]
    k = _inv_tau(kind, tau, w, np.float64)
    lt = 0.0 if v_reset is None else v_reset
    v = np.full(x.shape[1:], lt, np.float64) if v_init is None else np.array(v_init, np.float64)
    hs, vs = [], []
    for t in range(x.shape[0]):  # forward, keeping H[t] and V[t-1]
        h = _charge(kind, x[t], v, k, decay_input, lt)
        s = (h - v_threshold >= 0).astype(np.float64)
        hs.append(h)
        vs.append(v)
        v = h - v_threshold * s if v_reset is None else h * (1 - s) + v_reset * s
    gx = np.zeros_like(x, dtype=np.float64)
    gk = 0.0
    gv = np.array(b, np.float64)  # dL/dV[T-1] from the final state
    for t in reversed(range(x.shape[0])):
        h, v_prev = hs[t], vs[t]
        s = (h - v_threshold >= 0).astype(np.float64)
        g = dsurr(h - v_threshold, alpha)
        gv_t = gv + c[t]  # dL/dV[t]: from the next step and from the trace
        if v_reset is None:
            dv_dh = 1 - (0.0 if detach_reset else v_threshold * g)
        else:
            dv_dh = (1 - s) + (0.0 if detach_reset else (v_reset - h) * g)
        gh = a[t] * g + gv_t * dv_dh
        if kind == "if":
            gx[t] = gh
            gv = gh
        else:
            gx[t] = gh * k if decay_input else gh
            gk += np.sum(gh * ((x[t] - (v_prev - lt)) if decay_input else -(v_prev - lt)))
            gv = gh * (1 - k)
    gw = gk * k * (1 - k) if kind == "plif" else None
    return gx, gv, gw
