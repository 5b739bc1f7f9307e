"""Training with any estimator: ``fit``, a loop over :class:`~chaosgrad.TrainStep`.

    loss_i, grad_i = value_and_grad(system_i, loss, statistic, estimator, key=key_i)
    updates, state = optimizer.update(grad_i, state, params);  params += updates

with key_i = fold_in(key, i). Each iteration is one compiled program (or ``scan`` of them,
one ``lax.scan``): the step's gradient (``TrainStep.gradient``: the computation of
``value_and_grad``), the regulariser's, and the step's update (``TrainStep.apply``). The
cotangent d loss / d statistic weights the observable inside the estimator (one adjoint
sweep for a loss of many statistics); where it comes from and the bias that gives are
stated in ``value_and_grad``. The program is keyed on what the loss, observable, selection
and optimizer compute, so every iteration after the first runs warm, and so does a second
``fit`` with fresh lambdas of the same code. An estimator with ``"auto"`` settings, or
``Auto``, is resolved once, before the first iteration, by :func:`~chaosgrad.configure` at
the starting system and ``key`` (a resumed run resolves the same way).

What needs the host stays in the loop: the schedule, checkpoints, the budget, progress, the
callback, and the failure messages. When an iteration's estimate is not finite (its
``TrainMetrics.finite``), ``linear_response``'s host checks run once at that iteration to
name the step where the run stopped being finite.

A ``regularizer`` (a function of the system, e.g. the gradient-flossing
:func:`~chaosgrad.lyapunov.lyapunov_penalty`) is added to the loss and differentiated exactly
by JAX: grad_i += d regularizer / d theta; a ``schedule`` gives per-iteration weights of the
two, so regulariser-only episodes (before training, or interleaved) are iterations too. A
``budget`` (seconds) ends the run once the iterations' own time (estimate, regulariser and
update; not the callback) exceeds it.

Clipping is the optimizer's business: ``optax.chain(optax.clip_by_global_norm(c),
optax.adam(lr))``. A failure (an estimator raising FloatingPointError on a NaN orbit, or a
non-finite loss, gradient or updated parameters) ends the run and is recorded in
``FitResult.status``, not hidden; the result's system holds the last good parameters.

Checkpoints. ``checkpoint=DIR`` writes one file, ``DIR/checkpoint.eqx`` (format in
``chaosgrad._checkpoint``): parameters, optimizer state, history, iteration, status and a
fingerprint of the settings, with a sha256 checksum, written to a temporary file and renamed
over the old one, so a crash leaves the previous checkpoint intact and a truncated or
modified file is refused ("checkpoint DIR is corrupt: ..."). Every iteration's key is derived
from (key, i), so a run resumed from a checkpoint continues bit-identically. A resume
refuses, naming the setting, a different ``key``, system (its structure, its step and the
values of the parameters not trained), ``statistic`` (type and horizon), observable or
loss (compared by what they compute and read, as compiled programs are keyed:
:mod:`chaosgrad._functions`), ``wrt`` selection, ``x0``, ``estimator`` (type and fields) or
``optimizer``: the structure of its state (``adam`` for
``sgd``) and its updates of a fixed probe gradient at the checkpoint's parameters, which
see a changed learning rate, clipping threshold or momentum (``adam(0.5)`` for
``adam(0.01)``). What the probe cannot see may change on resume: a schedule's values after
the probe's first two steps.

A failed run keeps the last good parameters, in ``FitResult.system`` and in its checkpoint
(with the optimizer state that went with them and the failure status): the last ones at
which the loss and gradient were finite. When an update makes the parameters non-finite,
those are the parameters it started from; when the loss or gradient is non-finite (or the
estimator raises) at parameters p, p is not good, and they are the parameters before the
update that produced p. Resuming a failed run with the same estimator and optimizer is
refused (it would fail again); with a changed estimator, or an optimizer that updates
differently (a probe update sees a changed learning rate; a new state structure starts a
fresh optimizer state), it redoes the iteration that started from the last good
parameters, keeping the history before it, with status "ok". The older two-file format
(``state.eqx`` + ``history.json``) is still read; the single file is written from then on.

``log_every=SECONDS`` prints a progress line on stderr at most every SECONDS seconds (for
runs away from a terminal): ``fit: iteration 120/1000, loss 0.123, 3.4 it/s, eta 4m18s``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import _checkpoint, _fit_checkpoint
from ._errors import check_key, check_positive_int, check_x64, traceable
from ._fit_checkpoint import HISTORY_KEYS
from ._functions import trace
from ._system import System
from ._train_step import TrainState, TrainStep, keyed
from .estimators._base import AbstractEstimator, tree_norm
from .estimators._parameters import Parameters
from .estimators._response import loss_estimate
from .estimators.auto import Auto
from .estimators.average import configure
from .estimators.online import Online
from .statistics import AbstractStatistic

PARTICLE_STREAM = 2**32 - 1
"""Online's particles are drawn from ``fold_in(key, PARTICLE_STREAM)``, a stream no
iteration's key (``fold_in(key, i)``) reaches."""
DATA_STREAM = 2**32 - 2
"""``fit(data=...)`` draws iteration i's batch from ``fold_in(key_i, DATA_STREAM)``, apart
from the estimator's own use of key_i."""


class FitResult(eqx.Module):
    """The trained system, the per-iteration history and how the run ended.

    On a failure ``system`` holds the last good parameters (module doc), and ``history``
    ends with the failing iteration's record when it got that far (a non-finite loss or
    gradient, or non-finite updated parameters).
    """

    system: System
    history: dict
    status: str
    iterations: int

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def _check_optimizer(optimizer) -> None:
    """Refuse, in one line, anything but an Optax transformation (an uncalled factory too)."""
    if isinstance(optimizer, optax.GradientTransformation):
        return
    if callable(optimizer) and getattr(optimizer, "__module__", "").startswith("optax"):
        name = getattr(optimizer, "__name__", "the optimizer")
        raise TypeError(
            f"optimizer must be an Optax transformation: call the factory, e.g. "
            f"optax.{name}(learning_rate), not optax.{name} itself"
        )
    raise TypeError(
        "optimizer must be an Optax transformation such as optax.adam(1e-2) or "
        f"optax.sgd(learning_rate), got {optimizer!r:.60}"
    )


def _empty_history() -> dict:
    return {name: [] for name in HISTORY_KEYS}


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _ProgressLog:
    """Rate-limited progress lines on stderr (``fit(log_every=...)``)."""

    def __init__(self, every: float, start: int, iterations: int):
        self.every, self.start, self.iterations = every, start, iterations
        self.began = self.last = time.perf_counter()

    def _rate(self, done: int, now: float) -> float:
        elapsed = now - self.began
        return (done - self.start) / elapsed if elapsed > 0 else float("nan")

    def iteration(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        rate = self._rate(done, now)
        eta = (self.iterations - done) / rate if rate > 0 else float("nan")
        print(
            f"fit: iteration {done}/{self.iterations}, loss {loss:.4g}, {rate:.3g} it/s, "
            f"eta {_duration(eta)}",
            file=sys.stderr,
            flush=True,
        )

    def end(self, done: int, status: str) -> None:
        elapsed = time.perf_counter() - self.began
        print(
            f"fit: ended at iteration {done}/{self.iterations} after {_duration(elapsed)}, "
            f"status {status}",
            file=sys.stderr,
            flush=True,
        )


def _weight(weight: float):
    """A schedule's weight as ``_iteration`` takes it: None (0: the part is skipped), 1.0
    (static: the gradient as it is, so that an unweighted iteration computes exactly what
    the step does) or a float64 array (any other value, without a compilation per value)."""
    if not weight:
        return None
    return 1.0 if weight == 1.0 else jnp.asarray(weight, jnp.float64)


def _weighted(tree, weight):
    """weight x tree, for a weight from :func:`_weight` (1.0: the tree itself)."""
    return tree if isinstance(weight, float) else jax.tree_util.tree_map(lambda g: weight * g, tree)


def with_data(system: System, fields: dict) -> System:
    """``system`` with the data fields named in ``fields`` (e.g. an ``InputDriven``'s
    ``inputs`` and ``targets``) replaced by the given arrays."""
    names = tuple(fields)
    return eqx.tree_at(
        lambda s: tuple(getattr(s, name) for name in names),
        system,
        tuple(fields[name] for name in names),
    )


def _check_data(data: Callable, system: System, key) -> Callable:
    """``data`` traced once at an iteration's key; refused (ValueError naming the field)
    unless it returns a dict of the system's data fields with their shapes and dtypes."""
    if not callable(data):
        raise TypeError("data must be a function key -> {field name: array}")
    with traceable("the data function"):
        traced, out = trace(data, key, name="the data function")
    if not isinstance(out, dict) or not out:
        raise ValueError(
            f"data(key) must return a dict {{field: array}} of the system's data fields "
            f"{system.data_fields}, got {type(out).__name__}"
        )
    for name, value in out.items():
        if name not in system.data_fields:
            raise ValueError(
                f"data(key) returned {name!r}, which is not a data field of "
                f"{type(system).__name__}; its data fields are {system.data_fields}"
            )
        current = getattr(system, name)
        if current is None or (value.shape, value.dtype) != (current.shape, current.dtype):
            have = None if current is None else f"{current.shape} {current.dtype}"
            raise ValueError(
                f"data(key)[{name!r}] has shape and dtype {value.shape} {value.dtype}; "
                f"the system's {name} has {have}: a fresh batch must match it"
            )
    return traced


def _iteration(
    step: TrainStep, state: TrainState, key, task_weight, regularizer, penalty_weight, data
):
    """One iteration of ``fit``: g = task_weight x the step's gradient (``task_weight``
    None: the estimator does not run, g = 0) + penalty_weight x d regularizer / d theta
    (``penalty_weight`` None: not computed), then the step's update; weights as
    :func:`_weight` gives them.

    ``data`` (None, or the traced data function) first replaces the system's data fields
    by ``data(fold_in(key, DATA_STREAM))``.

    Returns (the updated state, the step's metrics or None, ||g||, the regulariser's value,
    whether the updated parameters are finite)."""
    if data is not None:
        fresh = with_data(state.system, data(jax.random.fold_in(key, DATA_STREAM)))
        state = dataclasses.replace(state, system=fresh)
    params = Parameters.of(state.system, step.wrt)
    grads, metrics = params.zeros(), None
    if task_weight is not None:
        grads, metrics, state = step.advance(state, key)
        grads = _weighted(grads, task_weight)
    penalty = jnp.zeros(())
    if penalty_weight is not None:
        penalty, extra = jax.value_and_grad(
            lambda v: regularizer(params.substitute(state.system, v))
        )(params.values)
        grads = jax.tree_util.tree_map(jnp.add, grads, _weighted(extra, penalty_weight))
    value = penalty if penalty_weight is None else _weighted(penalty, penalty_weight)
    if metrics is not None:
        value = value + _weighted(metrics.loss, task_weight)
    updated = step.apply(state, grads, value)
    finite = _all_finite(Parameters.of(updated.system, step.wrt).values)
    return updated, metrics, tree_norm(grads), penalty, finite


def _entry(stacked, j: int):
    """Entry ``j`` of a tree of per-iteration arrays."""
    return jax.tree_util.tree_map(lambda v: v[j], stacked)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(tree)]))


def _select(keep, new, old):
    """``new`` where ``keep`` (a traced bool), else ``old``: their arrays picked, the rest
    (static structure) from ``new``."""
    arrays = jax.tree_util.tree_map(
        lambda a, b: jnp.where(keep, a, b),
        eqx.filter(new, eqx.is_array),
        eqx.filter(old, eqx.is_array),
    )
    return eqx.combine(arrays, eqx.filter(new, eqx.is_array, inverse=True))


@eqx.filter_jit
def _iterations(
    step: TrainStep,
    state: TrainState,
    key,
    first,
    count: int,
    task_weight,
    regularizer,
    penalty_weight,
    data,
    record_values: bool,
):
    """Iterations ``first`` .. ``first + count - 1`` of ``fit`` as one program: a
    ``lax.scan`` of :func:`_iteration` with key_i = fold_in(key, i). An iteration whose
    loss, gradient, regulariser or updated parameters are not finite is not applied, and
    neither is any after it: the state then stays at that iteration's start.

    Returns (the state after the last applied iteration, the state before it, and per
    iteration: the metrics or None, ||g||, the regulariser's value, whether the updated
    parameters are finite, and with ``record_values`` the parameters it started from)."""

    def body(carry, iteration):
        current, previous, stopped = carry
        updated, metrics, grad_norm, penalty, finite = _iteration(
            step,
            current,
            jax.random.fold_in(key, iteration),
            task_weight,
            regularizer,
            penalty_weight,
            data,
        )
        good = jnp.isfinite(grad_norm) & jnp.isfinite(penalty) & finite
        if metrics is not None:
            good = good & metrics.finite & jnp.isfinite(metrics.loss)
        move = good & ~stopped
        started = Parameters.of(current.system, step.wrt).values if record_values else None
        carry = (_select(move, updated, current), _select(move, current, previous), ~move)
        return carry, (metrics, grad_norm, penalty, finite, started)

    steps = first + jnp.arange(count, dtype=jnp.int64)
    (current, previous, _), outputs = jax.lax.scan(body, (state, state, jnp.asarray(False)), steps)
    return current, previous, outputs


def _needs_configure(estimator: AbstractEstimator) -> bool:
    """Whether a pilot run must choose the estimator's settings (``Auto``, ``"auto"``)."""
    if not isinstance(estimator, AbstractEstimator):
        return False  # refused by TrainStep, naming the argument
    return isinstance(estimator, Auto) or bool(estimator.auto_settings())


def fit(
    system: System,
    loss: Callable,
    statistic: AbstractStatistic,
    estimator: AbstractEstimator,
    optimizer: optax.GradientTransformation,
    *,
    iterations: int,
    wrt: Callable | None = None,
    key,
    x0=None,
    callback: Callable | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    regularizer: Callable | None = None,
    schedule: Callable[[int], tuple[float, float]] | None = None,
    budget: float | None = None,
    log_every: float | None = None,
    data: Callable | None = None,
    scan: int = 1,
) -> FitResult:
    """Minimise ``loss(statistic)`` over the parameters selected by ``wrt``: a loop over
    :class:`~chaosgrad.TrainStep` with key_i = fold_in(key, i) at iteration i, which adds
    checkpoints, a wall-clock budget, progress, a callback, a regulariser with a schedule
    and failure handling (module doc).

    Args:
        system: the system to train, at its starting parameters.
        loss: statistic -> scalar, e.g. ``lambda s: (s - target) ** 2``; the statistic has the
            structure of the observable's output (a scalar, vector or pytree).
        statistic: ``TimeAverage(phi)``, ``WindowAverage(phi, steps)`` or
            ``Terminal(phi, steps)``.
        estimator: any chaosgrad estimator supporting the statistic; ``"auto"`` settings
            and ``Auto`` are resolved once, by :func:`~chaosgrad.configure` at ``system``
            with ``key``, before the first iteration.
        optimizer: an Optax transformation (chain clipping in front of it to clip).
        iterations: total number of iterations (including those done before a resume).
        wrt: which parameters are trained: None (every floating-point array of the
            system) or a selector ``system -> subtree``, as ``eqx.tree_at``'s ``where``.
        key: PRNG key; iteration i estimates with ``jax.random.fold_in(key, i)``.
        x0: the starting state(s), as for ``linear_response`` (default: drawn from the
            system's ``initial_state`` with each iteration's key).
        callback: called as ``callback(iteration, system, record)`` after each iteration.
        checkpoint, checkpoint_every: a directory, and an interval in iterations: the
            checkpoint file ``DIR/checkpoint.eqx`` is replaced atomically every
            ``checkpoint_every`` iterations and when the run ends (also when it fails: then
            it holds the last good parameters and the failure status).
        resume: a checkpoint directory to continue from, with the same key, system,
            statistic, observable, loss, wrt, x0, estimator and optimizer (module doc); a
            different one is refused with a ValueError naming it
            (a changed learning rate too, module doc). A failed run resumes only with a changed
            optimizer or estimator, from its last good parameters (module doc). Raises
            FileNotFoundError when DIR holds no checkpoint, ValueError "checkpoint DIR is
            corrupt: ..." when its file is truncated or modified.
        progress: called with 1 after each iteration (progress bars).
        regularizer: ``regularizer(system) -> scalar`` added to the loss; its gradient is
            exact (``jax.grad``), e.g. ``lambda s: 0.1 * lyapunov_penalty(s, 4, 50, ...)``.
        schedule: ``schedule(iteration) -> (loss weight, regularizer weight)``; a loss
            weight of 0 skips the estimator (a regulariser-only iteration: pre-training
            or an interleaved "flossing" episode). Default: (1, 1) throughout.
        budget: seconds of iteration time after which the run stops (status "ok").
        log_every: seconds between progress lines on stderr, ``fit: iteration 120/1000,
            loss 0.123, 3.4 it/s, eta 4m18s``, plus one line when the run ends (0: a line
            every iteration). Default None: silent. For runs away from a terminal, where a
            progress bar shows nothing.
        data: a fresh batch each iteration: ``data(key) -> {field: array}`` for some of the
            system's data fields (an ``InputDriven``'s ``inputs`` and ``targets``), with
            their shapes and dtypes; iteration i calls it, inside its program, with
            ``fold_in(key_i, DATA_STREAM)``. Sample j of the estimator then sees row j of
            the batch (``for_sample``), so the batch's rows are the iteration's samples:
            online training on a task that generates its data, as against a fixed training
            set. The returned system holds the last batch.
        scan: iterations per compiled call. With scan = k > 1, up to k iterations (with the
            same schedule weights) run as one ``lax.scan`` program, with the same keys, so
            the same run as k = 1; the host (callback, progress, budget, checkpoints) sees
            them after the call, the callback with the system after the call's last
            iteration, and each iteration's recorded seconds are the call's share. For
            short iterations, whose time the host's per-call work would dominate (an
            online evolution strategy's single truncation).
    """
    check_x64()
    check_positive_int(iterations, "iterations")
    check_positive_int(scan, "scan")
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint is None:
            raise ValueError("checkpoint_every needs checkpoint=DIRECTORY")
    if key is None:
        raise ValueError("key is required: fit(..., key=jax.random.key(0))")
    check_key(key)
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be a positive number of seconds, got {budget}")
    if log_every is not None and not log_every >= 0:
        raise ValueError(f"log_every must be a number of seconds >= 0 or None, got {log_every}")
    if regularizer is not None and not callable(regularizer):
        raise TypeError("regularizer must be a function system -> scalar")
    _check_optimizer(optimizer)
    concrete = estimator
    if _needs_configure(estimator):
        concrete = configure(system, statistic, estimator, wrt=wrt, x0=x0, key=key)
    if isinstance(concrete, Online) and (checkpoint is not None or resume is not None):
        raise ValueError(
            "fit(checkpoint=..., resume=...) saves the parameters and the optimizer state, not "
            "Online's particles: train Online without checkpoints"
        )
    step = TrainStep(loss, statistic, concrete, optimizer, wrt=wrt, x0=x0)
    state = step.init(system, key=jax.random.fold_in(key, PARTICLE_STREAM))
    system = state.system  # its weak-typed arrays made strong
    params = Parameters.of(system, wrt)
    values, opt_state = params.values, state.opt_state
    history, start, status = _empty_history(), 0, "ok"
    fingerprint: dict = {}
    if checkpoint is not None or resume is not None:
        fingerprint = _checkpoint.fingerprint(
            system, values, statistic, estimator, opt_state, key, loss=loss, x0=x0
        )
    if resume is not None:
        values, opt_state, history, start = _fit_checkpoint.load(
            Path(resume), values, opt_state, fingerprint, optimizer
        )
    state = TrainState(
        params.substitute(system, values), opt_state, jnp.asarray(start, jnp.int64), state.carry
    )
    compiled = keyed(step, system)
    if data is not None:
        data = _check_data(data, system, key)
    if regularizer is not None:
        with traceable("the regularizer"):
            regularizer = trace(regularizer, system, name="the regularizer")[0]
    done = start  # iterations done; after a failure, the iteration a resume redoes
    # the last parameters at which the loss and gradient were finite, with their optimizer
    # state and iteration: what a failed run keeps
    restart = (values, opt_state, start)
    log = None if log_every is None else _ProgressLog(log_every, start, iterations)

    record_values = params.size <= 64

    def params_of(current: TrainState):
        return Parameters.of(current.system, wrt).values

    iteration = start
    while iteration < iterations and status == "ok":
        began = time.perf_counter()
        weights = (1.0, 1.0) if schedule is None else schedule(iteration)
        count = 1  # one call: up to ``scan`` iterations with the same schedule weights
        while (
            count < scan
            and iteration + count < iterations
            and (schedule is None or schedule(iteration + count) == weights)
        ):
            count += 1
        task_weight, penalty_weight = weights
        final, previous, outputs = _iterations(
            compiled,
            state,
            key,
            jnp.asarray(iteration, jnp.int64),
            count,
            _weight(task_weight),
            regularizer,
            None if regularizer is None else _weight(penalty_weight),
            data,
            record_values,
        )
        stacked, grad_norms, penalties, finites, started = jax.device_get(outputs)
        seconds = (time.perf_counter() - began) / count
        for j in range(count):
            current_iteration = iteration + j
            metrics = None if stacked is None else _entry(stacked, j)
            if metrics is not None and not metrics.finite:
                try:  # the host checks name the step where the run stopped being finite
                    loss_estimate(  # at this iteration's start: where the call stopped
                        final.system,
                        loss,
                        statistic,
                        concrete,
                        wrt=wrt,
                        x0=x0,
                        key=jax.random.fold_in(key, current_iteration),
                    )
                except FloatingPointError as exc:
                    status = f"failed at iteration {current_iteration}: {exc}"
                    break
            loss_value = float("nan") if metrics is None else float(metrics.loss)
            record = {
                "loss": loss_value,
                "statistic": None
                if metrics is None
                else jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(), metrics.statistic),
                "grad_norm": float(grad_norms[j]),
                "stderr_norm": 0.0 if metrics is None else float(metrics.stderr_norm),
                "regularizer": float(penalties[j]),
                "seconds": seconds,
                "parameters": np.asarray(ravel_pytree(_entry(started, j))[0]).tolist()
                if record_values
                else None,
            }
            finite_loss = np.isfinite(loss_value) or not task_weight
            if not (np.isfinite(grad_norms[j]) and finite_loss and np.isfinite(penalties[j])):
                for name in HISTORY_KEYS:
                    history[name].append(record[name])
                status = f"diverged at iteration {current_iteration}: non-finite loss or gradient"
                break
            for name in HISTORY_KEYS:
                history[name].append(record[name])
            if metrics is not None and not metrics.finite:  # the call stopped here
                status = f"diverged at iteration {current_iteration}: a non-finite state"
                break
            if not finites[j]:
                status = f"diverged at iteration {current_iteration}: parameters became non-finite"
                break
            done = current_iteration + 1
            if callback is not None:
                callback(current_iteration, final.system, record)
            if progress is not None:
                progress(1)
            if log is not None:
                log.iteration(done, loss_value)
        else:
            j = count
        # the last parameters at which the loss and gradient were finite (module doc): the
        # start of the last applied iteration, or of the one a failure stopped at when the
        # update (not the loss) was not finite
        if status.endswith("parameters became non-finite"):
            restart = (params_of(final), final.opt_state, iteration + j)
        elif j >= 1:
            restart = (params_of(previous), previous.opt_state, iteration + j - 1)
        state = final
        values, opt_state = params_of(state), state.opt_state
        due = checkpoint_every and any(
            i % checkpoint_every == 0 or i == iterations for i in range(iteration + 1, done + 1)
        )
        if status == "ok" and due and checkpoint is not None:
            _fit_checkpoint.save(
                Path(checkpoint), values, opt_state, history, done, status, fingerprint, optimizer
            )
        iteration += count
        if budget is not None and sum(history["seconds"]) >= budget:
            break
    current = state.system
    if status != "ok":  # keep the last good parameters (module doc)
        values, opt_state, done = restart
        current = params.substitute(state.system, values)
    if checkpoint is not None:
        _fit_checkpoint.save(
            Path(checkpoint), values, opt_state, history, done, status, fingerprint, optimizer
        )
    if log is not None:
        log.end(done, status)
    return FitResult(current, history, status, len(history["loss"]))
