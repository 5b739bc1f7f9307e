"""Rollouts shared by the estimators: starting states and differentiable statistics.

A sample is a window of ``steps`` steps. Its statistic is the window average
(1/steps) sum_{n=1}^{steps} Phi(x_n) (``"average"``: long-time averages of deterministic or
noisy systems) or Phi(x_steps) (``"terminal"``: E[Phi(x_T)] of a network of depth T, started
from the initial distribution).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._system import _run, check_horizon, resolve_start
from .._tangent import step_noise

STATISTICS = ("average", "terminal")


def check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")


def sample_starts(system, x0, key, samples: int, burn_in: int, steps: int, statistic: str):
    """(starts, start_times, noise_key) for ``samples`` windows.

    Without ``x0`` every sample draws its own initial state and is burned in (``average``)
    or starts at layer 0 (``terminal``). With ``x0`` the windows of an ``average`` follow one
    another along the orbit from x0; a ``terminal`` statistic starts every sample at x0.
    """
    check_horizon(system, (burn_in if statistic == "average" else 0) + steps)
    init_key, noise_key = jax.random.split(key)
    if statistic == "terminal":
        if x0 is None:
            starts = jax.vmap(system.initial_state)(jax.random.split(init_key, samples))
        else:
            starts = jnp.broadcast_to(resolve_start(system, x0, init_key)[0], (samples, x0.shape[0]))
        return starts, jnp.zeros(samples, int), noise_key
    if x0 is None:
        firsts = jax.vmap(system.initial_state)(jax.random.split(init_key, samples))
        resolve_start(system, firsts[0], init_key)  # validates dtype and shape
        starts = _burn(system, firsts, noise_key, burn_in)
        return starts, jnp.full(samples, burn_in), noise_key
    x0, _ = resolve_start(system, x0, init_key)
    times = burn_in + steps * jnp.arange(samples)
    starts = [x0]
    state = x0
    t = 0
    for target in [int(v) for v in times]:
        if target > t:
            state, _ = _run(system, state, noise_key, jnp.asarray(t), target - t)
            t = target
        starts.append(state)
    return jnp.stack(starts[1:]), times, noise_key


@eqx.filter_jit
def _burn(system, firsts, key, burn_in: int):
    if burn_in == 0:
        return firsts
    return jax.vmap(lambda x: _run(system, x, key, jnp.asarray(0), burn_in)[0])(firsts)


def rollout(system, observable, x_start, key, t0, steps: int):
    """(x_{t0+steps}, [Phi(x_n), n = 1..steps]) from x_start at step t0 (differentiable)."""

    def one(x, t):
        x = system.step(t, x, step_noise(system, key, t, x))
        return x, observable(x)

    return jax.lax.scan(one, x_start, t0 + jnp.arange(steps))


def rollout_values(system, observable, x_start, key, t0, steps: int):
    """Phi(x_n), n = 1..steps, from x_start at step t0 (differentiable in system and x)."""
    return rollout(system, observable, x_start, key, t0, steps)[1]


def statistic_of(values, statistic: str):
    """The window average or the terminal value of a rollout's Phi values."""
    return jnp.mean(values) if statistic == "average" else values[-1]
