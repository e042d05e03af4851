"""Layer 10, the subcommands of the ``revsnn`` command line (see :mod:`revsnn_jax.cli`); one module per
subcommand, argument checks in ``_args``. Modules are imported when their subcommand runs."""
