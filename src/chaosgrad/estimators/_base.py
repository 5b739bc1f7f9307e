"""The estimator framework: the problem (a statistic), the method (an estimator), the result.

    response = linear_response(system, statistic, estimator, wrt=..., key=...)
    loss, grad, stderr = value_and_grad(system, loss, statistic, estimator, wrt=..., key=...)

An estimator is an ``eqx.Module`` holding method settings only and implementing
``estimate``; the statistic (``TimeAverage``, ``WindowAverage``, ``Terminal``) says what is
differentiated. Internally every estimator differentiates the k' components of a projected
observable ``Components`` (see statistics.py) and returns per-parameter arrays with a
leading axis of k'; this module turns them into the Jacobian pytree (jax.jacrev's layout:
the statistic's structure outside, the parameters' inside, each leaf shaped
statistic-shape + parameter-shape).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import (
    as_state,
    check_float64,
    check_key,
    check_positive_int,
    first_line,
    first_nonfinite_step,
    is_traced,
    traceable,
)
from .._functions import StaticFunction, bound
from .._system import System, _run, bind, check_noise_setting, check_state_shape
from ..parallel import to_device
from ..statistics import AbstractStatistic, Components, TimeAverage, output_structure

DEFAULT_BURN_IN = 1000
"""Steps discarded before a TimeAverage's orbit, for every estimator (one default)."""


class AbstractInfo(eqx.Module):
    """Diagnostics of one estimate. Fields listed in ``per_parameter`` are shaped like grad.

    Args:
        method: the estimator's class name.
        seconds: wall time of the estimate, compilation included.
        warning: a sentence when the estimate should not be trusted, else None.
        auto: for ``Auto`` or ``"auto"`` settings, an ``AutoReport``: the settings chosen,
            why, and the pilot run's measurements; else None.
    """

    per_parameter: ClassVar[tuple[str, ...]] = ()
    method: str
    seconds: float
    warning: str | None
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


class _Position:
    """A stand-in for the system's leaf at ``index``, to see which leaves ``wrt`` selects."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _kind(leaf) -> str:
    """How an error names a selected leaf that is not a parameter."""
    if eqx.is_array(leaf):
        return f"a {leaf.dtype} array"
    return f"a Python {type(leaf).__name__}"


def _select(system: System, wrt: Callable) -> tuple[Any, tuple[int, ...]]:
    """(the selected subtree with non-parameter leaves None, the selected parameters'
    positions among ``system``'s leaves). ``wrt`` is called on a copy of the system whose
    leaves are :class:`_Position` markers, as ``eqx.tree_at`` finds its nodes: the selection
    is read once, on the host, and a compiled program never calls ``wrt``."""
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(system)
    names = [jax.tree_util.keystr(path) for path, _ in paths_and_leaves]
    leaves = [leaf for _, leaf in paths_and_leaves]
    markers = treedef.unflatten([_Position(i) for i in range(len(leaves))])
    try:
        chosen = wrt(markers)
    except Exception as exc:  # noqa: BLE001 - any failure means wrt computes, not selects
        raise TypeError(
            "wrt must select fields of the system, as eqx.tree_at's where does (e.g. "
            "wrt=lambda s: s.rho or lambda s: (s.rho, s.sigma)), not compute new values "
            f"from them ({first_line(exc)})"
        ) from None
    picked = jax.tree_util.tree_leaves(chosen)
    strays = [leaf for leaf in picked if not isinstance(leaf, _Position)]
    if strays:
        raise TypeError(
            f"wrt must select fields of the system (e.g. wrt=lambda s: s.rho), but it "
            f"returned {_kind(strays[0])} ({strays[0]!r:.40}) that is not one of them"
        )
    seen: dict[int, int] = {}
    for marker in picked:
        seen[marker.index] = seen.get(marker.index, 0) + 1
    twice = [names[i] for i, n in seen.items() if n > 1]
    if twice:
        raise ValueError(
            f"wrt selects s{twice[0]} more than once: select each parameter once (a "
            "repeated parameter would get its gradient in one copy and 0 in the others)"
        )
    values = jax.tree_util.tree_map(
        lambda marker: leaves[marker.index] if eqx.is_inexact_array(leaves[marker.index]) else None,
        chosen,
    )
    positions = tuple(m.index for m in picked if eqx.is_inexact_array(leaves[m.index]))
    if not positions:
        shown = "; ".join(f"s{names[m.index]} is {_kind(leaves[m.index])}" for m in picked[:3])
        raise ValueError(
            f"wrt selects no parameters ({shown or 'an empty selection'}): it must select "
            "floating-point arrays of the system; store a parameter as "
            "jnp.asarray(value, dtype=jnp.float64)"
        )
    return values, positions


def _every_parameter(system: System) -> tuple[Any, tuple[int, ...]]:
    """``wrt=None``: every inexact-array leaf but the system's data (an input sequence)."""
    leaves, treedef = jax.tree_util.tree_flatten(system)
    markers = treedef.unflatten([_Position(i) for i in range(len(leaves))])
    data = {
        marker.index
        for name in getattr(system, "data_fields", ())
        for marker in jax.tree_util.tree_leaves(getattr(markers, name))
    }
    chosen = [i for i, leaf in enumerate(leaves) if eqx.is_inexact_array(leaf) and i not in data]
    if not chosen:
        raise ValueError(
            "wrt selects no parameters: the system has no floating-point array fields; "
            "store them as jnp.asarray(value, dtype=jnp.float64)"
        )
    kept = set(chosen)
    values = treedef.unflatten([leaf if i in kept else None for i, leaf in enumerate(leaves)])
    return values, tuple(chosen)


class Parameters(eqx.Module):
    """The parameters being differentiated, and how to put new values back into a system.

    ``wrt`` is None (every inexact-array field) or a selector ``system -> subtree`` as in
    ``eqx.tree_at`` (``lambda s: s.rho``, ``lambda s: (s.rho, s.sigma)``,
    ``lambda s: s.args`` for an ``eqx.nn.MLP``). The subtree may hold non-array leaves (an
    activation function): only its inexact arrays are parameters, as ``eqx.filter_grad``
    does. The selection is kept as the selected leaves' positions (``positions``), read on
    the host at every call: a compiled program holds no selector, so a fresh lambda does
    not recompile and a selector that reads a changed value is never stale.
    """

    values: Any
    positions: tuple[int, ...] = eqx.field(static=True)
    layer_fields: tuple[str | None, ...] | None = eqx.field(static=True, default=None)

    @classmethod
    def of(cls, system: System, wrt: Callable | None) -> Parameters:
        if wrt is not None and not callable(wrt):
            raise TypeError(f"wrt must be None or a function system -> parameters, got {wrt!r}")
        if wrt is None:
            values, positions = _every_parameter(system)
        else:
            values, positions = _select(system, wrt)
        check_float64(values, "parameters selected by wrt")
        # which leaves are a layered field of the system (stacked per layer): by identity
        stacks = {id(getattr(system, name)): name for name in getattr(system, "layered", ())}
        fields = tuple(stacks.get(id(leaf)) for leaf in jax.tree_util.tree_leaves(values))
        return cls(values, positions, fields if any(fields) else None)

    def substitute(self, system: System, values) -> System:
        """``system`` with the selected parameters replaced by ``values`` (by position: the
        system's other leaves and its static fields, ``reads`` included, stay its own)."""
        leaves, treedef = jax.tree_util.tree_flatten(system)
        for position, value in zip(self.positions, jax.tree_util.tree_leaves(values), strict=True):
            leaves[position] = value
        return treedef.unflatten(leaves)

    @property
    def size(self) -> int:
        """How many numbers the parameters hold (a property: an equinox method is bound
        afresh at every access, ~35 us on the host)."""
        return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(self.values))

    def zeros(self, leading: tuple[int, ...] = ()):
        """Zeros shaped like the parameters, with extra leading axes."""
        return jax.tree_util.tree_map(lambda v: jnp.zeros(leading + v.shape, v.dtype), self.values)


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


def resolve_horizon(statistic: AbstractStatistic, estimator, steps_name: str = "steps") -> Horizon:
    """The window one sample runs: from the statistic, or for a TimeAverage from the
    estimator's ``steps`` and ``burn_in`` (one meaning each, refused where they do not apply)."""
    name = type(estimator).__name__
    steps = getattr(estimator, steps_name, None)
    burn_in = getattr(estimator, "burn_in", None)
    if isinstance(statistic, TimeAverage):
        if steps is None:
            raise ValueError(
                f"{name} needs {steps_name}= for a TimeAverage: the length of each "
                "sample's orbit (the long-time limit is approximated by it)"
            )
        return Horizon("average", steps, DEFAULT_BURN_IN if burn_in is None else burn_in, True)
    if steps is not None:
        raise ValueError(
            f"{name}({steps_name}={steps}) applies to a TimeAverage only: the "
            f"horizon of a {type(statistic).__name__} is its own steps"
        )
    if burn_in is not None:
        raise ValueError(
            f"{name}(burn_in={burn_in}) applies to a TimeAverage only: give "
            "WindowAverage(..., burn_in=...) instead"
        )
    total = statistic.horizon
    assert total is not None
    return Horizon(statistic.kind, total, 0, False, getattr(statistic, "burn_in", 0))


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

    def check_statistic(self, statistic: AbstractStatistic, system: System) -> None:
        """Refuse, in one line, a statistic this estimator does not support."""
        if not isinstance(statistic, self.statistics):
            supported = ", ".join(s.__name__ for s in self.statistics)
            raise ValueError(
                f"{type(self).__name__} supports {supported}; got {type(statistic).__name__}"
            )

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


def describe_statistic(statistic: AbstractStatistic) -> str:
    """``TimeAverage(z)``: the statistic and its observable's name (when it has one)."""
    function = getattr(statistic.observable, "function", statistic.observable)
    name = getattr(function, "__name__", None)
    inner = " ".join(name.split()) if name and name != "<lambda>" else "observable"
    return f"{type(statistic).__name__}({inner})"


def _nonfinite(tree) -> int | None:
    """How many entries of a concrete pytree are NaN or inf (None when traced)."""
    count = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        if is_traced(leaf):
            return None
        values = np.asarray(leaf)
        if np.issubdtype(values.dtype, np.inexact):
            count += int(np.sum(~np.isfinite(values)))
    return count


def check_estimate_finite(raw: Estimate, statistic: AbstractStatistic, info):
    """Refuse a NaN/inf statistic (FloatingPointError naming it); a NaN/inf gradient with a
    finite statistic (an overflowing explosion) is returned with a warning in ``info``."""
    bad = _nonfinite(raw.value)
    if bad:
        shown = np.asarray(raw.value).ravel()
        sample = ", ".join(f"{v:g}" for v in shown[:3]) + (", ..." if shown.size > 3 else "")
        raise FloatingPointError(
            f"the statistic {describe_statistic(statistic)} is not finite ({sample}): the "
            "observable is NaN or inf on the trajectory (log or sqrt of a negative number, a "
            "division by zero, an overflow); change the observable or the parameters"
        )
    bad = _nonfinite(raw.grad)
    if bad:
        note = (
            f"{bad} gradient entries are NaN or inf although the statistic "
            f"{describe_statistic(statistic)} is finite: the derivative overflowed or the "
            "observable is not differentiable on the trajectory"
        )
        warning = note if info.warning is None else f"{info.warning}; {note}"
        info = dataclasses.replace(info, warning=warning)
    return info


def check_states_finite(raw: Estimate, system: System, estimator, statistic, x0, key) -> None:
    """Refuse a NaN/inf gradient whose cause is the trajectory itself: states that overflow
    behind a bounded observable (``tanh`` of an overflowing state is 1, so the statistic
    looks fine). The orbit of the estimate's length (burn-in included) is rerun once, from
    the first start, only when the gradient is not finite; the error names the first step
    whose state is NaN or inf. A finite trajectory with an overflowing derivative (an
    exploding Jacobian product) keeps the warning of :func:`check_estimate_finite`."""
    steps = getattr(raw.info, "steps", None)
    if not _nonfinite(raw.grad) or not isinstance(steps, int):
        return
    burn_in = getattr(estimator, "burn_in", None)
    if not isinstance(burn_in, int):
        burn_in = DEFAULT_BURN_IN if isinstance(statistic, TimeAverage) else 0
    total = burn_in + steps
    if system.horizon is not None:
        total = min(total, system.horizon)
    init_key, noise_key = jax.random.split(key)
    start = system.initial_state(init_key) if x0 is None else (x0[0] if x0.ndim == 2 else x0)
    _, path = _run(system, start, noise_key, 0, total)
    bad = first_nonfinite_step(path)
    if bad is not None:
        raise FloatingPointError(
            f"the states of {type(system).__name__} stopped being finite at step {bad + 1} "
            f"(of {total}, burn-in included), although the statistic "
            f"{describe_statistic(statistic)} is finite: the system diverges with these "
            "parameters; change them, dt or the start"
        )


def _finish(
    raw: Estimate,
    layout: Callable,
    began: float,
    statistic: AbstractStatistic,
    out_structure,
) -> Estimate:
    """The estimator's flat result in the user's layout: value in the observable's
    structure ``out_structure``, grad, stderr and the per-parameter diagnostics through
    ``layout``. A concrete result is laid out on the host and moved to the device in one
    transfer (an eager slice or reshape costs tens of microseconds, which a small warm
    estimate of a few milliseconds would spend several times over)."""
    info = check_estimate_finite(raw, statistic, raw.info)
    names = [name for name in info.per_parameter if getattr(info, name) is not None]
    parts = (raw.value, raw.grad, raw.stderr, [getattr(info, name) for name in names])
    concrete = not any(is_traced(leaf) for leaf in jax.tree_util.tree_leaves(parts))
    if concrete:
        parts = jax.tree_util.tree_map(_to_host, parts)
    value, grad, stderr, extras = parts
    value = _jacobian_tree(value, out_structure, np.shape(value)[0])  # the flat value unravelled
    laid = (value, layout(grad), layout(stderr), [layout(extra) for extra in extras])
    if concrete:
        leaves, treedef = jax.tree_util.tree_flatten(laid)
        moved = iter(to_device([leaf for leaf in leaves if isinstance(leaf, np.ndarray)]))
        laid = treedef.unflatten(
            [next(moved) if isinstance(leaf, np.ndarray) else leaf for leaf in leaves]
        )
    value, grad, stderr, extras = laid
    updates = dict(zip(names, extras, strict=True))
    info = dataclasses.replace(info, seconds=time.perf_counter() - began, **updates)
    return Estimate(value, grad, stderr, info)


def _to_host(leaf):
    return np.asarray(leaf) if isinstance(leaf, jax.Array) else leaf


def _weak(leaf) -> bool:
    """A weak-typed inexact array (``jnp.asarray(28.0)``)."""
    return eqx.is_inexact_array(leaf) and getattr(leaf, "weak_type", False)


def _strong(leaf):
    """A weak-typed inexact array as a strong one of its dtype (others unchanged)."""
    return jnp.asarray(leaf, dtype=leaf.dtype) if _weak(leaf) else leaf


def _prepare(system, statistic, estimator, wrt, x0, key):
    if not isinstance(system, System):
        raise TypeError(f"system must be a chaosgrad System, got {type(system).__name__}")
    if not isinstance(statistic, AbstractStatistic):
        raise TypeError(
            f"statistic must be TimeAverage(phi), WindowAverage(phi, steps) or "
            f"Terminal(phi, steps), got {statistic!r}"
        )
    if not isinstance(estimator, AbstractEstimator):
        raise TypeError(f"estimator must be a chaosgrad estimator, got {estimator!r}")
    if key is None:
        raise ValueError("key is required: linear_response(..., key=jax.random.key(0))")
    check_key(key)
    check_noise_setting(system)
    # strong float64 everywhere: a weak-typed scalar (jnp.asarray(28.0)) would key a new
    # compilation although the values are all that changed (only weak leaves are converted:
    # a conversion is a device transfer, ~50 us each)
    if any(_weak(leaf) for leaf in jax.tree_util.tree_leaves(system)):
        system = jax.tree_util.tree_map(_strong, system)  # rebuilt only when it must be
    # called through the class: equinox binds a method afresh at every access (~35 us)
    type(estimator).check_statistic(estimator, statistic, system)
    params = Parameters.of(system, wrt)
    if x0 is not None:
        x0 = as_state(x0, "x0")
        probe = x0[0] if x0.ndim == 2 else x0  # (orbits, dim): one start per orbit
    else:
        probe = jax.eval_shape(system.initial_state, key)
    check_state_shape(system, probe)
    system = bind(system, probe)
    with traceable("the observable"):
        statistic, count, _, out = output_structure(statistic, probe, system)
    components = Components(statistic, np.eye(count))
    return system, params, x0, count, out, components


def linear_response(
    system: System,
    statistic: AbstractStatistic,
    estimator: AbstractEstimator,
    *,
    wrt: Callable | None = None,
    x0=None,
    key,
) -> Estimate:
    """d(statistic)/d(parameters) of ``system`` by ``estimator``: the Jacobian.

    Args:
        system: any chaosgrad System (a built-in, a ``Flow``/``Map`` around any Equinox model).
        statistic: ``TimeAverage(phi)``, ``WindowAverage(phi, steps)`` or
            ``Terminal(phi, steps)``; ``phi`` may return a scalar, vector or pytree.
        estimator: e.g. ``Backprop(samples=8)``, ``Shadowing(unstable_dim=2, ...)``.
        wrt: which parameters (default: every inexact-array field of ``system``).
        x0: starting state (default: drawn from ``system.initial_state``).
        key: PRNG key for initial states and noise.

    A k-component statistic costs one sweep with k cotangents (vmapped) for the adjoint
    estimators, not k runs. Compilation is keyed on code, not on identity: a second call
    with new parameter values, a new key or a fresh lambda of the same code is warm.
    """
    began = time.perf_counter()
    system, params, x0, count, out, components = _prepare(
        system, statistic, estimator, wrt, x0, key
    )
    with np.errstate(all="ignore"):  # NaN/inf are reported by _finish, in one message
        raw = type(estimator).estimate(estimator, system, components, params, x0, key, None)
    check_states_finite(raw, system, estimator, statistic, x0, key)
    return _finish(raw, lambda tree: _jacobian_tree(tree, out, count), began, statistic, out)


@eqx.filter_jit
def _loss_and_cotangent(loss: StaticFunction, structure, flat):
    """(loss(statistic), d loss / d statistic) at the flat value, compiled once per loss
    (keyed on what it reads: :func:`_bind_loss`)."""
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float64), structure)
    unravel = ravel_pytree(zeros)[1]

    def scalar(values):
        return jnp.asarray(loss(unravel(values)), dtype=jnp.float64)

    return jax.value_and_grad(scalar)(flat.astype(jnp.float64))


class LossCotangent(eqx.Module):
    """value -> d loss / d statistic as a (k, 1) projection: the cotangent a loss gives
    the estimator's gradient pass (a module, so a compiled estimator is keyed on the bound
    loss and the statistic's structure, not on a fresh closure)."""

    loss: StaticFunction = eqx.field(static=True)
    shapes: tuple = eqx.field(static=True)
    treedef: Any = eqx.field(static=True)

    def __init__(self, loss: StaticFunction, structure):
        self.loss = loss
        leaves, self.treedef = jax.tree_util.tree_flatten(structure)
        self.shapes = tuple(leaves)

    def __call__(self, flat_value):
        structure = jax.tree_util.tree_unflatten(self.treedef, self.shapes)
        return _loss_and_cotangent(self.loss, structure, jnp.asarray(flat_value))[1][:, None]


def _bind_loss(loss: Callable, structure) -> StaticFunction:
    """``loss`` keyed on what it reads at the statistic's structure, its output checked: a
    real scalar (an integer loss has no gradient, as ``jax.grad`` refuses it)."""
    with traceable("the loss"):
        function, out = bound(loss, structure)
    dtype = getattr(out, "dtype", None)
    if dtype is None:
        got = "None (does the function end with a return?)" if out is None else repr(out)
        raise TypeError(f"loss must return a scalar float, got {got:.60}")
    if getattr(out, "shape", ()) != ():
        raise ValueError(f"loss must return a scalar, got shape {out.shape}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"loss returns dtype {dtype}: it must be a real float (an integer-valued loss has "
            "no gradient; compute it in float64, e.g. without round or //)"
        )
    return function


def loss_estimate(
    system: System,
    loss: Callable,
    statistic: AbstractStatistic,
    estimator: AbstractEstimator,
    *,
    wrt: Callable | None = None,
    x0=None,
    key,
) -> tuple[jax.Array, Estimate]:
    """(loss value, Estimate of d loss/d parameters): what ``value_and_grad`` and ``fit`` use."""
    if not callable(loss):
        raise TypeError("loss must be a function statistic -> scalar")
    began = time.perf_counter()
    system, params, x0, count, out, components = _prepare(
        system, statistic, estimator, wrt, x0, key
    )

    loss_function = _bind_loss(loss, out)
    cotangent = LossCotangent(loss_function, out)
    with np.errstate(all="ignore"):  # NaN/inf are reported by _finish, in one message
        raw = type(estimator).estimate(estimator, system, components, params, x0, key, cotangent)
    check_states_finite(raw, system, estimator, statistic, x0, key)
    estimate = _finish(
        raw,
        lambda tree: jax.tree_util.tree_map(lambda g: g[0], tree),
        began,
        statistic,
        out,
    )
    return _loss_and_cotangent(loss_function, out, jnp.asarray(raw.value))[0], estimate


def value_and_grad(
    system: System,
    loss: Callable,
    statistic: AbstractStatistic,
    estimator: AbstractEstimator,
    *,
    wrt: Callable | None = None,
    x0=None,
    key,
):
    """(loss(statistic), d loss/d parameters, its standard error) with ONE gradient sweep.

    The cotangent w = d loss / d statistic weights the observable: the estimator
    differentiates the scalar w . Phi(x), so a loss of k statistics costs one sweep, not k.
    Where w comes from, and the bias that gives, is stated by each estimator:

    * Shadowing, FastAdjointResponse, Kernel (TimeAverage), PathKernel (TimeAverage),
      Backprop, TruncatedBackprop: the value of the same orbit(s) or samples, computed in the
      forward pass before the backward one. For a quadratic loss the bias of the product is
      2 Cov(S-hat, g-hat) = O(1 / samples or 1 / orbit length); it vanishes when the per-sample
      gradient does not correlate with the value.
    * Kernel and PathKernel (Terminal, WindowAverage): the pilot run they already make
      (independent samples for PathKernel): unbiased for a quadratic loss.
    * FiniteDifference: the full Jacobian contracted with w at the central value.

    Returns:
        (loss value, grad shaped like the parameters, stderr shaped like grad). The stderr
        is that of w . grad with w held fixed: it leaves out the sampling error of w itself,
        about |d2 loss| |d statistic / d theta| SE(statistic).
    """
    value, estimate = loss_estimate(system, loss, statistic, estimator, wrt=wrt, x0=x0, key=key)
    if not is_traced(value) and not np.isfinite(np.asarray(value)):
        raise FloatingPointError(
            f"the loss is {float(value)} at the statistic {describe_statistic(statistic)} = "
            f"{_shown(estimate.value)}: change the loss (a log or sqrt of a negative number, "
            "a division by zero) or the parameters"
        )
    return value, estimate.grad, estimate.stderr


def _shown(tree) -> str:
    """The first values of a pytree, for a message."""
    values = np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])
    return ", ".join(f"{v:g}" for v in values[:3]) + (", ..." if values.size > 3 else "")


def check_sizes(estimator, *names: str) -> None:
    """Positive-int checks for the named settings (None allowed: 'from the statistic')."""
    for name in names:
        value = getattr(estimator, name)
        if value is not None:
            check_positive_int(
                value, name, allow_zero=name in ("burn_in", "unstable_dim", "window")
            )
