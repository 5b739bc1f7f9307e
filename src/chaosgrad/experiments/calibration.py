"""Do the error bars mean what they say? Each estimator on its reference case, many keys.

For keys 0..n-1 the estimator returns g_i ± s_i. Two numbers judge the reported errors:

    ratio    = mean_i s_i / sd_i(g_i)          (1 when the error bar has the right size)
    coverage = #{ |g_i - reference| <= 2 s_i } / n

with the reference the closed form where there is one, else the mean over all keys. For a
normal error, coverage is 95.4 %; for the spread of R orbits (a t distribution with R - 1
degrees of freedom) P(|t| <= 2) = 93.6 % at R = 16 and 91.4 % at R = 8.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .._user_models import Map
from ..estimators import (
    Backprop,
    FastAdjointResponse,
    FiniteDifference,
    Kernel,
    PathKernel,
    Shadowing,
    TruncatedBackprop,
)
from ..estimators._response import linear_response
from ..statistics import Terminal, TimeAverage
from ..systems import Lorenz63, NineNeuronNet


@dataclass(frozen=True)
class CalibrationCase:
    """An estimator on a problem: ``build() -> (system, statistic, estimator, wrt)``;
    ``exact`` is the closed form of the derivative, or None (then the many-key mean)."""

    name: str
    build: Callable
    exact: float | None
    keys: int
    note: str


@dataclass(frozen=True)
class CalibrationResult:
    """Estimates and reported standard errors over keys, and the two calibration numbers."""

    case: str
    estimates: np.ndarray
    stderrs: np.ndarray
    reference: float
    reference_kind: str
    ratio: float
    coverage: float
    seconds: float

    def as_dict(self) -> dict:
        return {
            "case": self.case,
            "keys": len(self.estimates),
            "mean": float(np.mean(self.estimates)),
            "spread": float(np.std(self.estimates, ddof=1)),
            "mean_stderr": float(np.mean(self.stderrs)),
            "reference": self.reference,
            "reference_kind": self.reference_kind,
            "ratio": self.ratio,
            "coverage": self.coverage,
            "seconds": self.seconds,
        }


AR_A, AR_G, AR_NOISE, AR_T = 0.8, 1.0, 0.5, 10


def noisy_ar1() -> Map:
    """x' = a x + g + 0.5 xi (a = 0.8, g = 1), x0 ~ N(0, 1)."""
    return Map(
        lambda t, x, p: p["a"] * x + p["g"],
        args={"a": jnp.asarray(AR_A), "g": jnp.asarray(AR_G)},
        noise=AR_NOISE,
        dim=1,
    )


def ar1_terminal_slope() -> float:
    """d E[x_T] / da for x0 ~ N(0, 1): E x_T = g (1 - a^T) / (1 - a)."""
    a, g, n = AR_A, AR_G, AR_T
    return g * (-n * a ** (n - 1) * (1 - a) + (1 - a**n)) / (1 - a) ** 2


def _ar1(estimator):
    return lambda: (noisy_ar1(), Terminal(lambda x: x[0], AR_T), estimator, lambda s: s.args["a"])


def _lorenz():
    return Lorenz63(dt=1e-3, method="euler")


def _solenoid():
    """The modified solenoid (5 dims) with gamma1 = gamma2 = 0.1 tied (references.md §2)."""

    def step(t, x, g):
        x1, angles = x[0], x[1:]
        x1_next = 0.05 * x1 + 0.1 * jnp.sum(jnp.cos(5 * angles)) + g
        angles_next = jnp.mod(2 * angles + g * (1 + x1) * jnp.sin(2 * angles), 2 * jnp.pi)
        return jnp.concatenate([x1_next[None], angles_next])

    return Map(step, args=jnp.asarray(0.1), dim=5)


def _solenoid_observable(x):
    """Phi = x1^3 + 0.005 sum_{i>=2} (x_i - pi)^2 (references.md §2: d<Phi>/dgamma = 0.0627)."""
    return x[0] ** 3 + 0.005 * jnp.sum((x[1:] - jnp.pi) ** 2)


CASES: dict[str, CalibrationCase] = {
    case.name: case
    for case in (
        CalibrationCase(
            "backprop",
            _ar1(Backprop(samples=2000, diagnostics=False)),
            ar1_terminal_slope(),
            100,
            "noisy AR(1), d E[x_10] / da, 2000 samples",
        ),
        CalibrationCase(
            "truncated",
            _ar1(TruncatedBackprop(samples=2000, truncation=4)),
            None,
            100,
            "noisy AR(1), truncation 4 (biased: judged against the many-key mean)",
        ),
        CalibrationCase(
            "finite-difference",
            _ar1(FiniteDifference(eps=1e-3, samples=2000)),
            ar1_terminal_slope(),
            100,
            "noisy AR(1), central difference with common random numbers",
        ),
        CalibrationCase(
            "kernel",
            lambda: (
                NineNeuronNet(gamma=1.0, noise=0.5),
                Terminal(jnp.sum, 50),
                Kernel(samples=4000),
                lambda s: s.gamma,
            ),
            None,
            100,
            "nine-neuron net, gamma = 1, depth 50, 4000 samples",
        ),
        CalibrationCase(
            "path-kernel",
            lambda: (
                NineNeuronNet(gamma=0.556, noise=0.5),
                Terminal(jnp.sum, 50),
                PathKernel(samples=4000, alpha=1.0),
                lambda s: s.gamma,
            ),
            None,
            100,
            "nine-neuron net, gamma = 0.556, alpha = 1, 4000 samples",
        ),
        CalibrationCase(
            "shadowing",
            lambda: (
                _lorenz(),
                TimeAverage(lambda x: x[2]),
                Shadowing(unstable_dim=2, segment_steps=200, segments=250, burn_in=5000, orbits=16),
                lambda s: s.rho,
            ),
            None,
            240,  # heavy-tailed per-orbit terms: 60 keys gave ratios 0.77-1.12 over 6 seeds
            "Lorenz-63 Euler dt = 1e-3, d<z>/drho, 16 orbits of T = 50",
        ),
        CalibrationCase(
            "shadowing-one-orbit",
            lambda: (
                _lorenz(),
                TimeAverage(lambda x: x[2]),
                Shadowing(unstable_dim=2, segment_steps=200, segments=1000, burn_in=10_000),
                lambda s: s.rho,
            ),
            None,
            40,
            "the same, one orbit of T = 200 and 20 batch-means blocks (the issue's case)",
        ),
        CalibrationCase(
            "far",
            lambda: (
                _solenoid(),
                TimeAverage(_solenoid_observable),
                FastAdjointResponse(
                    unstable_dim=4,
                    segment_steps=20,
                    segments=100,
                    window=10,
                    burn_in=500,
                    orbits=16,
                ),
                None,
            ),
            None,
            60,
            "modified solenoid, tied gamma = 0.1, 16 orbits of 2000 steps",
        ),
    )
}


def calibrate(name: str, keys: int | None = None, seed: int = 0) -> CalibrationResult:
    """Run case ``name`` for keys fold_in(key(seed), i), i < keys (default: the case's)."""
    case = CASES[name]
    count = case.keys if keys is None else keys
    system, statistic, estimator, wrt = case.build()
    root = jax.random.key(seed)
    estimates, stderrs = [], []
    began = time.perf_counter()
    for i in range(count):
        result = linear_response(
            system, statistic, estimator, wrt=wrt, key=jax.random.fold_in(root, i)
        )
        grad = result.grad if wrt is not None else result.grad.args
        error = result.stderr if wrt is not None else result.stderr.args
        estimates.append(float(np.asarray(grad)))
        stderrs.append(float(np.asarray(error)))
    values, errors = np.array(estimates), np.array(stderrs)
    reference = float(np.mean(values)) if case.exact is None else case.exact
    spread = float(np.std(values, ddof=1))
    return CalibrationResult(
        case=name,
        estimates=values,
        stderrs=errors,
        reference=reference,
        reference_kind="many-key mean" if case.exact is None else "closed form",
        ratio=float(np.mean(errors) / spread) if spread > 0 else float("nan"),
        coverage=float(np.mean(np.abs(values - reference) <= 2 * errors)),
        seconds=time.perf_counter() - began,
    )
