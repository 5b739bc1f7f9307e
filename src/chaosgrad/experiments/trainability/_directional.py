"""The reference gradient of the long-time-statistics tasks (A1, A2): directional central
differences of the loss on many long orbits (references §7, "A reference gradient you can
trust").

For a loss L(S(theta)) of long-time averages S, the derivative along a unit direction d is

    D_d L = [L(S(theta + eps d)) - L(S(theta - eps d))] / (2 eps) + O(eps^2),

with S measured on R orbits of T steps each (the same initial-state keys for both signs;
chaotic orbits decorrelate, so the common keys do not cancel the sampling noise, and the
variance is about 2 Var(L_hat) / eps^2). Its standard error is the jackknife over the R
orbits (leave one orbit out of both signs' averages). Checking the step: the same
difference at 2 eps must agree within its error (the O(eps^2) term is then below the noise).

Two uses:

* :func:`directional_slope` along fixed random unit directions: the entries of the true
  gradient's projection that every candidate is compared with;
* :func:`descent_check` along a candidate gradient's own direction u = g / |g|: an unbiased
  gradient predicts the slope |g|; the ratio slope / |g| is the fraction of the step's
  predicted decrease that the loss really makes (1 for an exact gradient, about
  cos(g, true) |true| / |g| for a noisy or biased one, negative for a wrong sign).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..._system import bind


@eqx.filter_jit
def _orbit_averages(system, observable, keys, burn_in: int, steps: int):
    def one(key):
        x = system.initial_state(key)

        def burn(x, t):
            return system.step(t, x), None

        def average(carry, t):
            x, total = carry
            x = system.step(t, x)
            return (x, total + observable(x)), None

        x, _ = jax.lax.scan(burn, x, jnp.arange(burn_in))
        zero = jnp.zeros_like(observable(x))
        (_, total), _ = jax.lax.scan(average, (x, zero), burn_in + jnp.arange(steps))
        return total / steps

    return jax.vmap(one)(keys)


def orbit_averages(system, observable: Callable, keys, burn_in: int, steps: int) -> np.ndarray:
    """The time average of ``observable`` on one orbit per key (rows): each orbit starts at
    ``system.initial_state(key)``, skips ``burn_in`` steps and averages the next ``steps``
    (a deterministic system; one compiled program for all orbits)."""
    bound = bind(system, system.initial_state(keys[0]))
    return np.asarray(_orbit_averages(bound, observable, keys, burn_in, steps))


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def moved(system, wrt: Callable, direction: np.ndarray, step: float):
    """``system`` with the parameters ``wrt(system)`` moved by ``step * direction`` (a flat
    vector in ``ravel_pytree`` order)."""
    flat, unravel = ravel_pytree(wrt(system))
    return eqx.tree_at(wrt, system, unravel(flat + step * jnp.asarray(direction)))


def random_directions(system, wrt: Callable, count: int, key) -> np.ndarray:
    """``count`` random unit directions in the flat parameter space of ``wrt(system)``."""
    size = _flat(wrt(system)).size
    draws = np.asarray(jax.random.normal(key, (count, size), dtype=jnp.float64))
    return draws / np.linalg.norm(draws, axis=1, keepdims=True)


def directional_slope(
    system,
    wrt: Callable,
    loss: Callable,
    averages: Callable,
    direction: np.ndarray,
    eps: float,
) -> tuple[float, float]:
    """(D_d L, its jackknife SE) by a central difference of step ``eps`` along ``direction``
    (module doc); ``averages(system)`` gives the per-orbit averages (R rows) with the same
    orbit keys at every call, and ``loss`` maps their mean to the loss."""
    plus = averages(moved(system, wrt, direction, eps))
    minus = averages(moved(system, wrt, direction, -eps))
    orbits = plus.shape[0]

    def slope(rows):
        return (float(loss(plus[rows].mean(axis=0))) - float(loss(minus[rows].mean(axis=0)))) / (
            2 * eps
        )

    full = slope(np.arange(orbits))
    leave_one_out = np.array([slope(np.delete(np.arange(orbits), i)) for i in range(orbits)])
    se = float(np.sqrt((orbits - 1) / orbits * np.sum((leave_one_out - leave_one_out.mean()) ** 2)))
    return full, se


def descent_check(
    system, wrt: Callable, loss: Callable, averages: Callable, gradient, eps: float
) -> dict:
    """The slope of the loss along the candidate gradient's own direction u = g / |g| at
    steps ``eps`` and ``2 eps`` (each with its SE), |g|, and the ratio slope / |g| (module
    doc: 1 for an exact gradient)."""
    flat = _flat(gradient)
    norm = float(np.linalg.norm(flat))
    if not np.isfinite(norm) or norm == 0.0:
        return {"norm": norm, "slope": None, "slope_stderr": None, "ratio": None}
    unit = flat / norm
    slope, se = directional_slope(system, wrt, loss, averages, unit, eps)
    slope2, se2 = directional_slope(system, wrt, loss, averages, unit, 2 * eps)
    return {
        "norm": norm,
        "slope": slope,
        "slope_stderr": se,
        "slope_2eps": slope2,
        "slope_2eps_stderr": se2,
        "ratio": slope / norm,
        "ratio_stderr": se / norm,
    }


def projection_check(candidate, directions: np.ndarray, reference: np.ndarray) -> dict:
    """The candidate gradient's projections g . d_k on the reference directions against the
    reference's directional derivatives (``reference``: rows (value, SE)): the cosine of
    the two k-vectors, and each projection's error in reference SEs."""
    projections = directions @ _flat(candidate)
    values, errors = reference[:, 0], reference[:, 1]
    denominator = np.linalg.norm(projections) * np.linalg.norm(values)
    cosine = float(projections @ values / denominator) if denominator > 0 else float("nan")
    return {
        "projections": projections.tolist(),
        "cosine": cosine,
        "errors_in_se": ((projections - values) / np.maximum(errors, 1e-300)).tolist(),
    }


__all__ = [
    "descent_check",
    "directional_slope",
    "moved",
    "orbit_averages",
    "projection_check",
    "random_directions",
]
