"""Training with any estimator: the estimator gives d(statistic)/d(parameters), the chain rule
gives the loss gradient, Optax takes the step.

    stat_i, g_i = estimator(system_i, key_i)          key_i = fold_in(key, i)
    grad_i = loss'(stat_i) * g_i
    updates, state = optimizer.update(grad_i, state, params);  params += updates

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
from .estimators._base import AbstractEstimator, Parameters, linear_response, tree_norm

HISTORY_KEYS = ("loss", "statistic", "grad_norm", "stderr_norm", "seconds", "parameters")


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
    values, opt_state = eqx.tree_deserialise_leaves(path / "state.eqx",
                                                    (values_like, opt_state_like))
    meta = json.loads((path / "history.json").read_text())
    return values, opt_state, meta["history"], meta["iteration"], meta["status"]


def fit(system: System, loss: Callable, estimator: AbstractEstimator,
        optimizer: optax.GradientTransformation, *, observable: Callable, iterations: int,
        wrt: Callable | None = None, key, x0=None, callback: Callable | None = None,
        checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
        resume: str | Path | None = None, progress: Callable[[int], None] | None = None
        ) -> FitResult:
    """Minimise ``loss(statistic)`` over the parameters selected by ``wrt``.

    Args:
        loss: statistic -> scalar, e.g. ``lambda s: (s - target) ** 2``.
        estimator: any chaosgrad estimator (it defines the statistic: a long-time average
            or E[Phi(x_T)]).
        optimizer: an Optax transformation (chain clipping in front of it to clip).
        observable: phi(x), the quantity whose statistic enters the loss.
        iterations: total number of iterations (including those done before a resume).
        callback: called as ``callback(iteration, system, record)`` after each iteration.
        checkpoint, checkpoint_every: directory and interval for checkpoints.
        resume: a checkpoint directory to continue from (same settings and key).
        progress: called with 1 after each iteration (progress bars).
    """
    check_positive_int(iterations, "iterations")
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint is None:
            raise ValueError("checkpoint_every needs checkpoint=DIRECTORY")
    if key is None:
        raise ValueError("key is required: fit(..., key=jax.random.key(0))")
    params = Parameters.of(system, wrt)
    values = params.values
    opt_state = optimizer.init(values)
    history, start, status = _empty_history(), 0, "ok"
    if resume is not None:
        values, opt_state, history, start, status = _load(Path(resume), values, opt_state)
    current = params.substitute(system, values)
    value_and_slope = jax.value_and_grad(lambda s: jnp.asarray(loss(s), dtype=jnp.float64))

    for iteration in range(start, iterations):
        if status != "ok":
            break
        began = time.perf_counter()
        try:
            estimate = linear_response(current, observable, estimator, wrt=wrt, x0=x0,
                                       key=jax.random.fold_in(key, iteration))
        except FloatingPointError as exc:
            status = f"failed at iteration {iteration}: {exc}"
            break
        loss_value, slope = value_and_slope(jnp.asarray(estimate.value))
        grads = jax.tree_util.tree_map(lambda g: slope * g, estimate.grad)
        grad_norm = float(tree_norm(grads))
        record = {"loss": float(loss_value), "statistic": float(estimate.value),
                  "grad_norm": grad_norm, "stderr_norm": float(tree_norm(estimate.stderr)),
                  "seconds": time.perf_counter() - began,
                  "parameters": np.asarray(ravel_pytree(values)[0]).tolist()
                  if params.size() <= 64 else None}
        for name in HISTORY_KEYS:
            history[name].append(record[name])
        if not (np.isfinite(grad_norm) and np.isfinite(float(loss_value))):
            status = f"diverged at iteration {iteration}: non-finite loss or gradient"
            break
        updates, opt_state = optimizer.update(grads, opt_state, values)
        values = optax.apply_updates(values, updates)
        if not all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(values)):
            status = f"diverged at iteration {iteration}: parameters became non-finite"
            break
        current = params.substitute(system, values)
        if callback is not None:
            callback(iteration, current, record)
        if progress is not None:
            progress(1)
        done = iteration + 1
        if checkpoint_every and (done % checkpoint_every == 0 or done == iterations):
            _save(Path(checkpoint), values, opt_state, history, done, status)
    done = len(history["loss"])
    if checkpoint is not None:
        _save(Path(checkpoint), values, opt_state, history, done, status)
    return FitResult(current, history, status, done)
