"""How to keep 0/1 spikes for a convolution's backward on a TPU: which storage layout is smallest.

The TPU tiles an array's two minor axes into 8 x 128 (float32) or 32 x 128 (8-bit) tiles, so an
array whose minor axis is narrower than 128 lanes is padded to 128. Spikes packed 8 per byte
along channels (:func:`revsnn_jax.core.bitpack.pack_bits`: ``uint8 [..., C/8]``) have a minor axis
of 8 for 64 channels: padded 16x. This benchmark compiles, for the TPU v5e (compile-only, no TPU
needed; the ``tpu`` extra) and for XLA:CPU, a training step through ``--layers`` spiking 3x3
convolutions ``s_{i+1} = H(conv(s_i, k_i))`` (``H``: Heaviside, straight-through surrogate) whose
convolution keeps its input as

* ``float``   -- float32, as autodiff does (no packing);
* ``int8``    -- a 0/1 ``int8`` copy (``[N, H, W, C]``);
* ``channels``-- 8 channels per byte (``uint8 [N, H, W, C/8]``: the library's layout before);
* ``width``   -- 8 columns per byte (``uint8 [N, H, W/8, C]``: the minor axis stays C);
* ``flat``    -- 8 consecutive values per byte of the flattened tensor, held as
  ``uint8 [ceil(size / 1024), 128]`` (both tile axes full);

and reports, per layout, the bytes of one kept spike tensor (the residual as a program output,
in the target's layout) and the step's peak memory per example (slope between ``B`` and ``2B``).
Every layout gives the same gradients (checked on CPU, float32, against autodiff).

    python experiments/spike_layout.py --json experiments/results/spike_layout.json
    python experiments/spike_layout.py --model revsresnet21 --model-kwargs \
        '{"widths": [64], "blocks": [1]}' --batch 16 --json experiments/results/spike_layout_model.json

``--model``: instead of the layer chain, a registered model's training step (slope B -> 2B)
with its spike convolutions (:func:`revsnn_jax.core.bitpack.spike_conv`) keeping each layout.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp

from revsnn_jax import memory
from revsnn_jax.core.ties import tie

LAYOUTS = ("float", "int8", "channels", "width", "flat")
_SHIFTS = jnp.arange(8, dtype=jnp.uint8)


def _pack_last(bits):  # [..., 8] 0/1 uint8 -> [...] uint8
    return jnp.sum(jnp.left_shift(bits, _SHIFTS), axis=-1, dtype=jnp.uint8)


def _unpack_last(packed):  # [...] uint8 -> [..., 8] 0/1 uint8
    return jnp.bitwise_and(jnp.right_shift(packed[..., None], _SHIFTS), jnp.uint8(1))


def pack(s, layout):
    n, h, w, c = s.shape
    bits = (s != 0).astype(jnp.uint8)
    if layout == "float":
        return s
    if layout == "int8":
        return bits.astype(jnp.int8)
    if layout == "channels":
        return _pack_last(bits.reshape(n, h, w, c // 8, 8))
    if layout == "width":
        bits = jnp.pad(bits, ((0, 0), (0, 0), (0, (-w) % 8), (0, 0)))
        return _pack_last(jnp.moveaxis(bits.reshape(n, h, -1, 8, c), 3, -1))
    if layout == "flat":
        flat = bits.reshape(-1)
        flat = jnp.pad(flat, (0, (-flat.size) % 1024))
        return _pack_last(flat.reshape(-1, 128, 8))
    raise ValueError(layout)


def unpack(packed, layout, shape, dtype):
    n, h, w, c = shape
    if layout == "float":
        return packed
    if layout == "int8":
        return packed.astype(dtype)
    if layout == "channels":
        bits = _unpack_last(packed).reshape(shape)
    elif layout == "width":
        bits = jnp.moveaxis(_unpack_last(packed), -1, 3).reshape(n, h, -1, c)[:, :, :w]
    else:
        bits = _unpack_last(packed).reshape(-1)[:n * h * w * c].reshape(shape)
    return bits.astype(dtype)


def _conv(s, k):
    return jax.lax.conv_general_dilated(s, k, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _apply(how, s, k):
    op, _ = how
    return op(s, k)


def _apply_fwd(how, s, k):
    op, layout = how
    return op(s, k), (pack(s, layout), k, jnp.zeros((0, *s.shape), jnp.uint8))


def _apply_bwd(how, res, dy):
    (op, layout), (packed, k, shape) = how, res
    s = tie(unpack(packed, layout, shape.shape[1:], dy.dtype), dy)
    return jax.vjp(op, s, k)[1](dy)


_apply.defvjp(_apply_fwd, _apply_bwd)


def layout_conv(layout, s, k):
    """A 3x3 convolution whose backward keeps its 0/1 input ``s`` in ``layout``."""
    return _apply((_conv, layout), s, k)


@jax.custom_vjp
def heaviside(h):
    return (h > 0).astype(h.dtype)


heaviside.defvjp(lambda h: (heaviside(h), None), lambda _, g: (g,))  # straight through


def step_program(layout: str, layers: int, channels: int, size: int):
    """A ``StepProgram`` builder: gradient of a loss through ``layers`` spiking convolutions
    (first input: spikes of the image batch), SGD update, kernels donated."""
    kernels = [jax.ShapeDtypeStruct((3, 3, channels, channels), jnp.float32)] * layers

    def step(kernels, x):
        def loss(kernels):
            s = heaviside(x)
            for k in kernels:
                s = heaviside(layout_conv(layout, s, k))
            return jnp.mean(s)

        value, grads = jax.value_and_grad(loss)(kernels)
        return [k - 0.1 * g for k, g in zip(kernels, grads, strict=True)], value

    def make_args(batch):
        return kernels, jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32)

    return jax.jit(step, donate_argnums=(0,)), make_args


def residual_program(layout: str, channels: int, size: int):
    """A ``StepProgram`` builder: the kept spike tensor of one layer, as the program's output."""
    def make_args(batch):
        return (jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32),)

    return jax.jit(lambda s: pack(s, layout)), make_args


def model_step_program(layout: str, **kwargs):
    """A ``StepProgram`` builder: a registered model's training step
    (:func:`revsnn_jax.memory.benchmark.training_step_program` with ``kwargs``) whose spike
    convolutions (:func:`revsnn_jax.core.bitpack.spike_conv`) keep their input in ``layout``."""
    from revsnn_jax.core import bitpack
    from revsnn_jax.memory import benchmark

    bitpack._spike_apply.defvjp(  # this process only: the compile worker's
        lambda op, s, k: _apply_fwd((op, layout), s, k),
        lambda op, res, dy: _apply_bwd((op, layout), res, dy))
    return benchmark.training_step_program(**kwargs)


def check_gradients(channels=16, size=8, batch=3):
    x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
    ks = [0.3 * jax.random.normal(jax.random.key(i + 1), (3, 3, channels, channels))
          for i in range(2)]
    grads = {}
    for layout in LAYOUTS:
        grads[layout] = jax.grad(lambda ks, layout=layout: jnp.sum(jnp.stack(
            [jnp.sum(v) for v in jax.tree.leaves(_loss_parts(layout, ks, x))])))(ks)
    ref = grads["float"]
    return {layout: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(g, ref, strict=True))
            for layout, g in grads.items()}


def _loss_parts(layout, ks, x):
    s = heaviside(x)
    outs = []
    for k in ks:
        y = layout_conv(layout, s, k)
        outs.append(y * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)
        s = heaviside(y)
    return outs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="tpu-v5e,cpu")
    parser.add_argument("--channels", default="64,128")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="B of the slope B -> 2B "
                        "(T x images: 64 is 16 CIFAR images at T = 4)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--model", default=None, help="instead: this registered model's "
                        "training step, its spike convolutions keeping each layout")
    parser.add_argument("--model-kwargs", default="{}", help="JSON constructor arguments, "
                        'e.g. \'{"widths": [64], "blocks": [1]}\'')
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    args = parser.parse_args()
    module = "spike_layout"  # imported by name by the TPU compile worker
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    memory.keep_host_on_cpu()
    print("gradient max |layout - float|:", check_gradients(), flush=True)
    rows = []

    def step_row(program, target, row):
        b0, b1 = memory.compile_step(program, [args.batch, 2 * args.batch], target)
        row.update(step_peak_bytes=[b0.memory.peak_bytes, b1.memory.peak_bytes],
                   step_bytes_per_example=(b1.memory.peak_bytes - b0.memory.peak_bytes)
                   / args.batch)
        rows.append(row)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
        return row

    for target in args.targets.split(","):
        if args.model:
            for layout in args.layouts.split(","):
                kw = dict(layout=layout, name=args.model, time_steps=args.time_steps,
                          image_size=args.size, num_classes=10,
                          memory_mode="reversible" if "rev" in args.model else "none",
                          model_kwargs=json.loads(args.model_kwargs))
                row = step_row(memory.StepProgram(f"{module}:model_step_program", kw), target,
                               {"target": target, **kw})
                peaks = row["step_peak_bytes"]
                print(f"{target:8} {args.model} {layout:9} peak {peaks[0] / 2**20:.1f} / "
                      f"{peaks[1] / 2**20:.1f} MiB; "
                      f"{row['step_bytes_per_example'] / 2**20:.3f} MiB/image", flush=True)
            continue
        for channels in (int(c) for c in args.channels.split(",")):
            for layout in args.layouts.split(","):
                kw = dict(layout=layout, channels=channels, size=args.size)
                (res,) = memory.compile_step(memory.StepProgram(
                    f"{module}:residual_program", kw), [args.batch], target)
                elems = args.batch * args.size * args.size * channels
                row = step_row(memory.StepProgram(f"{module}:step_program",
                                                  dict(kw, layers=args.layers)), target, {
                    "target": target, **kw, "batch": args.batch, "layers": args.layers,
                    "residual_bytes": res.memory.output_bytes,
                    "residual_bits_per_spike": 8 * res.memory.output_bytes / elems})
                print(f"{target:8} C={channels:<4} {layout:9} kept spikes "
                      f"{row['residual_bits_per_spike']:6.2f} bits/spike; step "
                      f"{row['step_bytes_per_example'] / 2**10:9.1f} KiB/example", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
