"""The training pipeline in parts, one job per module; :mod:`revsnn_jax.train` is its public API.

* :mod:`~revsnn_jax.training.state`: the :class:`~revsnn_jax.training.state.Trainer` (config
  checks, data sources, the model, optimizer and compiled steps on a device mesh);
* :mod:`~revsnn_jax.training.objective`: what one step computes from a batch (host-drawn mixup,
  time-major events, the loss);
* :mod:`~revsnn_jax.training.optim`: the optax optimizer and learning-rate schedule of a recipe;
* :mod:`~revsnn_jax.training.evaluation`: test loss and accuracy, firing rate, compile-only
  memory per image;
* :mod:`~revsnn_jax.training.checkpoint`: orbax checkpoints of a trainer (save, verified
  restore, resume from the newest good one, the data-iterator position);
* :mod:`~revsnn_jax.training.guards`: non-finite stop, preemption (SIGTERM), reconstruction
  drift;
* :mod:`~revsnn_jax.training.workdir`: the work directory (config on resume, metrics log);
* :mod:`~revsnn_jax.training.loop`: the training loop :func:`~revsnn_jax.training.loop.train`
  and its summary.
"""
