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

from .._errors import check_real, check_samples, is_traced
from .._system import _run, check_horizon
from ..parallel import sample_parallel, spread
from ..statistics import Terminal, TimeAverage, WindowAverage
from ._base import AbstractEstimator, AbstractInfo, Estimate, Terms, check_sizes, resolve_horizon
from ._rollout import batch_starts, reduce_window, rollout, sample_keys, sample_start


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


ROUNDING_STEP = float(np.sqrt(np.finfo(np.float64).eps))
"""sqrt(machine epsilon) x |theta|: the step below which rounding, not the derivative,
starts to dominate a difference of the statistic (about half its digits are lost there)."""

FAR_BELOW = 1e-3
"""eps under FAR_BELOW x sqrt(machine epsilon) x |theta| gets a warning."""


def check_step(eps: float, values) -> str | None:
    """Refuse an ``eps`` lost in rounding for a selected parameter element theta (theta +
    eps == theta or theta - eps == theta in float64: the two runs would be the same run);
    return a warning when eps is far below sqrt(machine epsilon) x |theta| (the difference
    is then mostly rounding error), else None. Traced values pass unchecked."""
    if is_traced(values) or is_traced(eps):
        return None
    thetas = np.abs(np.asarray(values, dtype=np.float64))
    if thetas.size == 0:
        return None
    lost = (thetas + eps == thetas) | (thetas - eps == thetas)
    largest = float(thetas.max())
    smallest = ROUNDING_STEP * largest
    if lost.any():
        theta = float(thetas[lost].max())
        raise ValueError(
            f"eps={eps:g} is lost in rounding: theta + eps or theta - eps equals theta in "
            f"float64 for a selected parameter of size |theta| = {theta:g}; use eps >= "
            f"{smallest:.2g} (about sqrt(machine epsilon) x |theta|)"
        )
    if eps < FAR_BELOW * smallest:
        return (
            f"eps={eps:g} is far below sqrt(machine epsilon) x |theta| = {smallest:.2g} (a "
            f"selected parameter of size {largest:g}): the difference is mostly rounding "
            f"error; use eps >= {smallest:.2g}"
        )
    return None


class FiniteDifference(AbstractEstimator):
    """Central differences of the statistic, one pair of runs per parameter element.

    Supports: Terminal, WindowAverage, TimeAverage (a window of ``steps``). The standard
    error is the spread over samples (common random numbers); it does not cover the O(eps^2)
    bias (use two eps and Richardson extrapolation before calling it the truth).

    Args:
        eps: the finite-difference step, in the units of each parameter. An eps lost in
            rounding for a selected value theta (theta + eps == theta in float64) is
            refused; one below 1e-3 x sqrt(machine epsilon) x |theta| (about 1.5e-11
            |theta|) gets ``info.warning``: the difference is then mostly rounding error.
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
        check_step(self.eps, ravel_pytree(params.values)[0])  # before any run: a lost eps
        return super().estimate(system, components, params, x0, key, cotangent)

    def terms(self, system, components, params, x0, key, cotangent):
        horizon = resolve_horizon(components.statistic, self)
        check_horizon(system, horizon.burn_in + horizon.steps)
        init_key, noise_key = jax.random.split(key)
        x0 = sample_start(system, x0, init_key)
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
        centre = 0.5 * (plus + minus).mean(axis=(0, 1))  # (k,)
        per_sample = (plus - minus) / (2 * self.eps)  # (P, samples, k)
        if cotangent is not None:
            per_sample = per_sample @ cotangent(centre)
        per_sample = jnp.moveaxis(per_sample, 2, 0)  # (k', P, samples)
        grad = per_sample.mean(axis=2)
        stderr = (
            per_sample.std(axis=2, ddof=1) / np.sqrt(self.samples)
            if self.samples > 1
            else jnp.full_like(grad, jnp.nan)
        )
        unravel = jax.vmap(ravel_pytree(params.values)[1])
        finite = jnp.all(jnp.isfinite(plus)) & jnp.all(jnp.isfinite(minus))
        return Terms(centre, unravel(grad), unravel(stderr), finite)

    def finish(self, terms, system, components, params, x0, key):
        horizon = resolve_horizon(components.statistic, self)
        info = FiniteDifferenceInfo(
            method="FiniteDifference",
            seconds=0.0,
            warning=check_step(self.eps, ravel_pytree(params.values)[0]),
            steps=horizon.steps,
            samples=self.samples,
            eps=self.eps,
            runs=2 * params.size * self.samples,
        )
        return Estimate(np.asarray(terms.value), terms.grad, terms.stderr, info)
