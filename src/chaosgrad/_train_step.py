"""One optax-style training step on the differentiable statistic: ``TrainStep``.

    S_i = the estimator's estimate of the statistic at theta_i (key k_i)
    w_i = d loss / d S at S_i
    g_i = w_i . dS/dtheta           (the estimator's Jacobian, one sweep with the cotangent w_i)
    updates, opt_state = optimizer.update(g_i, opt_state, theta_i)
    theta_{i+1} = theta_i + updates

is ``state, metrics = step(state, key)``: the computation of ``value_and_grad`` (the
estimator's compiled ``terms`` program with the loss's cotangent, so the gradient is
``value_and_grad``'s) followed by the optimizer's update, pure and traceable. Under
``eqx.filter_jit`` a step is one compiled program; the loop around it (keys, schedule,
logging, data) is the user's. ``chaosgrad.fit`` is such a loop, with checkpoints, a
wall-clock budget and progress.

Nothing in a step needs the host, so what does is done before: ``"auto"`` settings and
``Auto`` are resolved by :func:`chaosgrad.configure`, and ``init`` checks the system, the
statistic, the estimator and the loss once. A run that stops being finite does not raise
inside the step: ``metrics.finite`` says so (``linear_response`` with the same arguments
names the step where it happened).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._errors import as_state, check_x64
from ._functions import trace
from ._system import System
from .estimators._base import AbstractEstimator, _jacobian_tree, compiled_terms, tree_norm
from .estimators._parameters import Parameters, Selection
from .estimators._response import LossCotangent, _bind_loss, _loss_and_cotangent, _prepare
from .estimators.average import check_compilable
from .estimators.online import Online
from .statistics import AbstractStatistic


def _shape_key():
    """The key ``init`` traces the system's initial state with (shapes only: nothing is
    drawn); made when needed, not at import (a process must be able to join others with
    ``jax.distributed`` after importing chaosgrad)."""
    return jax.random.key(0)


class TrainState(eqx.Module):
    """What a training step carries from one iteration to the next.

    Args:
        system: the system at the current parameters theta_i.
        opt_state: the optimizer's state for the parameters selected by ``wrt``.
        iteration: how many steps have been taken (an int64 scalar array).
        carry: what the estimator carries from one step to the next: the particles of
            :class:`~chaosgrad.Online`; None for every other estimator.
    """

    system: System
    opt_state: Any
    iteration: jax.Array
    carry: Any = None


class TrainMetrics(eqx.Module):
    """What one step measured, at the parameters it started from (arrays; traced under jit).

    Args:
        loss: loss(S), S the estimator's estimate of the statistic.
        statistic: S, with the structure of the observable's output.
        grad_norm: ||g||_2, the Euclidean norm of g = d loss / d theta over every selected
            parameter.
        stderr_norm: the Euclidean norm of g's standard error (held w fixed, as in
            ``value_and_grad``).
        finite: a boolean scalar: every state of the estimator's run, S, the loss and g are
            finite. When False the update is not meaningful: stop, or chain
            ``optax.apply_if_finite`` to skip such updates.
    """

    loss: jax.Array
    statistic: Any
    grad_norm: jax.Array
    stderr_norm: jax.Array
    finite: jax.Array


def _strong(leaf):
    """A weak-typed floating-point array (``jnp.asarray(35.0)``) as a strong one of its
    dtype, others unchanged: a step returns strong arrays, and a state whose types change
    compiles its step again."""
    if isinstance(leaf, jax.Array) and leaf.weak_type and eqx.is_inexact_array(leaf):
        return jnp.asarray(leaf, dtype=leaf.dtype)
    return leaf


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


class TrainStep(eqx.Module):
    """One optimizer step on ``loss(statistic)``, its gradient from ``estimator``.

    ``step(state, key)`` computes, at the parameters theta of ``state.system``,

        S = the estimator's estimate of the statistic (key ``key``),
        g = d loss / d theta = w . dS/dtheta,   w = d loss / d S at S,

    with ``value_and_grad``'s computation (one sweep with the cotangent w; each estimator
    states where its w comes from and the bias that gives), then
    ``updates, opt_state = optimizer.update(g, opt_state, theta)``, theta + updates. It is
    pure: ``eqx.filter_jit(step)`` makes it one compiled program, and the loop, the keys
    (e.g. ``jax.random.fold_in(key, i)``), schedules and logging are the caller's:

        step = chaosgrad.TrainStep(loss, statistic, estimator, optax.adam(1e-2), wrt=wrt)
        state = step.init(system)
        run = eqx.filter_jit(step)
        for i in range(100):
            state, metrics = run(state, jax.random.fold_in(key, i))

    Under jit the loss, the observable and the system's step are traced once, when the
    step compiles (as for any jitted function). A run that stops being finite does not
    raise: ``metrics.finite`` is False.

    Args:
        loss: statistic -> scalar, e.g. ``lambda s: (s - target) ** 2``; the statistic has
            the structure of the observable's output (a scalar, vector or pytree).
        statistic: ``TimeAverage(phi)``, ``WindowAverage(phi, steps)`` or
            ``Terminal(phi, steps)``.
        estimator: any chaosgrad estimator supporting the statistic, with concrete settings:
            ``"auto"`` settings and ``Auto`` are refused (resolve them with
            :func:`chaosgrad.configure` first).
        optimizer: an Optax transformation (chain ``optax.clip_by_global_norm`` in front of
            it to clip).
        wrt: which parameters are trained: None (every floating-point array of the system)
            or a selector ``system -> subtree``, as ``eqx.tree_at``'s ``where``.
        x0: the starting state(s), as for ``linear_response`` (default: drawn from the
            system's ``initial_state`` with the step's key).
    """

    loss: Callable
    statistic: AbstractStatistic
    estimator: AbstractEstimator
    optimizer: optax.GradientTransformation
    wrt: Callable | None
    x0: Any

    def __init__(
        self,
        loss: Callable,
        statistic: AbstractStatistic,
        estimator: AbstractEstimator,
        optimizer: optax.GradientTransformation,
        *,
        wrt: Callable | None = None,
        x0=None,
    ):
        if not callable(loss):
            raise TypeError("loss must be a function statistic -> scalar")
        if not isinstance(statistic, AbstractStatistic):
            raise TypeError(
                "statistic must be TimeAverage(phi), WindowAverage(phi, steps) or "
                f"Terminal(phi, steps), got {statistic!r:.60}"
            )
        check_compilable(
            estimator,
            "estimator",
            "a compiled training step",
            "leave checkpoint out (fit(checkpoint=DIR) checkpoints the training)",
        )
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(
                "optimizer must be an Optax transformation such as optax.adam(1e-2), got "
                f"{optimizer!r:.60}"
            )
        if wrt is not None and not callable(wrt):
            raise TypeError(f"wrt must be None or a function system -> parameters, got {wrt!r}")
        self.loss = loss
        self.statistic = statistic
        self.estimator = estimator
        self.optimizer = optimizer
        self.wrt = wrt
        self.x0 = None if x0 is None else as_state(x0, "x0")

    def init(self, system: System, key=None) -> TrainState:
        """The state at ``system``'s parameters: the optimizer's initial state, iteration 0,
        and for :class:`~chaosgrad.Online` its particles, staggered along their episodes
        (drawn from ``key``, which it needs; other estimators ignore it).

        On the host, once: the checks ``linear_response`` makes (the system, the statistic
        and the estimator's support of it, ``wrt``, ``x0``, the loss's output), so that a
        step only computes. Weak-typed arrays of the system are made strong float64 (a step
        returns strong arrays, so the second step would otherwise compile again).
        """
        check_x64()
        if not isinstance(system, System):
            raise TypeError(f"system must be a chaosgrad System, got {type(system).__name__}")
        online = isinstance(self.estimator, Online)
        if online and key is None:
            raise ValueError(
                "Online's particles draw their starts, noise and perturbations from a key: "
                "step.init(system, key=jax.random.key(0))"
            )
        bound, params, x0, _, out, components = _prepare(
            system, self.statistic, self.estimator, self.wrt, self.x0, _shape_key()
        )
        self.estimator.resolve(bound, components, params, x0, _shape_key())  # its host checks
        _bind_loss(self.loss, out)
        system = jax.tree_util.tree_map(_strong, system)
        values = Parameters.of(system, self.wrt).values
        carry = None
        if online:
            assert isinstance(self.estimator, Online)
            carry = _start_particles(self.estimator, system, self.statistic, self.wrt, x0, key)
        return TrainState(system, self.optimizer.init(values), jnp.zeros((), jnp.int64), carry)

    def gradient(self, state: TrainState, key) -> tuple[Any, TrainMetrics]:
        """(g = d loss / d theta shaped like the parameters ``wrt`` selects, the metrics)
        at ``state.system``, without the update: for a loop that changes g before applying
        it (a regulariser's gradient added, a weight) with :meth:`apply`. An estimator
        that carries state from step to step (:class:`~chaosgrad.Online`) needs
        :meth:`advance`, which returns it."""
        if isinstance(self.estimator, Online):
            raise ValueError(
                "Online carries its particles from step to step: use "
                "grads, metrics, state = step.advance(state, key), which returns them"
            )
        grads, metrics, _ = self.advance(state, key)
        return grads, metrics

    def advance(self, state: TrainState, key) -> tuple[Any, TrainMetrics, TrainState]:
        """(g, the metrics, ``state`` with the estimator's carry advanced): :meth:`gradient`
        for every estimator, :class:`~chaosgrad.Online`'s particles run through their next
        truncation. The parameters are not updated (:meth:`apply` does that)."""
        check_x64()
        system, params, x0, count, out, components = _prepare(
            state.system, self.statistic, self.estimator, self.wrt, self.x0, key
        )
        loss = _bind_loss(self.loss, out)
        cotangent = LossCotangent(loss, out)
        carry = state.carry
        if isinstance(self.estimator, Online):
            terms, carry = self.estimator.step(
                carry, system, components, params, x0, key, cotangent
            )
        else:
            terms = compiled_terms(self.estimator, system, components, params, x0, key, cotangent)
        grads = jax.tree_util.tree_map(lambda g: g[0], terms.grad)
        stderr = jax.tree_util.tree_map(lambda g: g[0], terms.stderr)
        loss_value = _loss_and_cotangent(loss, out, terms.value)[0]
        finite = terms.finite & jnp.isfinite(loss_value) & _all_finite((terms.value, grads))
        metrics = TrainMetrics(
            loss=loss_value,
            statistic=_jacobian_tree(terms.value, out, count),
            grad_norm=tree_norm(grads),
            stderr_norm=tree_norm(stderr),
            finite=finite,
        )
        return grads, metrics, dataclasses.replace(state, carry=carry)

    def apply(self, state: TrainState, grads, value=None) -> TrainState:
        """The optimizer's update with the gradient ``grads`` (shaped like the parameters):
        theta + updates, the new optimizer state, the iteration count plus one. ``value``,
        the loss ``grads`` is the gradient of, reaches an optimizer that takes it
        (``optax.GradientTransformationExtraArgs``, e.g. ``optax.polyak_sgd``) as
        ``update(..., value=value)``."""
        params = Parameters.of(state.system, self.wrt)
        extra = {} if value is None else {"value": value}
        if extra and not isinstance(self.optimizer, optax.GradientTransformationExtraArgs):
            extra = {}
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params.values, **extra)
        values = optax.apply_updates(params.values, updates)
        return TrainState(
            params.substitute(state.system, values), opt_state, state.iteration + 1, state.carry
        )

    def __call__(self, state: TrainState, key) -> tuple[TrainState, TrainMetrics]:
        """One step: :meth:`advance` at ``state`` with ``key``, then :meth:`apply`."""
        grads, metrics, state = self.advance(state, key)
        return self.apply(state, grads, metrics.loss), metrics


class _TakesValue(eqx.Module):
    """A traced ``update(grads, state, params, value)`` called as an Optax update that
    takes the loss as ``value=``; a module, so that a compiled step finds the program of an
    equal one again (a closure would be new at every ``keyed``)."""

    update: Any

    def __call__(self, grads, state, params=None, *, value, **extra):
        return self.update(grads, state, params, value)


@eqx.filter_jit
def _start_particles(estimator: Online, system, statistic, wrt, x0, key):
    """Online's particles before the first step, as one compiled program."""
    system, params, x0, _, _, components = _prepare(system, statistic, estimator, wrt, x0, key)
    return estimator.start(system, components, params, x0, key)


def keyed(step: TrainStep, system: System) -> TrainStep:
    """``step`` with its user functions held by what they compute, so that a compiled
    program of it is found again for a fresh lambda of the same code, and the values they
    read reach it as inputs (:mod:`chaosgrad._functions`): the loss and the observable
    traced at the statistic's structure, the optimizer's init and update at the
    parameters', ``wrt`` as the leaves it selects in ``system``."""
    _, params, _, _, out, components = _prepare(
        system, step.statistic, step.estimator, step.wrt, step.x0, _shape_key()
    )
    wrt = None if step.wrt is None else Selection.of(system, step.wrt)
    init, opt_state = trace(step.optimizer.init, params.values, name="the optimizer's init")
    if isinstance(step.optimizer, optax.GradientTransformationExtraArgs):
        update, _ = trace(
            lambda g, s, p, value: step.optimizer.update(g, s, p, value=value),  # pyright: ignore[reportCallIssue]
            params.values,
            opt_state,
            params.values,
            jnp.zeros(()),
            name="the optimizer's update",
        )
        optimizer = optax.GradientTransformationExtraArgs(init, _TakesValue(update))  # pyright: ignore[reportArgumentType]
    else:
        update, _ = trace(
            step.optimizer.update,
            params.values,
            opt_state,
            params.values,
            name="the optimizer's update",
        )
        optimizer = optax.GradientTransformation(init, update)  # pyright: ignore[reportArgumentType]
    return dataclasses.replace(
        step,
        loss=_bind_loss(step.loss, out),
        statistic=components.statistic,
        optimizer=optimizer,
        wrt=wrt,
    )
