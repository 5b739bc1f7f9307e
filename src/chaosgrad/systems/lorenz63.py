"""The Lorenz-63 system.

    dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z.

E. N. Lorenz, "Deterministic nonperiodic flow", J. Atmos. Sci. 20, 130-141 (1963).
Classic parameters sigma=10, rho=28, beta=8/3: Lyapunov exponents 0.9057, 0, -14.5724
per unit time; their sum is the divergence -(sigma + 1 + beta) = -13.6667.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._integrate import check_method, check_time_step
from .._system import AbstractFlow, param


class Lorenz63(AbstractFlow):
    """Lorenz-63 discretised by RK4 (default) or forward Euler with step ``dt``."""

    rho: jax.Array
    sigma: jax.Array
    beta: jax.Array
    dt: float = eqx.field(static=True)
    method: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    component_names = ("x", "y", "z")
    default_observable = "z"

    def __init__(self, rho=28.0, sigma=10.0, beta=8.0 / 3.0, dt=0.005, method="rk4"):
        check_method(method, False)
        self.rho, self.sigma = param(rho, "rho"), param(sigma, "sigma")
        self.beta = param(beta, "beta")
        self.dt, self.method, self.dim = check_time_step(dt), method, 3

    def vector_field(self, time, state):
        x, y, z = state[0], state[1], state[2]
        return jnp.stack([self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z])

    def initial_state(self, key):
        return jnp.array([1.0, 1.0, 25.0]) + jax.random.normal(key, (3,), dtype=jnp.float64)
