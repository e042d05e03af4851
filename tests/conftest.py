"""Test configuration.

* float64 is enabled so gradient checks can run at double precision; tests give their dtypes
  explicitly.
* XLA's CPU backend compiles with LLVM optimisation level 0 (unless the caller set its own
  ``XLA_FLAGS``): the suite is dominated by compiling many small programs, which this makes
  2-4x faster, while XLA's memory plan and FLOP counts, which tests assert, do not depend on
  the LLVM level.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # XLA_FLAGS must be set before the backend starts

jax.config.update("jax_enable_x64", True)
