"""The Lorenz-96 system.

    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F,   i cyclic, i = 0..n-1.

E. N. Lorenz, "Predictability: a problem partly solved", ECMWF seminar (1996).
n=40, F=8 (RK4, dt=0.01): lambda_1 = 1.68, 13 positive exponents, sum = -n, D_KY = 27.09.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_at_least
from .._integrate import check_method, check_time_step
from .._system import AbstractFlow, param


def lorenz96_field(x, forcing):
    """(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F with cyclic indices."""
    return (jnp.roll(x, -1) - jnp.roll(x, 2)) * jnp.roll(x, 1) - x + forcing


class Lorenz96(AbstractFlow):
    """Lorenz-96 with ``n`` components and forcing ``F``, RK4 (default) or Euler."""

    forcing: jax.Array
    dt: float = eqx.field(static=True)
    method: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    default_observable = "mean(x**2)"

    def __init__(self, n=40, forcing=8.0, dt=0.01, method="rk4"):
        n = check_at_least(n, "n", 4, "the Lorenz-96 coupling reaches two neighbours")
        check_method(method, False)
        self.forcing = param(forcing, "forcing")
        self.dt, self.method, self.dim = check_time_step(dt), method, n

    def vector_field(self, time, x):
        return lorenz96_field(x, self.forcing)

    def initial_state(self, key):
        return self.forcing + 0.01 * jax.random.normal(key, (self.dim,), dtype=jnp.float64)
