"""Central finite differences with common random numbers: the expensive reference.

    dJ/dtheta_j ~ [J(theta + eps e_j) - J(theta - eps e_j)] / (2 eps)

for every element j of every selected parameter, both runs from the same initial state and
the same noise (common random numbers), burned in with their own parameters. The error is
O(eps^2) bias plus the statistical error of J; the standard error is over samples. Cost: two
runs per parameter element and sample, whatever the number of statistic components.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import check_real, check_samples
from .._system import _run, check_horizon
from ..parallel import sample_parallel, spread
from ..statistics import Terminal, TimeAverage, WindowAverage
from ._base import AbstractEstimator, AbstractInfo, Estimate, check_sizes, resolve_horizon
from ._rollout import batch_starts, check_start, reduce_window, rollout, sample_keys


class FiniteDifferenceInfo(AbstractInfo):
    """Diagnostics of FiniteDifference.

    Args:
        steps, samples: the window each run averaged and the number of samples.
        eps: the step; the bias is O(eps^2).
        runs: the number of rollouts made (2 x parameter elements x samples).
    """

    steps: int
    samples: int
    eps: float
    runs: int


@sample_parallel
def _perturbed_statistics(system, components, params, firsts, keys, eps, horizon):
    """(plus, minus): statistics (params, samples, k) at theta +- eps e_j."""
    flat, unravel = ravel_pytree(params.values)
    firsts, keys = spread((firsts, keys))
    shifts = jnp.concatenate([jnp.eye(flat.size), -jnp.eye(flat.size)]) * eps

    def for_shift(shift):
        current = params.substitute(system, unravel(flat + shift))

        def for_sample(first, key, index):
            sample = current.for_sample(index)
            x = first
            if horizon.burn_in:
                x, _ = _run(sample, first, key, jnp.asarray(0), horizon.burn_in)
            phis = rollout(sample, components, x, key, jnp.asarray(horizon.burn_in), horizon.steps)[
                1
            ]
            return reduce_window(phis, horizon)

        return jax.vmap(for_sample)(firsts, keys, jnp.arange(firsts.shape[0]))

    plus_minus = jax.lax.map(for_shift, shifts)
    return plus_minus[: flat.size], plus_minus[flat.size :]


class FiniteDifference(AbstractEstimator):
    """Central differences of the statistic, one pair of runs per parameter element.

    Supports: Terminal, WindowAverage, TimeAverage (a window of ``steps``). The standard
    error is the spread over samples (common random numbers); it does not cover the O(eps^2)
    bias (use two eps and Richardson extrapolation before calling it the truth).

    Args:
        eps: the finite-difference step, in the units of each parameter.
        samples: independent samples, each with its own initial state and noise, both sides
            of the difference sharing them; at least 2 (the standard error is their spread).
        steps: for a TimeAverage only, the window each run averages over.
        burn_in: for a TimeAverage only, steps run before the window (default 1000), with
            the perturbed parameters.
    """

    statistics = (Terminal, WindowAverage, TimeAverage)
    eps: float = 1e-2
    samples: int = 2
    steps: int | None = None
    burn_in: int | None = None

    def __check_init__(self):
        check_samples(self.samples)
        check_sizes(self, "steps", "burn_in")
        check_real(self.eps, "eps", positive=True)

    def estimate(self, system, components, params, x0, key, cotangent):
        horizon = resolve_horizon(components.statistic, self)
        check_horizon(system, horizon.burn_in + horizon.steps)
        init_key, noise_key = jax.random.split(key)
        x0 = check_start(system, x0, init_key)
        firsts = batch_starts(system, x0, init_key, 0, self.samples)
        plus, minus = _perturbed_statistics(
            system,
            components,
            params,
            firsts,
            sample_keys(noise_key, self.samples),
            jnp.asarray(self.eps),
            horizon,
        )
        plus, minus = np.asarray(plus), np.asarray(minus)
        centre = 0.5 * (plus + minus).mean(axis=(0, 1))  # (k,)
        per_sample = (plus - minus) / (2 * self.eps)  # (P, samples, k)
        if cotangent is not None:
            per_sample = per_sample @ np.asarray(cotangent(jnp.asarray(centre)))
        per_sample = np.moveaxis(per_sample, 2, 0)  # (k', P, samples)
        grad = per_sample.mean(axis=2)
        stderr = (
            per_sample.std(axis=2, ddof=1) / np.sqrt(self.samples)
            if self.samples > 1
            else np.full_like(grad, np.nan)
        )
        unravel = jax.vmap(ravel_pytree(params.values)[1])
        info = FiniteDifferenceInfo(
            method="FiniteDifference",
            seconds=0.0,
            warning=None,
            steps=horizon.steps,
            samples=self.samples,
            eps=self.eps,
            runs=2 * grad.shape[1] * self.samples,
        )
        return Estimate(centre, unravel(jnp.asarray(grad)), unravel(jnp.asarray(stderr)), info)
