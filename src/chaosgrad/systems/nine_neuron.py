"""The 9-neuron noisy tanh network of the kernel-differentiation papers.

    x_{n+1} = J tanh(x_n + gamma) + noise * Y_n,   Y_n ~ N(0, I),   x_0 ~ N(0, I),

with the fixed J = 4 A below (||J||_2 = 5.2011, spectral radius 2.9543; lambda_1 = +0.063
per layer without noise). gamma is one bias shared by every layer; depth 50 and
Phi = sum_i x_{50,i} is the reference problem.
A. Ni, "No-propagate algorithm for linear responses of random chaotic systems",
arXiv:2308.07841 (2023).
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_real
from .._system import System, param

# fmt: off
A_ROWS = (
    (-0.13516168, -0.29783588, -0.08243096, +0.41499251, -0.12447637, -0.32565383, +0.37992217, -0.12526514, +0.48796698),
    (-0.39935415, -0.38793580, -0.36330980, +0.15289905, +0.48036280, +0.14838584, -0.03952375, -0.28411444, -0.31846027),
    (-0.14859367, -0.16202381, -0.32922162, -0.36403019, -0.20393094, -0.23715312, -0.36719849, -0.01883415, -0.09450373),
    (-0.19575303, -0.06414615, +0.21856889, +0.49696407, +0.01734091, +0.21739130, -0.19816477, -0.10919189, +0.27635875),
    (+0.20018530, -0.32060724, -0.12938035, -0.25272391, +0.37228039, +0.37210707, -0.41365685, -0.11224939, +0.05360169),
    (-0.44369768, +0.00692191, -0.34641336, -0.07080262, +0.10880086, +0.31721268, +0.15363462, +0.00152954, -0.00597713),
    (-0.04479272, -0.07330322, -0.18167448, +0.13342434, -0.20624915, -0.39450329, -0.35140716, +0.01846531, -0.46114955),
    (+0.15950353, +0.21597017, +0.18353880, +0.23963441, -0.01410735, +0.00963944, +0.27477256, +0.30589367, -0.06963555),
    (+0.29566231, -0.48732178, -0.09285783, +0.00191314, +0.31114643, -0.08012442, +0.10695310, +0.01424637, -0.31959618),
)
# fmt: on


class NineNeuronNet(System):
    """The reference 9-neuron network; ``gamma`` is the shared bias, ``noise`` the std."""

    gamma: jax.Array
    J: jax.Array
    noise_level: jax.Array
    noise_field: ClassVar[str | None] = "noise_level"
    dim: int = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    default_observable = "sum(x)"
    default_steps = 50  # the reference problem: E[sum x_50] at depth 50
    default_statistic = "terminal"

    def __init__(self, gamma=0.0, noise=0.5, J=None):
        noise = check_real(noise, "noise", nonnegative=True)
        self.gamma = param(gamma, "gamma")
        self.J = param(4.0 * jnp.array(A_ROWS) if J is None else J, "J")
        if self.J.shape != (9, 9):
            raise ValueError(f"J must have shape (9, 9), got {self.J.shape}")
        self.noise_level = param(noise)
        self.dim = 9
        self._stochastic = noise != 0.0

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    def drift(self, t, x):
        return self.J @ jnp.tanh(x + self.gamma)

    def diffusion(self, t, x):
        return self.noise_level
