"""Zeroth-order estimators: evolution strategies (full ES, PES, NRES) and SPSA.

Nothing is differentiated: the statistic J is a black box evaluated at perturbed parameters,
theta +- c e, on the estimator's own samples (orbits or rollouts), with common random numbers
(the same initial state and noise) for the + and - runs of a sample. All four share one
computation: a sample's run is cut into W truncations of K steps, truncation tau runs with
theta +- c e_tau, and with L_tau the truncation's share of the statistic (its steps' weights
in the window average, or the terminal value in the last one),

    g_i = sum_tau xi_tau (L_tau^+ - L_tau^-) / (2 c),        g = (1/N) sum_i g_i,

the standard error being the spread of the N per-sample g_i. The families differ in the
perturbations e_tau and their accumulation xi_tau:

* **ES** (antithetic Gaussian smoothing; Salimans et al. 2017): one truncation, e ~ N(0, I),
  xi = e. It estimates grad_theta E_e J(theta + sigma e): the gradient of the
  sigma-smoothed objective (equal to grad J for a quadratic J; O(sigma^2) off otherwise).
* **PES** (persistent ES; Vicol, Metz & Sohl-Dickstein, ICML 2021): a fresh e_tau ~ N(0, I)
  in each truncation and xi_tau = e_1 + ... + e_tau, the perturbations a truncation's loss
  depends on through the carried state. Unbiased for the gradient of the smoothed objective
  whose truncations are perturbed independently, sum_tau E J_tau(theta + sigma e_1, ...,
  theta + sigma e_tau).
* **NRES** (noise-reuse ES; Li et al., NeurIPS 2023): e drawn once per sample and reused in
  every truncation, xi_tau = e. Within one call this is ES evaluated truncation by
  truncation (equal up to rounding); the truncations matter when training online, one
  truncation per optimiser step, where nothing accumulates (Li et al. show a variance below
  PES's over long episodes).
* **SPSA** (Spall 1992): one truncation, e Rademacher (+-1 entries), xi = e (e^-1 = e).
  It estimates grad J with an O(c^2) bias (none for a quadratic).

Variance with the parameter count p: for a locally linear J, E|g_i - grad|^2 =
(p + 1) |grad J|^2 for ES (p - 1 for SPSA, whose e_j^2 = 1) plus the sampling noise of the
difference, so N must grow like p for a fixed relative error: the cost on large models.

Burn-in (TimeAverage) runs with the first truncation's perturbation and is not scored; the
perturbation of a sample is drawn from ``fold_in(fold_in(key, 2), i)``, its start and noise as
every sampled estimator's (``split(key)``), so ES, FiniteDifference and Backprop with one key
see the same samples.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import check_positive_int, check_real, check_samples
from .._memory import check_memory
from .._system import _run, check_horizon
from ..parallel import sample_parallel, spread
from ..statistics import Terminal, TimeAverage, WindowAverage
from ._base import (
    AbstractEstimator,
    AbstractInfo,
    Estimate,
    Horizon,
    Terms,
    check_sizes,
    resolve_horizon,
)
from ._rollout import batch_starts, rollout, sample_keys, sample_start

DIRECTION_STREAM = 2
"""The perturbations are drawn from ``fold_in(key, DIRECTION_STREAM)`` (the starts and noise
from ``split(key)``)."""


class ZerothOrderInfo(AbstractInfo):
    """Diagnostics of ES, PES, NRES and SPSA.

    Args:
        steps: the window each run covers (after its burn-in).
        samples: N, the perturbed pairs (each its own start, noise and perturbation).
        scale: sigma (ES, PES, NRES) or c (SPSA), in the units of each parameter.
        truncations: W, the truncations each run is cut into (1 for ES and SPSA).
        parameters: p, the parameter elements perturbed (the variance grows with it).
        runs: the rollouts made, 2 N.
    """

    steps: int
    samples: int
    scale: float
    truncations: int
    parameters: int
    runs: int


def step_weights(horizon: Horizon) -> jax.Array:
    """w_t with J = sum_t w_t Phi~(x_t) over the window's steps: 1/(steps - skip) after the
    statistic's skip for an average, the last step alone for a terminal value."""
    steps = horizon.steps
    if horizon.kind == "average":
        kept = steps - horizon.skip
        return jnp.where(jnp.arange(steps) >= horizon.skip, 1.0 / kept, 0.0)
    return jnp.zeros(steps).at[-1].set(1.0)


@sample_parallel
def _truncation_losses(system, components, params, firsts, keys, shifts, horizon, truncation):
    """(plus, minus): per sample and truncation, L_tau (samples, W, k) of the runs with
    theta + shifts[i, tau] and theta - shifts[i, tau], from one start and one noise."""
    flat, unravel = ravel_pytree(params.values)
    weights = step_weights(horizon).reshape(-1, truncation)  # (W, K)
    firsts, keys, shifts, indices = spread((firsts, keys, shifts, jnp.arange(firsts.shape[0])))

    def run(first, key, index, shift):
        def at(offset):
            return params.substitute(system, unravel(flat + offset)).for_sample(index)

        x = first
        if horizon.burn_in:
            x, _ = _run(at(shift[0]), first, key, jnp.asarray(0), horizon.burn_in)

        def one(x, inputs):
            tau, offset, weight = inputs
            t0 = horizon.burn_in + tau * truncation
            x, phis = rollout(at(offset), components, x, key, t0, truncation)
            return x, weight @ phis

        windows = jnp.arange(weights.shape[0])
        return jax.lax.scan(one, x, (windows, shift, weights))[1]

    def both(first, key, index, shift):
        return run(first, key, index, shift), run(first, key, index, -shift)

    return jax.vmap(both)(firsts, keys, indices, shifts)


class AbstractZerothOrder(AbstractEstimator):
    """The shared computation of ES, PES, NRES and SPSA (see the module doc). Subclasses
    hold the settings and choose the perturbations and their accumulation (``draw``), the
    scale (sigma or c) and the truncation length."""

    statistics = (Terminal, WindowAverage, TimeAverage)
    if TYPE_CHECKING:  # every subclass declares these settings, in its own order
        samples: int
        steps: int | None

    @property
    @abc.abstractmethod
    def scale(self) -> float:
        """sigma or c: the perturbations are theta +- scale e."""

    @abc.abstractmethod
    def draw(self, key, windows: int, size: int) -> tuple[jax.Array, jax.Array]:
        """(e, xi), each (W, p): one sample's perturbation per truncation and the
        accumulated perturbation its truncation's loss is weighed with."""

    def truncation_steps(self, steps: int) -> int:
        """K, the steps of one truncation (the whole window by default)."""
        return steps

    def terms(self, system, components, params, x0, key, cotangent):
        horizon = resolve_horizon(components.statistic, self)
        check_horizon(system, horizon.burn_in + horizon.steps)
        truncation = self.truncation_steps(horizon.steps)
        windows = horizon.steps // truncation
        size = params.size
        check_memory(
            2 * self.samples * windows * size,
            f"the perturbations of {self.samples} samples x {windows} truncation(s) x {size} "
            "parameter elements",
            "use fewer samples or longer truncations",
        )
        init_key, noise_key = jax.random.split(key)
        x0 = sample_start(system, x0, init_key)
        draws = sample_keys(jax.random.fold_in(key, DIRECTION_STREAM), self.samples)
        shifts, scores = jax.vmap(lambda k: self.draw(k, windows, size))(draws)
        scale = jnp.asarray(self.scale, dtype=jnp.float64)
        plus, minus = _truncation_losses(
            system,
            components,
            params,
            batch_starts(system, x0, init_key, 0, self.samples),
            sample_keys(noise_key, self.samples),
            scale * shifts,
            horizon,
            truncation,
        )
        centre = 0.5 * (plus + minus).sum(axis=1).mean(axis=0)  # (k,)
        differences = plus - minus  # (N, W, k)
        if cotangent is not None:
            differences = differences @ cotangent(centre)  # (N, W, k')
        per_sample = jnp.einsum("nwk,nwp->knp", differences, scores) / (2 * scale)
        grad = per_sample.mean(axis=1)
        stderr = per_sample.std(axis=1, ddof=1) / np.sqrt(self.samples)
        unravel = jax.vmap(ravel_pytree(params.values)[1])
        finite = jnp.all(jnp.isfinite(plus)) & jnp.all(jnp.isfinite(minus))
        return Terms(centre, unravel(grad), unravel(stderr), finite)

    def finish(self, terms, system, components, params, x0, key):
        horizon = resolve_horizon(components.statistic, self)
        info = ZerothOrderInfo(
            method=type(self).__name__,
            seconds=0.0,
            warning=None,
            steps=horizon.steps,
            samples=self.samples,
            scale=float(self.scale),
            truncations=horizon.steps // self.truncation_steps(horizon.steps),
            parameters=params.size,
            runs=2 * self.samples,
        )
        return Estimate(np.asarray(terms.value), terms.grad, terms.stderr, info)


def _gaussian(key, windows: int, size: int) -> jax.Array:
    return jax.random.normal(key, (windows, size), dtype=jnp.float64)


def _check_truncation(truncation: int, steps: int, name: str) -> int:
    if steps % truncation:
        raise ValueError(
            f"{name}(truncation={truncation}) must divide the window's {steps} steps: the run "
            "is cut into truncations of equal length"
        )
    return truncation


class ES(AbstractZerothOrder):
    """Full evolution strategies (antithetic Gaussian smoothing): no derivative is taken.

    g = (1/(2 N sigma)) sum_i [J(theta + sigma e_i) - J(theta - sigma e_i)] e_i, e_i ~ N(0, I),
    the two runs of pair i sharing their start and noise. It estimates the gradient of the
    sigma-smoothed objective E_e J(theta + sigma e) (the gradient itself for a quadratic J).
    Its variance grows like p, the number of parameter elements, at fixed ``samples``.

    Supports every statistic (TimeAverage: a window of ``steps``). The standard error is the
    spread over the N pairs; it does not cover the smoothing bias.

    Args:
        sigma: the smoothing scale, in the units of each parameter (scale the parameters
            alike, or the smoothing is uneven).
        samples: N antithetic pairs, each its own start, noise and e; at least 2.
        steps: for a TimeAverage only, the window each run averages over.
        burn_in: for a TimeAverage only, steps run first with the perturbed parameters
            (default 1000).
    """

    sigma: float = 0.05
    samples: int = 64
    steps: int | None = None
    burn_in: int | None = None

    def __check_init__(self):
        check_real(self.sigma, "sigma", positive=True)
        check_samples(self.samples)
        check_sizes(self, "steps", "burn_in")

    @property
    def scale(self) -> float:
        return self.sigma

    def draw(self, key, windows, size):
        e = _gaussian(key, windows, size)
        return e, e


class AbstractTruncated(AbstractZerothOrder):
    """The settings PES and NRES share: Gaussian perturbations of scale ``sigma`` over
    truncations of ``truncation`` steps; the subclasses differ in ``draw`` only."""

    sigma: float = 0.05
    samples: int = 64
    truncation: int = 10
    steps: int | None = None
    burn_in: int | None = None

    def __check_init__(self):
        check_real(self.sigma, "sigma", positive=True)
        check_samples(self.samples)
        check_positive_int(self.truncation, "truncation")
        check_sizes(self, "steps", "burn_in")

    @property
    def scale(self) -> float:
        return self.sigma

    def truncation_steps(self, steps):
        return _check_truncation(self.truncation, steps, type(self).__name__)

    @abc.abstractmethod
    def online_draw(self, key, e, xi, restart) -> tuple[jax.Array, jax.Array]:
        """(e, xi) of one particle's next truncation when training online
        (:class:`~chaosgrad.estimators.online.Online`): from its previous (e, xi) (each
        (p,)), ``restart`` True at the first truncation of an episode."""


class PES(AbstractTruncated):
    """Persistent evolution strategies over truncated unrolls (Vicol et al., ICML 2021).

    Each run is cut into truncations of ``truncation`` steps, the state carried across
    them. In truncation tau the pair runs with theta +- sigma e_tau, e_tau ~ N(0, I) fresh,
    and its loss L_tau is weighed with the accumulated xi_tau = e_1 + ... + e_tau:

        g = (1/(2 N sigma)) sum_i sum_tau xi_{i,tau} (L_{i,tau}^+ - L_{i,tau}^-).

    Unbiased for the smoothed objective whose truncations are perturbed independently. A
    truncation's loss is weighed only by the perturbations before it (ES weighs it by the
    whole run's), but xi grows with the number of truncations: which of PES and ES has the
    smaller variance in one call depends on how fast the system forgets.
    Variance grows like p at fixed ``samples``. Supports every statistic.

    Args:
        sigma: the smoothing scale, in the units of each parameter.
        samples: N particles (antithetic pairs); at least 2.
        truncation: K, the steps of one truncation; must divide the window's steps.
        steps: for a TimeAverage only, the window each run averages over.
        burn_in: for a TimeAverage only, steps run first (with e_1), not scored.
    """

    def draw(self, key, windows, size):
        e = _gaussian(key, windows, size)
        return e, jnp.cumsum(e, axis=0)

    def online_draw(self, key, e, xi, restart):
        e = _gaussian(key, 1, e.shape[0])[0]
        return e, jnp.where(restart, 0.0, xi) + e


class NRES(AbstractTruncated):
    """Noise-reuse evolution strategies (Li et al., NeurIPS 2023).

    As PES, but each particle draws e once and reuses it in every truncation, xi_tau = e:
    g = (1/(2 N sigma)) sum_i sum_tau e_i (L_{i,tau}^+ - L_{i,tau}^-). Within one call this
    equals full ES on the same unroll (up to rounding); the truncations are what an online
    trainer steps on, where Li et al. show NRES's variance below PES's over long episodes
    (nothing accumulates).
    Variance grows like p at fixed ``samples``. Supports every statistic.

    Args:
        sigma: the smoothing scale, in the units of each parameter.
        samples: N particles (antithetic pairs); at least 2.
        truncation: K, the steps of one truncation; must divide the window's steps.
        steps: for a TimeAverage only, the window each run averages over.
        burn_in: for a TimeAverage only, steps run first (with e), not scored.
    """

    def draw(self, key, windows, size):
        e = jnp.broadcast_to(_gaussian(key, 1, size), (windows, size))
        return e, e

    def online_draw(self, key, e, xi, restart):
        e = jnp.where(restart, _gaussian(key, 1, e.shape[0])[0], e)
        return e, e


class SPSA(AbstractZerothOrder):
    """Simultaneous-perturbation stochastic approximation (Spall 1992).

    g = (1/N) sum_i [J(theta + c D_i) - J(theta - c D_i)] / (2 c) D_i, D_i with independent
    +-1 entries (D^-1 = D), the two runs of pair i sharing their start and noise. It
    estimates grad J with an O(c^2) bias (none for a quadratic J). Variance grows like p at
    fixed ``samples``. Supports every statistic.

    Args:
        c: the perturbation size, in the units of each parameter.
        samples: N pairs; at least 2.
        steps: for a TimeAverage only, the window each run averages over.
        burn_in: for a TimeAverage only, steps run first with the perturbed parameters.
    """

    c: float = 0.05
    samples: int = 64
    steps: int | None = None
    burn_in: int | None = None

    def __check_init__(self):
        check_real(self.c, "c", positive=True)
        check_samples(self.samples)
        check_sizes(self, "steps", "burn_in")

    @property
    def scale(self) -> float:
        return self.c

    def draw(self, key, windows, size):
        d = jax.random.rademacher(key, (windows, size), dtype=jnp.float64)
        return d, d
