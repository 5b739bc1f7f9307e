"""Gaussian transition kernels: scores, and the checks the random-system estimators share.

One step is x' = drift(t, x; theta) + s(t, x; theta) xi, xi ~ N(0, I), s > 0 (a scalar or one
value per component): the transition density is Gaussian with mean drift and std s. Its
score with respect to theta, at the realised xi, is

    d_theta log p(x' | x) = (xi / s) . d_theta drift + ((xi^2 - 1) / s) . d_theta s,

one VJP of theta -> (drift, s) per step (never through the steps).
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_positive_int
from .._system import System, _run
from .._tangent import step_noise
from ..parallel import sample_parallel, spread
from ..statistics import TimeAverage
from ._base import AbstractEstimator, Terms, check_sizes
from ._layers import add_rest, assemble, rest_zeros, step_pullback
from ._pilot import resolve_kernel_settings
from ._rollout import check_finite


def check_noisy(system: System, estimator: str) -> None:
    """Kernel methods need noise with a density: refuse a deterministic system."""
    if not system.stochastic:
        raise ValueError(
            f"{estimator} needs a noisy system (diffusion > 0), but "
            f"{type(system).__name__} is deterministic: use Shadowing or "
            "FastAdjointResponse for deterministic chaos, or Backprop for a "
            "stable model"
        )


class AbstractKernelEstimator(AbstractEstimator):
    """What Kernel and PathKernel share: noisy systems only, a finite-horizon form
    (``_finite``) and a stationary form for a TimeAverage (``_stationary``), and the
    settings that apply to the stationary form only (``steps``, ``window``, ``burn_in``)."""

    def __check_init__(self):
        # the fields live on the concrete classes: declared here as abstract variables they
        # would come first in the dataclass order, before PathKernel's alpha (no default)
        check_positive_int(getattr(self, "samples"), "samples")  # noqa: B009
        check_positive_int(getattr(self, "batch"), "batch")  # noqa: B009
        check_sizes(self, "steps", "burn_in")
        if getattr(self, "window") != "auto":  # noqa: B009
            check_sizes(self, "window")

    def resolve(self, system, components, params, x0, key):
        """The host checks (a noisy system; settings that apply), then ``"auto"``
        settings from a pilot run."""
        name = type(self).__name__
        check_noisy(system, name)
        if not isinstance(components.statistic, TimeAverage):
            if any(getattr(self, name) is not None for name in ("steps", "window", "burn_in")):
                raise ValueError(
                    f"{name}(steps=, window=, burn_in=) apply to a TimeAverage only: a "
                    "Terminal or WindowAverage statistic has its own steps"
                )
        return resolve_kernel_settings(self, system, components, params, x0, key)

    def terms(self, system, components, params, x0, key, cotangent):
        if isinstance(components.statistic, TimeAverage):
            return self._stationary(system, components, params, x0, key, cotangent)
        return self._finite(system, components, params, x0, key, cotangent)

    @abc.abstractmethod
    def _finite(self, system, components, params, x0, key, cotangent) -> Terms:
        """The pure computation for a Terminal statistic."""

    @abc.abstractmethod
    def _stationary(self, system, components, params, x0, key, cotangent) -> Terms:
        """The pure computation for a TimeAverage (extras: the orbits' raw values)."""


def check_orbits_finite(terms: Terms, burn_in) -> None:
    """On the host: name the step where a stationary form's orbit stopped being finite."""
    if not bool(terms.finite):
        check_finite(terms.extras["raw_values"], "an orbit", burn_in)


def sum_over_batches(batch_sums, samples: int, size: int, combine=None):
    """The sum over batches of ``batch_sums(first, count)`` (a pytree of sums over samples
    first .. first + count - 1): the full batches in one ``lax.scan`` (one compiled body,
    whatever their number), the remainder once. ``combine`` (default: leafwise add) joins
    two batches' results."""
    if combine is None:
        combine = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)  # noqa: E731
    full, rest = divmod(samples, size)
    total = None
    if full:
        shape = jax.eval_shape(lambda first: batch_sums(first, size), jnp.asarray(0))
        zero = jax.tree_util.tree_map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shape)

        def step(carry, first):
            return combine(carry, batch_sums(first, size)), None

        total, _ = jax.lax.scan(step, zero, size * jnp.arange(full))
    if rest:
        last = batch_sums(jnp.asarray(full * size), rest)
        total = last if total is None else combine(total, last)
    return total


def sample_batches(samples: int, batch: int, numbers_per_sample: int) -> list[tuple[int, int]]:
    """(first, size) of each batch: at most ``batch`` samples, and at most ~2^23 numbers of
    per-sample arrays held at once (memory does not grow with ``samples``)."""
    size = max(1, min(batch, samples, 2**23 // max(numbers_per_sample, 1)))
    return [(first, min(size, samples - first)) for first in range(0, samples, size)]


def step_score(system, params, t, x, xi):
    """(x_{t+1}, d_theta log p(x_{t+1} | x_t)) at the realised noise xi, the score as an
    :class:`~chaosgrad.estimators._layers.Increment` (a slice for a deep net's layer t).

    The step is taken from the VJP's own forward evaluation (drift and s computed once).
    """
    dim = x.shape[0]

    def mean_and_std(current):
        return current.drift(t, x), jnp.broadcast_to(current.diffusion(t, x), (dim,))

    (mean, std), pullback = step_pullback(system, params, t, mean_and_std)
    # a component without noise has no density: it adds nothing to the score (its drift
    # must not depend on theta, which check_noise_free_drift makes sure of)
    noisy = std != 0.0
    inverse = jnp.where(noisy, 1.0 / jnp.where(noisy, std, 1.0), 0.0)
    return mean + std * xi, pullback((xi * inverse, (xi**2 - 1.0) * inverse))[1]


def check_noise_free_drift(system, params, x, estimator: str) -> None:
    """Refuse a state component without noise whose drift depends on the parameters (at
    step 0, at the state ``x`` and at x + a standard normal draw, so that a dependence that
    vanishes at one state, a cost (x - m)^2 at x = m, is still seen): the transition then
    has no density in theta, so no likelihood ratio exists. Components without noise whose
    drift does not depend on theta (a step counter, a copy of an input) are fine."""
    sample = system.for_sample(0)
    dim = x.shape[0]
    std = np.broadcast_to(np.asarray(sample.diffusion(0, x)), (dim,))
    silent = np.flatnonzero(std == 0.0)
    if silent.size == 0:
        return

    def drift(values, state):
        return params.substitute(sample, values).drift(0, state)

    rows = np.zeros(dim, dtype=bool)
    for state in (x, x + jax.random.normal(jax.random.key(0), x.shape, x.dtype)):
        jacobian = jax.jacrev(drift)(params.values, state)
        for leaf in jax.tree_util.tree_leaves(jacobian):
            rows |= np.asarray(jnp.any(leaf.reshape(dim, -1) != 0.0, axis=1))
    dependent = [int(i) for i in silent if rows[i]]
    if dependent:
        raise ValueError(
            f"{estimator}: state components {dependent} have no noise, but their drift depends "
            "on the parameters, so their transition has no density and no likelihood ratio "
            "exists; use PathKernel (it propagates through such components) or Backprop"
        )


def initial_score(system, params, x0):
    """d_theta log h_0(x0; theta) from ``system.initial_log_density`` (zero when it is
    None: an initial law that does not depend on the parameters)."""
    if system.initial_log_density(x0) is None:
        return jax.tree_util.tree_map(jnp.zeros_like, params.values)
    return jax.grad(lambda values: params.substitute(system, values).initial_log_density(x0))(
        params.values
    )


def path_score(system, params, x0, key, steps: int):
    """(x_T, S): the state after ``steps`` steps from ``x0`` with the noise of ``key``, and
    its path score S = sum_{n<T} d_theta log p(x_{n+1} | x_n) + d_theta log h_0(x_0), shaped
    like the parameters (a deep net's layers as slices, assembled at the end)."""

    def layer(carry, t):
        x, rest = carry
        xi = system.noise(key, t, x.shape[0])
        x_next, increment = step_score(system, params, t, x, xi)
        return (x_next, add_rest(rest, increment)), increment.slices

    (x, rest), slices = jax.lax.scan(layer, (x0, rest_zeros(params)), jnp.arange(steps))
    score = jax.tree_util.tree_map(
        jnp.add, assemble(params, rest, slices, 0), initial_score(system, params, x0)
    )
    return x, score


def check_initial_law(system, params, key, density_used: bool = True) -> None:
    """Refuse a theta-dependent initial sampler without a density (its score is unknown),
    or any theta-dependent one where the form does not use the density
    (``density_used=False``)."""
    x0 = jax.eval_shape(system.initial_state, key)
    if density_used and jax.eval_shape(system.initial_log_density, x0) is not None:
        return

    def draw(values):
        return params.substitute(system, values).initial_state(key)

    tangent = jax.tree_util.tree_map(jnp.ones_like, params.values)
    _, moved = jax.jvp(draw, (params.values,), (tangent,))
    if bool(jnp.any(moved != 0)):
        raise ValueError(
            f"{type(system).__name__}.initial_state depends on the parameters: "
            + (
                "define initial_log_density(x0) so the kernel method can use its score, or pass x0"
                if density_used
                else "the path form of a WindowAverage does not use its score; pass x0"
            )
        )


def explicit_term(components, params, system, x):
    """d_theta Phi~(x; theta) for a ParametricObservable, leaves (k', ...)."""
    return jax.jacrev(lambda values: components(x, params.substitute(system, values)))(
        params.values
    )


@sample_parallel
def terminal_values(system, components, starts, keys, steps: int):
    """Phi~(x_T) of every sample (forward only), shape (samples, k')."""

    def one(x0, key, index):
        sample = system.for_sample(index)
        x, _ = _run(sample, x0, key, jnp.asarray(0), steps)
        return components(x, sample)

    return jax.vmap(one)(*spread((starts, keys, jnp.arange(starts.shape[0]))))


@sample_parallel
def orbit_values(system, components, starts, keys, start, steps: int):
    """Phi~(x_n), n = 1..steps, of every orbit (vmapped), shape (orbits, steps, k'); orbit i
    runs ``system.for_sample(i)`` (its own data, e.g. an input sequence)."""

    def one(x, key, index):
        sample = system.for_sample(index)

        def step(x, t):
            x = sample.step(t, x, step_noise(sample, key, t, x))
            return x, components(x, sample)

        return jax.lax.scan(step, x, start + jnp.arange(steps))[1]

    return jax.vmap(one)(*spread((starts, keys, jnp.arange(starts.shape[0]))))
