"""The logistic map x' = r x (1 - x).

R. M. May, "Simple mathematical models with very complicated dynamics", Nature 261, 459-467
(1976). At r = 4 the map is conjugate to the tent map and its exponent is ln 2 = 0.693147.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._system import System, param


class Logistic(System):
    """The logistic map with growth rate ``r`` (chaotic for r near 4)."""

    r: jax.Array
    dim: int = eqx.field(static=True)

    def __init__(self, r=4.0):
        self.r, self.dim = param(r, "r"), 1

    def drift(self, t, x):
        return self.r * x * (1.0 - x)

    def initial_state(self, key):
        return jax.random.uniform(key, (1,), dtype=jnp.float64, minval=0.1, maxval=0.9)
