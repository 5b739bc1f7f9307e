"""Mean-field theory of wide random tanh networks (order-to-chaos transition).

For x_{l+1} = W tanh(x_l) + b with W_ij ~ N(0, sigma_w^2 / N), b_i ~ N(0, sigma_b^2), the
length map and its slope are

    q* = sigma_w^2 E[tanh(sqrt(q*) z)^2] + sigma_b^2,      z ~ N(0, 1),
    chi_1 = sigma_w^2 E[tanh'(sqrt(q*) z)^2].

chi_1 = 1 is the order-to-chaos line; (1/2) ln chi_1 is the mean-field top Lyapunov exponent
per layer. B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein & S. Ganguli, "Exponential
expressivity in deep neural networks through transient chaos", NeurIPS 2016.
Expectations use 200-point Gauss-Hermite quadrature; the fixed point is found by iteration
and the critical line by bisection (both converge to machine precision).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(200)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _gauss(fn, q):
    return float(np.sum(_WEIGHTS * fn(np.sqrt(q) * _NODES)))


class MeanField(NamedTuple):
    """Fixed point q*, slope chi_1 and exponent (1/2) ln chi_1 per layer."""

    q_star: float
    chi1: float
    lyapunov_exponent: float


def mean_field(sigma_w2: float, sigma_b2: float = 0.0, *, tol: float = 1e-14) -> MeanField:
    """q*, chi_1 and (1/2) ln chi_1 for weight variance sigma_w^2/N and bias variance sigma_b^2."""
    if sigma_w2 <= 0 or sigma_b2 < 0:
        raise ValueError(f"need sigma_w2 > 0 and sigma_b2 >= 0, got {sigma_w2}, {sigma_b2}")
    q = 1.0
    for _ in range(10_000):
        q_next = sigma_w2 * _gauss(lambda h: np.tanh(h) ** 2, q) + sigma_b2
        if abs(q_next - q) <= tol * max(1.0, q):
            q = q_next
            break
        q = q_next
    chi1 = sigma_w2 * _gauss(lambda h: np.cosh(h) ** -4, q)
    return MeanField(q, chi1, 0.5 * float(np.log(chi1)))


def critical_sigma_w(sigma_b2: float) -> float:
    """The sigma_w (not squared) at which chi_1 = 1 for bias variance ``sigma_b2``.

    sigma_b^2 = 0.05 gives sigma_w^2 = 1.761 (sigma_w = 1.327); sigma_b^2 = 0 gives 1.
    """
    if sigma_b2 < 0:
        raise ValueError(f"sigma_b2 must be >= 0, got {sigma_b2}")
    if sigma_b2 == 0:
        # q* = 0 below the line, so chi_1 = sigma_w^2 tanh'(0)^2 = sigma_w^2: exactly 1.
        # (Fixed-point iteration converges only like 1/n at that line.)
        return 1.0
    lo, hi = 0.5, 16.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mean_field(mid, sigma_b2).chi1 < 1.0:
            lo = mid
        else:
            hi = mid
    return float(np.sqrt(0.5 * (lo + hi)))
