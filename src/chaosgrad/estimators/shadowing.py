"""Non-intrusive adjoint shadowing: the shadowing contribution to d<Phi>/dtheta.

The algorithm (forward tangents with QR, backward homogeneous and inhomogeneous adjoints,
dual renormalisation, coefficients a_k = M_k a_{k-1} - b_k) is in ``_sweep.py``; the
estimate is SC = (1/N) sum_n nu_{n+1} . X_n with X_n = d_theta f(x_n): one VJP with respect
to all parameters per step, so the cost is about (u + k') backpropagations for k'
statistic components, whatever the number of parameters. How the sweep is evaluated is the
``sweep`` strategy (``sweeps``: step by step, a segment's Jacobians at once, or parallel
over segments for a small system; the same terms to rounding).

A. Ni & C. Talnikar, "Adjoint sensitivity analysis on chaotic dynamical systems by
non-intrusive least squares adjoint shadowing (NILSAS)", J. Comput. Phys. 395, 690 (2019);
A. Ni, "Backpropagation in hyperbolic chaos via adjoint shadowing", Nonlinearity (2024).
Caveat: shadowing alone omits the unstable contribution (use FastAdjointResponse for the
full response of a map); it assumes (near) uniform hyperbolicity.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._error_bars import (
    blocks_warning,
    ensemble_mean,
    join_warnings,
    largest_orbit_deviation,
    orbit_exponents,
    outlier_warning,
    stderr_method,
    unstable_dim_warning,
)
from .._errors import check_positive_int
from .._runstate import check_checkpoint
from .._system import check_horizon
from ..parallel import map_samples, per_device, sample_parallel
from ..statistics import TimeAverage, WindowAverage
from ._base import (
    DEFAULT_BURN_IN,
    AbstractEstimator,
    AbstractInfo,
    Estimate,
    Terms,
    check_sizes,
    project,
)
from ._orbits import (
    Orbits,
    check_orbits,
    forward_orbits,
    is_flow,
    orbit_mean,
    orbit_starts,
    state_dimension,
)
from ._pilot import resolve_orbit_settings
from ._resumable import (
    estimate_in_pieces,
    forward_in_pieces,
    orbit_checkpoint,
    shadowing_sums,
    sweep_in_pieces,
)
from ._sweep import choose_sweep, orbit_sweep, segment_contributions, shadowing_coefficients
from .sweeps import AbstractSweep, AutoSweep, SegmentParallel, check_sweep


class ShadowingInfo(AbstractInfo):
    """Diagnostics of Shadowing.

    Args:
        steps, segments: one orbit's length (after the burn-in) and its segment count.
        orbits: the number of independent orbits averaged.
        stderr_method: what ``stderr`` is (the spread of independent orbits, or batch means
            over blocks of one orbit) and its caveat.
        largest_orbit_deviation: with R >= 8 orbits, how far the most outlying orbit
            estimate lies from their median, in robust standard deviations (above 6: a
            warning, the estimate is dominated by a near-tangency).
        lyapunov_exponents: the u exponents seen on the orbit(s) (per unit time for a
            flow); compare with ``unstable_dim``: they should all be >= 0.
        next_exponent: the (u+1)-th exponent, measured to check ``unstable_dim`` (it
            should be < 0); ``warning`` says when the exponents contradict u.
        max_coefficient: the largest |a_k| (large values: a near-tangency or a wrong u).
    """

    steps: int
    segments: int
    orbits: int
    stderr_method: str
    largest_orbit_deviation: float | None
    lyapunov_exponents: list
    next_exponent: float | None
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


def check_auto(value, name: str, allow_zero: bool = False) -> None:
    """An integer setting that may also be the string "auto" (chosen by a pilot run)."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{name} must be an integer or 'auto', got {value!r}")
        return
    check_positive_int(value, name, allow_zero=allow_zero)


def check_segments(estimator) -> None:
    check_auto(estimator.unstable_dim, "unstable_dim", allow_zero=True)
    check_auto(estimator.segment_steps, "segment_steps")
    check_positive_int(estimator.blocks, "blocks")
    check_positive_int(estimator.orbits, "orbits")
    check_sizes(estimator, "segments", "burn_in")
    if estimator.segments is not None and estimator.segments < 2:
        raise ValueError(
            f"segments must be at least 2 (got {estimator.segments}): the "
            "standard error comes from independent blocks of segments"
        )


@sample_parallel
def shadowing_contributions(
    system, components, params, orbits: Orbits, unstable_dim, flow, sweep: AbstractSweep
):
    """Per-orbit, per-segment shadowing sums (leaves (R, K, k', ...)), coefficients, and
    the orbits' bases and QR factors when they are made here, from the segment propagators
    (``sweep`` is :class:`~chaosgrad.estimators.sweeps.SegmentParallel`: the forward run left
    ``Orbits.qs`` of one basis), else None (not copied)."""
    count = per_device(orbits.keys.shape[0])

    def one(states, qs, rs, key):
        start = jnp.asarray(orbits.start)
        terms, bases = orbit_sweep(
            system,
            components,
            params,
            states,
            qs,
            key,
            start,
            flow,
            sweep,
            unstable_dim,
            orbits.segment_steps,
            count,
        )
        coefficients = shadowing_coefficients(terms.b, terms.M, terms.sums.least_squares)
        contributions = segment_contributions(terms.sums.nu, terms.sums.eps, coefficients)
        return contributions, coefficients, bases

    return map_samples(one, orbits.states, orbits.qs, orbits.rs, orbits.keys)


class Shadowing(AbstractEstimator):
    """Adjoint shadowing contribution to d<Phi>/dtheta on one long orbit (all parameters).

    Supports: TimeAverage (an orbit of ``segments * segment_steps`` steps after ``burn_in``),
    WindowAverage (its own steps and burn-in). With ``unstable_dim=0`` (a stable system)
    this is the plain adjoint of the long-time average.

    Standard error. With ``orbits=R >= 2`` the estimate averages R independent orbits and
    the standard error is their spread, sd / sqrt(R): calibrated (on Lorenz-63, over 40
    keys, reported / observed 0.96 and 2-SE coverage 92 %). With one orbit it is batch means
    over ``blocks`` blocks of segments, which overstates the error: a segment's sum
    sum_n nu_{n+1} . X_n carries boundary terms nu . v (v the shadowing direction, since
    X_n = v_{n+1} - f_* v_n) that cancel between neighbouring segments, so the per-segment
    sums are anti-correlated (lags 1-2: -0.3; integrated autocorrelation ~0) and each
    block adds a boundary term of its own (Lorenz-63: 3.5x at 20 blocks, growing like
    sqrt(blocks)). Either way it covers the sampling error of the orbit average, not the
    bias of finite segments and orbits, nor the shadowing bias of a non-hyperbolic system,
    nor the missing unstable contribution. A deterministic system from a given x0 with
    ``unstable_dim=0`` gives the same value for every key: there only the along-orbit
    (batch-means) error is meaningful.

    Args:
        unstable_dim: u, the number of positive exponents (plus one for a flow's neutral
            direction). Must be smaller than the dimension. ``"auto"``: counted from a
            pilot run's spectrum (exponents more than 3 SE + 0.02 above 0, plus a flow's
            neutral one); the choice and the pilot's numbers are in ``info.auto``.
        segment_steps: steps per segment (the growth inside one segment must stay
            moderate). ``"auto"``: lambda_1 m = 0.2 from the pilot, within [10, 1000].
        segments: K, for a TimeAverage: the orbit has K * segment_steps steps.
        burn_in: for a TimeAverage, steps run before the orbit (state and tangent vectors
            align); default 1000.
        blocks: batch-means blocks of segments for the standard error of one orbit.
        orbits: R independent orbits (each ``segments * segment_steps`` steps after its own
            burn-in, from its own start) averaged; R >= 2 gives the calibrated standard
            error. x0 may then be None (drawn per orbit) or of shape (R, dim). Each orbit's
            estimate carries boundary terms that fall like 1/T: splitting a fixed number of
            steps into more, shorter orbits runs faster but costs precision (Lorenz-63: 16
            orbits of T = 50 spread more than one of T = 200); keep each orbit long.
        checkpoint: a directory: the run goes in 16 pieces forward and 16 back, saved
            after each (``DIR/run.ckpt``); started again after a kill with the same
            settings, it continues and returns exactly what an uninterrupted run returns.
            One state per segment is kept (the sweep recomputes the rest).
        sweep: how the backward sweep is evaluated, a strategy object
            (``cg.StepByStep()``, ``cg.SegmentJacobians()``, ``cg.SegmentParallel()``); the default
            ``AutoSweep`` picks one from the system's size. Every strategy gives the same
            estimate to rounding; they differ in speed and memory.
    """

    statistics = (TimeAverage, WindowAverage)
    auto_fields = ("unstable_dim", "segment_steps")
    unstable_dim: int | str
    segment_steps: int | str
    segments: int | None = None
    burn_in: int | None = None
    blocks: int = 20
    orbits: int = 1
    checkpoint: str | None = None
    sweep: AbstractSweep = AutoSweep()

    @property
    def checkpointed(self) -> bool:
        return self.checkpoint is not None

    def __check_init__(self):
        check_segments(self)
        check_checkpoint(self.checkpoint)
        check_sweep(self.sweep)

    def resolve(self, system, components, params, x0, key):
        return resolve_orbit_settings(self, system, components, x0, key)

    def estimate(self, system, components, params, x0, key, cotangent):
        if self.checkpoint is None:
            return super().estimate(system, components, params, x0, key, cotangent)
        return estimate_in_pieces(
            self, self._resumable, system, components, params, x0, key, cotangent
        )

    def terms(self, system, components, params, x0, key, cotangent):
        u = self.unstable_dim
        assert isinstance(u, int) and isinstance(self.segment_steps, int)  # resolved
        segments, burn_in = orbit_layout(self, components.statistic)
        check_horizon(system, burn_in + segments * self.segment_steps)
        starts = orbit_starts(system, x0, key, self.orbits)
        dim = state_dimension(system, starts)
        sweep = choose_sweep(self.sweep, dim, params, components.count, u, unstable=False)
        # a segment-parallel sweep makes the forward bases from its propagators
        tangents = not isinstance(sweep, SegmentParallel)
        orbits, finite = forward_orbits(
            system,
            starts,
            u,
            burn_in,
            segments,
            self.segment_steps,
            tangents=tangents,
            components=components,
            store_bytes=sweep.store_bytes,
        )
        value = orbit_mean(system, components, orbits)
        components = project(components, cotangent, value)  # the same orbits' value
        stacked, coefficients, bases = shadowing_contributions(
            system, components, params, orbits, u, is_flow(system), sweep
        )
        grad, stderr = ensemble_mean(stacked, self.segment_steps, self.blocks)
        extras = {
            "contributions": stacked,
            "coefficients": coefficients,
            "rs": orbits.rs if bases is None else bases[1],
            "orbit_finite": finite,
        }
        return Terms(value, grad, stderr, jnp.all(finite), extras)

    def finish(self, terms, system, components, params, x0, key):
        segments, burn_in = orbit_layout(self, components.statistic)
        if not bool(terms.finite):
            starts = orbit_starts(system, x0, key, self.orbits)
            check_orbits(
                system,
                starts,
                terms.extras["orbit_finite"],
                self.unstable_dim,
                burn_in,
                segments,
                self.segment_steps,
            )
        extras = terms.extras
        stacked, coefficients = extras["contributions"], extras["coefficients"]
        return self._estimate(system, x0, segments, terms, stacked, coefficients, extras["rs"])

    def _resumable(self, system, components, params, x0, key, cotangent):
        """The run in pieces saved to ``checkpoint`` (``_resumable``: host-driven, each
        piece one compiled program)."""
        assert isinstance(self.unstable_dim, int) and isinstance(self.segment_steps, int)
        segments, burn_in = orbit_layout(self, components.statistic)
        check_horizon(system, burn_in + segments * self.segment_steps)
        u = self.unstable_dim
        starts = orbit_starts(system, x0, key, self.orbits)
        run = orbit_checkpoint(self, system, components, params, starts, x0, key, cotangent)
        orbits, state = forward_in_pieces(
            system, starts, u, burn_in, segments, self.segment_steps, run
        )
        value = orbit_mean(system, components, orbits)
        components = project(components, cotangent, value)
        terms, _ = sweep_in_pieces(
            system, components, params, orbits, u, is_flow(system), run, state, self.sweep
        )
        stacked, coefficients = shadowing_sums(terms)
        grad, stderr = ensemble_mean(stacked, self.segment_steps, self.blocks)
        terms = Terms(value, grad, stderr, jnp.asarray(True))
        return self._estimate(system, x0, segments, terms, stacked, coefficients, orbits.rs)

    def _estimate(self, system, x0, segments, terms, stacked, coefficients, rs) -> Estimate:
        """The Estimate and its ShadowingInfo (on the host)."""
        u = self.unstable_dim
        assert isinstance(u, int) and isinstance(self.segment_steps, int)
        flow = is_flow(system)
        deviation = largest_orbit_deviation(stacked)
        largest = float(np.max(np.abs(np.asarray(coefficients)), initial=0.0))
        seen = orbit_exponents(list(np.asarray(rs)), self.segment_steps, system.time_step)
        info = ShadowingInfo(
            method="Shadowing",
            seconds=0.0,
            warning=join_warnings(
                unstable_dim_warning(seen, u, flow),
                outlier_warning(deviation, self.orbits),
                blocks_warning(self.orbits, segments, self.blocks),
            ),
            largest_orbit_deviation=deviation,
            steps=segments * self.segment_steps,
            segments=segments,
            orbits=self.orbits,
            stderr_method=stderr_method(
                self.orbits, segments, self.blocks, x0 is not None and not system.stochastic
            ),
            lyapunov_exponents=seen.values[:u].tolist(),
            next_exponent=float(seen.values[u]) if len(seen.values) > u else None,
            max_coefficient=largest,
        )
        return Estimate(np.asarray(terms.value), terms.grad, terms.stderr, info)
