"""Backpropagation through time: the pathwise derivative, the conventional baseline.

For each sample the statistic J (window average or terminal value) is differentiated
through the whole rollout, dJ/dtheta = sum_n (prod_m f_*(x_m)) X_n ..., and averaged over
samples. In a chaotic system each term grows like e^{lambda_1 T}: the average of exploding
samples does not converge to the derivative of the long-time average. ``info`` records the
per-sample gradient magnitude against the horizon T (forward mode along one parameter
direction, all horizons in one pass) and its fitted growth rate, to be compared with lambda_1.

Truncated BPTT (Williams & Peng 1990) cuts the derivative every ``truncation`` steps: the
state is passed on between chunks without its derivative. Bounded, and biased wherever the
memory of the system is longer than the truncation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import check_positive_int, check_samples
from .._memory import check_memory, state_dim
from ..parallel import sample_parallel, spread
from ..statistics import Terminal, TimeAverage, WindowAverage
from ._base import (
    AbstractEstimator,
    AbstractInfo,
    Estimate,
    Terms,
    check_sizes,
    project,
    resolve_horizon,
    tree_mean_and_stderr,
)
from ._rollout import check_finite, reduce_window, rollout, sample_windows


class BackpropInfo(AbstractInfo):
    """Diagnostics of Backprop and TruncatedBackprop.

    Args:
        steps, samples: the window each sample ran and the number of samples.
        truncation: the truncation length (None: full backpropagation).
        per_sample_std: spread of the per-sample gradients (shaped like grad).
        value_stderr: standard error of the statistic (flat, one per component).
        horizons, horizon_times, grad_magnitude_by_horizon: geometric-mean |dJ_T/dtheta.u|
            on a grid of horizons T (u: a unit parameter direction); None when not measured.
        growth_rate: its fitted exponential rate per unit time (compare with lambda_1).
        exploding: the growth rate is positive and the last magnitude 1e3 times the first.
    """

    per_parameter = ("per_sample_std",)
    steps: int
    samples: int
    truncation: int | None
    per_sample_std: object
    value_stderr: object
    horizons: list | None = None
    horizon_times: list | None = None
    grad_magnitude_by_horizon: list | None = None
    growth_rate: float | None = None
    exploding: bool = False


def _objective(system, components, params, x_start, t0, key, index, horizon, truncation):
    def objective(values):
        current = params.substitute(system, values).for_sample(index)
        if truncation is None:
            phis = rollout(current, components, x_start, key, t0, horizon.steps)[1]
        else:
            phis = _truncated_rollout(
                current, components, x_start, key, t0, horizon.steps, truncation
            )
        return reduce_window(phis, horizon)

    return objective


@sample_parallel
def _values(system, components, params, samples, horizon, truncation):
    """Per-sample raw statistics (forward only)."""

    def one(x, t0, key, index):
        current = system.for_sample(index)
        return reduce_window(
            rollout(
                current,
                components.with_projection(jnp.eye(components.projection.shape[0])),
                x,
                key,
                t0,
                horizon.steps,
            )[1],
            horizon,
        )

    return jax.vmap(one)(*spread((samples.starts, samples.times, samples.keys, samples.indices)))


@sample_parallel
def _jacobians(system, components, params, samples, horizon, truncation):
    """Per-sample statistics and Jacobians: one backward pass with k' cotangents (vmapped)."""
    count = components.count

    def one(x, t0, key, index):
        objective = _objective(system, components, params, x, t0, key, index, horizon, truncation)
        value, pullback = jax.vjp(objective, params.values)
        return value, jax.vmap(pullback)(jnp.eye(count))[0]

    return jax.vmap(one)(*spread((samples.starts, samples.times, samples.keys, samples.indices)))


def _truncated_rollout(system, components, x_start, key, t0, steps, truncation):
    """Phi~ values with the gradient cut every ``truncation`` steps (chunked truncated BPTT)."""
    chunks, remainder = divmod(steps, truncation)

    def chunk(x, c):
        x_end, values = rollout(system, components, x, key, t0 + c * truncation, truncation)
        return jax.lax.stop_gradient(x_end), values

    x, values = jax.lax.scan(chunk, x_start, jnp.arange(chunks))
    values = values.reshape((-1,) + values.shape[2:])
    if remainder:
        tail = rollout(system, components, x, key, t0 + chunks * truncation, remainder)[1]
        values = jnp.concatenate([values, tail])
    return values


@sample_parallel
def _growth_by_horizon(system, components, params, samples, horizon):
    """|d J_T / d theta . u| for every horizon T = 1..steps (u: unit parameter direction)."""
    flat, unravel = ravel_pytree(params.values)
    direction = unravel(jnp.ones_like(flat) / jnp.sqrt(flat.size))

    def one(x_start, t0, key, index):
        def run(values):
            current = params.substitute(system, values).for_sample(index)
            return rollout(current, components, x_start, key, t0, horizon.steps)[1]

        _, tangent = jax.jvp(run, (params.values,), (direction,))
        tangent = jnp.linalg.norm(tangent, axis=1)
        # the window sum's derivative (average: T * dA_T) grows like e^{lambda_1 T}
        return jnp.cumsum(tangent) if horizon.kind == "average" else tangent

    return jax.vmap(one)(*spread((samples.starts, samples.times, samples.keys, samples.indices)))


def horizon_diagnostics(magnitudes, steps: int, time_step) -> dict:
    """Geometric-mean gradient magnitude on a grid of horizons and its fitted growth rate,
    from the per-sample magnitudes (samples, steps) of :func:`_growth_by_horizon`."""
    magnitudes = np.asarray(magnitudes)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mag = np.log(magnitudes)
    log_mag[~np.isfinite(log_mag)] = np.nan
    finite_count = np.sum(np.isfinite(log_mag), axis=0)
    mean_log = np.where(
        finite_count > 0, np.nansum(log_mag, axis=0) / np.maximum(finite_count, 1), np.nan
    )
    horizons = np.unique(np.geomspace(1, steps, num=min(24, steps)).astype(int))
    fit = np.arange(steps // 4, steps)
    fit = fit[np.isfinite(mean_log[fit])]
    unit = time_step or 1.0
    slope = float(np.polyfit(fit * unit, mean_log[fit], 1)[0]) if fit.size > 2 else float("nan")
    by_horizon = np.exp(mean_log[horizons - 1])
    # compare with the first nonzero magnitude: a one-step derivative can be exactly 0
    seen = by_horizon[np.isfinite(by_horizon) & (by_horizon > 0)]
    exploding = bool(slope > 0 and seen.size > 1 and seen[-1] > 1e3 * seen[0])
    return {
        "horizons": horizons.tolist(),
        "horizon_times": (horizons * unit).tolist(),
        "grad_magnitude_by_horizon": by_horizon.tolist(),
        "growth_rate": slope,
        "exploding": exploding,
    }


def _backprop_terms(estimator, truncation, system, components, params, x0, key, cotangent):
    """The pure computation of Backprop and TruncatedBackprop: every sample's statistic
    and Jacobian (one backward pass each, k' cotangents vmapped), their mean and spread."""
    horizon = resolve_horizon(components.statistic, estimator)
    window = horizon.steps if truncation is None else min(truncation, horizon.steps)
    dim = state_dim(system, x0, key)
    check_memory(
        estimator.samples * (window + 1) * dim,
        f"{type(estimator).__name__}'s {estimator.samples} samples, each keeping {window + 1} "
        f"states of dimension {dim} for the backward pass,",
        "use fewer samples (the standard error falls like 1/sqrt(samples)), or a shorter window",
    )
    samples = sample_windows(system, x0, key, estimator.samples, horizon)
    raw_values = None
    if cotangent is not None:  # value from the same samples, before the backward pass
        raw_values = _values(system, components, params, samples, horizon, truncation)
        components = project(components, cotangent, jnp.mean(raw_values, axis=0))
    values, jacobians = _jacobians(system, components, params, samples, horizon, truncation)
    if raw_values is None:
        raw_values = values
    grad, stderr = tree_mean_and_stderr(jacobians)
    n = estimator.samples
    magnitudes = None
    if estimator.diagnostics and truncation is None:
        magnitudes = _growth_by_horizon(system, components, params, samples, horizon)
    extras = {
        "per_sample_std": jax.tree_util.tree_map(
            lambda leaf: (
                jnp.std(leaf, axis=0, ddof=1) if n > 1 else jnp.full(leaf.shape[1:], jnp.nan)
            ),
            jacobians,
        ),
        "raw_values": raw_values,
        "starts": samples.starts,
        "magnitudes": magnitudes,
        "gradients_finite": jnp.all(
            jnp.stack(
                [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(jacobians)]
            )
        ),
    }
    # the burn-in of independent samples (the rest, and consecutive windows along the one
    # orbit from x0: check_states_finite names the step)
    burned_in = x0 is None or not horizon.stationary
    finite = jnp.all(jnp.isfinite(samples.starts)) if burned_in else jnp.asarray(True)
    return Terms(jnp.mean(raw_values, axis=0), grad, stderr, finite, extras)


def _backprop_finish(estimator, truncation, terms, system, components) -> Estimate:
    horizon = resolve_horizon(components.statistic, estimator)
    extras = terms.extras
    if not bool(terms.finite):
        check_finite(np.asarray(extras["starts"])[:, None], "the burn-in", horizon.burn_in)
    n = estimator.samples
    raw = np.asarray(extras["raw_values"])
    diagnostics = {}
    if extras["magnitudes"] is not None:
        diagnostics = horizon_diagnostics(extras["magnitudes"], horizon.steps, system.time_step)
    warning = None
    if not bool(extras["gradients_finite"]):
        warning = "some per-sample gradients overflowed (inf/NaN): the explosion"
    elif diagnostics.get("exploding"):
        warning = (
            f"per-sample gradients grow like exp({diagnostics['growth_rate']:.3g} T): "
            "backpropagation is exploding; compare with lambda_1 and use Shadowing, "
            "FastAdjointResponse, Kernel or PathKernel"
        )
    info = BackpropInfo(
        method=type(estimator).__name__,
        seconds=0.0,
        warning=warning,
        steps=horizon.steps,
        samples=n,
        truncation=truncation,
        per_sample_std=extras["per_sample_std"],
        value_stderr=(raw.std(axis=0, ddof=1) / np.sqrt(n))
        if n > 1
        else np.full(raw.shape[1:], np.nan),
        **diagnostics,
    )
    return Estimate(raw.mean(axis=0), terms.grad, terms.stderr, info)


class Backprop(AbstractEstimator):
    """Backpropagation through the whole rollout (BPTT), averaged over samples.

    Supports: Terminal, WindowAverage, TimeAverage (approximated by a window of ``steps``).
    The standard error is the spread of per-sample gradients over sqrt(samples); it does not
    cover the finite-window bias of a TimeAverage, and in a chaotic system it explodes with
    the gradients themselves.

    Args:
        samples: independent samples (rollouts), each with its own initial state and noise;
            at least 2 (the standard error is their spread).
        steps: for a TimeAverage only, the window each sample backpropagates through.
        burn_in: for a TimeAverage only, steps run before the window (default 1000).
        diagnostics: measure the per-sample gradient growth against the horizon (one extra
            forward-mode pass) and report the explosion in ``info``.
    """

    statistics = (Terminal, WindowAverage, TimeAverage)
    samples: int = 2
    steps: int | None = None
    burn_in: int | None = None
    diagnostics: bool = True

    def __check_init__(self):
        check_samples(self.samples)
        check_sizes(self, "steps", "burn_in")

    def terms(self, system, components, params, x0, key, cotangent):
        return _backprop_terms(self, None, system, components, params, x0, key, cotangent)

    def finish(self, terms, system, components, params, x0, key):
        return _backprop_finish(self, None, terms, system, components)


class TruncatedBackprop(AbstractEstimator):
    """Backpropagation cut every ``truncation`` steps (chunked truncated BPTT): bounded, biased.

    Supports: Terminal, WindowAverage, TimeAverage. The gradient of each Phi(x_n) flows back
    at most ``truncation`` steps, to the start of its chunk. The standard error covers the
    sampling error only, not the truncation bias.

    Args:
        truncation: chunk length; the derivative does not cross chunk boundaries.
        samples, steps, burn_in: as in :class:`Backprop`.
    """

    statistics = (Terminal, WindowAverage, TimeAverage)
    truncation: int
    samples: int = 2
    steps: int | None = None
    burn_in: int | None = None
    diagnostics: bool = False

    def __check_init__(self):
        check_positive_int(self.truncation, "truncation")
        check_samples(self.samples)
        check_sizes(self, "steps", "burn_in")

    def terms(self, system, components, params, x0, key, cotangent):
        horizon = resolve_horizon(components.statistic, self)
        if self.truncation > horizon.steps:
            raise ValueError(
                f"truncation ({self.truncation}) must not exceed the window ({horizon.steps} steps)"
            )
        return _backprop_terms(
            self, self.truncation, system, components, params, x0, key, cotangent
        )

    def finish(self, terms, system, components, params, x0, key):
        return _backprop_finish(self, self.truncation, terms, system, components)
