"""Test configuration.

* float64 is enabled so gradient checks can run at double precision; tests give their dtypes
  explicitly.
* XLA's CPU backend compiles with LLVM optimisation level 0 (unless the caller set its own
  ``XLA_FLAGS``): the suite is dominated by compiling many small programs, which this makes
  2-4x faster, while XLA's memory plan and FLOP counts, which tests assert, do not depend on
  the LLVM level.
* ``JAX_PLATFORMS=cpu`` (unless set): with the ``tpu`` extra installed jax would initialise
  libtpu in every test process; TPU plans are compiled in their own subprocess.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # XLA_FLAGS must be set before the backend starts

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def xla_compilation_cache(tmp_path_factory):
    """Share XLA's persistent compilation cache within a module whose runs compile the same
    small steps again and again (``pytestmark = pytest.mark.usefixtures(...)``); restored
    afterwards."""
    old = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs,
           jax.config.jax_persistent_cache_min_entry_size_bytes)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", old[2])
