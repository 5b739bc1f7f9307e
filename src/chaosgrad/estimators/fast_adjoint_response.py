"""Fast adjoint response (FAR): the full linear response of a chaotic map, SC - UC.

    d<Phi>/dtheta = SC - UC,
    SC = avg_n nu_{n+1} . X_n                        (adjoint shadowing, see _sweep.py)
    UC = avg_n psi_{n+1} [ nu~_{n+1} . X_n + d_theta tr(eps-bar_{n+1}^T f_*(x_n; theta) e_n) ]

with psi_n = sum_{m=-W}^{W} (Phi(x_{n+m}) - <Phi>) (a centred window of half-width W) and
nu~ the shadowed (bounded) solution of nu~'_n = f_*^T nu~'_{n+1} + omega_n,
omega_n = grad_x tr(eps-bar_{n+1}^T f_*(x) e_n) at x_n, where e are the forward unstable
tangents and eps-bar the adjoint basis dual to them (eps-bar^T e = I). omega does not depend
on Phi, so a k'-component statistic needs one nu~ and k' psi weights: the cost is O(u + k')
backpropagations, independent of the number of parameters.

A. Ni, "Fast adjoint differentiation of chaos" (arXiv:2111.07692; SIADS 2023). Bias decays
exponentially in W, variance grows like sqrt(W). Assumes (near) uniform hyperbolicity and
that the linear response exists (a tent map whose turning point moves has none: the method
still returns a number, which means nothing). Maps only: a flow's neutral direction needs
the time-dilation treatment of Shadowing.
"""

from __future__ import annotations

import equinox as eqx
import jax
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
from .._runstate import check_checkpoint
from .._system import check_horizon
from ..parallel import map_samples, sample_parallel
from ..statistics import TimeAverage
from ._base import AbstractEstimator, AbstractInfo, Estimate, Terms, project
from ._orbits import (
    check_orbits,
    forward_orbits,
    is_flow,
    orbit_starts,
    padded_values,
    state_dimension,
)
from ._pilot import resolve_orbit_settings
from ._resumable import estimate_in_pieces, forward_in_pieces, orbit_checkpoint, sweep_in_pieces
from ._rollout import window_sums
from ._sweep import adjoint_sweep, choose_sweep, segment_contributions, shadowing_coefficients
from .shadowing import check_auto, check_segments, orbit_layout
from .sweeps import AbstractSweep, AutoSweep, check_sweep


class FastResponseInfo(AbstractInfo):
    """Diagnostics of FastAdjointResponse.

    Args:
        steps, segments, window: one orbit, its segments and the half-width W.
        orbits: the number of independent orbits averaged.
        stderr_method: what ``stderr`` is, and its caveat (see ``Shadowing``).
        largest_orbit_deviation: the most outlying orbit estimate's distance from the
            median, in robust standard deviations (R >= 8; see ``Shadowing``).
        shadowing_contribution, unstable_contribution: SC and UC (shaped like grad) and
            their standard errors.
        lyapunov_exponents: the u exponents seen on the orbit (should all be > 0).
        next_exponent: the (u+1)-th, measured to check ``unstable_dim`` (should be <= 0).
    """

    per_parameter = (
        "shadowing_contribution",
        "shadowing_contribution_stderr",
        "unstable_contribution",
        "unstable_contribution_stderr",
    )
    steps: int
    segments: int
    window: int
    orbits: int
    stderr_method: str
    largest_orbit_deviation: float | None
    shadowing_contribution: object
    shadowing_contribution_stderr: object
    unstable_contribution: object
    unstable_contribution_stderr: object
    lyapunov_exponents: list
    next_exponent: float | None


def centred_window_sums(phis, window: int, count: int):
    """psi_n = sum_{m=-W}^{W} (Phi_{n+m} - mean), n = 1..count, from Phi_{-W}..Phi_{count+W}.

    ``phis[i]`` is Phi at n = i - W (shape (count + 2W + 1, k)); the mean is over
    n = 0..count-1.
    """
    centred = phis - jnp.mean(phis[window : window + count], axis=0)
    return window_sums(centred, jnp.arange(1, count + 1), 2 * window + 1)


class FastAdjointResponse(AbstractEstimator):
    """SC - UC for a chaotic map; ``info`` has SC, UC and the exponents seen on the orbit.

    Supports: TimeAverage (maps). The standard error is the spread of ``orbits``
    independent orbits (R >= 2, calibrated) or batch means over blocks of segments of one
    orbit (which can overstate it: see ``Shadowing``). It covers the sampling error, not
    the window bias (exponential in W), the finite-orbit bias, nor a hyperbolicity failure.

    Memory: orbits whose states pass 256 MB keep one state per segment and the sweep
    recomputes each segment (as ``Shadowing``); the observable's values along the orbit
    (N + 2W + 1 of them, for the window sums) are always kept.

    Args:
        unstable_dim: u, the number of positive Lyapunov exponents (< dimension), or
            ``"auto"`` (from a pilot run; see ``Shadowing``).
        segment_steps: steps per segment, or ``"auto"`` (see ``Shadowing``).
        segments: K; the orbit has K * segment_steps steps after ``burn_in``.
        window: W, the decorrelation window: psi sums Phi over n-W..n+W. ``"auto"``: twice
            the observable's decorrelation time in a pilot run (autocorrelation below
            0.05), within [2, 50].
        burn_in: steps run before the orbit (default 1000).
        blocks: batch-means blocks of segments for the standard error of one orbit.
        orbits: R independent orbits averaged (x0 None or of shape (R, dim)); R >= 2 gives
            the calibrated standard error.
        checkpoint: a directory: the run goes in 16 pieces forward and 16 back, saved
            after each (``DIR/run.ckpt``); started again after a kill with the same
            settings, it continues and returns exactly what an uninterrupted run with the
            same setting returns (the run without checkpoint to rounding). One state per
            segment is kept (the sweep recomputes the rest), and the observable's values
            along the orbit are recomputed from them for the window sums.
        sweep: how the backward sweep is evaluated (``cg.StepByStep()`` or
            ``cg.SegmentJacobians()``; the default ``AutoSweep`` picks one). The unstable
            contribution is bilinear in the forward tangents and the adjoints, so
            ``SegmentParallel`` does not apply.
    """

    statistics = (TimeAverage,)
    auto_fields = ("unstable_dim", "segment_steps", "window")
    unstable_dim: int | str
    segment_steps: int | str
    segments: int | None = None
    window: int | str = 10
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
        check_auto(self.window, "window", allow_zero=True)
        check_checkpoint(self.checkpoint)
        check_sweep(self.sweep, unstable=True)

    def check_statistic(self, statistic, system):
        super().check_statistic(statistic, system)
        if is_flow(system):
            raise ValueError(
                "FastAdjointResponse is for maps; for a flow (a neutral direction) use Shadowing"
            )

    def resolve(self, system, components, params, x0, key):
        return resolve_orbit_settings(self, system, components, x0, key)

    def estimate(self, system, components, params, x0, key, cotangent):
        if self.checkpoint is None:
            return super().estimate(system, components, params, x0, key, cotangent)
        return estimate_in_pieces(
            self, self._resumable, system, components, params, x0, key, cotangent
        )

    def _layout(self, components) -> tuple[int, int, int, int]:
        """(segments, burn_in, window, steps) of the resolved settings."""
        assert isinstance(self.window, int) and isinstance(self.segment_steps, int)
        segments, burn_in = orbit_layout(self, components.statistic)
        return segments, burn_in, self.window, segments * self.segment_steps

    def terms(self, system, components, params, x0, key, cotangent):
        segments, burn_in, window, steps = self._layout(components)
        check_horizon(system, burn_in + steps + 2 * window + 1)
        u = int(self.unstable_dim)
        starts = orbit_starts(system, x0, key, self.orbits)
        dim = state_dimension(system, starts)
        sweep = choose_sweep(self.sweep, dim, params, components.count, u, unstable=True)
        orbits, finite = forward_orbits(
            system,
            starts,
            u,
            burn_in,
            segments,
            int(self.segment_steps),
            window=window,
            store_bytes=sweep.store_bytes,
        )
        raw_values, value = padded_values(system, components, orbits)  # (R, N + 2W + 1, k)
        components = project(components, cotangent, value)  # the same orbits' value
        shadowing, unstable = _contributions(
            system, components, params, orbits, raw_values, u, window, sweep
        )
        return self._terms(value, shadowing, unstable, orbits.rs, finite)

    def _terms(self, value, shadowing, unstable, rs, finite) -> Terms:
        """The response SC - UC from the per-orbit, per-segment sums, with SC and UC."""
        response = jax.tree_util.tree_map(jnp.subtract, shadowing, unstable)
        grad, stderr = ensemble_mean(response, self.segment_steps, self.blocks)
        sc = ensemble_mean(shadowing, self.segment_steps, self.blocks)
        uc = ensemble_mean(unstable, self.segment_steps, self.blocks)
        extras = {
            "responses": response,
            "shadowing": sc,
            "unstable": uc,
            "rs": rs,
            "orbit_finite": finite,
        }
        return Terms(value, grad, stderr, jnp.all(finite), extras)

    def _resumable(self, system, components, params, x0, key, cotangent):
        """The run in pieces saved to ``checkpoint`` (``_resumable``: host-driven, each
        piece one compiled program); the host finish of the run without checkpoint."""
        segments, burn_in, window, steps = self._layout(components)
        check_horizon(system, burn_in + steps + 2 * window + 1)
        u, m = int(self.unstable_dim), int(self.segment_steps)
        starts = orbit_starts(system, x0, key, self.orbits)
        run = orbit_checkpoint(self, system, components, params, starts, x0, key, cotangent)
        orbits, state = forward_in_pieces(
            system, starts, u, burn_in, segments, m, run, window=window
        )
        raw_values, value = padded_values(system, components, orbits)  # (R, N + 2W + 1, k)
        components = project(components, cotangent, value)
        psi = _orbit_window_weights(raw_values, components.projection, window, segments, m)
        terms, _ = sweep_in_pieces(
            system, components, params, orbits, u, False, run, state, self.sweep, psi=psi
        )
        shadowing, unstable = _split_sums(terms)
        finite = jnp.ones(orbits.keys.shape[0], bool)  # each forward piece was checked
        terms = self._terms(value, shadowing, unstable, orbits.rs, finite)
        return self.finish(terms, system, components, params, x0, key)

    def finish(self, terms, system, components, params, x0, key):
        segments, burn_in, window, steps = self._layout(components)
        u = int(self.unstable_dim)
        extras = terms.extras
        if not bool(terms.finite):
            starts = orbit_starts(system, x0, key, self.orbits)
            check_orbits(
                system,
                starts,
                extras["orbit_finite"],
                u,
                burn_in,
                segments,
                self.segment_steps,
                window=window,
            )
        deviation = largest_orbit_deviation(extras["responses"])
        (sc, sc_se), (uc, uc_se) = extras["shadowing"], extras["unstable"]
        seen = orbit_exponents(list(np.asarray(extras["rs"])), self.segment_steps, None)
        info = FastResponseInfo(
            method="FastAdjointResponse",
            seconds=0.0,
            warning=join_warnings(
                unstable_dim_warning(seen, u, False),
                outlier_warning(deviation, self.orbits),
                blocks_warning(self.orbits, segments, self.blocks),
            ),
            largest_orbit_deviation=deviation,
            steps=steps,
            segments=segments,
            window=window,
            orbits=self.orbits,
            stderr_method=stderr_method(
                self.orbits, segments, self.blocks, x0 is not None and not system.stochastic
            ),
            shadowing_contribution=sc,
            shadowing_contribution_stderr=sc_se,
            unstable_contribution=uc,
            unstable_contribution_stderr=uc_se,
            lyapunov_exponents=seen.values[:u].tolist(),
            next_exponent=float(seen.values[u]) if len(seen.values) > u else None,
        )
        return Estimate(np.asarray(terms.value), terms.grad, terms.stderr, info)


@sample_parallel
def _contributions(system, components, params, orbits, raw_values, u, window, sweep):
    """Per-orbit, per-segment shadowing (SC) and unstable (UC) sums (leading axis: orbit)."""
    segments, segment_steps = orbits.states.shape[1], orbits.segment_steps

    def one(states, qs, rs, key, values):
        psi = window_weights(values, components.projection, window, segments, segment_steps)
        terms = adjoint_sweep(
            system,
            components,
            params,
            states,
            qs[..., :u],
            key,
            jnp.asarray(orbits.start),
            False,
            sweep,
            psi=psi,
            rs=rs[:, :u, :u],
            segment_steps=segment_steps,
        )
        return contributions(terms)

    return map_samples(one, orbits.states, orbits.qs, orbits.rs, orbits.keys, raw_values)


def window_weights(values, projection, window: int, segments: int, segment_steps: int):
    """psi_{n+1} for every step of one orbit, (K, m, k'), from the raw components' values
    x_{-W} .. x_{N+W} (N + 2W + 1, k) projected on ``projection`` (k, k')."""
    phis = values @ projection
    steps = segments * segment_steps
    return centred_window_sums(phis, window, steps).reshape(segments, segment_steps, -1)


def contributions(terms):
    """One orbit's per-segment shadowing (SC) and unstable (UC) sums from its
    SegmentTerms: the coefficients a_k of nu' and of nu~' (maps: a_0 = -b_0)."""
    a = shadowing_coefficients(terms.b, terms.M, None)
    assert terms.b_unstable is not None and terms.sums.unstable is not None
    a_unstable = shadowing_coefficients(terms.b_unstable[..., None], terms.M, None)[..., 0]
    shadowing = segment_contributions(terms.sums.nu, terms.sums.eps, a)
    parts = terms.sums.unstable
    unstable = jax.tree_util.tree_map(
        lambda g_nu, g_eps, trace: g_nu + jnp.einsum("ki,kci...->kc...", a_unstable, g_eps) + trace,
        parts.nu,
        parts.eps,
        parts.trace,
    )
    return shadowing, unstable


@eqx.filter_jit
def _orbit_window_weights(raw_values, projection, window: int, segments: int, segment_steps: int):
    """:func:`window_weights` of every orbit, (R, K, m, k')."""
    return jax.vmap(
        lambda values: window_weights(values, projection, window, segments, segment_steps)
    )(raw_values)


@eqx.filter_jit
def _split_sums(terms):
    """:func:`contributions` of every orbit (leading axis: orbit)."""
    return jax.vmap(contributions)(terms)
