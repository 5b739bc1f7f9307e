"""The Henon map.

    x' = 1 - a x^2 + y,   y' = b x.

M. Henon, "A two-dimensional mapping with a strange attractor", Commun. Math. Phys. 50,
69-77 (1976). a=1.4, b=0.3: exponents 0.41922, -1.62319 (sum = ln b), D_KY = 1.25827.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._system import System, param


class Henon(System):
    """The Henon map with parameters ``a`` and ``b``."""

    a: jax.Array
    b: jax.Array
    dim: int = eqx.field(static=True)

    def __init__(self, a=1.4, b=0.3):
        self.a, self.b, self.dim = param(a, "a"), param(b, "b"), 2

    def drift(self, t, state):
        x, y = state[0], state[1]
        return jnp.stack([1.0 - self.a * x**2 + y, self.b * x])

    def initial_state(self, key):
        return jax.random.uniform(key, (2,), dtype=jnp.float64, minval=-0.1, maxval=0.1)
