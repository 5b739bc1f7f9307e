"""Task C: learn Lorenz-63's parameters from one long trajectory (the evolution-strategies
protocol, where NRES is the published wall-clock winner).

The NRES paper's Lorenz-63 setting (Li et al., NeurIPS 2023; references §7): forward Euler at
dt = 0.005, x_0 = (1.2, 1.3, 1.6), b = 8/3 fixed, learn (log sigma, log rho) from
(22.6, 40.4) toward (10, 28), the loss the misfit (z - z_data)^2 along a 2000-step
trajectory (10 time units, about 9 Lyapunov times). Written as in the short-window control
(:mod:`.control_short`): the data ride along as the fourth state component of an
``InputDriven`` system, so the loss is a ``WindowAverage`` (the paper's sum / 2000) and every
estimator that takes a window average applies.

Methods (the same Adam grid for every one, tuned on a tuning seed):

* full BPTT through the 2000 steps (its gradient grows like e^{lambda_1 T} ~ 1e4-1e8);
* truncated BPTT (truncation 100 steps);
* full ES (10 antithetic pairs, sigma = 0.04, the paper's particles and sigma), and PES
  and NRES (truncation 100) in both forms: fixed-theta (``pes``, ``nres``: one iteration
  runs the whole unroll in truncations and returns one gradient; NRES then equals ES to
  rounding) and online (``pes-online``, ``nres-online``: :class:`~chaosgrad.Online`, the
  papers' form, which updates theta after every truncation, the particles staggered along
  the unroll and carried from step to step);
* Kernel's path form (likelihood ratio along the paths) with dynamics noise injected at
  sigma = 0.01 and 0.1: the noise smooths the loss as ES's parameter noise does. Its
  gradient is that of the noisy model's loss; the metric is the noise-free one.

Metrics: the unperturbed loss (the deterministic model at the trained parameters) and the
relative parameter error |theta - theta*| / |theta*| in (sigma, rho), against training time.
Pre-registered success: parameter error below 1 %.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax.numpy as jnp

from ... import estimators as est
from .control_short import START, ShortSettings, ShortTask

METHODS = (
    "bptt",
    "truncated-bptt",
    "es",
    "pes",
    "nres",
    "pes-online",
    "nres-online",
    "kernel-0.01",
    "kernel-0.1",
)
GRID = (0.001, 0.003, 0.01, 0.03)
"""Adam's learning rates tuned on the tuning seed, the same grid for every method."""


@dataclass(frozen=True)
class CSettings(ShortSettings):
    steps: int = 2000
    sigma: float = 0.04
    pairs: int = 10
    truncation: int = 100
    kernel_samples: int = 64

    @classmethod
    def quick(cls) -> CSettings:
        return replace(cls(), steps=200, truncation=20, kernel_samples=16)


class CTask(ShortTask):
    """The long-trajectory fit (module doc)."""

    name = "C"

    def __init__(self, settings: CSettings | None = None):
        super().__init__(settings or CSettings())
        self.methods = METHODS
        self.grid = GRID

    def start_model(self, method: str):
        """The paper's start; the kernel methods' model carries their injected noise."""
        noise = float(method.split("-")[1]) if method.startswith("kernel-") else 0.0
        return self.model(jnp.asarray(START), noise)

    def estimator(self, method: str):
        s = self.settings
        assert isinstance(s, CSettings)
        if method == "truncated-bptt":
            return est.TruncatedBackprop(truncation=s.truncation, samples=2)
        if method == "pes":
            return est.PES(sigma=s.sigma, samples=s.pairs, truncation=s.truncation)
        if method == "nres":
            return est.NRES(sigma=s.sigma, samples=s.pairs, truncation=s.truncation)
        if method == "pes-online":
            return est.Online(est.PES(sigma=s.sigma, samples=s.pairs, truncation=s.truncation))
        if method == "nres-online":
            return est.Online(est.NRES(sigma=s.sigma, samples=s.pairs, truncation=s.truncation))
        if method.startswith("kernel-"):
            return est.Kernel(samples=s.kernel_samples)
        if method in ("bptt", "es"):
            return super().estimator(method)
        raise ValueError(f"unknown {self.name} method {method!r}; choose from {self.methods}")
