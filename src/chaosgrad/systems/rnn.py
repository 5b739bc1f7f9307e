"""Random tanh recurrent networks, in discrete and in continuous time.

    discrete:    h_{t+1} = J tanh(h_t) + b
    continuous:  dh/dt = -h + J tanh(h) + b      (integrated by RK4 or Euler with step dt)

with J_ij ~ N(0, g^2 / n) drawn from a key (or given). For g > 1 both are chaotic.
Continuous time: H. Sompolinsky, A. Crisanti & H.-J. Sommers, "Chaos in random neural
networks", Phys. Rev. Lett. 61, 259 (1988). Discrete time, g = 2: mean-field
lambda_1 = (1/2) ln chi_1 = 0.1547 per step (an n = 1000 simulation gives 0.1536).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_positive_int, check_real
from .._integrate import check_method, check_time_step, integrate_step
from .._system import System, param


class TanhRNN(System):
    """A tanh RNN with n units and gain g; ``continuous=True`` for the ODE form.

    ``J`` (n x n) and ``b`` (n) are the parameters. ``seed`` (or ``key``) draws J when it
    is not given.
    """

    J: jax.Array
    b: jax.Array
    dim: int = eqx.field(static=True)
    continuous: bool = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    method: str = eqx.field(static=True)

    def __init__(
        self,
        n=100,
        g=2.0,
        continuous=False,
        dt=0.05,
        method="rk4",
        seed=0,
        key=None,
        J=None,
        b=None,
    ):
        if J is None:
            n = check_positive_int(n, "n")
            g = check_real(g, "g")
            key = jax.random.key(seed) if key is None else key
            J = g / jnp.sqrt(n) * jax.random.normal(key, (n, n), dtype=jnp.float64)
        J = param(J, "J")
        if J.ndim != 2 or J.shape[0] != J.shape[1]:
            raise ValueError(f"J must be a square matrix, got shape {J.shape}")
        n = J.shape[0]
        self.J = J
        self.b = param(jnp.zeros(n) if b is None else b, "b")
        if self.b.shape != (n,):
            raise ValueError(f"b must have shape ({n},), got {self.b.shape}")
        check_method(method, False)
        self.dim, self.continuous, self.method = n, bool(continuous), method
        self.dt = check_time_step(dt)

    @property
    def time_step(self):
        return self.dt if self.continuous else None

    def vector_field(self, time, h):
        """-h + J tanh(h) + b (the continuous-time model)."""
        return -h + self.J @ jnp.tanh(h) + self.b

    def drift(self, t, h):
        if self.continuous:
            return integrate_step(self.vector_field, t * self.dt, h, self.dt, self.method)
        return self.J @ jnp.tanh(h) + self.b
