"""Training with any estimator: d loss(statistic)/d(parameters) in one sweep, Optax steps.

    loss_i, grad_i = value_and_grad(system_i, loss, statistic, estimator, key=key_i)
    updates, state = optimizer.update(grad_i, state, params);  params += updates

with key_i = fold_in(key, i). The cotangent d loss / d statistic weights the observable inside
the estimator (one adjoint sweep for a loss of many statistics); where it comes from and the
bias that gives are stated in ``value_and_grad``. Compilation is keyed on code, so every
iteration after the first runs warm.

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
refuses, naming the setting, a different ``key``, ``statistic`` (type and horizon; the
observable and the loss are functions and are not compared), ``wrt`` selection,
``estimator`` (type and fields) or ``optimizer``: the structure of its state (``adam`` for
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

from . import _checkpoint
from ._errors import check_key, check_positive_int, check_x64
from ._system import System
from .estimators._base import AbstractEstimator, tree_norm
from .estimators._parameters import Parameters
from .estimators._response import loss_estimate
from .statistics import AbstractStatistic

HISTORY_KEYS = (
    "loss",
    "statistic",
    "grad_norm",
    "stderr_norm",
    "regularizer",
    "seconds",
    "parameters",
)


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


def _save(
    path: Path,
    values,
    opt_state,
    history: dict,
    iteration: int,
    status: str,
    fingerprint: dict,
    optimizer,
) -> None:
    """One atomic checkpoint file; ``iteration``: the good iterations done (where to go on)."""
    # what a resume compares to see a changed learning rate, clipping or momentum
    fingerprint = dict(fingerprint, optimizer_probe=_checkpoint.optimizer_probe(optimizer, values))
    meta = {"iteration": iteration, "status": status, "history": history}
    meta["fingerprint"] = fingerprint
    _checkpoint.write(path, meta, _checkpoint.serialise(values), _checkpoint.serialise(opt_state))


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse(path: Path, setting: str, stored: str, given: str, fix: str) -> ValueError:
    return ValueError(
        f"cannot resume from checkpoint {path}: it was written with a different {setting} "
        f"({_shorten(stored)}, now {_shorten(given)}); {fix}"
    )


def _deserialise(path: Path, data: bytes, like, what: str):
    try:
        return _checkpoint.deserialise(data, like)
    except Exception as exc:  # noqa: BLE001 - Equinox/NumPy raise several kinds
        raise ValueError(
            f"checkpoint {path} does not fit this run's {what}: {type(exc).__name__}: {exc}"
        ) from None


def _load(path: Path, values_like, opt_state_like, fingerprint: dict, optimizer):
    """(values, optimizer state, history, start iteration) to resume from (module doc)."""
    stored = _checkpoint.read(path)
    history, status = stored.history, stored.status
    if stored.fingerprint is None:  # the older two-file format: nothing to compare
        if status != "ok":
            raise ValueError(
                f"checkpoint {path} (the older two-file format) ended with {status!r} and may "
                "hold the parameters after the failure: start a new run"
            )
        values, opt_state = _deserialise(
            path, stored.values, (values_like, opt_state_like), "parameters or optimizer state"
        )
        return values, opt_state, history, stored.iteration
    old = stored.fingerprint
    fixes = {
        "key": "pass the key of the run being continued",
        "wrt": "select the same parameters as the run being continued",
        "statistic": "resume with the same statistic",
        "estimator": "resume with the same estimator settings",
    }
    for setting in ("key", "wrt", "statistic"):
        if old[setting] != fingerprint[setting]:
            raise _refuse(path, setting, old[setting], fingerprint[setting], fixes[setting])
    estimator_changed = old["estimator"] != fingerprint["estimator"]
    structure_changed = old["optimizer"] != fingerprint["optimizer"]
    if status == "ok":
        if estimator_changed:
            raise _refuse(
                path, "estimator", old["estimator"], fingerprint["estimator"], fixes["estimator"]
            )
        if structure_changed:
            raise _refuse(
                path,
                "optimizer",
                "state " + old["optimizer_outline"],
                "state " + fingerprint["optimizer_outline"],
                "resume with the same optimizer (its state's structure must match)",
            )
    values = _deserialise(path, stored.values, values_like, "parameters")
    probe = _checkpoint.optimizer_probe(optimizer, values)
    if (
        status == "ok"
        and "optimizer_probe" in old
        and not _checkpoint.same_probe(old["optimizer_probe"], probe)
    ):
        raise ValueError(
            f"cannot resume from checkpoint {path}: it was written with a different "
            "optimizer (its updates of a probe gradient differ: a changed learning rate, "
            "clipping threshold or momentum); resume with the same optimizer settings"
        )
    if status != "ok":
        probe_changed = structure_changed or not _checkpoint.same_probe(
            old.get("optimizer_probe"), probe
        )
        if not (estimator_changed or probe_changed):
            raise ValueError(
                f"checkpoint {path} ended with {status!r}; resuming with the same settings "
                "would repeat it: change the optimizer or estimator (e.g. a smaller learning "
                "rate)"
            )
        history = {name: list(history[name][: stored.iteration]) for name in HISTORY_KEYS}
    if structure_changed:  # a failed run resumed with another kind of optimizer
        opt_state = optimizer.init(values)
    else:
        opt_state = _deserialise(path, stored.opt_state or b"", opt_state_like, "optimizer state")
    return values, opt_state, history, stored.iteration


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


def _scaled(tree, weight: float):
    return tree if weight == 1.0 else jax.tree_util.tree_map(lambda g: weight * g, tree)


@eqx.filter_jit
def _regularizer_value_and_grad(regularizer, params, system, values):
    """(regularizer(system), its gradient w.r.t. the selected parameter values)."""
    return jax.value_and_grad(lambda v: regularizer(params.substitute(system, v)))(values)


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(tree))


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
) -> FitResult:
    """Minimise ``loss(statistic)`` over the parameters selected by ``wrt``.

    Args:
        loss: statistic -> scalar, e.g. ``lambda s: (s - target) ** 2``; the statistic has the
            structure of the observable's output (a scalar, vector or pytree).
        statistic: ``TimeAverage(phi)``, ``WindowAverage(phi, steps)`` or
            ``Terminal(phi, steps)``.
        estimator: any chaosgrad estimator supporting the statistic.
        optimizer: an Optax transformation (chain clipping in front of it to clip).
        iterations: total number of iterations (including those done before a resume).
        callback: called as ``callback(iteration, system, record)`` after each iteration.
        checkpoint, checkpoint_every: a directory, and an interval in iterations: the
            checkpoint file ``DIR/checkpoint.eqx`` is replaced atomically every
            ``checkpoint_every`` iterations and when the run ends (also when it fails: then
            it holds the last good parameters and the failure status).
        resume: a checkpoint directory to continue from, with the same key, statistic, wrt,
            estimator and optimizer; a different one is refused with a ValueError naming it
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
    """
    check_x64()
    check_positive_int(iterations, "iterations")
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
    params = Parameters.of(system, wrt)
    values = params.values
    opt_state = optimizer.init(values)
    history, start, status = _empty_history(), 0, "ok"
    fingerprint: dict = {}
    if checkpoint is not None or resume is not None:
        fingerprint = _checkpoint.fingerprint(system, values, statistic, estimator, opt_state, key)
    if resume is not None:
        values, opt_state, history, start = _load(
            Path(resume), values, opt_state, fingerprint, optimizer
        )
    current = params.substitute(system, values)
    done = start  # iterations done; after a failure, the iteration a resume redoes
    # the last parameters at which the loss and gradient were finite, with their optimizer
    # state and iteration: what a failed run keeps
    restart = (values, opt_state, start)
    log = None if log_every is None else _ProgressLog(log_every, start, iterations)

    for iteration in range(start, iterations):
        began = time.perf_counter()
        task_weight, penalty_weight = (1.0, 1.0) if schedule is None else schedule(iteration)
        grads = jax.tree_util.tree_map(jnp.zeros_like, values)
        loss_value, value, stderr_norm, penalty = float("nan"), None, 0.0, 0.0
        if task_weight:
            try:
                loss_value, estimate = loss_estimate(
                    current,
                    loss,
                    statistic,
                    estimator,
                    wrt=wrt,
                    x0=x0,
                    key=jax.random.fold_in(key, iteration),
                )
            except FloatingPointError as exc:
                status = f"failed at iteration {iteration}: {exc}"
                break
            loss_value = float(loss_value)
            grads = _scaled(estimate.grad, task_weight)
            value = jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(), estimate.value)
            stderr_norm = float(tree_norm(estimate.stderr))
        if regularizer is not None and penalty_weight:
            penalty, extra = _regularizer_value_and_grad(regularizer, params, current, values)
            grads = jax.tree_util.tree_map(jnp.add, grads, _scaled(extra, penalty_weight))
            penalty = float(penalty)
        grad_norm = float(tree_norm(grads))
        record = {
            "loss": loss_value,
            "statistic": value,
            "grad_norm": grad_norm,
            "stderr_norm": stderr_norm,
            "regularizer": penalty,
            "seconds": 0.0,
            "parameters": np.asarray(ravel_pytree(values)[0]).tolist()
            if params.size <= 64
            else None,
        }
        finite_loss = np.isfinite(loss_value) or not task_weight
        if not (np.isfinite(grad_norm) and finite_loss and np.isfinite(penalty)):
            record["seconds"] = time.perf_counter() - began
            for name in HISTORY_KEYS:
                history[name].append(record[name])
            status = f"diverged at iteration {iteration}: non-finite loss or gradient"
            break
        restart = (values, opt_state, iteration)
        updates, opt_state = optimizer.update(grads, opt_state, values)
        values = optax.apply_updates(values, updates)
        jax.block_until_ready(values)
        record["seconds"] = time.perf_counter() - began
        for name in HISTORY_KEYS:
            history[name].append(record[name])
        if not _finite(values):
            status = f"diverged at iteration {iteration}: parameters became non-finite"
            break
        done = iteration + 1
        current = params.substitute(system, values)
        if callback is not None:
            callback(iteration, current, record)
        if progress is not None:
            progress(1)
        if log is not None:
            log.iteration(done, loss_value)
        due = checkpoint_every and (done % checkpoint_every == 0 or done == iterations)
        if due and checkpoint is not None:
            _save(
                Path(checkpoint), values, opt_state, history, done, status, fingerprint, optimizer
            )
        if budget is not None and sum(history["seconds"]) >= budget:
            break
    if status != "ok":  # keep the last good parameters (module doc)
        values, opt_state, done = restart
        current = params.substitute(system, values)
    if checkpoint is not None:
        _save(Path(checkpoint), values, opt_state, history, done, status, fingerprint, optimizer)
    if log is not None:
        log.end(done, status)
    return FitResult(current, history, status, len(history["loss"]))
