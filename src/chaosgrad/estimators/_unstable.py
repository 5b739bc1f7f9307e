"""The second-order pieces of the unstable contribution (FastAdjointResponse).

The unstable contribution (its equations: ``fast_adjoint_response``) needs, besides the
sweep's adjoints, the forward tangents e_n
inside each segment (recomputed from Q_k, not stored) and the gradient in (x, theta) of
the trace term tr(eps-bar^T f_* e): omega_n (which forces the extra adjoint nu~') and its
parameter derivative. The sweep (``_sweep``) calls these per step or, with a segment's
Jacobians at hand, for all of a segment's steps at once.

A. Ni, "Fast adjoint differentiation of chaos", arXiv:2111.07692.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._tangent import step_noise
from ._segment_sweep import times


def segment_tangents(system, key, states_k, q_k, t0, jacobians=None):
    """e_n, n in the segment: the forward tangents from Q_k, recomputed (not stored), with
    the segment's Jacobians J_x (m, dim, dim) when they are at hand (e_{n+1} = J_n e_n)."""

    def one(e, n):
        if jacobians is not None:
            return times(jacobians[n], e), e
        t, x = t0 + n, states_k[n]
        xi = step_noise(system, key, t, x)
        _, lin = jax.linearize(lambda y: system.step(t, y, xi), x)
        return jax.vmap(lin, in_axes=1, out_axes=1)(e), e

    return jax.lax.scan(one, q_k, jnp.arange(states_k.shape[0]))[1]


def trace_gradient(step, x, params, e, eps_bar):
    """(omega, d_theta) = the gradient in (x, theta) of tr(eps-bar^T f_*(x; theta) e), the
    second-order term of the unstable contribution at one step (``step(y, p)``: the step's
    map; e the forward tangents e_n, eps-bar the dual adjoints eps-bar_{n+1}, (dim, u))."""

    def trace(y, p):
        pushed = jax.vmap(lambda v: jax.jvp(lambda z: step(z, p), (y,), (v,))[1], 1, 1)(e)
        return jnp.sum(eps_bar * pushed)

    return jax.grad(trace, argnums=(0, 1))(x, params)


def second_order_terms(system, params, key, states, ts, tangents, eps_bars):
    """:func:`trace_gradient` of many steps at once (states (N, dim) at steps ts (N,), e and
    eps-bar (N, dim, u)): omega (N, dim) and d_theta (leaves (N, ...)).

    Vectorised over a segment's steps, outside the loop over them, where the sweep's step
    would evaluate it alone: a step's few dozen flops then pay a CPU's kernel-launch cost
    many times over (the 5-dimensional solenoid's FAR: 0.177 -> 0.152 s; the 21-dimensional
    one, where this term is about 40 % of the sweep, unchanged within the machine's noise)."""

    def one(x, t, e, bar):
        xi = step_noise(system, key, t, x)

        def step(y, p):
            return params.substitute(system, p).step(t, y, xi)

        return trace_gradient(step, x, params.values, e, bar)

    return jax.vmap(one)(states, ts, tangents, eps_bars)
