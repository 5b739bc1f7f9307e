"""Non-intrusive adjoint shadowing: the shadowing contribution to d<Phi>/dtheta.

The algorithm (forward tangents with QR, backward homogeneous and inhomogeneous adjoints,
dual renormalisation, coefficients a_k = M_k a_{k-1} - b_k) is in ``_adjoint.py``; the
estimate is SC = (1/N) sum_n nu_{n+1} . X_n with X_n = d_theta f(x_n): one VJP with respect
to all parameters per step, so the cost is about (u + k') backpropagations for k'
statistic components, whatever the number of parameters.

A. Ni & C. Talnikar, "Adjoint sensitivity analysis on chaotic dynamical systems by
non-intrusive least squares adjoint shadowing (NILSAS)", J. Comput. Phys. 395, 690 (2019);
A. Ni, "Backpropagation in hyperbolic chaos via adjoint shadowing", Nonlinearity (2024).
Caveat: shadowing alone omits the unstable contribution (use FastAdjointResponse for the
full response of a map); it assumes (near) uniform hyperbolicity.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._errors import check_positive_int
from .._system import check_horizon
from ..statistics import TimeAverage, WindowAverage
from ._adjoint import (
    adjoint_sweep,
    blocked_mean,
    check_orbit,
    forward_segments,
    is_flow,
    orbit_exponents,
    orbit_values,
    prepare_orbit,
    segment_contributions,
    shadowing_coefficients,
)
from ._base import DEFAULT_BURN_IN, AbstractEstimator, AbstractInfo, Estimate, check_sizes, project


class ShadowingInfo(AbstractInfo):
    """Diagnostics of Shadowing.

    Args:
        steps, segments: the orbit length (after the burn-in) and its segment count.
        lyapunov_exponents: the u exponents seen on the orbit (per unit time for a flow);
            compare with ``unstable_dim``: they should all be >= 0.
        max_coefficient: the largest |a_k| (large values: a near-tangency or a wrong u).
    """

    steps: int
    segments: int
    lyapunov_exponents: list
    max_coefficient: float


def orbit_layout(estimator, statistic) -> tuple[int, int]:
    """(segments, burn_in) for a TimeAverage (the estimator's) or a WindowAverage (its own)."""
    name = type(estimator).__name__
    if isinstance(statistic, TimeAverage):
        if estimator.segments is None:
            raise ValueError(
                f"{name} needs segments= for a TimeAverage (the orbit has "
                "segments * segment_steps steps after burn_in)"
            )
        return (
            estimator.segments,
            DEFAULT_BURN_IN if estimator.burn_in is None else estimator.burn_in,
        )
    if estimator.segments is not None or estimator.burn_in is not None:
        raise ValueError(
            f"{name}(segments=..., burn_in=...) apply to a TimeAverage only: a "
            "WindowAverage has its own steps and burn_in"
        )
    segments, rest = divmod(statistic.steps, estimator.segment_steps)
    if rest:
        raise ValueError(
            f"the WindowAverage's steps ({statistic.steps}) must be a multiple of "
            f"segment_steps ({estimator.segment_steps})"
        )
    return segments, statistic.burn_in


def check_segments(estimator) -> None:
    check_positive_int(estimator.unstable_dim, "unstable_dim", allow_zero=True)
    check_positive_int(estimator.segment_steps, "segment_steps")
    check_positive_int(estimator.blocks, "blocks")
    check_sizes(estimator, "segments", "burn_in")
    if estimator.segments is not None and estimator.segments < 2:
        raise ValueError(
            f"segments must be at least 2 (got {estimator.segments}): the "
            "standard error comes from independent blocks of segments"
        )


class Shadowing(AbstractEstimator):
    """Adjoint shadowing contribution to d<Phi>/dtheta on one long orbit (all parameters).

    Supports: TimeAverage (an orbit of ``segments * segment_steps`` steps after ``burn_in``),
    WindowAverage (its own steps and burn-in). The standard error is batch means over
    ``blocks`` blocks of segments; it covers the sampling error of the orbit average, not
    the bias of finite segments, nor the shadowing bias of a non-hyperbolic system, nor the
    missing unstable contribution. With ``unstable_dim=0`` (a stable system) this is the
    plain adjoint of the long-time average.

    Args:
        unstable_dim: u, the number of positive exponents (plus one for a flow's neutral
            direction). Must be smaller than the dimension.
        segment_steps: steps per segment (the growth inside one segment must stay moderate).
        segments: K, for a TimeAverage: the orbit has K * segment_steps steps.
        burn_in: for a TimeAverage, steps run before the orbit (state and tangent vectors
            align); default 1000.
        blocks: batch-means blocks of segments for the standard error.
    """

    statistics = (TimeAverage, WindowAverage)
    unstable_dim: int
    segment_steps: int
    segments: int | None = None
    burn_in: int | None = None
    blocks: int = 20

    def __check_init__(self):
        check_segments(self)

    def estimate(self, system, components, params, x0, key, cotangent):
        segments, burn_in = orbit_layout(self, components.statistic)
        check_horizon(system, burn_in + segments * self.segment_steps)
        x, q, noise_key, t = prepare_orbit(system, x0, key, self.unstable_dim, burn_in)
        start = jnp.asarray(t)
        states, qs, rs, _ = forward_segments(
            system, x, q, noise_key, start, segments, self.segment_steps
        )
        check_orbit(states, t)
        value = jnp.mean(orbit_values(system, components, states), axis=(0, 1))
        components = project(components, cotangent, value)  # same orbit's value
        flow = is_flow(system)
        terms = adjoint_sweep(system, components, params, states, qs, noise_key, start, flow)
        coefficients = shadowing_coefficients(terms.b, terms.M, terms.sums.least_squares)
        contributions = segment_contributions(terms.sums.nu, terms.sums.eps, coefficients)
        grad, stderr = blocked_mean(contributions, self.segment_steps, self.blocks)
        info = ShadowingInfo(
            method="Shadowing",
            seconds=0.0,
            warning=None,
            steps=segments * self.segment_steps,
            segments=segments,
            lyapunov_exponents=orbit_exponents(rs, self.segment_steps, system.time_step),
            max_coefficient=float(jnp.max(jnp.abs(coefficients), initial=0.0)),
        )
        return Estimate(np.asarray(value), grad, stderr, info)
