"""Non-intrusive adjoint shadowing: the shadowing contribution to d<Phi>/dtheta.

On an orbit x_0..x_N split into K segments of m steps (t_k = k m), with u unstable
directions (for a discretised flow, count the neutral one too):

1. Forward: u tangent vectors e, QR at each interface: f_* ... Q_k = Q_{k+1} R_{k+1}.
2. Backward, continuing across interfaces: eps_n = f_*^T eps_{n+1} (u homogeneous adjoints,
   eps = Q_K at the end) and nu'_n = f_*^T nu'_{n+1} + grad Phi(x_n) (nu' = 0 at the end).
3. At t_k: eps^T Q_k = R_{k+1}^T is invariant inside the segment; renormalise
   eps <- eps M_k, M_k = (Q_k^T eps)^{-1}, and remove nu'`s component along eps:
   b_k = (eps^T eps)^{-1} eps^T nu', nu' <- nu' - eps b_k.
4. nu = nu' + eps a_k on segment k is continuous when a_k = M_k a_{k-1} - b_k. For a map,
   a_0 = -b_0 (no unstable component at time 0): the unique bounded solution, no least
   squares. For a flow the neutral coefficient is not fixed by boundedness: a_0 minimises
   sum_n |nu_n|^2 subject to the time-dilation constraint sum_n nu_n . F(x_n) = 0.
5. SC = (1/N) sum_n nu_{n+1} . X_n, X_n = d_theta f(x_n): one VJP with respect to all
   parameters per step, so the cost is about (u + 1) backpropagations whatever the number
   of parameters.

A. Ni & C. Talnikar, "Adjoint sensitivity analysis on chaotic dynamical systems by
non-intrusive least squares adjoint shadowing (NILSAS)", J. Comput. Phys. 395, 690 (2019);
A. Ni, "Backpropagation in hyperbolic chaos via adjoint shadowing", Nonlinearity (2024).
Caveat: shadowing alone omits the unstable contribution (use FastAdjointResponse for the
full response); it assumes (near) uniform hyperbolicity.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_positive_int
from .._system import check_horizon, resolve_start
from .._tangent import positive_qr, random_orthonormal, step_noise
from ..lyapunov.spectrum import run_tangent_blocks
from ..stats import batch_means
from ._base import AbstractEstimator, Estimate


@eqx.filter_jit
def forward_segments(system, x, q, key, start, segments: int, segment_steps: int):
    """States of every step, bases Q_k at interfaces and factors R_{k+1}, k = 0..K-1."""

    def segment(carry, k):
        x, q = carry
        t0 = start + k * segment_steps

        def one(state, t):
            x, e = state
            x_next, lin = jax.linearize(lambda y: system.step(t, y, step_noise(system, key, t, y)), x)
            return (x_next, jax.vmap(lin, in_axes=1, out_axes=1)(e)), x

        (x, e), states = jax.lax.scan(one, (x, q), t0 + jnp.arange(segment_steps))
        q_next, r = positive_qr(e)
        return (x, q_next), (states, q, r)

    (x_end, q_end), (states, qs, rs) = jax.lax.scan(segment, (x, q), jnp.arange(segments))
    return states, jnp.concatenate([qs, q_end[None]]), rs, x_end


def _neutral_direction(system, t, x):
    return system.vector_field(t * system.dt, x)


def _segment_tangents(system, key, states_k, q_k, t0):
    """e_n, n in the segment: the forward tangents from Q_k, recomputed (not stored)."""

    def one(e, n):
        t, x = t0 + n, states_k[n]
        _, lin = jax.linearize(lambda y: system.step(t, y, step_noise(system, key, t, y)), x)
        return jax.vmap(lin, in_axes=1, out_axes=1)(e), e

    return jax.lax.scan(one, q_k, jnp.arange(states_k.shape[0]))[1]


def _tree_zeros(values, leading=()):
    return jax.tree_util.tree_map(lambda z: jnp.zeros(leading + z.shape, z.dtype), values)


def _tree_add(total, increment):
    return jax.tree_util.tree_map(jnp.add, total, increment)


@eqx.filter_jit
def adjoint_sweep(system, observable, params, states, qs, key, start, flow: bool, psi=None,
                  rs=None):
    """Backward sweep over all segments; per-segment quantities for the coefficients.

    Always: the homogeneous adjoints eps and the shadowing adjoint nu' (forcing grad Phi).
    With ``psi`` (psi_{n+1} for every step n, shape (segments, segment_steps)) and the QR
    factors ``rs``, also the unstable-contribution adjoint nu~' with forcing
    omega_n = grad_x tr(eps-bar_{n+1}^T f_*(x) e_n) and the psi-weighted parameter terms of
    FastAdjointResponse; eps-bar = eps R_{k+1}^{-T} is the basis dual to e (eps-bar^T e = I).
    """
    segments, segment_steps = states.shape[:2]
    unstable_dim = qs.shape[2]
    unstable = psi is not None
    columns = 2 if unstable else 1

    def segment(carry, k):
        eps, nus = carry
        t0 = start + k * segment_steps
        if unstable:
            tangents = _segment_tangents(system, key, states[k], qs[k], t0)
            dual = jnp.linalg.inv(rs[k]).T

        def one(acc, n):
            eps, nus, sums = acc
            t, x = t0 + n, states[k, n]
            xi = step_noise(system, key, t, x)
            step = lambda y, p: params.substitute(system, p).step(t, y, xi)  # noqa: E731
            _, pullback = jax.vjp(step, x, params.values)
            cotangents = jnp.concatenate([nus, eps], axis=1)
            back_x, back_p = jax.vmap(pullback, in_axes=1, out_axes=(1, 0))(cotangents)
            forcing = [jax.grad(observable)(x)]
            new = dict(sums)
            new["g_nu"] = _tree_add(sums["g_nu"], jax.tree_util.tree_map(lambda b: b[0], back_p))
            new["g_eps"] = _tree_add(sums["g_eps"],
                                     jax.tree_util.tree_map(lambda b: b[columns:], back_p))
            if unstable:
                weight = psi[k, n]
                eps_bar, e_n = eps @ dual, tangents[n]

                def trace(y, p):
                    pushed = jax.vmap(lambda v: jax.jvp(lambda z: step(z, p), (y,), (v,))[1],
                                      in_axes=1, out_axes=1)(e_n)
                    return jnp.sum(eps_bar * pushed)

                omega, d_trace = jax.grad(trace, argnums=(0, 1))(x, params.values)
                forcing.append(omega)
                scale = lambda tree: jax.tree_util.tree_map(lambda b: weight * b, tree)  # noqa: E731
                new["g_nu_unstable"] = _tree_add(
                    sums["g_nu_unstable"], scale(jax.tree_util.tree_map(lambda b: b[1], back_p)))
                new["g_eps_unstable"] = _tree_add(
                    sums["g_eps_unstable"],
                    scale(jax.tree_util.tree_map(lambda b: b[columns:], back_p)))
                new["trace_term"] = _tree_add(sums["trace_term"], scale(d_trace))
            nus = back_x[:, :columns] + jnp.stack(forcing, axis=1)
            eps = back_x[:, columns:]
            if flow:  # least-squares terms are needed only to fix a flow's neutral coefficient
                direction = _neutral_direction(system, t, x)
                # written as broadcast-and-sum, not matmul: XLA fuses these tiny reductions
                # into the step, while a dot is a separate kernel call per step
                new["C"] = sums["C"] + jnp.sum(eps[:, :, None] * eps[:, None, :], axis=0)
                new["d"] = sums["d"] + jnp.sum(eps * nus[:, :1], axis=0)
                new["dwf"] = sums["dwf"] + jnp.sum(eps * direction[:, None], axis=0)
                new["dvf"] = sums["dvf"] + jnp.sum(nus[:, 0] * direction)
            return (eps, nus, new), None

        sums = {"g_nu": _tree_zeros(params.values),
                "g_eps": _tree_zeros(params.values, (unstable_dim,))}
        if unstable:
            sums.update(g_nu_unstable=_tree_zeros(params.values),
                        g_eps_unstable=_tree_zeros(params.values, (unstable_dim,)),
                        trace_term=_tree_zeros(params.values))
        if flow:
            sums.update(C=jnp.zeros((unstable_dim, unstable_dim)), d=jnp.zeros(unstable_dim),
                        dwf=jnp.zeros(unstable_dim), dvf=jnp.zeros(()))
        (eps, nus, sums), _ = jax.lax.scan(one, (eps, nus, sums), jnp.arange(segment_steps),
                                           reverse=True, unroll=4)
        b = jnp.linalg.solve(eps.T @ eps, eps.T @ nus)            # (u, columns)
        nus = nus - eps @ b
        renorm = jnp.linalg.inv(qs[k].T @ eps)
        out = {"b": b[:, 0], "M": renorm, **sums}
        if unstable:
            out["b_unstable"] = b[:, 1]
        return (eps @ renorm, nus), out

    init = (qs[-1], jnp.zeros((states.shape[2], columns)))
    _, per_segment = jax.lax.scan(segment, init, jnp.arange(segments), reverse=True)
    return per_segment


@eqx.filter_jit
def shadowing_coefficients(per_segment, flow: bool):
    """a_k for every segment: a_k = M_k a_{k-1} - b_k, with a_0 fixed as described above."""
    b, m = per_segment["b"], per_segment["M"]
    u = b.shape[1]

    def propagate(carry, inputs):
        t_mat, p_vec = carry
        m_k, b_k = inputs
        t_mat, p_vec = m_k @ t_mat, m_k @ p_vec - b_k
        return (t_mat, p_vec), (t_mat, p_vec)

    start = (jnp.eye(u), jnp.zeros(u))
    _, (t_rest, p_rest) = jax.lax.scan(propagate, start, (m[1:], b[1:]))
    t_all = jnp.concatenate([jnp.eye(u)[None], t_rest])       # a_k = T_k a_0 + p_k
    p_all = jnp.concatenate([jnp.zeros(u)[None], p_rest])
    if not flow:
        a0 = -b[0]
    else:
        c_mat, d_vec = per_segment["C"], per_segment["d"]
        hess = jnp.einsum("kia,kij,kjb->ab", t_all, c_mat, t_all)
        lin = jnp.einsum("kia,ki->a", t_all, jnp.einsum("kij,kj->ki", c_mat, p_all) + d_vec)
        con = jnp.einsum("kia,ki->a", t_all, per_segment["dwf"])
        rhs = jnp.sum(jnp.einsum("ki,ki->k", per_segment["dwf"], p_all) + per_segment["dvf"])
        kkt = jnp.block([[hess, con[:, None]], [con[None, :], jnp.zeros((1, 1))]])
        a0 = jnp.linalg.solve(kkt, jnp.concatenate([-lin, -rhs[None]]))[:u]
    return jnp.einsum("kij,j->ki", t_all, a0) + p_all


@eqx.filter_jit
def segment_contributions(per_segment, coefficients):
    """Per segment: sum_n nu_{n+1} . X_n = g_nu + sum_i a_i g_eps_i (a pytree per segment)."""
    return jax.tree_util.tree_map(
        lambda g_nu, g_eps: g_nu + jnp.einsum("ki,ki...->k...", coefficients, g_eps),
        per_segment["g_nu"], per_segment["g_eps"])


def prepare_orbit(system, x0, key, unstable_dim, burn_in):
    """Burned-in state and u aligned tangent vectors (QR during the burn-in)."""
    start_key, vector_key = jax.random.split(key)
    x0, noise_key = resolve_start(system, x0, start_key)
    dim = x0.shape[0]
    if unstable_dim >= dim:
        raise ValueError(f"unstable_dim={unstable_dim} must be smaller than the dimension "
                         f"{dim} (it counts the positive exponents, plus the zero one of a flow)")
    q = random_orthonormal(vector_key, dim, unstable_dim)
    x, t = x0, 0
    if burn_in:
        x, q, _, _, t = run_tangent_blocks(system, x, q, noise_key, 0, burn_in, 1, 1)
    return x, q, noise_key, t


def check_segments(estimator):
    check_positive_int(estimator.unstable_dim, "unstable_dim", allow_zero=True)
    check_positive_int(estimator.segment_steps, "segment_steps")
    check_positive_int(estimator.segments, "segments")
    check_positive_int(estimator.burn_in, "burn_in", allow_zero=True)
    if estimator.segments < 2:
        raise ValueError(f"segments must be at least 2 (got {estimator.segments}): the "
                         "standard error comes from independent blocks of segments")


def check_orbit(states, start, segment_steps):
    flat = np.asarray(states.reshape(-1, states.shape[-1]))
    finite = np.all(np.isfinite(flat), axis=1)
    if not finite.all():
        raise FloatingPointError(f"the trajectory became NaN/inf at step "
                                 f"{start + int(np.argmin(finite))}")


def is_flow(system) -> bool:
    return system.time_step is not None and hasattr(system, "vector_field")


class Shadowing(AbstractEstimator):
    """Adjoint shadowing contribution to d<Phi>/dtheta on one long orbit (all parameters).

    Args:
        unstable_dim: u, the number of positive exponents (plus one for a flow's neutral
            direction). Must be smaller than the dimension; 0 (a stable system) makes this
            the plain adjoint of the long-time average.
        segment_steps: steps per segment (exponential growth inside one must stay small).
        segments: K; the orbit has K * segment_steps steps after ``burn_in``.
    """

    unstable_dim: int
    segment_steps: int
    segments: int
    burn_in: int = 10_000
    blocks: int = 20

    def __check_init__(self):
        check_segments(self)

    def estimate(self, system, observable, params, x0, key):
        began = time.perf_counter()
        check_horizon(system, self.burn_in + self.segments * self.segment_steps)
        x, q, noise_key, t = prepare_orbit(system, x0, key, self.unstable_dim, self.burn_in)
        start = jnp.asarray(t)
        states, qs, rs, _ = forward_segments(system, x, q, noise_key, start, self.segments,
                                             self.segment_steps)
        check_orbit(states, t, self.segment_steps)
        flow = is_flow(system)
        per_segment = adjoint_sweep(system, observable, params, states, qs, noise_key, start,
                                    flow)
        coefficients = shadowing_coefficients(per_segment, flow)
        contributions = segment_contributions(per_segment, coefficients)
        steps = self.segments * self.segment_steps
        grad, stderr = _blocked_mean(contributions, self.segment_steps, self.blocks)
        values = jax.vmap(jax.vmap(observable))(states)
        unit = system.time_step or 1.0
        exponents = np.log(np.abs(np.diagonal(np.asarray(rs), axis1=1, axis2=2))).mean(0)
        info = {"method": "Shadowing", "steps": steps, "segments": self.segments,
                "lyapunov_exponents": (exponents / (self.segment_steps * unit)).tolist(),
                "max_coefficient": float(jnp.max(jnp.abs(coefficients), initial=0.0)),
                "seconds": time.perf_counter() - began}
        return Estimate(float(jnp.mean(values)), grad, stderr, info)


def _blocked_mean(contributions, segment_steps, blocks):
    """Mean per step of per-segment sums, with batch-means errors over blocks of segments."""
    leaves, treedef = jax.tree_util.tree_flatten(contributions)
    means, errors = [], []
    for leaf in leaves:
        per_step = np.asarray(leaf) / segment_steps
        count = min(blocks, per_step.shape[0])
        usable = (per_step.shape[0] // count) * count
        block_means = per_step[:usable].reshape((count, -1) + per_step.shape[1:]).mean(axis=1)
        means.append(jnp.asarray(per_step.mean(axis=0)))
        errors.append(jnp.asarray(batch_means(block_means)))
    return treedef.unflatten(means), treedef.unflatten(errors)
