"""Fast adjoint response (FAR): the full linear response of a chaotic map, SC - UC.

    d<Phi>/dtheta = SC - UC,
    SC = avg_n nu_{n+1} . X_n                        (adjoint shadowing, see _adjoint.py)
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

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_positive_int
from .._system import _run, check_horizon
from ..lyapunov.spectrum import run_tangent_blocks
from ..statistics import TimeAverage
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
from ._base import AbstractEstimator, AbstractInfo, Estimate, project
from ._rollout import window_sums
from .shadowing import check_segments, orbit_layout


class FastResponseInfo(AbstractInfo):
    """Diagnostics of FastAdjointResponse.

    Args:
        steps, segments, window: the orbit, its segments and the half-width W.
        shadowing_contribution, unstable_contribution: SC and UC (shaped like grad) and
            their standard errors.
        lyapunov_exponents: the u exponents seen on the orbit (should all be > 0).
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
    shadowing_contribution: object
    shadowing_contribution_stderr: object
    unstable_contribution: object
    unstable_contribution_stderr: object
    lyapunov_exponents: list


def centred_window_sums(phis, window: int, count: int):
    """psi_n = sum_{m=-W}^{W} (Phi_{n+m} - mean), n = 1..count, from Phi_{-W}..Phi_{count+W}.

    ``phis[i]`` is Phi at n = i - W (shape (count + 2W + 1, k)); the mean is over
    n = 0..count-1.
    """
    centred = phis - jnp.mean(phis[window : window + count], axis=0)
    return window_sums(centred, jnp.arange(1, count + 1), 2 * window + 1)


class FastAdjointResponse(AbstractEstimator):
    """SC - UC for a chaotic map; ``info`` has SC, UC and the exponents seen on the orbit.

    Supports: TimeAverage (maps). The standard error is batch means over blocks of segments:
    the sampling error, not the window bias (exponential in W) nor a hyperbolicity failure.

    Args:
        unstable_dim: u, the number of positive Lyapunov exponents (< dimension).
        segment_steps: steps per segment.
        segments: K; the orbit has K * segment_steps steps after ``burn_in``.
        window: W, the decorrelation window: psi sums Phi over n-W..n+W.
        burn_in: steps run before the orbit (default 1000).
        blocks: batch-means blocks of segments for the standard error.
    """

    statistics = (TimeAverage,)
    unstable_dim: int
    segment_steps: int
    segments: int | None = None
    window: int = 10
    burn_in: int | None = None
    blocks: int = 20

    def __check_init__(self):
        check_segments(self)
        check_positive_int(self.window, "window", allow_zero=True)

    def check_statistic(self, statistic, system):
        super().check_statistic(statistic, system)
        if is_flow(system):
            raise ValueError(
                "FastAdjointResponse is for maps; for a flow (a neutral direction) use Shadowing"
            )

    def estimate(self, system, components, params, x0, key, cotangent):
        segments, burn_in = orbit_layout(self, components.statistic)
        window, steps = self.window, segments * self.segment_steps
        check_horizon(system, burn_in + steps + 2 * window + 1)
        x, q, noise_key, t = prepare_orbit(system, x0, key, self.unstable_dim, burn_in)
        _, before = _run(system, x, noise_key, jnp.asarray(t), window)
        before = jnp.concatenate([x[None], before])[:window]
        if window:
            x, q, _, _, t = run_tangent_blocks(system, x, q, noise_key, t, window, 1, 1)
        start = jnp.asarray(t)
        states, qs, rs, x_end = forward_segments(
            system, x, q, noise_key, start, segments, self.segment_steps
        )
        check_orbit(states, t)
        _, after = _run(system, x_end, noise_key, start + steps, window)
        orbit = jnp.concatenate([before, states.reshape(-1, states.shape[-1]), x_end[None], after])
        raw_values = orbit_values(system, components, orbit)
        value = jnp.mean(raw_values[window : window + steps], axis=0)
        components = project(components, cotangent, value)  # same orbit's value
        phis = raw_values @ components.projection
        psi = centred_window_sums(phis, window, steps).reshape(segments, self.segment_steps, -1)

        terms = adjoint_sweep(
            system, components, params, states, qs, noise_key, start, False, psi=psi, rs=rs
        )
        a = shadowing_coefficients(terms.b, terms.M, None)
        assert terms.b_unstable is not None and terms.sums.unstable is not None
        a_unstable = shadowing_coefficients(terms.b_unstable[..., None], terms.M, None)[..., 0]
        shadowing = segment_contributions(terms.sums.nu, terms.sums.eps, a)
        parts = terms.sums.unstable
        unstable = jax.tree_util.tree_map(
            lambda g_nu, g_eps, trace: (
                g_nu + jnp.einsum("ki,kci...->kc...", a_unstable, g_eps) + trace
            ),
            parts.nu,
            parts.eps,
            parts.trace,
        )
        response = jax.tree_util.tree_map(jnp.subtract, shadowing, unstable)
        grad, stderr = blocked_mean(response, self.segment_steps, self.blocks)
        sc, sc_se = blocked_mean(shadowing, self.segment_steps, self.blocks)
        uc, uc_se = blocked_mean(unstable, self.segment_steps, self.blocks)
        info = FastResponseInfo(
            method="FastAdjointResponse",
            seconds=0.0,
            warning=None,
            steps=steps,
            segments=segments,
            window=window,
            shadowing_contribution=sc,
            shadowing_contribution_stderr=sc_se,
            unstable_contribution=uc,
            unstable_contribution_stderr=uc_se,
            lyapunov_exponents=orbit_exponents(rs, self.segment_steps, None),
        )
        return Estimate(np.asarray(value), grad, stderr, info)
