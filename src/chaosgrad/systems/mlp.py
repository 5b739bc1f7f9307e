"""A deep tanh network as a time-dependent map: layer t is step t.

    x_{t+1} = W_t tanh(x_t) + b_t + noise * xi_t,    t = 0 .. depth-1,

(x_t are pre-activations; Poole et al.'s convention). Weights are stacked along a leading
layer axis, W: (depth, width, width), b: (depth, width). Initialisations:

* ``"gaussian"``: W_ij ~ N(0, sigma_w^2 / width), b_i ~ N(0, sigma_b^2);
* ``"xavier"`` (Glorot & Bengio 2010): variance 2 / (n_in + n_out) = 1 / width;
* ``"he"`` (He et al. 2015): variance 2 / width;
* ``"orthogonal"`` (Saxe et al. 2014): sigma_w times a Haar-random orthogonal matrix;
* ``"critical"``: Gaussian at the order-to-chaos line sigma_w = critical_sigma_w(sigma_b^2)
  (B. Poole et al., "Exponential expressivity in deep neural networks through transient
  chaos", NeurIPS 2016), where chi_1 = 1.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._mean_field import critical_sigma_w
from .._system import System, param

INITS = ("gaussian", "xavier", "he", "orthogonal", "critical")


def _orthogonal(key, n):
    a = jax.random.normal(key, (n, n), dtype=jnp.float64)
    q, r = jnp.linalg.qr(a)
    return q * jnp.sign(jnp.diag(r))


class DeepTanhNet(System):
    """A depth x width tanh network with per-layer weights and optional noise per layer."""

    weights: jax.Array
    biases: jax.Array
    noise_level: jax.Array
    layered = ("weights", "biases")
    dim: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    def __init__(
        self,
        depth=50,
        width=32,
        sigma_w=2.0,
        sigma_b=0.0,
        init="gaussian",
        noise=0.0,
        seed=0,
        key=None,
    ):
        depth, width = int(depth), int(width)
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive, got {depth}, {width}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if float(noise) < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        key = jax.random.key(seed) if key is None else key
        w_key, b_key = jax.random.split(key)
        layer_keys = jax.random.split(w_key, depth)
        if init == "orthogonal":
            weights = sigma_w * jax.vmap(lambda k: _orthogonal(k, width))(layer_keys)
        else:
            scale = {
                "gaussian": sigma_w,
                "xavier": 1.0,
                "he": 2.0**0.5,
                "critical": critical_sigma_w(sigma_b**2) if init == "critical" else 0.0,
            }[init]
            weights = (
                scale
                / width**0.5
                * jax.random.normal(w_key, (depth, width, width), dtype=jnp.float64)
            )
        self.weights = param(weights)
        self.biases = param(sigma_b * jax.random.normal(b_key, (depth, width), dtype=jnp.float64))
        self.noise_level = param(noise)
        self.dim, self.depth = width, depth
        self._stochastic = float(noise) != 0.0

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    @property
    def horizon(self) -> int:
        return self.depth

    def drift(self, t, x):
        return self.weights[t] @ jnp.tanh(x) + self.biases[t]

    def diffusion(self, t, x):
        return self.noise_level
