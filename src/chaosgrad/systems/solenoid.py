"""The modified solenoid map (a hyperbolic attractor with u = dim - 1 unstable directions).

    x1' = 0.05 x1 + 0.1 sum_{i>=2} cos(5 x_i) + gamma1,
    xi' = 2 x_i + gamma2 (1 + x1) sin(2 x_i)   (mod 2 pi),   i = 2..dim,

with observable Phi = x1^3 + 0.005 sum_{i>=2} (x_i - pi)^2.
A. Ni, "Fast adjoint differentiation of chaos", arXiv:2111.07692 (2021); dim=5,
gamma1=gamma2=0.1: <Phi> = 0.0694-0.0695, d<Phi>/dgamma (both together) = 0.0627.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_at_least
from .._system import System, param


class ModifiedSolenoid(System):
    """The modified solenoid with ``dim`` components (first: contracting; rest: angles)."""

    gamma1: jax.Array
    gamma2: jax.Array
    dim: int = eqx.field(static=True)

    default_observable = "x[0]**3 + 0.005*sum((x[1:] - pi)**2)"

    def __init__(self, dim=5, gamma1=0.1, gamma2=0.1):
        dim = check_at_least(dim, "dim", 2, "one contracting component and at least one angle")
        self.gamma1, self.gamma2 = param(gamma1, "gamma1"), param(gamma2, "gamma2")
        self.dim = dim

    def drift(self, t, x):
        x1, angles = x[0], x[1:]
        x1_next = 0.05 * x1 + 0.1 * jnp.sum(jnp.cos(5.0 * angles)) + self.gamma1
        angles_next = 2.0 * angles + self.gamma2 * (1.0 + x1) * jnp.sin(2.0 * angles)
        return jnp.concatenate([x1_next[None], jnp.mod(angles_next, 2 * jnp.pi)])

    @staticmethod
    def observable(x):
        """Phi = x1^3 + 0.005 sum_{i>=2} (x_i - pi)^2."""
        return x[0] ** 3 + 0.005 * jnp.sum((x[1:] - jnp.pi) ** 2)

    def initial_state(self, key):
        return jax.random.uniform(key, (self.dim,), dtype=jnp.float64)
