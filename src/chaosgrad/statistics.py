"""Statistics: what is differentiated (the problem), apart from how (the estimator).

As diffrax keeps the equation apart from the solver and the adjoint, chaosgrad keeps the
statistic of a system apart from the estimator that differentiates it:

* :class:`TimeAverage` ``<Phi> = lim_{T->oo} (1/T) sum_{n=1}^{T} Phi(x_n)``: the long-time
  (ergodic) average; infinite horizon. Each estimator approximates the limit with its own
  orbit-length settings (``steps``, ``segments``, ``burn_in``) and says so.
* :class:`WindowAverage` ``E[(1/T) sum_{n=1}^{T} Phi(x_{b+n})]``, x_0 from the start law
  (``x0`` or ``system.initial_state``), b = ``burn_in`` steps discarded: a finite horizon.
* :class:`Terminal` ``E[Phi(x_T)]``, x_0 from the start law: the output of a network of
  depth T, or the end of a rollout of T steps.

Observables return a scalar, a vector or any pytree of arrays; the statistic has the same
structure. An observable of the form ``Phi(x, system)`` (an explicit parameter dependence)
is written ``ParametricObservable(function)``; the estimators that can use it say so.

Each call of an estimator traces the observable first (:func:`output_structure`): the
statistic then holds it as a :class:`~chaosgrad._functions.TracedFunction`, its program
static (compared by what it computes) and the arrays it reads dynamic leaves. A fresh lambda
of the same code is warm, and a changed global or closed-over array reaches the compiled
program as a new input, never a stale value.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._errors import check_positive_int
from ._functions import TracedFunction, trace

__all__ = ["AbstractStatistic", "ParametricObservable", "Terminal", "TimeAverage", "WindowAverage"]


class ParametricObservable(eqx.Module):
    """An observable that depends on the parameters too: ``function(x, system)``.

    The kernel estimators add the explicit term E[d_theta Phi]; e.g.
    ``ParametricObservable(lambda x, s: jnp.sum(x) - 9 * s.gamma)``.
    """

    function: Callable

    def __init__(self, function: Callable):
        if not callable(function):
            raise TypeError(
                f"ParametricObservable takes a function phi(x, system), got {function!r:.60}"
            )
        self.function = function

    def __call__(self, x, system):
        return self.function(x, system)


def takes_system(observable) -> bool:
    """True for a :class:`ParametricObservable` (explicit parameter dependence)."""
    return isinstance(observable, ParametricObservable)


class AbstractStatistic(eqx.Module):
    """A statistic of a system's trajectories, of the shape of ``observable``'s output."""

    observable: Any

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """``"average"`` (a mean over steps) or ``"terminal"`` (the state at the end)."""

    @property
    def horizon(self) -> int | None:
        """The number of steps the statistic defines, or None for an infinite horizon."""
        return None

    @property
    def skip(self) -> int:
        """Steps run from x_0 before the statistic's window opens (0 unless it has one)."""
        return 0

    def evaluate(self, x, system):
        """Phi(x) (or Phi(x, system) for a :class:`ParametricObservable`)."""
        if takes_system(self.observable):
            return self.observable(x, system)
        return self.observable(x)


def _wrap(observable):
    if isinstance(observable, (ParametricObservable, TracedFunction)):
        return observable
    if not callable(observable):
        raise TypeError(
            f"observable must be a function phi(x) returning a scalar, a vector or "
            f"a pytree of arrays, got {observable!r}"
        )
    return observable


class TimeAverage(AbstractStatistic):
    """<Phi>: the long-time (ergodic) average of ``observable`` along a trajectory.

    Args:
        observable: ``phi(x)`` returning a scalar, a vector or a pytree of arrays.
    """

    def __init__(self, observable: Callable):
        self.observable = _wrap(observable)

    @property
    def kind(self) -> str:
        return "average"


class WindowAverage(AbstractStatistic):
    """E[(1/T) sum_{n=1}^{T} Phi(x_{b+n})]: the average over a finite window of T steps.

    Args:
        observable: ``phi(x)`` returning a scalar, a vector or a pytree of arrays.
        steps: T, the window length.
        burn_in: b, steps run from x_0 before the window opens (default 0: the window starts
            at the start law). They are part of this finite-horizon problem, so pathwise
            estimators differentiate through them; Shadowing, a long-time method, uses them
            only to reach the attractor.
    """

    steps: int = eqx.field(static=True)
    burn_in: int = eqx.field(static=True)

    def __init__(self, observable: Callable, steps: int, burn_in: int = 0):
        self.observable = _wrap(observable)
        self.steps = check_positive_int(steps, "steps")
        self.burn_in = check_positive_int(burn_in, "burn_in", allow_zero=True)

    @property
    def kind(self) -> str:
        return "average"

    @property
    def skip(self) -> int:
        return self.burn_in

    @property
    def horizon(self) -> int:
        return self.burn_in + self.steps


class Terminal(AbstractStatistic):
    """E[Phi(x_T)]: the observable at step T, x_0 from the start law (a network's output).

    Args:
        observable: ``phi(x)`` returning a scalar, a vector or a pytree of arrays.
        steps: T, the depth of the network or the length of the rollout.
    """

    steps: int = eqx.field(static=True)

    def __init__(self, observable: Callable, steps: int):
        self.observable = _wrap(observable)
        self.steps = check_positive_int(steps, "steps")

    @property
    def kind(self) -> str:
        return "terminal"

    @property
    def horizon(self) -> int:
        return self.steps


class Components(eqx.Module):
    """The observable flattened to k components and projected: Phi~(x) = P^T ravel(Phi(x)).

    Every estimator differentiates the k' components of Phi~. ``projection`` P (k x k') is the
    identity for a Jacobian (``linear_response``) and the column d loss / d statistic for a
    loss (``value_and_grad``): one sweep then differentiates one scalar. ``projection`` is an
    array (traced), so a new loss weight does not recompile.
    """

    statistic: AbstractStatistic
    projection: jax.Array

    def __call__(self, x, system):
        return ravel_pytree(self.statistic.evaluate(x, system))[0] @ self.projection

    def raw(self, x, system):
        """ravel(Phi(x)): the k unprojected components."""
        return ravel_pytree(self.statistic.evaluate(x, system))[0]

    @property
    def count(self) -> int:
        return self.projection.shape[1]

    def with_projection(self, projection) -> Components:
        return Components(self.statistic, jnp.asarray(projection, dtype=jnp.float64))


def output_structure(statistic: AbstractStatistic, x, system):
    """(statistic, k, unravel, out): the statistic with its observable traced
    (:func:`chaosgrad._functions.trace`), the number k of components of Phi(x), the
    map back to its pytree and its abstract output (traced on sample 0's system: per-sample
    data such as a target has its own shape)."""
    system = system.for_sample(0)
    state = jax.ShapeDtypeStruct(x.shape, x.dtype)
    observable = statistic.observable
    if isinstance(observable, ParametricObservable):
        function, out = trace(observable.function, state, system, name="the observable")
        observable = ParametricObservable(function)
    else:
        observable, out = trace(observable, state, name="the observable")
    for leaf in jax.tree_util.tree_leaves(out):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            got = f"dtype {dtype}" if dtype is not None else f"a {type(leaf).__name__}"
            raise TypeError(
                f"the observable must return real floating-point arrays (float64), got {got}"
            )
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float64), out)
    flat, unravel = ravel_pytree(zeros)
    if flat.size == 0:
        raise ValueError("the observable returns no components (an empty pytree)")
    return eqx.tree_at(lambda s: s.observable, statistic, observable), flat.size, unravel, out
