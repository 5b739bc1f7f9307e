"""The estimator framework: the result (``Estimate``), the method (``AbstractEstimator``)
and what its pure computation returns (``Terms``).

An estimator is an ``eqx.Module`` holding method settings only. It differentiates the k'
components of a projected observable ``Components`` (see statistics.py) and returns
per-parameter arrays with a leading axis of k'; the entry points (``_response.py``) turn
them into the Jacobian pytree (jax.jacrev's layout: the statistic's structure outside, the
parameters' inside, each leaf shaped statistic-shape + parameter-shape).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import (
    check_positive_int,
)
from .._system import System
from ..statistics import AbstractStatistic, Components, TimeAverage
from ._parameters import Parameters

DEFAULT_BURN_IN = 1000
"""Steps discarded before a TimeAverage's orbit, for every estimator (one default)."""


class AbstractInfo(eqx.Module):
    """Diagnostics of one estimate. Fields listed in ``per_parameter`` are shaped like grad.

    Args:
        method: the estimator's class name.
        seconds: wall time of the estimate, compilation included.
        warning: a sentence when the estimate should not be trusted, else None.
        steps: the steps of one sample or orbit, after its burn-in.
        auto: for ``Auto`` or ``"auto"`` settings, an ``AutoReport``: the settings chosen,
            why, and the pilot run's measurements; else None.
    """

    per_parameter: ClassVar[tuple[str, ...]] = ()
    method: str
    seconds: float
    warning: str | None
    steps: int
    auto: Any = eqx.field(default=None, kw_only=True)


class Estimate(eqx.Module):
    """The statistic, its Jacobian and the Jacobian's standard error.

    Args:
        value: the statistic, with the structure of the observable's output.
        grad: d statistic / d parameters (jax.jacrev layout: statistic structure outside,
            parameter structure inside, leaves shaped statistic-shape + parameter-shape).
            For ``value_and_grad`` it is d loss / d parameters, shaped like the parameters.
        stderr: the standard error of ``grad``, same structure. What it covers (sampling
            error) and what it does not (finite-horizon and method bias) is stated by each
            estimator.
        info: typed diagnostics (``BackpropInfo``, ``ShadowingInfo``, ...).
    """

    value: Any
    grad: Any
    stderr: Any
    info: Any


class Horizon(NamedTuple):
    """A statistic resolved against an estimator's settings: what one sample runs.

    kind: "average" or "terminal"; steps: steps of the differentiated rollout (the depth);
    burn_in: steps run before it, not differentiated (a TimeAverage's approach to the
    attractor); stationary: a TimeAverage (samples may be consecutive windows of one orbit
    when x0 is given); skip: leading steps of the rollout left out of the average (a
    WindowAverage's own burn-in, which is part of the finite-horizon problem and so is
    differentiated).
    """

    kind: str
    steps: int
    burn_in: int
    stationary: bool
    skip: int = 0


def resolve_horizon(statistic: AbstractStatistic, estimator) -> Horizon:
    """The window one sample runs: from the statistic, or for a TimeAverage from the
    ``steps`` and ``burn_in`` of the sampled estimator (Backprop, TruncatedBackprop,
    FiniteDifference and the zeroth-order ones; one meaning each, refused where they do not
    apply)."""
    name = type(estimator).__name__
    steps, burn_in = estimator.steps, estimator.burn_in
    if isinstance(statistic, TimeAverage):
        if steps is None:
            raise ValueError(
                f"{name} needs steps= for a TimeAverage: the length of each "
                "sample's orbit (the long-time limit is approximated by it)"
            )
        return Horizon("average", steps, DEFAULT_BURN_IN if burn_in is None else burn_in, True)
    if steps is not None:
        raise ValueError(
            f"{name}(steps={steps}) applies to a TimeAverage only: the "
            f"horizon of a {type(statistic).__name__} is its own steps"
        )
    if burn_in is not None:
        raise ValueError(
            f"{name}(burn_in={burn_in}) applies to a TimeAverage only: give "
            "WindowAverage(..., burn_in=...) instead"
        )
    total = statistic.horizon
    assert total is not None
    return Horizon(statistic.kind, total, 0, False, statistic.skip)


class Terms(eqx.Module):
    """What an estimator's pure computation returns: arrays only, so that it runs under
    ``jax.jit``, ``jax.vmap`` and inside the differentiable statistic.

    Args:
        value: (k,) the raw components' estimate (the statistic's value, flat).
        grad, stderr: parameter pytrees with a leading axis of k' (the projected components).
        finite: a boolean scalar, every state of the run finite (when False the host finish
            replays the run to name the step; the differentiable statistic raises).
        extras: the estimator's own arrays for its host finish (diagnostics), or None.
    """

    value: jax.Array
    grad: Any
    stderr: Any
    finite: jax.Array
    extras: Any = None


class AbstractEstimator(eqx.Module):
    """A way to estimate d(statistic)/d(parameters): method settings only.

    An estimator is two parts (design.md, "Anatomy of an estimator"):

    1. ``terms``: a pure computation (traceable: no host conversion, no value-dependent
       Python) returning :class:`Terms`. :func:`compiled_terms` compiles it as one program;
       the differentiable statistic (``chaosgrad.average``) calls it inside a user's trace.
    2. ``finish``: on the host, turns the terms into an :class:`Estimate` (standard errors
       laid out, warnings, typed ``info``), and names the step where a run stopped being
       finite.

    Settings given as ``"auto"`` are resolved before either, on the host, by ``resolve``
    (a pilot run); ``chaosgrad.configure`` exposes it. Subclasses set ``statistics`` (the
    statistic classes they support).
    """

    statistics: ClassVar[tuple[type, ...]] = ()
    auto_fields: ClassVar[tuple[str, ...]] = ()
    """The settings that may be given as ``"auto"`` (chosen by ``resolve``)."""
    own_defaults: ClassVar[bool] = False
    """True when the estimator chooses its unset settings itself (the command line then
    passes none of its own defaults)."""

    @property
    def checkpointed(self) -> bool:
        """True when the estimator runs in pieces saved from the host (``checkpoint=``),
        which cannot sit inside a user's trace."""
        return False

    def check_statistic(self, statistic: AbstractStatistic, system: System) -> None:
        """Refuse, in one line, a statistic this estimator does not support."""
        if not isinstance(statistic, self.statistics):
            supported = ", ".join(s.__name__ for s in self.statistics)
            raise ValueError(
                f"{type(self).__name__} supports {supported}; got {type(statistic).__name__}"
            )

    def auto_settings(self) -> tuple[str, ...]:
        """The settings of ``auto_fields`` given as ``"auto"``: what ``resolve`` replaces
        from a pilot run."""
        return tuple(name for name in self.auto_fields if getattr(self, name) == "auto")

    def resolve(
        self, system: System, components: Components, params: Parameters, x0, key
    ) -> tuple[AbstractEstimator, Any]:
        """(the estimator that runs, its ``AutoReport`` or None): ``"auto"`` settings
        replaced from a pilot run, on the host. Default: itself, no report."""
        return self, None

    @abc.abstractmethod
    def terms(
        self,
        system: System,
        components: Components,
        params: Parameters,
        x0,
        key,
        cotangent: Callable | None,
    ) -> Terms:
        """The pure computation: the statistic and the Jacobian of ``components`` w.r.t.
        ``params`` (leading axis k'), with what ``finish`` needs.

        ``cotangent`` (None, or a traceable value -> projection of shape (k, 1)) is applied
        to the estimator's value estimate before the gradient pass, so that a loss needs one
        sweep.
        """

    @abc.abstractmethod
    def finish(
        self, terms: Terms, system: System, components: Components, params: Parameters, x0, key
    ) -> Estimate:
        """On the host: the :class:`Estimate` (internal layout) from the computed terms."""

    def estimate(
        self,
        system: System,
        components: Components,
        params: Parameters,
        x0,
        key,
        cotangent: Callable | None,
    ) -> Estimate:
        """``resolve``, one compiled ``terms`` program, then ``finish``; the internal layout
        (value: the k raw components; grad and stderr: parameter pytrees with a leading axis
        of k')."""
        resolved, report = self.resolve(system, components, params, x0, key)
        if report is not None:
            raw = resolved.estimate(system, components, params, x0, key, cotangent)
            return Estimate(
                raw.value, raw.grad, raw.stderr, dataclasses.replace(raw.info, auto=report)
            )
        terms = compiled_terms(self, system, components, params, x0, key, cotangent)
        return self.finish(terms, system, components, params, x0, key)


@eqx.filter_jit
def compiled_terms(estimator, system, components, params, x0, key, cotangent) -> Terms:
    """An estimator's ``terms`` as one compiled program (the jit cache is the memo)."""
    return estimator.terms(system, components, params, x0, key, cotangent)


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
        lambda sq, m: jnp.maximum(sq / count - m**2, 0.0) * count / max(count - 1, 1), squares, mean
    )
    stderr = jax.tree_util.tree_map(
        lambda v: jnp.sqrt(v / count) if count > 1 else jnp.full_like(v, jnp.nan), variance
    )
    return mean, variance, stderr


def tree_norm(tree) -> jax.Array:
    """Euclidean norm of all leaves together."""
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def project(components: Components, cotangent: Callable | None, value) -> Components:
    """``components`` projected on ``cotangent(value)`` (unchanged when no cotangent)."""
    if cotangent is None:
        return components
    return components.with_projection(cotangent(jnp.asarray(value)))


def _jacobian_tree(flat_tree, out_structure, count: int):
    """Parameter pytree with a leading axis of k -> jacrev layout of the statistic."""
    out_leaves, out_def = jax.tree_util.tree_flatten(out_structure)
    pieces, offset = [], 0
    for leaf in out_leaves:
        size = int(np.prod(leaf.shape, dtype=int))
        pieces.append(
            jax.tree_util.tree_map(
                lambda g, o=offset, s=size, shape=leaf.shape: g[o : o + s].reshape(
                    shape + g.shape[1:]
                ),
                flat_tree,
            )
        )
        offset += size
    assert offset == count
    return jax.tree_util.tree_unflatten(out_def, pieces)


def check_sizes(estimator, *names: str) -> None:
    """Positive-int checks for the named settings (None allowed: 'from the statistic')."""
    for name in names:
        value = getattr(estimator, name)
        if value is not None:
            check_positive_int(
                value, name, allow_zero=name in ("burn_in", "unstable_dim", "window")
            )
