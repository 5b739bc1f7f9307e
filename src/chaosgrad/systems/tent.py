"""The tent map x' = slope * min(y, 1 - y) (+ noise), y = x mod 1.

Its exponent is ln(slope) exactly (|f'| = slope everywhere). The default slope is 1.99, not
2: at slope 2 every float64 orbit collapses to 0 within about 53 steps (each step shifts one
binary digit out), a floating-point artefact, not dynamics. With ``noise`` > 0 the map is a
random map; reading the state mod 1 keeps noisy orbits on the circle.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_real
from .._system import System, param


class Tent(System):
    """The tent map with ``slope`` in (1, 2] and optional additive Gaussian ``noise``."""

    slope: jax.Array
    noise_level: jax.Array
    noise_field: ClassVar[str | None] = "noise_level"
    dim: int = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    def __init__(self, slope=1.99, noise=0.0):
        noise = check_real(noise, "noise", nonnegative=True)
        self.slope, self.noise_level, self.dim = param(slope, "slope"), param(noise), 1
        self._stochastic = noise != 0.0

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    def drift(self, t, x):
        y = jnp.mod(x, 1.0)
        return self.slope * jnp.minimum(y, 1.0 - y)

    def diffusion(self, t, x):
        return self.noise_level

    def initial_state(self, key):
        return jax.random.uniform(key, (1,), dtype=jnp.float64, minval=0.1, maxval=0.9)
