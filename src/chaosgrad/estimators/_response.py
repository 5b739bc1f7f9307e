"""The entry points: ``linear_response``, ``loss_estimate`` and ``value_and_grad``.

Each checks its inputs, binds the system and traces the observable (:func:`_prepare`), runs
the estimator (``AbstractEstimator.estimate``: resolve, one compiled ``terms`` program, the
host finish), and lays the result out as the user sees it (:func:`_finish`): the value in
the observable's structure, the Jacobian in ``jax.jacrev``'s layout, NaN/inf refused or
reported.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import (
    as_state,
    check_key,
    check_x64,
    first_nonfinite_step,
    is_traced,
    traceable,
)
from .._functions import TracedFunction, trace
from .._system import System, _run, bind, check_noise_setting, check_state_shape
from ..statistics import AbstractStatistic, Components, TimeAverage, output_structure
from ._base import DEFAULT_BURN_IN, AbstractEstimator, Estimate, _jacobian_tree
from ._parameters import Parameters


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
    steps = raw.info.steps
    if not _nonfinite(raw.grad) or not isinstance(steps, int):
        return
    burn_in = getattr(estimator, "burn_in", None)  # every estimator but Auto has one
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


class _Layout(eqx.Module):
    """How an estimator's flat results reach the user: the statistic's structure (its
    leaves' shapes, static) and whether the rows are a Jacobian's or a loss gradient's."""

    treedef: Any = eqx.field(static=True)
    shapes: tuple = eqx.field(static=True)
    count: int = eqx.field(static=True)
    jacobian: bool = eqx.field(static=True)

    def __init__(self, out_structure, count: int, jacobian: bool):
        leaves, self.treedef = jax.tree_util.tree_flatten(out_structure)
        self.shapes = tuple(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves)
        self.count, self.jacobian = count, jacobian

    @property
    def out(self):
        return jax.tree_util.tree_unflatten(self.treedef, self.shapes)

    def rows(self, tree):
        """Parameter pytree with a leading axis of k rows -> the user's layout: jacrev's
        (the statistic's structure outside) or, for a loss, its one row."""
        if self.jacobian:
            return _jacobian_tree(tree, self.out, self.count)
        return jax.tree_util.tree_map(lambda g: g[0], tree)


@eqx.filter_jit
def _laid_out(layout: _Layout, value, grad, stderr, extras):
    """The value in the observable's structure, and grad, stderr and the per-parameter
    diagnostics in ``layout``: one compiled program."""
    value = _jacobian_tree(value, layout.out, value.shape[0])
    return value, layout.rows(grad), layout.rows(stderr), [layout.rows(e) for e in extras]


def _finish(raw: Estimate, layout: _Layout, began: float, statistic: AbstractStatistic) -> Estimate:
    """The estimator's flat result in the user's layout (:func:`_laid_out`), its NaN/inf
    reported, the time taken recorded."""
    info = check_estimate_finite(raw, statistic, raw.info)
    names = [name for name in info.per_parameter if getattr(info, name) is not None]
    extras = [getattr(info, name) for name in names]
    value, grad, stderr, extras = _laid_out(
        layout, jnp.asarray(raw.value), raw.grad, raw.stderr, extras
    )
    updates = dict(zip(names, extras, strict=True))
    info = dataclasses.replace(info, seconds=time.perf_counter() - began, **updates)
    return Estimate(value, grad, stderr, info)


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
    estimator.check_statistic(statistic, system)
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
    components = Components(statistic, jnp.eye(count))
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
    check_x64()
    began = time.perf_counter()
    system, params, x0, count, out, components = _prepare(
        system, statistic, estimator, wrt, x0, key
    )
    with np.errstate(all="ignore"):  # NaN/inf are reported by _finish, in one message
        raw = estimator.estimate(system, components, params, x0, key, None)
    check_states_finite(raw, system, estimator, statistic, x0, key)
    return _finish(raw, _Layout(out, count, jacobian=True), began, statistic)


@eqx.filter_jit
def _loss_and_cotangent(loss: TracedFunction, structure, flat):
    """(loss(statistic), d loss / d statistic) at the flat value, compiled once per loss
    (traced: :func:`_bind_loss`)."""
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float64), structure)
    unravel = ravel_pytree(zeros)[1]

    def scalar(values):
        return jnp.asarray(loss(unravel(values)), dtype=jnp.float64)

    return jax.value_and_grad(scalar)(flat.astype(jnp.float64))


class LossCotangent(eqx.Module):
    """value -> d loss / d statistic as a (k, 1) projection: the cotangent a loss gives
    the estimator's gradient pass (a module, so a compiled estimator is keyed on the bound
    loss and the statistic's structure, not on a fresh closure)."""

    loss: TracedFunction
    shapes: tuple = eqx.field(static=True)
    treedef: Any = eqx.field(static=True)

    def __init__(self, loss: TracedFunction, structure):
        self.loss = loss
        leaves, self.treedef = jax.tree_util.tree_flatten(structure)
        self.shapes = tuple(leaves)

    def __call__(self, flat_value):
        structure = jax.tree_util.tree_unflatten(self.treedef, self.shapes)
        return _loss_and_cotangent(self.loss, structure, jnp.asarray(flat_value))[1][:, None]


def _bind_loss(loss: Callable, structure) -> TracedFunction:
    """``loss`` traced at the statistic's structure (a TracedFunction), its output checked: a
    real scalar (an integer loss has no gradient, as ``jax.grad`` refuses it)."""
    with traceable("the loss"):
        function, out = trace(loss, structure, name="the loss")
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
        raw = estimator.estimate(system, components, params, x0, key, cotangent)
    check_states_finite(raw, system, estimator, statistic, x0, key)
    estimate = _finish(raw, _Layout(out, count, jacobian=False), began, statistic)
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

    * Shadowing, FastAdjointResponse, Kernel (TimeAverage, WindowAverage), PathKernel
      (TimeAverage),
      Backprop, TruncatedBackprop, Composite, ES, PES, NRES, SPSA (the mean of the + and -
      runs): the value of the same orbit(s) or samples, computed in the
      forward pass before the backward one. For a quadratic loss the bias of the product is
      2 Cov(S-hat, g-hat) = O(1 / samples or 1 / orbit length); it vanishes when the per-sample
      gradient does not correlate with the value.
    * Kernel (Terminal) and PathKernel (Terminal, WindowAverage): the pilot run they
      already make (independent samples for PathKernel): unbiased for a quadratic loss.
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
