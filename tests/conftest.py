"""Test configuration: float64 is enabled so gradient checks can run at double precision."""

import jax

jax.config.update("jax_enable_x64", True)
