"""The mathematics of two reconstruction baselines of ``fit_trajectory``: the kernel and the
maximum mean discrepancy of measure matching (DySLIM), and the data's largest Lyapunov
exponent from which sparse teacher forcing takes its forcing interval.

* **Inverse multiquadric kernel**, multiscale: k(x, y) = sum_b (1 + |x - y|^2 / b^2)^(-1/2)
  over the bandwidths b (Schiff et al., ICML 2024, on standardised data: b in {0.2, 0.5,
  0.9, 1.3}). Each term is characteristic, so MMD = 0 only when the two measures agree.
* **Squared MMD**, the biased V-statistic of samples X (n, d) and Y (m, d):
  MMD^2 = mean_{i,j} k(X_i, X_j) + mean_{i,j} k(Y_i, Y_j) - 2 mean_{i,j} k(X_i, Y_j),
  diagonals included. It is >= 0, exactly 0 for identical samples, and its bias
  (k(x, x) terms) does not depend on where the samples are: the gradient is that of the
  unbiased U-statistic up to the factors n/(n - 1).
* **lambda_1 from data** (Rosenstein, Collins & De Luca, Physica D 65, 117 (1993)): each
  reference point's nearest neighbour in state space (excluding points closer in time than
  the mean period) is followed, and lambda_1 is the slope of the mean log distance
  y(k) = <log |x_{i+k} - x_{j(i)+k}|> against time, fitted where y(k) has risen by 1 above
  y(0) and is still 1 below its saturation (the mean log distance of random pairs).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from scipy.spatial import KDTree

DYSLIM_BANDWIDTHS = (0.2, 0.5, 0.9, 1.3)
"""The kernel's bandwidths (standardised coordinates) of Schiff et al."""


def inverse_multiquadric_kernel(x, y, bandwidths=DYSLIM_BANDWIDTHS):
    """k(x_i, y_j) = sum_b (1 + |x_i - y_j|^2 / b^2)^(-1/2) for every pair of rows.

    Args:
        x, y: (n, d) and (m, d) samples.
        bandwidths: the scales b, summed over (module doc).

    Returns:
        The (n, m) kernel matrix.
    """
    squared = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    scales = jnp.asarray(bandwidths, dtype=squared.dtype) ** 2
    return jnp.sum((1.0 + squared[..., None] / scales) ** -0.5, axis=-1)


def squared_mmd(x, y, bandwidths=DYSLIM_BANDWIDTHS):
    """MMD^2 of the samples x (n, d) and y (m, d) with the inverse multiquadric kernel: the
    biased V-statistic mean k(x, x') + mean k(y, y') - 2 mean k(x, y) (module doc)."""
    return (
        jnp.mean(inverse_multiquadric_kernel(x, x, bandwidths))
        + jnp.mean(inverse_multiquadric_kernel(y, y, bandwidths))
        - 2.0 * jnp.mean(inverse_multiquadric_kernel(x, y, bandwidths))
    )


def _mean_period(series: np.ndarray) -> float:
    """1 / (power-weighted mean frequency), in steps: the Theiler window."""
    power = np.sum(np.abs(np.fft.rfft(series - series.mean(axis=0), axis=0)) ** 2, axis=1)
    frequency = np.fft.rfftfreq(len(series))
    return float(np.sum(power[1:]) / max(np.sum(frequency[1:] * power[1:]), 1e-300))


def lyapunov_from_data(series, dt: float, *, references: int = 500) -> float:
    """The largest Lyapunov exponent (per unit time) of a trajectory, by Rosenstein's
    nearest-neighbour divergence (module doc): a rough estimate for choosing settings.

    Measured on RK4 trajectories: Lorenz-63 (lambda_1 = 0.906) gives 0.82-0.90 from 2 x 10^4
    to 10^5 points (dt = 0.01 and 0.005) and 1.05-1.14 from 3000; Roessler (0.071) gives
    0.043 from 2 x 10^4 points (40 % low) and is refused from 4000. Give the exponent
    yourself when it is known.

    Args:
        series: (N, d) states sampled every ``dt`` (the full state, not a delay embedding).
        dt: the sampling interval.
        references: reference points, evenly spaced along the series.

    Raises:
        ValueError: when nearest neighbours do not separate exponentially over the series
            (periodic or stable data, too short or too high-dimensional a series).
    """
    array = np.asarray(series, dtype=np.float64)
    scale = array.std(axis=0)
    array = (array - array.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    horizon = min(len(array) // 3, 2000)
    theiler = math.ceil(_mean_period(array))
    candidates = len(array) - horizon
    if candidates <= 2 * theiler + 2:
        raise ValueError(
            f"the series has {len(array)} points: too short to estimate lambda_1 from "
            f"neighbours (mean period {theiler} steps); give the exponent"
        )
    reference = np.linspace(0, candidates - 1, min(references, candidates)).astype(int)
    # the 2 w + 2 nearest include at least one outside the Theiler window |i - j| <= w
    distances, neighbours = KDTree(array[:candidates]).query(
        array[reference], k=min(2 * theiler + 2, candidates)
    )
    distances, neighbours = np.asarray(distances), np.asarray(neighbours)
    allowed = (np.abs(neighbours - reference[:, None]) > theiler) & (distances > 0)
    found = allowed.any(axis=1)
    nearest = neighbours[np.arange(len(reference)), np.argmax(allowed, axis=1)][found]
    reference = reference[found]
    offsets = np.arange(horizon + 1)
    separation = array[reference[:, None] + offsets] - array[nearest[:, None] + offsets]
    log_distance = np.mean(np.log(np.linalg.norm(separation, axis=2)), axis=0)
    pairs = np.random.default_rng(0).integers(0, len(array), (2, 4096))
    saturation = np.mean(np.log(np.linalg.norm(array[pairs[0]] - array[pairs[1]], axis=1) + 1e-300))
    start = np.flatnonzero(log_distance >= log_distance[0] + 1.0)
    stop = np.flatnonzero(log_distance >= saturation - 1.0)
    if not (start.size and stop.size) or stop[0] - start[0] < 10:
        raise ValueError(
            "lambda_1 could not be estimated from the data: nearest neighbours do not "
            "separate exponentially (periodic or stable data, or too short a series); give "
            "the exponent"
        )
    fitted = slice(start[0], stop[0] + 1)
    slope = np.polyfit(offsets[fitted], log_distance[fitted], 1)[0]
    return float(slope / dt)


def predictability_steps(lyapunov: float, dt: float) -> int:
    """round(ln 2 / (lambda_1 dt)): the steps over which a small error doubles."""
    return max(1, round(math.log(2.0) / (lyapunov * dt)))
