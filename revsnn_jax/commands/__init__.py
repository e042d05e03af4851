"""Subcommands of the ``revsnn`` command line (see :mod:`revsnn_jax.cli`)."""
