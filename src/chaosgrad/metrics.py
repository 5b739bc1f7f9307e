"""Attractor metrics of dynamical-systems reconstruction: is the model's long-time behaviour
the data's? (Used by the generalized-teacher-forcing and sparse-teacher-forcing papers:
Hess et al., ICML 2023; Mikhaeil, Monfared & Durstewitz, NeurIPS 2022.)

* **State-space divergence** D_stsp = KL(p_data || p_model) = sum_b p_b log(p_b / q_b)
  between occupation histograms with m bins per axis on the data's bounding box (extended
  by 5 % per side); model points outside the box are not counted, so a model that leaves
  the attractor loses probability mass there. Model bins that are empty where the data
  are not get eps, then q is renormalised. For higher dimensions
  :func:`state_space_divergence_gmm` places Gaussians of variance sigma^2 on the points
  and estimates the KL by Monte Carlo over the data points.
* **Power-spectrum distance** D_H: per dimension, the power spectrum |FFT(x - mean)|^2 is
  smoothed with a Gaussian of ``smoothing`` frequency bins (kernel cut at 8 sd) and
  normalised to sum 1, and
  H(f, g) = sqrt(1 - sum_w sqrt(f_w g_w)) (Hellinger); D_H is the mean over dimensions.
* **n-step prediction error**: mean squared error of n-step predictions from data points.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import logsumexp


def _pair(data, model, name_a: str = "data", name_b: str = "model"):
    a, b = np.asarray(data, dtype=float), np.asarray(model, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{name_a} and {name_b} must be (points, dimensions) arrays")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} has {a.shape[1]} dimensions but {name_b} has {b.shape[1]}: "
            "compare trajectories of the same system"
        )
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{name_a} and {name_b} need at least 2 points each")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name_a} contains NaN or inf")
    return a, b


def state_space_divergence(data, model, bins: int = 30, eps: float = 1e-6) -> float:
    """D_stsp = KL(p_data || p_model) between histograms of ``bins`` bins per axis.

    Returns inf when the model trajectory is not finite.
    """
    a, b = _pair(data, model)
    if not np.all(np.isfinite(b)):
        return float("inf")
    low, high = a.min(axis=0), a.max(axis=0)
    margin = 0.05 * np.where(high > low, high - low, 1.0)
    edges = [
        np.linspace(lo - m, hi + m, bins + 1) for lo, hi, m in zip(low, high, margin, strict=True)
    ]
    p, _ = np.histogramdd(a, bins=edges)
    q, _ = np.histogramdd(b, bins=edges)
    p = p.ravel() / p.sum()
    q = q.ravel() / len(b)
    mask = p > 0
    q = np.where(mask & (q == 0), eps, q)
    q = q / q.sum()
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def state_space_divergence_gmm(
    data, model, sigma: float = 1.0, points: int = 1000, seed: int = 0
) -> float:
    """D_stsp by Gaussian mixtures: p and q are mixtures of N(x_i, sigma^2 I) on ``points``
    subsampled points of each trajectory; KL(p || q) ~ mean over data samples of
    log p(x) - log q(x) (x drawn from p: a data point plus sigma noise)."""
    a, b = _pair(data, model)
    if not np.all(np.isfinite(b)):
        return float("inf")
    a = a[np.random.default_rng(seed).choice(len(a), min(points, len(a)), replace=False)]
    b = b[np.random.default_rng(seed).choice(len(b), min(points, len(b)), replace=False)]
    x = a + sigma * np.random.default_rng(seed + 1).standard_normal(a.shape)

    def log_mixture(centres):
        squared = np.sum((x[:, None, :] - centres[None, :, :]) ** 2, axis=2)
        return logsumexp(-squared / (2 * sigma**2), axis=1) - np.log(len(centres))

    return float(max(np.mean(log_mixture(a) - log_mixture(b)), 0.0))


def _spectra(series: np.ndarray, smoothing: float) -> np.ndarray:
    centred = series - series.mean(axis=0)
    power = np.abs(np.fft.rfft(centred, axis=0)) ** 2
    if smoothing > 0:
        power = gaussian_filter1d(power, smoothing, axis=0, mode="constant", truncate=8.0)
    total = power.sum(axis=0)
    return power / np.where(total > 0, total, 1.0)


def power_spectrum_distance(data, model, smoothing: float = 20.0, per_dimension: bool = False):
    """D_H: mean over dimensions of the Hellinger distance of the smoothed, normalised power
    spectra (series truncated to the shorter length). ``per_dimension`` returns the array."""
    a, b = _pair(data, model)
    if not np.all(np.isfinite(b)):
        return np.full(a.shape[1], np.inf) if per_dimension else float("inf")
    length = min(len(a), len(b))
    f, g = _spectra(a[:length], smoothing), _spectra(b[:length], smoothing)
    distances = np.sqrt(np.clip(1.0 - np.sum(np.sqrt(f * g), axis=0), 0.0, None))
    return distances if per_dimension else float(np.mean(distances))


def prediction_error(step: Callable, data, horizon: int, stride: int = 1) -> float:
    """Mean over starts i (every ``stride``-th point) of |step^horizon(x_i) - x_{i+horizon}|^2
    / dimensions; ``step`` maps a state to the next one (traceable by JAX)."""
    array = jnp.asarray(data)
    if array.ndim != 2:
        raise ValueError(f"data must be (points, dimensions), got shape {array.shape}")
    if int(horizon) < 1 or len(array) <= horizon:
        raise ValueError(f"horizon must be in 1..{len(array) - 1}, got {horizon}")
    starts = jnp.arange(0, len(array) - horizon, int(stride))
    predictions = _iterate(step, array[starts], int(horizon))
    return float(jnp.mean((predictions - array[starts + horizon]) ** 2))


@eqx.filter_jit
def _iterate(step, states, horizon: int):
    def one(x):
        return jax.lax.scan(lambda y, _: (step(y), None), x, None, length=horizon)[0]

    return jax.vmap(one)(states)


def relative_exponent_error(estimate: float, reference: float) -> float:
    """|estimate - reference| / |reference|."""
    if reference == 0:
        raise ValueError("reference exponent is 0: the relative error is undefined")
    return abs(float(estimate) - float(reference)) / abs(float(reference))
