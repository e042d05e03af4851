"""T-RevSNN (Hu et al., ICML 2024): temporal reversible columns with O(L) training memory.

The network has ``T`` columns, one per time step. A stem runs once per image and feeds every
column (static images; event data has a small stem per column and frame). Four *level states*
carry information across time; they are the only "temporal turn-on" neurons. Column ``t``
updates them bottom-up::

    c_0^t = alpha_0 * c_0^(t-1) + L_0(x,       c_1^(t-1))
    c_1^t = alpha_1 * c_1^(t-1) + L_1(c_0^t,   c_2^(t-1))
    c_2^t = alpha_2 * c_2^(t-1) + L_2(c_1^t,   c_3^(t-1))
    c_3^t = alpha_3 * c_3^(t-1) + L_3(c_2^t)

with ``alpha_l`` per channel and column (init 0.5, ``|alpha| >= 1e-3`` keeping its sign) and
``L_l = Blocks_l(Fusion_l(.))``: fusion adds the down-sampled lower level of this column to the
up-sampled upper level of the previous column (the first column has no up term), and each level
has two ConvNeXt-like spiking blocks whose second pointwise and depthwise convs are shared by
all columns. Every neuron except the level states is the stateless quantizer
``S = floor(clip(V, 0, 1) + 0.5)``.

Because ``alpha_l != 0`` the update is invertible, top-down::

    c_3^(t-1) = (c_3^t - L_3(c_2^t)) / alpha_3
    c_2^(t-1) = (c_2^t - L_2(c_1^t, c_3^(t-1))) / alpha_2
    c_1^(t-1) = (c_1^t - L_1(c_0^t, c_2^(t-1))) / alpha_1
    c_0^(t-1) = (c_0^t - L_0(x,     c_1^(t-1))) / alpha_0

``memory_mode="reversible"`` runs columns ``1..T-1`` in ONE ``jax.custom_vjp`` whose residuals
are the last column's states, the parameters and the stem output: the backward reconstructs
the earlier states with the formulas above, evaluating each ``L_l`` once with ``jax.vjp`` (its
value reconstructs, its pullback differentiates). The first column (which has no previous
state) is recomputed under ``jax.checkpoint``. Training memory therefore does not grow with
``T``. The reference implementation saves every column's output states for its backward, so
its memory still grows with ``T``; it also divides by alpha to reconstruct states it already
keeps. Heads read per-column spatial means of ``c_3`` (and of its spikes), which the stage
emits as small ``[T, B, C_3]`` summaries, so intermediate supervision costs no full-size
per-column tensors.

Differences from the reference, all deliberate:

* the spike uses ``floor(x + 0.5)`` in training and evaluation alike (the reference rounds
  half to even at evaluation);
* the stem's and the spiking head's ``leaky_relu(slope=act_learn)`` is the identity, because
  the reference's ``act_learn`` schedule never reaches the modules (``act_learn`` stays 1); we
  write the identity;
* ``alpha`` is clamped in the forward with a straight-through projection (sign of 0 taken as
  +), instead of editing the parameter in place;
* event data: the column count equals the frame count (the reference hard-codes 8 columns
  against 10 frames), and each column's head output is kept for TET (reference issue #3).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from revsnn_jax.core.modes import MEMORY_MODES
from revsnn_jax.core.nnx_utils import merge_fresh, sow_intermediate
from revsnn_jax.models.registry import register
from revsnn_jax.models.trevsnn_chain import (
    NUM_LEVELS,
    States,
    _column_rates,
    _reversible_chain,
    _run_chain,
    _summaries,
)
from revsnn_jax.models.trevsnn_layers import (
    ConvNeXtSpikeBlock,
    DownSampling,
    ScaledStdConv,
    SharedConvs,
    UpSampling,
)

__all__ = ["TRevSNN", "reconstructed_history", "state_history"]

ALPHA_INIT = 0.5
ALPHA_MIN = 1e-3


def _clamp_alpha(alpha: jax.Array) -> jax.Array:
    """``sign(a) * max(|a|, 1e-3)`` forward (sign of 0 is +), identity gradient."""
    sign = jnp.where(alpha >= 0, 1.0, -1.0).astype(alpha.dtype)
    clamped = sign * jnp.maximum(jnp.abs(alpha), ALPHA_MIN)
    return alpha + jax.lax.stop_gradient(clamped - alpha)


class Column(nnx.Module):
    """One time step's column: four levels of fusion + two spiking blocks, and ``alpha``."""

    def __init__(self, channels: Sequence[int], kernel: int, *, first: bool,
                 event_channels: int | None, rngs: nnx.Rngs) -> None:
        c0, c1, c2, c3 = channels
        self.first = first
        self.alpha0 = nnx.Param(jnp.full((c0,), ALPHA_INIT))
        self.alpha1 = nnx.Param(jnp.full((c1,), ALPHA_INIT))
        self.alpha2 = nnx.Param(jnp.full((c2,), ALPHA_INIT))
        self.alpha3 = nnx.Param(jnp.full((c3,), ALPHA_INIT))
        # Event data: this column's own stem for its frame (no down-sampling).
        self.stem = (ScaledStdConv(event_channels, c0, 3, stride=1, padding=1, rngs=rngs)
                     if event_channels else None)
        self.down1 = DownSampling(c0, c1, 3, 2, 1, rngs=rngs)
        self.down2 = DownSampling(c1, c2, 3, 2, 1, rngs=rngs)
        self.down3 = DownSampling(c2, c3, 1, 1, 0, rngs=rngs)
        if not first:
            self.up0 = UpSampling(c1, c0, rngs=rngs)
            self.up1 = UpSampling(c2, c1, rngs=rngs)
            self.up2 = DownSampling(c3, c2, 1, 1, 0, rngs=rngs)  # same resolution: no resize
        for level, width in enumerate(channels):
            setattr(self, f"block{level}a", ConvNeXtSpikeBlock(width, kernel, reuse=False,
                                                               rngs=rngs))
            setattr(self, f"block{level}b", ConvNeXtSpikeBlock(width, kernel, reuse=True,
                                                               rngs=rngs))

    def alpha(self, level: int) -> jax.Array:
        return _clamp_alpha(getattr(self, f"alpha{level}")[...])

    def level(self, level: int, lower: jax.Array, upper: jax.Array | None,
              shared: Sequence[SharedConvs]) -> jax.Array:
        """``L_l(lower, upper)``: fusion, then the level's two blocks (no alpha term)."""
        if level == 0:
            fused = self.stem(lower) if self.stem is not None else lower
            if upper is not None:
                fused = fused + self.up0(upper)
        elif level == 1:
            fused = self.down1(lower) + (self.up1(upper) if upper is not None else 0)
        elif level == 2:
            fused = self.down2(lower) + (self.up2(upper) if upper is not None else 0)
        else:
            fused = self.down3(lower)
        h = getattr(self, f"block{level}a")(fused)
        return getattr(self, f"block{level}b")(h, shared[level])

    def __call__(self, x: jax.Array, prev: States | None,
                 shared: Sequence[SharedConvs]) -> States:
        states: list[jax.Array] = []
        for level in range(NUM_LEVELS):
            lower = x if level == 0 else states[-1]
            upper = None if prev is None or level == 3 else prev[level + 1]
            c = self.level(level, lower, upper, shared)
            if prev is not None:
                c = c + self.alpha(level).astype(c.dtype) * prev[level]
            states.append(c)
        return tuple(states)


# --------------------------------------------------------------------------- model
class _Classifier(nnx.Module):
    """Analog head: spatial mean of ``c_3`` -> weight-standardised 1x1 conv."""

    def __init__(self, channels: int, num_classes: int, *, rngs: nnx.Rngs) -> None:
        self.conv = ScaledStdConv(channels, num_classes, 1, rngs=rngs)

    def __call__(self, pooled: jax.Array, pooled_spikes: jax.Array) -> jax.Array:
        del pooled_spikes
        return self.conv(pooled[:, None, None, :])[:, 0, 0, :]


class _SpikeClassifier(nnx.Module):
    """Spiking head: spatial mean of ``Q(c_3)`` -> 1x1 -> 1x1 (the reference's leaky ReLU with
    slope ``act_learn = 1`` between them is the identity)."""

    def __init__(self, channels: int, num_classes: int, *, rngs: nnx.Rngs) -> None:
        self.conv1 = ScaledStdConv(channels, num_classes, 1, rngs=rngs)
        self.conv2 = ScaledStdConv(num_classes, num_classes, 1, rngs=rngs)

    def __call__(self, pooled: jax.Array, pooled_spikes: jax.Array) -> jax.Array:
        del pooled
        return self.conv2(self.conv1(pooled_spikes[:, None, None, :]))[:, 0, 0, :]


class TRevSNN(nnx.Module):
    """T-RevSNN: ``time_steps`` temporal reversible columns over one stem output.

    ``model(x)`` returns the last head's logits ``[B, K]`` (what evaluation uses);
    :meth:`head_outputs` returns every supervised head's logits ``[n, B, K]`` for the losses
    (:func:`revsnn_jax.steps.losses.intermediate_supervision_loss`, :func:`revsnn_jax.steps.losses.tet_loss`). Static images are ``[B, H, W, 3]``;
    event data (``event_channels=2``) is ``[T, B, H, W, 2]`` with ``T == time_steps``.
    """

    def __init__(self, channels: Sequence[int] = (96, 192, 384, 512), kernel: int = 5, *,
                 num_classes: int = 1000, time_steps: int = 4, memory_mode: str = "reversible",
                 event_channels: int | None = None, per_column_heads: bool = False,
                 rngs: nnx.Rngs) -> None:
        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"unknown memory_mode {memory_mode!r}; choose one of "
                             f"{', '.join(MEMORY_MODES)}")
        if time_steps < 1:
            raise ValueError(f"time_steps (columns) must be >= 1, got {time_steps}")
        if len(channels) != NUM_LEVELS:
            raise ValueError(f"channels must list {NUM_LEVELS} widths, got {channels}")
        c0 = channels[0]
        self.channels = tuple(channels)
        self.time_steps = time_steps
        self.memory_mode = memory_mode
        self.event_channels = event_channels
        self.per_column_heads = per_column_heads
        if event_channels is None:
            # ImageNet stem: 7x7 s2 -> (leaky ReLU, slope 1: identity) -> 3x3 s2; once per image.
            self.stem1 = ScaledStdConv(3, c0, 7, stride=2, padding=3, rngs=rngs)
            self.stem2 = ScaledStdConv(c0, c0, 3, stride=2, padding=1, rngs=rngs)
        for level, width in enumerate(channels):
            setattr(self, f"shared{level}", SharedConvs(width, kernel, rngs=rngs))
        self.first_column = Column(channels, kernel, first=True, event_channels=event_channels,
                                   rngs=rngs)
        if time_steps > 1:
            @nnx.split_rngs(splits=time_steps - 1)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def make_columns(column_rngs: nnx.Rngs) -> Column:
                return Column(channels, kernel, first=False, event_channels=event_channels,
                              rngs=column_rngs)

            self.columns = make_columns(rngs)
        c3 = channels[3]
        if per_column_heads:  # event data: a spiking head on every column (TET)
            self.head = _SpikeClassifier(c3, num_classes, rngs=rngs)
        else:  # intermediate supervision: 3 analog heads + 1 spiking head (the reference)
            self.head0 = _Classifier(c3, num_classes, rngs=rngs)
            self.head1 = _Classifier(c3, num_classes, rngs=rngs)
            self.head2 = _Classifier(c3, num_classes, rngs=rngs)
            self.head3 = _SpikeClassifier(c3, num_classes, rngs=rngs)

    # ----------------------------------------------------------------- pieces
    def _shared(self) -> SharedConvs:
        return _SharedStack(*(getattr(self, f"shared{level}") for level in range(NUM_LEVELS)))

    def _check_input(self, x: jax.Array) -> None:
        if self.event_channels is None:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"T-RevSNN takes RGB images [B, H, W, 3], got shape {x.shape}")
        elif x.ndim != 5 or x.shape[0] != self.time_steps or x.shape[-1] != self.event_channels:
            raise ValueError(
                f"event T-RevSNN takes frames [T={self.time_steps}, B, H, W, "
                f"{self.event_channels}] (one column per frame), got shape {x.shape}")

    def column_summaries(self, x: jax.Array):
        """Run every column; return per-column ``(mean c_3, mean Q(c_3))``, each ``[T, B, C_3]``."""
        self._check_input(x)
        shared = self._shared()
        if self.event_channels is None:
            x0 = self.stem2(self.stem1(x))
        else:
            x0 = x[0]

        def first(col, sh, x0):
            return _column_rates(col, x0, None, sh)

        if self.memory_mode == "none":
            c, first_rates = first(self.first_column, shared, x0)
        else:
            c, first_rates = nnx.remat(first)(self.first_column, shared, x0)
        summaries = [_summaries(c[3])]
        rates = [first_rates]
        if self.time_steps > 1:
            col_graph, col_params, col_state = nnx.split(self.columns, nnx.Param, ...)
            sh_graph, sh_params, sh_state = nnx.split(shared, nnx.Param, ...)
            x_shared = x0 if self.event_channels is None else None
            frames = None if self.event_channels is None else x[1:]
            if self.memory_mode == "reversible":
                _, rest, new_state, rest_rates = _reversible_chain(col_graph, sh_graph)(
                    col_params, col_state, sh_params, sh_state, x_shared, frames, c)
            else:
                _, rest, new_state, rest_rates = _run_chain(
                    col_graph, sh_graph, col_params, col_state, sh_params, sh_state, x_shared,
                    frames, c, checkpoint=self.memory_mode == "checkpoint")
            nnx.update(self.columns, new_state)
            rates.append(rest_rates.reshape(-1))
            means = jnp.concatenate([summaries[0][0][None], rest[0]])
            spike_means = jnp.concatenate([summaries[0][1][None], rest[1]])
        else:
            means, spike_means = summaries[0][0][None], summaries[0][1][None]
        # Firing rates: every quantizer of every column (column 0 first), then each column's
        # top-level spikes Q(c_3) that the spiking head reads (the mean of spike_means).
        rates.append(spike_means.mean(axis=(1, 2)))
        sow_intermediate(self, "firing_rate", jax.lax.stop_gradient(jnp.concatenate(rates)))
        return means, spike_means

    def supervised_columns(self) -> list[int]:
        """Columns with a head: every ``T // 4``-th, the last four (the reference's rule)."""
        if self.per_column_heads:
            return list(range(self.time_steps))
        interval = max(self.time_steps // 4, 1)
        cols = [i for i in range(self.time_steps) if (i + 1) % interval == 0]
        return cols[-4:]

    def head_outputs(self, x: jax.Array) -> jax.Array:
        """Logits of every supervised head, ``[n, B, K]``, the last one the model's output."""
        means, spike_means = self.column_summaries(x)
        if self.per_column_heads:
            return jnp.stack([self.head(means[t], spike_means[t])
                              for t in range(self.time_steps)])
        cols = self.supervised_columns()
        heads = [self.head0, self.head1, self.head2, self.head3][-len(cols):]
        return jnp.stack([head(means[t], spike_means[t]) for head, t in zip(heads, cols, strict=True)])

    def __call__(self, x: jax.Array) -> jax.Array:
        outputs = self.head_outputs(x)
        return outputs.mean(0) if self.per_column_heads else outputs[-1]


def _chain_parts(model: TRevSNN, x: jax.Array):
    """The pieces the column chain runs on: graphs, params, state, inputs and column 0's states."""
    model._check_input(x)
    shared = model._shared()
    x0 = model.stem2(model.stem1(x)) if model.event_channels is None else x[0]
    first = model.first_column(x0, None, shared)
    col_graph, col_params, col_state = nnx.split(model.columns, nnx.Param, ...)
    sh_graph, sh_params, sh_state = nnx.split(shared, nnx.Param, ...)
    x_shared = x0 if model.event_channels is None else None
    frames = None if model.event_channels is None else x[1:]
    return col_graph, col_params, col_state, sh_graph, sh_params, sh_state, x_shared, frames, first


def state_history(model: TRevSNN, x: jax.Array) -> States:
    """Every column's level states, ``4 x [T, B, H_l, W_l, C_l]``, computed forward.

    For tests and diagnostics (it keeps all columns, which training never does). Call it on a
    model merged inside the transform (``merge_fresh``); in training mode it updates BatchNorm
    statistics like a forward pass.
    """
    if model.time_steps < 2:
        raise ValueError("state_history needs at least two columns")
    cg, cp, cs, sg, sp, ss, x_shared, frames, first = _chain_parts(model, x)
    shared = merge_fresh(sg, sp, ss)

    def body(c, column):
        p_t, s_t, frame_t = column
        new_c = merge_fresh(cg, p_t, s_t)(x_shared if frame_t is None else frame_t, c, shared)
        return new_c, new_c

    _, rest = jax.lax.scan(body, first, (cp, cs, frames))
    return tuple(jnp.concatenate([f[None], r]) for f, r in zip(first, rest, strict=True))


def reconstructed_history(model: TRevSNN, x: jax.Array) -> States:
    """The same history, rebuilt backwards from the last column's states alone.

    ``c_l^(t-1) = (c_l^t - L_l(...)) / alpha_l``, top-down, as the reversible backward does;
    comparing with :func:`state_history` measures the reconstruction error.
    """
    history = state_history(model, x)
    cg, cp, cs, sg, sp, ss, x_shared, frames, _ = _chain_parts(model, x)
    shared = merge_fresh(sg, sp, ss)

    def body(c, column):
        p_t, s_t, frame_t = column
        col = merge_fresh(cg, p_t, s_t)
        prev: list[jax.Array] = [None] * NUM_LEVELS  # type: ignore[list-item]
        for level in reversed(range(NUM_LEVELS)):
            lower = (x_shared if frame_t is None else frame_t) if level == 0 else c[level - 1]
            upper = None if level == 3 else prev[level + 1]
            out = col.level(level, lower, upper, shared)
            prev[level] = (c[level] - out) / col.alpha(level).astype(out.dtype)
        return tuple(prev), c

    last = tuple(h[-1] for h in history)
    first, later = jax.lax.scan(body, last, (cp, cs, frames), reverse=True)
    return tuple(jnp.concatenate([f[None], r]) for f, r in zip(first, later, strict=True))


class _SharedStack(nnx.Module):
    """The four stages' shared convs as one module (indexable by level)."""

    def __init__(self, *stages: SharedConvs) -> None:
        self.stage0, self.stage1, self.stage2, self.stage3 = stages

    def __getitem__(self, level: int) -> SharedConvs:
        return getattr(self, f"stage{level}")


# --------------------------------------------------------------------------- registry
def _builder(channels: tuple[int, ...], kernel: int, num_classes: int, time_steps: int,
             event: bool, doc: str):
    def build(*, num_classes: int = num_classes, time_steps: int = time_steps,
              memory_mode: str | None = None, rngs: nnx.Rngs | None = None,
              channels: Sequence[int] = channels, kernel: int = kernel, **kwargs) -> TRevSNN:
        if event:  # one stem per column and frame, a spiking head on every column (TET)
            kwargs.setdefault("event_channels", 2)
            kwargs.setdefault("per_column_heads", True)
        return TRevSNN(channels, kernel, num_classes=num_classes, time_steps=time_steps,
                       memory_mode=memory_mode or "reversible", rngs=rngs or nnx.Rngs(0),
                       **kwargs)

    build.__doc__ = doc
    return build


#: name, channels, kernel, classes, columns, input shape, event data?, description
_REGISTRY = (
    ("trevsnn_tiny", (64, 128, 256, 384), 3, 1000, 4, (224, 224, 3), False,
     "T-RevSNN tiny: channels 64/128/256/384, kernel 3, 4 columns (ImageNet)."),
    ("trevsnn_small", (96, 192, 384, 512), 5, 1000, 4, (224, 224, 3), False,
     "T-RevSNN small: channels 96/192/384/512, kernel 5, 4 columns (ImageNet, 32.3M params)."),
    ("trevsnn_tiny_dvs", (32, 64, 128, 256), 3, 10, 8, (128, 128, 2), True,
     "T-RevSNN tiny for event data: channels 32/64/128/256, one column per frame, TET heads.\n\n"
     "Input frames ``[T, B, H, W, 2]`` with ``T == time_steps`` (the reference hard-codes 8 "
     "columns against 10 frames, a bug); each column has its own stem and the spiking head "
     "reads every column (``[T, B, K]`` for the TET loss; the logits are their mean)."),
)

for _name, _channels, _kernel, _classes, _columns, _shape, _event, _doc in _REGISTRY:
    register(_name, family="trevsnn", reversible=True, input_shape=_shape,
             default_time_steps=_columns, default_num_classes=_classes)(
        _builder(_channels, _kernel, _classes, _columns, _event, _doc))
