"""The estimator framework: one entry point, one result type, parameter bookkeeping.

    response = linear_response(system, observable, estimator, wrt=..., key=...)

An estimator is an ``eqx.Module`` holding its settings and implementing ``estimate``. The
statistic is either a long-time average <Phi> (deterministic chaos) or E[Phi(x_T)] (a noisy
system or network of finite depth); ``grad`` is its derivative with respect to the
parameters selected by ``wrt``, shaped like ``wrt(system)``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_float64
from .._system import System


class Estimate(eqx.Module):
    """The statistic, its gradient and the gradient's standard error (same pytree shape)."""

    value: float
    grad: Any
    stderr: Any
    info: dict


class Parameters(eqx.Module):
    """The parameters being differentiated, and how to put new values back into a system.

    ``wrt`` is None (every inexact-array field) or a function ``system -> pytree of arrays``
    as in ``eqx.tree_at`` (e.g. ``lambda s: s.rho`` or ``lambda s: (s.rho, s.sigma)``).
    """

    values: Any
    wrt: Callable | None = eqx.field(static=True)

    @classmethod
    def of(cls, system: System, wrt: Callable | None) -> Parameters:
        values = eqx.filter(system, eqx.is_inexact_array) if wrt is None else wrt(system)
        leaves = jax.tree_util.tree_leaves(values)
        if not leaves:
            raise ValueError("wrt selects no parameters: it must return float64 arrays "
                             "(fields of the system)")
        for leaf in leaves:
            if not eqx.is_inexact_array(leaf):
                raise TypeError(f"wrt must select array fields of the system, got {leaf!r}")
        check_float64(values, "parameters selected by wrt")
        return cls(values, wrt)

    def substitute(self, system: System, values) -> System:
        """``system`` with the selected parameters replaced by ``values``."""
        if self.wrt is None:
            rest = eqx.filter(system, eqx.is_inexact_array, inverse=True)
            return eqx.combine(values, rest)
        return eqx.tree_at(self.wrt, system, values)

    def size(self) -> int:
        return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(self.values))


def tree_mean_and_stderr(samples):
    """Mean and standard error over the leading axis of every leaf of ``samples``."""
    count = jax.tree_util.tree_leaves(samples)[0].shape[0]

    def stderr(leaf):
        if count < 2:
            return jnp.full(leaf.shape[1:], jnp.nan)
        return jnp.std(leaf, axis=0, ddof=1) / np.sqrt(count)

    mean = jax.tree_util.tree_map(lambda leaf: jnp.mean(leaf, axis=0), samples)
    return mean, jax.tree_util.tree_map(stderr, samples)


def mean_and_stderr_from_sums(sums, squares, count: int):
    """Mean, per-sample variance and standard error from running sums of x and x^2."""
    mean = jax.tree_util.tree_map(lambda total: total / count, sums)
    variance = jax.tree_util.tree_map(
        lambda sq, m: jnp.maximum(sq / count - m**2, 0.0) * count / max(count - 1, 1),
        squares, mean)
    stderr = jax.tree_util.tree_map(
        lambda v: jnp.sqrt(v / count) if count > 1 else jnp.full_like(v, jnp.nan), variance)
    return mean, variance, stderr


def tree_norm(tree) -> jax.Array:
    """Euclidean norm of all leaves together."""
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


class AbstractEstimator(eqx.Module):
    """A way to estimate d(statistic)/d(parameters). Subclasses implement ``estimate``."""

    @abc.abstractmethod
    def estimate(self, system: System, observable: Callable, params: Parameters, x0, key
                 ) -> Estimate:
        """Estimate the statistic and its gradient with respect to ``params``."""


def linear_response(system: System, observable: Callable, estimator: AbstractEstimator, *,
                    wrt: Callable | None = None, x0=None, key) -> Estimate:
    """d(statistic)/d(parameters) of ``observable`` on ``system`` by ``estimator``.

    Args:
        observable: ``phi(x) -> scalar``.
        estimator: e.g. ``Backprop(steps, samples)``, ``Shadowing(unstable_dim, ...)``.
        wrt: which parameters (default: every inexact-array field of ``system``).
        x0: starting state (default: drawn from ``system.initial_state``).
        key: PRNG key for initial states and noise.
    """
    if not isinstance(system, System):
        raise TypeError(f"system must be a chaosgrad System, got {type(system).__name__}")
    if not isinstance(estimator, AbstractEstimator):
        raise TypeError(f"estimator must be a chaosgrad estimator, got {estimator!r}")
    if not callable(observable):
        raise TypeError("observable must be a function phi(x) -> scalar")
    if key is None:
        raise ValueError("key is required: linear_response(..., key=jax.random.key(0))")
    params = Parameters.of(system, wrt)
    if x0 is not None:
        x0 = jnp.asarray(x0)
        check_float64(x0, "x0")
    return estimator.estimate(system, observable, params, x0, key)
