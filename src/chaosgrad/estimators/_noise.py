"""Gaussian transition kernels: scores, and the checks the random-system estimators share.

One step is x' = drift(t, x; theta) + s(t, x; theta) xi, xi ~ N(0, I), s > 0 (a scalar or one
value per component): the transition density is Gaussian with mean drift and std s. Its
score with respect to theta, at the realised xi, is

    d_theta log p(x' | x) = (xi / s) . d_theta drift + ((xi^2 - 1) / s) . d_theta s,

one VJP of theta -> (drift, s) per step (never through the steps).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_positive_int
from .._system import System

GAUSSIAN = "gaussian"


def check_noisy(system: System, estimator: str) -> None:
    """Kernel methods need noise with a density: refuse a deterministic system."""
    if not system.stochastic:
        raise ValueError(f"{estimator} needs a noisy system (diffusion > 0), but "
                         f"{type(system).__name__} is deterministic: use Shadowing or "
                         "FastAdjointResponse for deterministic chaos, or Backprop for a "
                         "stable model")


def check_gaussian(noise: str, estimator: str) -> None:
    if noise != GAUSSIAN:
        raise ValueError(f"{estimator} supports Gaussian noise only (its score is xi/s); "
                         f"got noise={noise!r}")


def check_sampling(estimator, name: str) -> None:
    """The settings Kernel and PathKernel share: sizes, noise law, window."""
    check_positive_int(estimator.steps, "steps")
    check_positive_int(estimator.samples, "samples")
    check_positive_int(estimator.burn_in, "burn_in", allow_zero=True)
    check_positive_int(estimator.batch, "batch")
    check_gaussian(estimator.noise, name)
    if estimator.window is not None:
        check_positive_int(estimator.window, "window", allow_zero=True)


def sample_batches(samples: int, batch: int, parameter_count: int) -> list[tuple[int, int]]:
    """(first, size) of each batch: at most ``batch`` samples, and at most ~2^23 numbers of
    per-sample parameter pytrees held at once (memory does not grow with ``samples``)."""
    size = max(1, min(batch, samples, 2**23 // max(parameter_count, 1)))
    return [(first, min(size, samples - first)) for first in range(0, samples, size)]


def step_score(system, params, t, x, xi):
    """(x_{t+1}, d_theta log p(x_{t+1} | x_t)) at the realised noise xi.

    The step is taken from the VJP's own forward evaluation (drift and s computed once).
    """
    dim = x.shape[0]

    def mean_and_std(values):
        current = params.substitute(system, values)
        return current.drift(t, x), jnp.broadcast_to(current.diffusion(t, x), (dim,))

    (mean, std), pullback = jax.vjp(mean_and_std, params.values)
    return mean + std * xi, pullback((xi / std, (xi**2 - 1.0) / std))[0]


class ParametricObservable(eqx.Module):
    """An observable that depends on the parameters too: ``function(x, system)``.

    Kernel and PathKernel add the explicit term E[d_theta Phi]; e.g.
    ``ParametricObservable(lambda x, s: jnp.sum(x) - 9 * s.gamma)``.
    """

    function: Callable = eqx.field(static=True)

    def __call__(self, x, system):
        return self.function(x, system)


def takes_system(observable) -> bool:
    """True for a :class:`ParametricObservable` (explicit parameter dependence)."""
    return isinstance(observable, ParametricObservable)


def evaluate(observable, x, system):
    """phi(x) or phi(x, system)."""
    return observable(x, system) if takes_system(observable) else observable(x)


def initial_score(system, params, x0):
    """d_theta log h_0(x0; theta) from ``system.initial_log_density`` (zero if absent)."""
    density = getattr(system, "initial_log_density", None)
    if density is None:
        return jax.tree_util.tree_map(jnp.zeros_like, params.values)
    return jax.grad(lambda values: params.substitute(system, values).initial_log_density(x0))(
        params.values)


def check_initial_law(system, params, key) -> None:
    """Refuse a theta-dependent initial sampler without a density (its score is unknown)."""
    if getattr(system, "initial_log_density", None) is not None:
        return
    draw = lambda values: params.substitute(system, values).initial_state(key)  # noqa: E731
    tangent = jax.tree_util.tree_map(jnp.ones_like, params.values)
    _, moved = jax.jvp(draw, (params.values,), (tangent,))
    if bool(jnp.any(moved != 0)):
        raise ValueError(f"{type(system).__name__}.initial_state depends on the parameters: "
                         "define initial_log_density(x0) so the kernel method can use its "
                         "score, or pass x0")
