"""Fast adjoint response (FAR): the full linear response of a chaotic map, SC - UC.

    d<Phi>/dtheta = SC - UC,
    SC = avg_n nu_{n+1} . X_n                        (adjoint shadowing, see shadowing.py)
    UC = avg_n psi_{n+1} [ nu~_{n+1} . X_n + d_theta tr(eps-bar_{n+1}^T f_*(x_n; theta) e_n) ]

with psi_n = sum_{m=-W}^{W} (Phi(x_{n+m}) - <Phi>) (a centred window of half-width W) and
nu~ the shadowed (bounded) solution of nu~'_n = f_*^T nu~'_{n+1} + omega_n,
omega_n = grad_x tr(eps-bar_{n+1}^T f_*(x) e_n) at x_n, where e are the forward unstable
tangents and eps-bar the adjoint basis dual to them (eps-bar^T e = I). The trace terms are
one reverse pass through u JVPs per step, for all parameters at once: the cost is O(u)
backpropagations, independent of the number of parameters.

A. Ni, "Fast adjoint differentiation of chaos" (arXiv:2111.07692; SIADS 2023). Bias decays
exponentially in W, variance grows like sqrt(W). Assumes (near) uniform hyperbolicity and
that the linear response exists (a tent map whose turning point moves has none: the method
still returns a number, which means nothing). Maps only: a flow's neutral direction needs
the time-dilation treatment of Shadowing.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_positive_int
from .._system import _run, check_horizon
from ..lyapunov.spectrum import run_tangent_blocks
from ._base import AbstractEstimator, Estimate
from .shadowing import (_blocked_mean, adjoint_sweep, check_orbit, check_segments,
                        forward_segments, is_flow, prepare_orbit, segment_contributions,
                        shadowing_coefficients)


def centred_window_sums(phis, window: int, count: int):
    """psi_n = sum_{m=-W}^{W} (Phi_{n+m} - mean), n = 1..count, from Phi_{-W}..Phi_{count+W}.

    ``phis[i]`` is Phi at n = i - W; the mean is over n = 0..count-1.
    """
    centred = phis - jnp.mean(phis[window:window + count])
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(centred)])
    n = jnp.arange(1, count + 1)
    return cumulative[n + 2 * window + 1] - cumulative[n]


class FastAdjointResponse(AbstractEstimator):
    """SC - UC for a chaotic map; ``info`` has SC, UC and the exponents seen on the orbit.

    Args:
        unstable_dim: u, the number of positive Lyapunov exponents (< dimension).
        segment_steps, segments: orbit of segments * segment_steps steps after ``burn_in``.
        window: W, half-width of the decorrelation window in the unstable contribution.
    """

    unstable_dim: int
    segment_steps: int
    segments: int
    window: int = 10
    burn_in: int = 10_000
    blocks: int = 20

    def __check_init__(self):
        check_segments(self)
        check_positive_int(self.window, "window", allow_zero=True)

    def estimate(self, system, observable, params, x0, key):
        began = time.perf_counter()
        if is_flow(system):
            raise ValueError("FastAdjointResponse is for maps; for a flow (a neutral direction) "
                             "use Shadowing")
        window, steps = self.window, self.segments * self.segment_steps
        check_horizon(system, self.burn_in + steps + 2 * window + 1)
        x, q, noise_key, t = prepare_orbit(system, x0, key, self.unstable_dim, self.burn_in)
        _, before = _run(system, x, noise_key, jnp.asarray(t), window)
        before = jnp.concatenate([x[None], before])[:window]
        if window:
            x, q, _, _, t = run_tangent_blocks(system, x, q, noise_key, t, window, 1, 1)
        start = jnp.asarray(t)
        states, qs, rs, x_end = forward_segments(system, x, q, noise_key, start, self.segments,
                                                 self.segment_steps)
        check_orbit(states, t, self.segment_steps)
        _, after = _run(system, x_end, noise_key, start + steps, window)
        orbit = jnp.concatenate([before, states.reshape(-1, states.shape[-1]), x_end[None],
                                 after])
        phis = jax.vmap(observable)(orbit)
        psi = centred_window_sums(phis, window, steps).reshape(self.segments, self.segment_steps)

        per_segment = adjoint_sweep(system, observable, params, states, qs, noise_key, start,
                                    False, psi=psi, rs=rs)
        a = shadowing_coefficients(per_segment, False)
        a_unstable = shadowing_coefficients(
            {"b": per_segment["b_unstable"], "M": per_segment["M"]}, False)
        shadowing = segment_contributions(per_segment, a)
        unstable = jax.tree_util.tree_map(
            lambda g_nu, g_eps, trace: g_nu + jnp.einsum("ki,ki...->k...", a_unstable, g_eps)
            + trace,
            per_segment["g_nu_unstable"], per_segment["g_eps_unstable"],
            per_segment["trace_term"])
        response = jax.tree_util.tree_map(jnp.subtract, shadowing, unstable)
        grad, stderr = _blocked_mean(response, self.segment_steps, self.blocks)
        sc, sc_se = _blocked_mean(shadowing, self.segment_steps, self.blocks)
        uc, uc_se = _blocked_mean(unstable, self.segment_steps, self.blocks)
        exponents = np.log(np.abs(np.diagonal(np.asarray(rs), axis1=1, axis2=2))).mean(0)
        info = {"method": "FastAdjointResponse", "steps": steps, "segments": self.segments,
                "window": window, "shadowing_contribution": sc,
                "shadowing_contribution_stderr": sc_se, "unstable_contribution": uc,
                "unstable_contribution_stderr": uc_se,
                "lyapunov_exponents": (exponents / self.segment_steps).tolist(),
                "seconds": time.perf_counter() - began}
        return Estimate(float(jnp.mean(phis[window:window + steps])), grad, stderr, info)
