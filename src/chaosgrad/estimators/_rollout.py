"""Shared sample machinery: starting states, rollouts, window sums and the NaN check, once.

A sample runs the window of a :class:`~chaosgrad.estimators._base.Horizon`: ``burn_in`` steps
from its start, then ``steps`` steps whose observable values are averaged (``"average"``)
or whose last one is kept (``"terminal"``). Sample i draws its initial state from
``system.initial_state(fold_in(init_key, i))`` and its noise from ``fold_in(noise_key, i)``,
so any sample can be replayed alone. Every sample sees ``system.for_sample(i)`` (per-sample
data such as an input sequence).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._system import (
    _run,
    at_layer,
    check_horizon,
    check_start,
    check_state_shape,
    layer_slices,
)
from .._tangent import step_noise
from ..parallel import sample_parallel, spread
from ._base import Horizon


def sample_keys(noise_key, samples: int, first: int = 0):
    """One noise key per sample index first..first+samples-1."""
    return jax.vmap(lambda i: jax.random.fold_in(noise_key, i))(first + jnp.arange(samples))


def batch_starts(system, x0, init_key, first: int, size: int):
    """Initial states of samples first..first+size-1: x0 for all, or one draw per sample
    index from ``system.initial_state`` with key fold_in(init_key, index)."""
    if x0 is not None:
        return jnp.broadcast_to(x0, (size,) + x0.shape)
    return jax.vmap(system.initial_state)(sample_keys(init_key, size, first))


class Samples(eqx.Module):
    """Where each sample's window starts: state, step index, noise key and sample index."""

    starts: jax.Array
    times: jax.Array
    keys: jax.Array
    indices: jax.Array


def sample_start(system, x0, init_key):
    """``x0`` checked as a start of ``system`` (:func:`chaosgrad._system.check_start`: dtype,
    shape, dimension), or None when the samples draw their own initial states (then their
    shape is checked, abstractly: nothing is drawn)."""
    if x0 is None:
        check_state_shape(system, jax.eval_shape(system.initial_state, init_key))
        return None
    return check_start(system, x0)


def sample_windows(system, x0, key, samples: int, horizon: Horizon) -> Samples:
    """The window starts of ``samples`` samples (burned in under vmap).

    Without ``x0`` every sample draws its own initial state and noise and is burned in
    (the caller checks that the starts are finite: ``check_finite(starts[:, None], ...)``).
    With ``x0``: a TimeAverage's windows follow one another along one orbit from x0 (one
    noise stream, consecutive steps: the long-time average does not depend on the start);
    a finite-horizon statistic starts every sample at x0 with its own noise.
    """
    check_horizon(system, horizon.burn_in + horizon.steps)
    init_key, noise_key = jax.random.split(key)
    indices = jnp.arange(samples)
    x0 = sample_start(system, x0, init_key)
    if x0 is not None and horizon.stationary:
        times = horizon.burn_in + horizon.steps * np.arange(samples)
        starts, state, t = [], x0, 0
        for target in times.tolist():
            if target > t:
                state, _ = _run(system, state, noise_key, jnp.asarray(t), target - t)
                t = target
            starts.append(state)
        return Samples(
            jnp.stack(starts), jnp.asarray(times), jnp.broadcast_to(noise_key, (samples,)), indices
        )
    keys = sample_keys(noise_key, samples)
    firsts = batch_starts(system, x0, init_key, 0, samples)
    starts = burn(system, firsts, keys, indices, horizon.burn_in)
    return Samples(starts, jnp.full(samples, horizon.burn_in), keys, indices)


@sample_parallel
def burn(system, firsts, keys, indices, burn_in: int):
    """Every sample run ``burn_in`` steps from its first state (vmapped)."""
    if burn_in == 0:
        return firsts
    return jax.vmap(
        lambda x, key, i: _run(system.for_sample(i), x, key, jnp.asarray(0), burn_in)[0]
    )(*spread((firsts, keys, indices)))


def rollout(system, components, x_start, key, t0, steps: int):
    """(x_{t0+steps}, [Phi~(x_n), n = 1..steps]) from x_start at step t0 (differentiable).

    A deep network's stacked layers enter the scan as inputs, one slice per step, so
    reverse mode stacks the per-layer gradients instead of adding a full-size array per
    step (System.layered).
    """
    layers = layer_slices(system, t0, steps) if system.layered else None

    def one(x, inputs):
        t, layer = inputs
        current = system if layer is None else at_layer(system, layer)
        x = current.step(t, x, step_noise(current, key, t, x))
        return x, components(x, system)

    return jax.lax.scan(one, x_start, (t0 + jnp.arange(steps), layers))


def reduce_window(values, horizon: Horizon):
    """The window average (after ``skip``) or the terminal value of (steps, k) values."""
    if horizon.kind == "average":
        return jnp.mean(values[horizon.skip :], axis=0)
    return values[-1]


def window_sums(values, first, length: int):
    """sum_{j=first_i}^{first_i+length-1} values_j for every entry of ``first`` (cumsum).

    The one implementation of the decorrelation-window sums of FastAdjointResponse (centred),
    Kernel and PathKernel (forward): each passes its own offsets. ``values``: (N, k).
    """
    cumulative = jnp.concatenate([jnp.zeros((1,) + values.shape[1:]), jnp.cumsum(values, axis=0)])
    return cumulative[first + length] - cumulative[first]


def check_finite(values, what: str, offset: int = 0) -> None:
    """Raise FloatingPointError naming the first step (row) of ``values`` with NaN/inf.

    ``values`` is (steps, ...) or (samples, steps, ...) (then the sample is named too).
    """
    array = np.asarray(values)
    if np.all(np.isfinite(array)):
        return
    if array.ndim >= 3:
        bad = ~np.all(np.isfinite(array.reshape(array.shape[0], array.shape[1], -1)), axis=2)
        sample, step = np.argwhere(bad)[0]
        raise FloatingPointError(
            f"the trajectory became NaN/inf during {what} at step "
            f"{offset + int(step)} of sample {int(sample)}; check the "
            "parameters and dt"
        )
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    step = int(np.argmin(np.all(np.isfinite(rows), axis=1)))
    raise FloatingPointError(
        f"the trajectory became NaN/inf during {what} at step "
        f"{offset + step}; check the parameters and dt"
    )
