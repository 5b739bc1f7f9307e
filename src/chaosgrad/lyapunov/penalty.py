"""Differentiable finite-time Lyapunov exponents and the gradient-flossing penalty.

Along an orbit x_{t+1} = f(t, x_t) the k tangent vectors Q are advanced and re-orthonormalised
every ``renorm_every`` steps, Q, R = qr(f_* Q) with diag R > 0, and

    lambda_i = (1 / T) sum log R_ii                    (per step; divided by dt for a flow),

exactly the arithmetic of :func:`~chaosgrad.lyapunov.lyapunov_spectrum`, but as one
``lax.scan`` that JAX differentiates end to end, through the states, the tangent maps and
the QR. Gradient flossing (R. Engelken, "Gradient flossing: improving gradient descent
through dynamic control of Jacobians", NeurIPS 2023) adds

    P(theta) = E_orbits[ (1/k) sum_{i<=k} (lambda_i(theta) - target)^2 ]

to the training loss (target 0 in the paper), which pushes the top exponents towards
neutral and so keeps backpropagated gradients from exploding or vanishing. Use it in any
Optax loop: ``jax.grad(lambda s: task_loss(s) + beta * lyapunov_penalty(s, k, T, ...))``,
before training ("preflossing") or in episodes between training steps ("interflossing").
The burn-in moves the state only (it is not differentiated); the gradient flows through
the ``steps`` steps over which the exponents are measured.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_key, check_positive_int, check_x64
from .._system import System, _run, bind, check_horizon, resolve_start
from .._tangent import orbit_keys, positive_qr, random_orthonormal, step_noise, step_with_tangents


def _exponents_of_orbit(system, x, vectors, noise_key, start, periods: int, renorm_every: int):
    """Sum of log R_ii over ``periods`` renormalisation periods from (x, vectors) at ``start``."""

    def period(carry, p):
        x, q, logs = carry
        t0 = start + p * renorm_every

        def tangent_step(state, t):
            y, v = state
            return step_with_tangents(system, t, y, step_noise(system, noise_key, t, y), v), None

        (x, v), _ = jax.lax.scan(tangent_step, (x, q), t0 + jnp.arange(renorm_every))
        q, r = positive_qr(v, differentiable=True)
        return (x, q, logs + jnp.log(jnp.diag(r))), None

    k = vectors.shape[1]
    (_, _, logs), _ = jax.lax.scan(
        period, (x, vectors, jnp.zeros(k, jnp.float64)), jnp.arange(periods)
    )
    return logs


def _one_orbit(system, x0, key, k: int, periods: int, renorm_every: int, burn_in: int):
    start_key, vector_key = jax.random.split(key)
    x, noise_key = resolve_start(system, x0, start_key)
    if burn_in:
        x, _ = _run(system, x, noise_key, jnp.asarray(0), burn_in)
        x = jax.lax.stop_gradient(x)
    vectors = random_orthonormal(vector_key, x.shape[0], k)
    logs = _exponents_of_orbit(system, x, vectors, noise_key, burn_in, periods, renorm_every)
    return logs / (periods * renorm_every) / (system.time_step or 1.0)


def _check(system, x0, k, steps, renorm_every, burn_in, key):
    if not isinstance(system, System):
        raise TypeError(f"system must be a chaosgrad System, got {type(system).__name__}")
    check_positive_int(steps, "steps")
    check_positive_int(k, "k")
    check_positive_int(renorm_every, "renorm_every")
    check_positive_int(burn_in, "burn_in", allow_zero=True)
    if key is None:
        raise ValueError("key is required: finite_time_exponents(..., key=jax.random.key(0))")
    check_key(key)
    if steps % renorm_every:
        raise ValueError(f"steps={steps} must be a multiple of renorm_every={renorm_every}")
    check_horizon(system, burn_in + steps)
    x0 = jnp.asarray(x0)
    if x0.ndim not in (1, 2):
        raise ValueError(f"x0 must have shape (dim,) or (orbits, dim), got {x0.shape}")
    if k > x0.shape[-1]:
        raise ValueError(f"k={k} exceeds the dimension {x0.shape[-1]}")
    return x0


def finite_time_exponents(
    system: System,
    k: int,
    steps: int,
    *,
    x0,
    key,
    renorm_every: int = 1,
    burn_in: int = 0,
) -> jax.Array:
    """The top-k finite-time exponents over ``steps`` steps from ``x0``, differentiable.

    Args:
        system: any System; its arrays may be traced (``jax.grad`` through this function).
        k: number of exponents.
        steps: length of the measured orbit (a multiple of ``renorm_every``).
        x0: start (dim,), or (orbits, dim) for several orbits (then one row of exponents per
            orbit, keyed by ``orbit_keys``: ``key`` for one row, else ``fold_in(key, i)``).
        key: for the initial tangent vectors and the noise; with the same key, x0 and
            ``burn_in=0``, the exponents equal ``lyapunov_spectrum(..., burn_in=0)``'s.
        renorm_every: steps between QR renormalisations.
        burn_in: steps run first (state only, not differentiated).

    Returns:
        (k,) or (orbits, k): per step for a map, per unit time for a flow.
    """
    check_x64()
    x0 = _check(system, x0, k, steps, renorm_every, burn_in, key)
    system = bind(system, x0[0] if x0.ndim == 2 else x0)
    return _exponents(system, x0, key, k, steps // renorm_every, renorm_every, burn_in)


@eqx.filter_jit
def _exponents(system, x0, key, k: int, periods: int, renorm_every: int, burn_in: int):
    if x0.ndim == 1:
        return _one_orbit(system, x0, key, k, periods, renorm_every, burn_in)
    keys = orbit_keys(key, x0.shape[0])
    return jax.vmap(lambda x, kk: _one_orbit(system, x, kk, k, periods, renorm_every, burn_in))(
        x0, keys
    )


def lyapunov_penalty(
    system: System,
    k: int,
    steps: int,
    *,
    x0,
    key,
    target=0.0,
    renorm_every: int = 1,
    burn_in: int = 0,
) -> jax.Array:
    """Gradient-flossing regulariser: mean over orbits and i <= k of (lambda_i - target)^2.

    ``target`` is a scalar or one value per exponent (k,). The exponents are those of
    :func:`finite_time_exponents` (same arguments); differentiate with ``jax.grad`` or
    ``eqx.filter_grad`` with respect to the system.
    """
    exponents = finite_time_exponents(
        system, k, steps, x0=x0, key=key, renorm_every=renorm_every, burn_in=burn_in
    )
    target = jnp.asarray(target, dtype=jnp.float64)
    if target.ndim and target.shape != (k,):
        raise ValueError(f"target must be a scalar or have shape ({k},), got {target.shape}")
    return jnp.mean((exponents - target) ** 2)


def flossing_schedule(pre: int, every: int, length: int, episodes: int = 2):
    """Engelken's episodes as a ``fit(..., schedule=)``: (loss weight, penalty weight) per
    iteration.

    The first ``pre`` iterations floss only ("preflossing"); afterwards, after every
    ``every`` training iterations, ``length`` iterations floss only ("interflossing"), at
    most ``episodes`` times; all other iterations train on the loss alone. The paper's
    example: 500 epochs of preflossing, episodes of 500 every 100 epochs, at most 2.
    """
    check_positive_int(pre, "pre", allow_zero=True)
    check_positive_int(every, "every")
    check_positive_int(length, "length", allow_zero=True)
    check_positive_int(episodes, "episodes", allow_zero=True)

    def schedule(iteration: int) -> tuple[float, float]:
        if iteration < pre:
            return 0.0, 1.0
        cycle, position = divmod(iteration - pre, every + length)
        if cycle < episodes and position >= every:
            return 0.0, 1.0
        return 1.0, 0.0

    return schedule
