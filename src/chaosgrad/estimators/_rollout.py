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
    """(starts, start_times, noise_keys) for ``samples`` windows, one noise key per sample.

    Without ``x0`` every sample draws its own initial state and noise and is burned in
    (``average``) or starts at layer 0 (``terminal``). With ``x0`` the windows of an
    ``average`` follow one another along one orbit from x0 (one noise stream, consecutive
    steps); a ``terminal`` statistic starts every sample at x0 with its own noise.
    """
    check_horizon(system, (burn_in if statistic == "average" else 0) + steps)
    init_key, noise_key = jax.random.split(key)
    own_keys = sample_keys(noise_key, samples)
    if statistic == "terminal":
        if x0 is not None:
            x0 = resolve_start(system, x0, init_key)[0]
        starts = batch_starts(system, x0, init_key, 0, samples)
        resolve_start(system, starts[0], init_key)  # validates dtype and shape
        return starts, jnp.zeros(samples, int), own_keys
    if x0 is None:
        firsts = batch_starts(system, None, init_key, 0, samples)
        resolve_start(system, firsts[0], init_key)
        starts = _burn(system, firsts, own_keys, burn_in)
        return starts, jnp.full(samples, burn_in), own_keys
    x0, _ = resolve_start(system, x0, init_key)
    times = burn_in + steps * jnp.arange(samples)
    starts = []
    state = x0
    t = 0
    for target in [int(v) for v in times]:
        if target > t:
            state, _ = _run(system, state, noise_key, jnp.asarray(t), target - t)
            t = target
        starts.append(state)
    return jnp.stack(starts), times, jnp.broadcast_to(noise_key, (samples,))


def batch_starts(system, x0, init_key, first: int, size: int):
    """Initial states of samples first..first+size-1: x0 for all, or one draw per sample
    index from ``system.initial_state`` with key fold_in(init_key, index)."""
    if x0 is not None:
        return jnp.broadcast_to(x0, (size,) + x0.shape)
    return jax.vmap(system.initial_state)(sample_keys(init_key, size, first))


def sample_keys(noise_key, samples: int, first: int = 0):
    """One noise key per sample index first..first+samples-1."""
    return jax.vmap(lambda i: jax.random.fold_in(noise_key, i))(first + jnp.arange(samples))


@eqx.filter_jit
def _burn(system, firsts, keys, burn_in: int):
    if burn_in == 0:
        return firsts
    return jax.vmap(lambda x, key: _run(system, x, key, jnp.asarray(0), burn_in)[0])(firsts, keys)


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
