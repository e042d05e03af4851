"""``revsnn demo``: a multi-step LIF layer over the bundled real digits.

What it shows, honestly: one randomly initialised dense layer feeding a LIF neuron scanned over
T steps (direct encoding of real handwritten digits), a linear read-out of firing rates trained
for a few steps with SGD, the firing rate, the gradient norms, and XLA's compiled memory of the
training step. It is a smoke test of the neuron core, not a trained spiking network.
"""

from __future__ import annotations

import argparse

from revsnn_jax.commands._args import positive_int

HELP = "smoke demo: a LIF layer over the bundled digits, firing rates, gradients, memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--time-steps", type=positive_int, default=8, help="T (default 8)")
    parser.add_argument("--hidden", type=positive_int, default=256,
                        help="LIF neurons (default 256)")
    parser.add_argument("--steps", type=positive_int, default=50, help="SGD steps (default 50)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import optax

    from revsnn_jax import data, memory, neurons

    train = data.load_digits("train")
    x = jnp.asarray(train.images.reshape(len(train), -1))
    y = jnp.asarray(train.labels)
    k1, k2 = jax.random.split(jax.random.key(args.seed))
    d_in = x.shape[1]
    params = {
        "w_in": jax.random.normal(k1, (d_in, args.hidden)) * (2.0 / d_in) ** 0.5,
        "w_out": jax.random.normal(k2, (args.hidden, train.num_classes)) * 0.01,
    }

    def loss_fn(params, x, y):
        current = x @ params["w_in"]  # weights applied once, outside the time scan
        inputs = jnp.broadcast_to(current, (args.time_steps, *current.shape))
        spikes, _ = neurons.lif_multistep(inputs, tau=2.0)
        rate = spikes.mean(0)
        logits = rate @ params["w_out"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (rate.mean(), (logits.argmax(-1) == y).mean())

    opt = optax.sgd(0.5, momentum=0.9)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, aux, grads

    mem = memory.compiled_memory(step, params, opt_state, x, y)
    print(f"digits: {len(train)} training images, T={args.time_steps}, {args.hidden} LIF neurons")
    for i in range(args.steps):
        params, opt_state, loss, (rate, acc), grads = step(params, opt_state, x, y)
        if i % 10 == 0 or i == args.steps - 1:
            gnorm = {k: float(jnp.linalg.norm(v)) for k, v in grads.items()}
            print(f"step {i:3d}  loss {float(loss):.3f}  train acc {float(acc):.3f}  "
                  f"firing rate {float(rate):.3f}  |grad w_in| {gnorm['w_in']:.2e}  "
                  f"|grad w_out| {gnorm['w_out']:.2e}")
    print(f"compiled training step: temp {mem.temp_bytes / 2**20:.2f} MiB, "
          f"arguments {mem.argument_bytes / 2**20:.2f} MiB, outputs "
          f"{mem.output_bytes / 2**20:.2f} MiB, peak {mem.peak_bytes / 2**20:.2f} MiB")
    return 0
