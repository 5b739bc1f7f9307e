"""Backpropagation through time: the pathwise derivative, the conventional baseline.

For each sample the statistic J (window average or terminal value) is differentiated
through the whole rollout, dJ/dtheta = sum_n (prod_m f_*(x_m)) X_n ..., and averaged over
samples. In a chaotic system each term grows like e^{lambda_1 T}: the average of exploding
samples does not converge to the derivative of the long-time average. ``info`` records the
per-sample gradient magnitude against the horizon T (forward mode along one parameter
direction, all horizons in one pass) and its fitted growth rate, to be compared with lambda_1.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import check_positive_int
from ._base import AbstractEstimator, Estimate, tree_mean_and_stderr
from ._rollout import check_statistic, rollout, rollout_values, sample_starts, statistic_of


@eqx.filter_jit
def _value_and_grad(system, observable, params, starts, times, keys, steps: int,
                    statistic: str, window):
    def one(x_start, t0, key):
        def objective(values):
            current = params.substitute(system, values)
            if window is None:
                phis = rollout_values(current, observable, x_start, key, t0, steps)
            else:
                phis = _truncated_rollout(current, observable, x_start, key, t0, steps, window)
            return statistic_of(phis, statistic)

        return jax.value_and_grad(objective)(params.values)

    return jax.vmap(one)(starts, times, keys)


def _truncated_rollout(system, observable, x_start, key, t0, steps, window):
    """Phi values with the gradient cut every ``window`` steps (chunked truncated BPTT)."""
    chunks, remainder = divmod(steps, window)

    def chunk(x, c):
        x_end, values = rollout(system, observable, x, key, t0 + c * window, window)
        return jax.lax.stop_gradient(x_end), values

    x, values = jax.lax.scan(chunk, x_start, jnp.arange(chunks))
    values = values.reshape(-1)
    if remainder:
        tail = rollout_values(system, observable, x, key, t0 + chunks * window, remainder)
        values = jnp.concatenate([values, tail])
    return values


@eqx.filter_jit
def _growth_by_horizon(system, observable, params, starts, times, keys, steps: int,
                       statistic: str):
    """|d J_T / d theta . u| for every horizon T = 1..steps (u: unit parameter direction)."""
    flat, unravel = ravel_pytree(params.values)
    direction = unravel(jnp.ones_like(flat) / jnp.sqrt(flat.size))

    def one(x_start, t0, key):
        run = lambda values: rollout_values(params.substitute(system, values), observable,  # noqa: E731
                                            x_start, key, t0, steps)
        _, tangent = jax.jvp(run, (params.values,), (direction,))
        # the window sum's derivative (average: T * dA_T) grows like e^{lambda_1 T}
        return jnp.abs(jnp.cumsum(tangent) if statistic == "average" else tangent)

    return jax.vmap(one)(starts, times, keys)


def horizon_diagnostics(system, observable, params, starts, times, keys, steps, statistic):
    """Geometric-mean gradient magnitude on a grid of horizons and its fitted growth rate."""
    magnitudes = np.asarray(_growth_by_horizon(system, observable, params, starts, times, keys,
                                               steps, statistic))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mag = np.log(magnitudes)
    log_mag[~np.isfinite(log_mag)] = np.nan
    finite_count = np.sum(np.isfinite(log_mag), axis=0)
    mean_log = np.where(finite_count > 0, np.nansum(log_mag, axis=0) / np.maximum(finite_count, 1),
                        np.nan)
    horizons = np.unique(np.geomspace(1, steps, num=min(24, steps)).astype(int))
    fit = np.arange(steps // 4, steps)
    fit = fit[np.isfinite(mean_log[fit])]
    unit = system.time_step or 1.0
    slope = np.polyfit(fit * unit, mean_log[fit], 1)[0] if fit.size > 2 else np.nan
    return {"horizons": horizons.tolist(),
            "horizon_times": (horizons * unit).tolist(),
            "grad_magnitude_by_horizon": np.exp(mean_log[horizons - 1]).tolist(),
            "growth_rate": float(slope)}


class Backprop(AbstractEstimator):
    """Backpropagation through the whole rollout of ``steps`` steps, averaged over samples.

    ``statistic="average"`` differentiates the window average (1/T) sum Phi(x_n) after
    ``burn_in`` steps; ``"terminal"`` differentiates Phi(x_T) from the initial distribution.
    """

    steps: int
    samples: int = 1
    burn_in: int = 1000
    statistic: str = "average"
    diagnostics: bool = True

    def __check_init__(self):
        check_positive_int(self.steps, "steps")
        check_positive_int(self.samples, "samples")
        check_positive_int(self.burn_in, "burn_in", allow_zero=True)
        check_statistic(self.statistic)

    def _window(self):
        return None

    def estimate(self, system, observable, params, x0, key):
        began = time.perf_counter()
        starts, times, noise_keys = sample_starts(system, x0, key, self.samples, self.burn_in,
                                                 self.steps, self.statistic)
        values, grads = _value_and_grad(system, observable, params, starts, times, noise_keys,
                                        self.steps, self.statistic, self._window())
        grad, stderr = tree_mean_and_stderr(grads)
        per_sample = np.asarray(jax.vmap(lambda g: ravel_pytree(g)[0])(grads))
        info = {"method": type(self).__name__, "steps": self.steps, "samples": self.samples,
                "per_sample_std": np.std(per_sample, axis=0, ddof=1).tolist()
                if self.samples > 1 else None,
                "value_stderr": float(np.std(values, ddof=1) / np.sqrt(self.samples))
                if self.samples > 1 else float("nan")}
        if self.diagnostics and self._window() is None:
            info.update(horizon_diagnostics(system, observable, params, starts, times,
                                            noise_keys, self.steps, self.statistic))
        if not np.all(np.isfinite(per_sample)):
            info["warning"] = "some per-sample gradients overflowed (inf/NaN): the explosion"
        info["seconds"] = time.perf_counter() - began
        return Estimate(float(np.mean(values)), grad, stderr, info)


class TruncatedBackprop(Backprop):
    """Backpropagation cut every ``window`` steps (chunked truncated BPTT): bounded, biased.

    The gradient of each Phi(x_n) flows back at most ``window`` steps, to the start of its
    chunk; the state is passed on between chunks without its derivative.
    """

    window: int = 10

    def __check_init__(self):
        check_positive_int(self.window, "window")
        if self.window > self.steps:
            raise ValueError(f"window ({self.window}) must not exceed steps ({self.steps})")

    def _window(self):
        return self.window
