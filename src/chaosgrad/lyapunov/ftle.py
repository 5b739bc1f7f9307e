"""Finite-time Lyapunov exponent of a deep network, one per input.

    lambda^(L)(x) = (1/L) ln sigma_1( d x^(L) / d x^(0) ),

the top singular value of the input-output Jacobian (L. Storm, H. Linander, J. Bec,
K. Gustavsson & B. Mehlig, "Finite-time Lyapunov exponents of deep neural networks",
Phys. Rev. Lett. 132, 057301 (2024)). The Jacobian is carried as Q_L R_L ... R_1 with a QR
at every layer and the triangular product rescaled (its log scale kept apart), so neither
overflow nor loss of rank occurs however unstable the network.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_float64, check_key, check_positive_int, check_x64
from .._system import System, bind, check_horizon
from .._tangent import positive_qr, step_noise, step_with_tangents


def _ftle_one(system, x0, key, steps):
    dim = x0.shape[0]

    def layer(carry, t):
        x, q, product, log_scale = carry
        x, v = step_with_tangents(system, t, x, step_noise(system, key, t, x), q)
        q, r = positive_qr(v)
        product = r @ product
        scale = jnp.linalg.norm(product)
        return (x, q, product / scale, log_scale + jnp.log(scale)), None

    eye = jnp.eye(dim, dtype=jnp.float64)
    init = (x0, eye, eye, jnp.zeros((), jnp.float64))
    (x, _, product, log_scale), _ = jax.lax.scan(layer, init, jnp.arange(steps))
    return (log_scale + jnp.log(jnp.linalg.norm(product, ord=2))) / steps


@eqx.filter_jit
def _ftle_batch(system, x0s, keys, steps: int):
    return jax.vmap(lambda x0, key: _ftle_one(system, x0, key, steps))(x0s, keys)


def ftle(system: System, x0s, steps: int | None = None, *, key=None) -> jax.Array:
    """Finite-time exponent per input (rows of ``x0s``), per layer (per unit time for a flow).

    ``steps`` defaults to the network depth. A noisy system needs ``key`` (each input gets
    its own noise).
    """
    check_x64()
    x0s = jnp.asarray(x0s)
    check_float64(x0s, "x0s")
    check_float64(system, "system parameters")
    if x0s.ndim != 2:
        raise ValueError(f"x0s must have shape (inputs, dim), got {x0s.shape}")
    steps = system.horizon if steps is None else steps
    if steps is None:
        raise ValueError("steps is required for a system without a fixed depth")
    check_positive_int(steps, "steps")
    check_horizon(system, steps)
    if system.stochastic and key is None:
        raise ValueError("key is required for a noisy system")
    key = jax.random.key(0) if key is None else key
    check_key(key)
    keys = jax.random.split(key, x0s.shape[0])
    system = bind(system, x0s[0])
    return _ftle_batch(system, x0s, keys, steps) / (system.time_step or 1.0)
