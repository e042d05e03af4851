"""``python -m revsnn_jax`` is the ``revsnn`` command line."""

import sys

from revsnn_jax.cli import main

sys.exit(main())
