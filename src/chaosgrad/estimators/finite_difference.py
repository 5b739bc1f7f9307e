"""Central finite differences with common random numbers: the expensive reference.

    dJ/dtheta_j ~ [J(theta + eps e_j) - J(theta - eps e_j)] / (2 eps)

for every element j of every selected parameter, both runs from the same initial state and
the same noise (common random numbers), burned in with their own parameters. The error is
O(eps^2) bias plus the statistical error of J; the standard error is over samples.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import check_positive_int
from .._system import _run, check_horizon, resolve_start
from ._base import AbstractEstimator, Estimate
from ._rollout import (batch_starts, check_statistic, rollout_values, sample_keys,
                       statistic_of)


@eqx.filter_jit
def _perturbed_statistics(system, observable, params, firsts, keys, eps, burn_in: int,
                          steps: int, statistic: str):
    flat, unravel = ravel_pytree(params.values)
    shifts = jnp.concatenate([jnp.eye(flat.size), -jnp.eye(flat.size)]) * eps

    def for_shift(shift):
        current = params.substitute(system, unravel(flat + shift))

        def for_sample(first, key):
            x = first
            if burn_in:
                x, _ = _run(current, first, key, jnp.asarray(0), burn_in)
            phis = rollout_values(current, observable, x, key, jnp.asarray(burn_in), steps)
            return statistic_of(phis, statistic)

        return jax.vmap(for_sample)(firsts, keys)

    plus_minus = jax.lax.map(for_shift, shifts)
    return plus_minus[: flat.size], plus_minus[flat.size:], unravel


class FiniteDifference(AbstractEstimator):
    """Central differences of the statistic, one pair of runs per parameter element."""

    steps: int
    eps: float = 1e-2
    samples: int = 1
    burn_in: int = 1000
    statistic: str = "average"

    def __check_init__(self):
        check_positive_int(self.steps, "steps")
        check_positive_int(self.samples, "samples")
        check_positive_int(self.burn_in, "burn_in", allow_zero=True)
        check_statistic(self.statistic)
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")

    def estimate(self, system, observable, params, x0, key):
        began = time.perf_counter()
        burn_in = self.burn_in if self.statistic == "average" else 0
        check_horizon(system, burn_in + self.steps)
        init_key, noise_key = jax.random.split(key)
        if x0 is None:
            firsts = batch_starts(system, None, init_key, 0, self.samples)
            resolve_start(system, firsts[0], init_key)
        else:
            x0, _ = resolve_start(system, x0, init_key)
            firsts = jnp.broadcast_to(x0, (self.samples,) + x0.shape)
        plus, minus, unravel = _perturbed_statistics(
            system, observable, params, firsts, sample_keys(noise_key, self.samples), self.eps,
            burn_in, self.steps,
            self.statistic)
        per_sample = np.asarray((plus - minus) / (2 * self.eps))        # (params, samples)
        grad = per_sample.mean(axis=1)
        stderr = (per_sample.std(axis=1, ddof=1) / np.sqrt(self.samples) if self.samples > 1
                  else np.full_like(grad, np.nan))
        centre = 0.5 * (np.asarray(plus) + np.asarray(minus)).mean()
        info = {"method": "FiniteDifference", "steps": self.steps, "samples": self.samples,
                "eps": self.eps, "runs": 2 * grad.size * self.samples,
                "seconds": time.perf_counter() - began}
        return Estimate(float(centre), unravel(jnp.asarray(grad)),
                        unravel(jnp.asarray(stderr)), info)
