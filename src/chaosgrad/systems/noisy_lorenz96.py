"""Lorenz-96 with a damping term and state-dependent multiplicative noise.

    dx_i = [x_{i-1}(x_{i+1} - x_{i-2}) - x_i + gamma0 - 0.01 x_i^2] dt
           + (exp(-|x|^2 / 2) + gamma1) dB_i,

integrated by Euler-Maruyama (dt = 0.002), started from N(0, 4 I) and spun up 5 time units.
A. Ni, "Adjoint path-kernel method for backpropagation and data assimilation in unstable
diffusions", arXiv:2507.21497 (2025). With (gamma0, gamma1) = (8, 2) and Phi = mean x_i^2,
finite differences give d<Phi>/dgamma = (3.15, 1.34).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_at_least
from .._integrate import check_time_step
from .._system import AbstractFlow, param
from .lorenz96 import lorenz96_field


class NoisyLorenz96(AbstractFlow):
    """The noisy Lorenz-96 SDE of references.md section 3 (Euler-Maruyama)."""

    gamma0: jax.Array
    gamma1: jax.Array
    dt: float = eqx.field(static=True)
    method: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    spin_up_time = 5.0
    default_observable = "mean(x**2)"

    def __init__(self, n=40, gamma0=8.0, gamma1=2.0, dt=0.002):
        n = check_at_least(n, "n", 4, "the Lorenz-96 coupling reaches two neighbours")
        self.gamma0, self.gamma1 = param(gamma0, "gamma0"), param(gamma1, "gamma1")
        self.dt, self.method, self.dim = check_time_step(dt), "euler", n

    @property
    def stochastic(self) -> bool:
        return True

    def vector_field(self, time, x):
        return lorenz96_field(x, self.gamma0) - 0.01 * x**2

    def noise_scale(self, time, x):
        return jnp.exp(-jnp.sum(x**2) / 2) + self.gamma1

    def initial_state(self, key):
        return 2.0 * jax.random.normal(key, (self.dim,), dtype=jnp.float64)
