"""The backward sweep of adjoint shadowing, shared by Shadowing and FastAdjointResponse.

On an orbit x_0..x_N split into K segments of m steps (t_k = k m), with u unstable
directions (for a discretised flow, count the neutral one too):

1. Forward: u tangent vectors e, QR at each interface: f_* ... Q_k = Q_{k+1} R_{k+1}.
2. Backward, continuing across interfaces: eps_n = f_*^T eps_{n+1} (u homogeneous adjoints,
   eps = Q_K at the end) and, for each of the k' observable components j,
   nu'_{n,j} = f_*^T nu'_{n+1,j} + grad Phi~_j(x_n) (nu' = 0 at the end): the k' inhomogeneous
   adjoints are columns of one matrix, pulled back together (:func:`pullback_columns`).
3. At t_k: eps^T Q_k = R_{k+1}^T is invariant inside the segment; renormalise
   eps <- eps M_k, M_k = (Q_k^T eps)^{-1}, and remove nu'`s component along eps:
   b_k = (eps^T eps)^{-1} eps^T nu', nu' <- nu' - eps b_k.
4. nu = nu' + eps a_k on segment k is continuous when a_k = M_k a_{k-1} - b_k. For a map,
   a_0 = -b_0 (no unstable component at time 0): the unique bounded solution. For a flow
   the neutral coefficient is fixed by minimising sum_n |nu_n|^2 subject to the
   time-dilation constraint sum_n nu_n . F(x_n) = 0 (NILSAS).
5. SC = (1/N) sum_n nu_{n+1} . X_n, X_n = d_theta f(x_n).

With the unstable-contribution option (FastAdjointResponse) the sweep also carries
nu~'_n = f_*^T nu~'_{n+1} + omega_n, omega_n = grad_x tr(eps-bar_{n+1}^T f_*(x) e_n)
(one column: omega does not depend on Phi) and the psi-weighted parameter sums.

How the recursion is evaluated (step by step, a segment's Jacobians at once, or parallel
over segments) is a strategy object (``sweeps``); this module holds the recursion and the
first two evaluations, ``_segment_sweep`` the third.

A. Ni & C. Talnikar, J. Comput. Phys. 395, 690 (2019); A. Ni, Nonlinearity (2024);
A. Ni, "Fast adjoint differentiation of chaos", arXiv:2111.07692.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import _linalg
from .._tangent import step_noise
from ._orbits import segment_states
from ._segment_sweep import SegmentPropagator, all_propagators, chain, segment_sums, times
from ._unstable import second_order_terms, segment_tangents, trace_gradient
from .sweeps import AbstractSweep, SegmentJacobians, SegmentParallel, StepByStep


def pullback_columns(step, x, params, cotangents, dense_limit: int):
    """(J_x^T C (dim, c), J_theta^T C (leaves with a leading axis c)) of ``step(x, params)``
    for the c columns of C: the vector-Jacobian products of every adjoint in one step.

    Up to ``dense_limit`` state components and parameters, the dense Jacobians (dim + P
    JVPs, ``jax.jacfwd``) are contracted with C by broadcast-and-sum (``StepByStep``);
    larger systems take the c VJPs (no dense Jacobian). The two agree to rounding.
    """
    size = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(params))
    if x.shape[0] > dense_limit or size > dense_limit:
        _, pullback = jax.vjp(step, x, params)
        return jax.vmap(pullback, in_axes=1, out_axes=(1, 0))(cotangents)
    jx, jp = jax.jacfwd(step, argnums=(0, 1))(x, params)  # (dim, dim), leaves (dim, *shape)
    return _pullback_with(jx, jp, cotangents)


class LeastSquaresSums(NamedTuple):
    """Per-segment terms that fix a flow's neutral coefficient (NILSAS).

    C = sum eps^T eps (u, u); d = sum eps^T nu' (u, k'); dwf = sum eps^T F (u);
    dvf = sum nu'^T F (k').
    """

    C: jax.Array
    d: jax.Array
    dwf: jax.Array
    dvf: jax.Array


class UnstableSums(NamedTuple):
    """psi-weighted parameter sums of the unstable contribution (per segment).

    nu: sum psi_{n+1} (x) (nu~'_{n+1} . X_n), leaves (k', ...);
    eps: sum psi_{n+1} (x) (eps_{n+1} . X_n), leaves (k', u, ...);
    trace: sum psi_{n+1} (x) d_theta tr(eps-bar^T f_* e), leaves (k', ...).
    """

    nu: Any
    eps: Any
    trace: Any


class SweepSums(NamedTuple):
    """Accumulated over one segment: sum nu'_{n+1} . X_n (leaves (k', ...)),
    sum eps_{n+1} . X_n (leaves (u, ...)), and the optional parts."""

    nu: Any
    eps: Any
    unstable: UnstableSums | None
    least_squares: LeastSquaresSums | None


class SegmentTerms(NamedTuple):
    """What the coefficients need from each segment (leading axis: segment).

    b: (u, k') projections of nu' on eps; b_unstable: (u,) of nu~'; M: (u, u) dual
    renormalisations; sums: the :class:`SweepSums` of the segment.
    """

    b: jax.Array
    b_unstable: jax.Array | None
    M: jax.Array
    sums: SweepSums


def segment_jacobians(system, key, params, states_k, t0):
    """(J_x (m, dim, dim), J_theta (leaves (m, dim, *shape))) of each step of a segment with
    states ``states_k`` (m, dim) from step ``t0``, vectorised over its steps (``jax.jacfwd``).

    Inside a loop body XLA's CPU fusion evaluates a transcendental function (the solenoid's
    sines and cosines) again for every element of each product it feeds: a step's 22
    vector-Jacobian products cost 17 us on the 21-dimensional solenoid. Computed for all of
    a segment's steps at once, outside the loop over its steps, they cost 1.9 us a step,
    and the sweep's products with them are plain matrix products."""

    def one(n):
        t, x = t0 + n, states_k[n]
        xi = step_noise(system, key, t, x)

        def step(y, p):
            return params.substitute(system, p).step(t, y, xi)

        return jax.jacfwd(step, argnums=(0, 1))(x, params.values)

    return jax.vmap(one)(jnp.arange(states_k.shape[0]))


def _pullback_with(jacobian_x, jacobian_p, cotangents):
    """(J_x^T C, J_theta^T C (leaves (c, ...))) from Jacobians at hand (as
    :func:`pullback_columns`)."""
    back_x = times(jacobian_x.T, cotangents)

    def back(leaf):
        flat = leaf.reshape(leaf.shape[0], -1)  # (dim, size)
        return times(cotangents.T, flat).reshape((cotangents.shape[1],) + leaf.shape[1:])

    return back_x, jax.tree_util.tree_map(back, jacobian_p)


def _add(total, increment):
    return jax.tree_util.tree_map(jnp.add, total, increment)


def _accumulator(
    zero, pack_limit: int
) -> tuple[Callable[[Any, Any], Any], Any, Callable[[Any], Any]]:
    """(accumulate(total, increment), initial total, finish(total) -> sums) for per-step
    sums shaped like the pytree ``zero``.

    Up to ``pack_limit`` numbers the total is one flat vector and each step adds the
    raveled increments to it: one fused kernel, where one accumulator per leaf costs one
    kernel per leaf per step (about 50 ns each on a CPU, most of a small system's step).
    Larger sums keep their pytree (their arithmetic outweighs the kernel launches).
    """
    flat, unravel = ravel_pytree(zero)
    if flat.size > pack_limit:
        return _add, zero, lambda total: total
    return (lambda total, increment: total + ravel_pytree(increment)[0]), flat, unravel


def _outer(weights, tree):
    """weights (k',) (x) every leaf: leaves (k', ...)."""
    return jax.tree_util.tree_map(
        lambda leaf: weights.reshape(weights.shape + (1,) * leaf.ndim) * leaf, tree
    )


def _zero_sums(params, count, unstable_dim, unstable: bool, flow: bool) -> SweepSums:
    return SweepSums(
        nu=params.zeros((count,)),
        eps=params.zeros((unstable_dim,)),
        unstable=UnstableSums(
            params.zeros((count,)), params.zeros((count, unstable_dim)), params.zeros((count,))
        )
        if unstable
        else None,
        least_squares=LeastSquaresSums(
            jnp.zeros((unstable_dim, unstable_dim)),
            jnp.zeros((unstable_dim, count)),
            jnp.zeros(unstable_dim),
            jnp.zeros(count),
        )
        if flow
        else None,
    )


@eqx.filter_jit
def adjoint_sweep(*args, **kwargs) -> SegmentTerms:
    """The backward sweep of a whole orbit: the terms of :func:`adjoint_sweep_from` (same
    arguments), started at the orbit's end."""
    return adjoint_sweep_from(*args, **kwargs)[1]


def choose_sweep(
    sweep: AbstractSweep, dim: int, params, count: int, unstable_dim: int, unstable: bool
):
    """The concrete strategy of ``sweep`` for k' = ``count`` components, u unstable
    directions and the unstable contribution or not (``sweeps.AutoSweep`` is the rule)."""
    columns = count + unstable_dim + (1 if unstable else 0)
    return sweep.choose(dim, params.size, columns, unstable)


def adjoint_sweep_from(
    system,
    components,
    params,
    states,
    qs,
    key,
    start,
    flow: bool,
    sweep: AbstractSweep,
    psi=None,
    rs=None,
    segment_steps: int | None = None,
    init=None,
    orbits: int = 1,
) -> tuple[tuple[jax.Array, jax.Array], SegmentTerms]:
    """Backward sweep over all segments for the k' components of ``components``.

    ``states`` is every state (K, m, dim), or each segment's first state (K, dim) with
    ``segment_steps`` m: then each segment's states are recomputed before it is swept.
    With ``psi`` (psi_{n+1} for every step n, shape (segments, segment_steps, k')) and the
    QR factors ``rs``, also the unstable-contribution adjoint and its sums (see module doc);
    eps-bar = eps R_{k+1}^{-T} is the basis dual to e (eps-bar^T e = I).

    Returns the adjoints (eps, nu') at the first segment and the :class:`SegmentTerms` of
    every segment. A sweep in pieces (a resumable run) passes the later piece's adjoints as
    ``init`` (default: Q_K and zeros, the end of the orbit). ``sweep`` says how the
    recursion is evaluated (``sweeps``: the same terms to rounding); ``orbits``: how many
    orbits the caller vmaps this sweep over (a segment-parallel batch is shared by them).
    """
    recompute = states.ndim == 2
    if recompute:
        assert segment_steps is not None
        segments, steps = states.shape[0], segment_steps
    else:
        segments, steps = states.shape[:2]
    unstable = psi is not None
    count, unstable_dim = components.count, qs.shape[2]
    columns = count + 1 if unstable else count
    chosen = choose_sweep(sweep, states.shape[-1], params, count, unstable_dim, unstable)
    if init is None:
        init = (qs[-1], jnp.zeros((states.shape[-1], columns)))
    if isinstance(chosen, SegmentParallel):
        propagators = all_propagators(
            system,
            components,
            params,
            states,
            key,
            start,
            flow,
            steps,
            max(1, chosen.batch // orbits),
        )
        return terms_from_propagators(propagators, params, qs, init)
    if unstable:  # R_{k+1}^{-T} of every segment at once, not a library call in the loop body
        assert rs is not None
        duals = jnp.swapaxes(_linalg.inv(rs), -1, -2)

    def segment(carry, k):
        eps, nus = carry
        t0 = start + k * steps
        states_k = segment_states(system, key, states[k], t0, steps) if recompute else states[k]
        jacobians = None
        if isinstance(chosen, SegmentJacobians):
            jacobians = segment_jacobians(system, key, params, states_k, t0)
        unstable_inputs = None
        if unstable:
            assert psi is not None
            tangents = segment_tangents(
                system, key, states_k, qs[k], t0, None if jacobians is None else jacobians[0]
            )
            unstable_inputs = (tangents, duals[k], psi[k])
        if isinstance(chosen, SegmentJacobians):
            cotangents, sums = _segment_at_once(
                system,
                components,
                params,
                key,
                states_k,
                t0,
                jacobians,
                (nus, eps),
                flow,
                unstable_inputs,
                chosen.unroll,
            )
        else:
            assert isinstance(chosen, StepByStep)
            cotangents, sums = _segment_step_by_step(
                system,
                components,
                params,
                key,
                states_k,
                t0,
                (nus, eps),
                flow,
                unstable_inputs,
                chosen,
            )
        return _segment_end(cotangents, sums, qs[k], count, columns, unstable)

    return jax.lax.scan(segment, init, jnp.arange(segments), reverse=True)


def _segment_step_by_step(
    system,
    components,
    params,
    key,
    states_k,
    t0,
    end,
    flow: bool,
    unstable_inputs,
    sweep: StepByStep,
):
    """One segment of the sweep one step at a time (module doc, steps 2 and 5): from
    ``end`` = (nu', eps) at the segment's end to the adjoints [nu' | eps] at its start, and
    the segment's :class:`SweepSums`. ``unstable_inputs`` as for :func:`_segment_at_once`."""
    nus, eps = end
    count, unstable_dim = components.count, eps.shape[1]
    unstable = unstable_inputs is not None
    columns = nus.shape[1]

    def one(acc, n):
        cotangents, total = acc  # (dim, columns + u): [nu' | eps], one carried matrix
        eps = cotangents[:, columns:]
        t, x = t0 + n, states_k[n]
        xi = step_noise(system, key, t, x)

        def step(y, p):
            return params.substitute(system, p).step(t, y, xi)

        back_x, back_p = pullback_columns(step, x, params.values, cotangents, sweep.dense_limit)
        forcing = jax.jacrev(lambda y: components(y, system))(x).T  # (dim, k')
        nu_part = jax.tree_util.tree_map(lambda b: b[:count], back_p)
        eps_part = jax.tree_util.tree_map(lambda b: b[columns:], back_p)
        unstable_part = None
        if unstable_inputs is not None:
            tangents, dual, weights = unstable_inputs
            weight = weights[n]
            omega, d_trace = trace_gradient(step, x, params.values, tangents[n], eps @ dual)
            forcing = jnp.concatenate([forcing, omega[:, None]], axis=1)
            tilde = jax.tree_util.tree_map(lambda b: b[count], back_p)
            unstable_part = UnstableSums(
                _outer(weight, tilde), _outer(weight, eps_part), _outer(weight, d_trace)
            )
        nus = back_x[:, :columns] + forcing
        eps = back_x[:, columns:]
        cotangents = jnp.concatenate([nus, eps], axis=1)
        least_squares = None
        if flow:  # least-squares terms are needed only to fix a flow's neutral coefficient
            direction = system.vector_field(t * system.dt, x)
            # broadcast-and-sum, not matmul: XLA fuses these tiny reductions into the step
            least_squares = LeastSquaresSums(
                jnp.sum(eps[:, :, None] * eps[:, None, :], axis=0),
                jnp.sum(eps[:, :, None] * nus[:, None, :count], axis=0),
                jnp.sum(eps * direction[:, None], axis=0),
                jnp.sum(nus[:, :count] * direction[:, None], axis=0),
            )
        increment = SweepSums(nu_part, eps_part, unstable_part, least_squares)
        return (cotangents, accumulate(total, increment)), None

    zero = _zero_sums(params, count, unstable_dim, unstable, flow)
    accumulate, start_total, finish = _accumulator(zero, sweep.pack_limit)
    (cotangents, total), _ = jax.lax.scan(
        one,
        (jnp.concatenate([nus, eps], axis=1), start_total),
        jnp.arange(states_k.shape[0]),
        reverse=True,
        unroll=sweep.unroll,
    )
    return cotangents, finish(total)


def _segment_end(cotangents, sums, q_k, count: int, columns: int, unstable: bool):
    """Step 3 of the module doc at a segment's start, from the adjoints [nu' | eps] there:
    the projection b, the renormalised adjoints carried on, and the segment's terms."""
    nus, eps = cotangents[:, :columns], cotangents[:, columns:]
    b = _linalg.solve(eps.T @ eps, eps.T @ nus)  # (u, columns)
    nus = nus - eps @ b
    renorm = _linalg.inv(q_k.T @ eps)
    terms = SegmentTerms(b[:, :count], b[:, count] if unstable else None, renorm, sums)
    return (eps @ renorm, nus), terms


def _pulled_back(jacobians_x, end, forcing=None, unroll: int = 1):
    """C_n = J_n^T C_{n+1} (+ forcing_n) through a segment from C_m = ``end`` (dim, c), with
    forcing (m, dim, c) or none: (C_0, C_{n+1} for n = 0..m-1 (m, dim, c)). One product a
    step."""

    def back(c, inputs):
        jacobian, force = inputs
        pulled = times(jacobian.T, c)
        return (pulled if force is None else pulled + force), c

    return jax.lax.scan(back, end, (jacobians_x, forcing), reverse=True, unroll=unroll)


def _segment_at_once(
    system,
    components,
    params,
    key,
    states_k,
    t0,
    jacobians,
    end,
    flow: bool,
    unstable_inputs,
    unroll: int,
):
    """One segment of the sweep with its Jacobians at hand (``SegmentJacobians``): only the adjoint
    recursion runs step by step (one product a step, :func:`_pulled_back`); the observable's
    gradients, the second-order term, the parameter sums and the least-squares sums are
    taken for all the segment's steps at once from the stored adjoints (the terms of the
    per-step loop, summed in another order).

    ``end``: (nu', eps) at the segment's end; ``unstable_inputs``: (e_n (m, dim, u),
    R_{k+1}^{-T}, psi of the segment (m, k')) for FastAdjointResponse, else None. Returns
    the adjoints [nu' | eps] at the segment's start and its :class:`SweepSums`."""
    jacobians_x, jacobians_p = jacobians
    nus, eps = end
    steps, count = states_k.shape[0], components.count
    ts = t0 + jnp.arange(steps)
    forcing = jax.vmap(lambda y: jax.jacrev(lambda z: components(z, system))(y).T)(states_k)
    unstable = None
    if unstable_inputs is None:  # [nu' | eps] together, forced by [grad Phi~ | 0]
        padded = jnp.pad(forcing, ((0, 0), (0, 0), (0, eps.shape[1])))
        start, nexts = _pulled_back(
            jacobians_x, jnp.concatenate([nus, eps], axis=1), padded, unroll
        )
    else:  # eps first: the second-order term that forces nu~' needs eps_{n+1}
        tangents, dual, weights = unstable_inputs
        eps_0, eps_next = _pulled_back(jacobians_x, eps, None, unroll)
        omega, d_trace = second_order_terms(
            system, params, key, states_k, ts, tangents, eps_next @ dual
        )
        forcing = jnp.concatenate([forcing, omega[:, :, None]], axis=2)
        nus_0, nus_next = _pulled_back(jacobians_x, nus, forcing, unroll)
        start = jnp.concatenate([nus_0, eps_0], axis=1)
        nexts = jnp.concatenate([nus_next, eps_next], axis=2)
    columns = nus.shape[1]

    def back_p(leaf):  # X_n^T C_{n+1} of every step: (m, c, *shape)
        flat = leaf.reshape(steps, leaf.shape[1], -1)
        pulled = jnp.einsum("mdp,mdc->mcp", flat, nexts)
        return pulled.reshape((steps, nexts.shape[2]) + leaf.shape[2:])

    pulled = jax.tree_util.tree_map(back_p, jacobians_p)
    nu_sum = jax.tree_util.tree_map(lambda b: jnp.sum(b[:, :count], axis=0), pulled)
    eps_sum = jax.tree_util.tree_map(lambda b: jnp.sum(b[:, columns:], axis=0), pulled)
    if unstable_inputs is not None:

        def weighted(tree):  # sum_n psi_{n+1} (x) leaf_n: leaves (k', ...)
            return jax.tree_util.tree_map(
                lambda leaf: jnp.tensordot(weights, leaf, axes=(0, 0)), tree
            )

        unstable = UnstableSums(
            weighted(jax.tree_util.tree_map(lambda b: b[:, count], pulled)),
            weighted(jax.tree_util.tree_map(lambda b: b[:, columns:], pulled)),
            weighted(d_trace),
        )
    least_squares = None
    if flow:  # the adjoints at n = 0..m-1 (after each step's pullback) and F(x_n)
        here = jnp.concatenate([start[None], nexts[:-1]])
        eps_n, nus_n = here[:, :, columns:], here[:, :, :count]
        directions = jax.vmap(lambda t, y: system.vector_field(t * system.dt, y))(ts, states_k)
        least_squares = LeastSquaresSums(
            jnp.einsum("mdu,mdv->uv", eps_n, eps_n),
            jnp.einsum("mdu,mdc->uc", eps_n, nus_n),
            jnp.einsum("mdu,md->u", eps_n, directions),
            jnp.einsum("mdc,md->c", nus_n, directions),
        )
    return start, SweepSums(nu_sum, eps_sum, unstable, least_squares)


def shadowing_coefficients(b, m, least_squares: LeastSquaresSums | None):
    """a_k (K, u, c) for right-hand sides b (K, u, c): a_k = M_k a_{k-1} - b_k, a_0 fixed
    by boundedness (a map) or by the constrained least squares of a flow (module doc)."""
    u = b.shape[1]

    def propagate(carry, inputs):
        t_mat, p_vec = carry
        m_k, b_k = inputs
        t_mat, p_vec = m_k @ t_mat, m_k @ p_vec - b_k
        return (t_mat, p_vec), (t_mat, p_vec)

    start = (jnp.eye(u), jnp.zeros(b.shape[1:]))
    _, (t_rest, p_rest) = jax.lax.scan(propagate, start, (m[1:], b[1:]))
    t_all = jnp.concatenate([jnp.eye(u)[None], t_rest])  # a_k = T_k a_0 + p_k
    p_all = jnp.concatenate([jnp.zeros(b.shape[1:])[None], p_rest])
    if least_squares is None:
        a0 = -b[0]
    else:
        c_mat, d_mat = least_squares.C, least_squares.d
        hess = jnp.einsum("kia,kij,kjb->ab", t_all, c_mat, t_all)
        lin = jnp.einsum("kia,kic->ac", t_all, jnp.einsum("kij,kjc->kic", c_mat, p_all) + d_mat)
        con = jnp.einsum("kia,ki->a", t_all, least_squares.dwf)
        rhs = jnp.sum(
            jnp.einsum("ki,kic->kc", least_squares.dwf, p_all) + least_squares.dvf, axis=0
        )
        kkt = jnp.block([[hess, con[:, None]], [con[None, :], jnp.zeros((1, 1))]])
        a0 = _linalg.solve(kkt, jnp.concatenate([-lin, -rhs[None]]))[:u]
    return jnp.einsum("kia,ac->kic", t_all, a0) + p_all


def segment_contributions(sums_nu, sums_eps, coefficients):
    """Per segment: sum_n nu_{n+1} . X_n = g_nu + sum_i a_i g_eps_i, leaves (K, k', ...)."""
    return jax.tree_util.tree_map(
        lambda g_nu, g_eps: g_nu + jnp.einsum("kic,ki...->kc...", coefficients, g_eps),
        sums_nu,
        sums_eps,
    )


def terms_from_propagators(
    propagators: SegmentPropagator, params, qs, init
) -> tuple[tuple[jax.Array, jax.Array], SegmentTerms]:
    """The chain over the segments and the batched sums: the adjoints at the first segment
    and the :class:`SegmentTerms` of every segment (as :func:`adjoint_sweep_from`)."""
    first, (eps, nus, b, renorm) = chain(propagators, qs, init)
    nu_flat, eps_flat, least_squares = segment_sums(propagators, eps, nus)
    unravel = jax.vmap(jax.vmap(ravel_pytree(params.values)[1], in_axes=1))
    sums = SweepSums(
        unravel(nu_flat),
        unravel(eps_flat),
        None,
        None if least_squares is None else LeastSquaresSums(*least_squares),
    )
    return first, SegmentTerms(b, None, renorm, sums)
