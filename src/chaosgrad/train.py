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
optax.adam(lr))``. Every iteration's key is derived from (key, i), so a run resumed from a
checkpoint (system, optimizer state and history, serialised with Equinox) continues
bit-identically. A failure (an estimator raising on a NaN orbit, or a non-finite statistic
or gradient) ends the run and is recorded in ``FitResult.status``, not hidden.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ._errors import check_positive_int
from ._system import System
from .estimators._base import AbstractEstimator, Parameters, loss_estimate, tree_norm
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
    """The trained system, the per-iteration history and how the run ended."""

    system: System
    history: dict
    status: str
    iterations: int

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def _empty_history() -> dict:
    return {name: [] for name in HISTORY_KEYS}


def _save(path: Path, values, opt_state, history: dict, iteration: int, status: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(path / "state.eqx", (values, opt_state))
    meta = {"iteration": iteration, "status": status, "history": history}
    (path / "history.json").write_text(json.dumps(meta))


def _load(path: Path, values_like, opt_state_like):
    if not (path / "state.eqx").exists():
        raise FileNotFoundError(f"no checkpoint in {path} (expected state.eqx and history.json)")
    values, opt_state = eqx.tree_deserialise_leaves(
        path / "state.eqx", (values_like, opt_state_like)
    )
    meta = json.loads((path / "history.json").read_text())
    return values, opt_state, meta["history"], meta["iteration"], meta["status"]


def _scaled(tree, weight: float):
    return tree if weight == 1.0 else jax.tree_util.tree_map(lambda g: weight * g, tree)


@eqx.filter_jit
def _regularizer_value_and_grad(regularizer, params, system, values):
    """(regularizer(system), its gradient w.r.t. the selected parameter values)."""
    return jax.value_and_grad(lambda v: regularizer(params.substitute(system, v)))(values)


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
        checkpoint, checkpoint_every: directory and interval for checkpoints.
        resume: a checkpoint directory to continue from (same settings and key).
        progress: called with 1 after each iteration (progress bars).
        regularizer: ``regularizer(system) -> scalar`` added to the loss; its gradient is
            exact (``jax.grad``), e.g. ``lambda s: 0.1 * lyapunov_penalty(s, 4, 50, ...)``.
        schedule: ``schedule(iteration) -> (loss weight, regularizer weight)``; a loss
            weight of 0 skips the estimator (a regulariser-only iteration: pre-training
            or an interleaved "flossing" episode). Default: (1, 1) throughout.
        budget: seconds of iteration time after which the run stops (status "ok").
    """
    check_positive_int(iterations, "iterations")
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint is None:
            raise ValueError("checkpoint_every needs checkpoint=DIRECTORY")
    if key is None:
        raise ValueError("key is required: fit(..., key=jax.random.key(0))")
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be a positive number of seconds, got {budget}")
    if regularizer is not None and not callable(regularizer):
        raise TypeError("regularizer must be a function system -> scalar")
    params = Parameters.of(system, wrt)
    values = params.values
    opt_state = optimizer.init(values)
    history, start, status = _empty_history(), 0, "ok"
    if resume is not None:
        values, opt_state, history, start, status = _load(Path(resume), values, opt_state)
    current = params.substitute(system, values)

    for iteration in range(start, iterations):
        if status != "ok":
            break
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
            if params.size() <= 64
            else None,
        }
        finite_loss = np.isfinite(loss_value) or not task_weight
        if not (np.isfinite(grad_norm) and finite_loss and np.isfinite(penalty)):
            record["seconds"] = time.perf_counter() - began
            for name in HISTORY_KEYS:
                history[name].append(record[name])
            status = f"diverged at iteration {iteration}: non-finite loss or gradient"
            break
        updates, opt_state = optimizer.update(grads, opt_state, values)
        values = optax.apply_updates(values, updates)
        jax.block_until_ready(values)
        record["seconds"] = time.perf_counter() - began
        for name in HISTORY_KEYS:
            history[name].append(record[name])
        if not all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(values)):
            status = f"diverged at iteration {iteration}: parameters became non-finite"
            break
        current = params.substitute(system, values)
        if callback is not None:
            callback(iteration, current, record)
        if progress is not None:
            progress(1)
        done = iteration + 1
        due = checkpoint_every and (done % checkpoint_every == 0 or done == iterations)
        if due and checkpoint is not None:
            _save(Path(checkpoint), values, opt_state, history, done, status)
        if budget is not None and sum(history["seconds"]) >= budget:
            break
    done = len(history["loss"])
    if checkpoint is not None:
        _save(Path(checkpoint), values, opt_state, history, done, status)
    return FitResult(current, history, status, done)
