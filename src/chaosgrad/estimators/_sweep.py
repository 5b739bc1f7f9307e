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
over segments) is a strategy object (``sweeps``); this module holds the recursion across
the segments and the coefficients, ``_segment_steps`` the evaluation of one segment by the
first two, ``_segment_sweep`` the third.

A. Ni & C. Talnikar, J. Comput. Phys. 395, 690 (2019); A. Ni, Nonlinearity (2024);
A. Ni, "Fast adjoint differentiation of chaos", arXiv:2111.07692.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .. import _linalg
from ._orbits import segment_states
from ._segment_steps import (
    LeastSquaresSums,
    SweepSums,
    UnstableSums,
    segment_at_once,
    segment_jacobians,
    segment_step_by_step,
)
from ._segment_sweep import (
    SegmentPropagator,
    all_propagators,
    chain,
    forward_bases,
    segment_sums,
)
from ._unstable import segment_tangents
from .sweeps import AbstractSweep, SegmentJacobians, SegmentParallel, StepByStep

__all__ = [  # the sums' types are _segment_steps', named here beside the recursion's
    "LeastSquaresSums",
    "SegmentTerms",
    "SweepSums",
    "UnstableSums",
    "adjoint_sweep",
    "adjoint_sweep_from",
    "choose_sweep",
    "orbit_sweep",
    "segment_contributions",
    "shadowing_coefficients",
    "terms_from_propagators",
]


class SegmentTerms(NamedTuple):
    """What the coefficients need from each segment (leading axis: segment).

    b: (u, k') projections of nu' on eps; b_unstable: (u,) of nu~'; M: (u, u) dual
    renormalisations; sums: the :class:`SweepSums` of the segment.
    """

    b: jax.Array
    b_unstable: jax.Array | None
    M: jax.Array
    sums: SweepSums


@eqx.filter_jit
def adjoint_sweep(*args, **kwargs) -> SegmentTerms:
    """The backward sweep of a whole orbit: the terms of :func:`adjoint_sweep_from` (same
    arguments), started at the orbit's end."""
    return adjoint_sweep_from(*args, **kwargs)[1]


def orbit_sweep(
    system,
    components,
    params,
    states,
    qs,
    key,
    start,
    flow: bool,
    sweep: AbstractSweep,
    unstable_dim: int,
    segment_steps: int,
    orbits: int,
) -> tuple[SegmentTerms, tuple[jax.Array, jax.Array] | None]:
    """The shadowing sweep of one whole orbit with u = ``unstable_dim`` and the forward
    run's bases ``qs`` (its k >= u columns), by the concrete strategy ``sweep``: (its
    :class:`SegmentTerms`, the bases (Q_k, R_{k+1}) when they are made here, else None).
    A forward run for :class:`~chaosgrad.estimators.sweeps.SegmentParallel` carries no
    tangents and leaves Q_0 alone (``qs`` (1, dim, k)): the bases come from the segment
    propagators, Q_{k+1} R_{k+1} = P_0^T Q_k (``_segment_sweep.forward_bases``)."""
    if isinstance(sweep, SegmentParallel) and qs.shape[0] == 1:
        propagators = _propagators(
            system, components, params, states, key, start, flow, segment_steps, sweep, orbits
        )
        qs, rs = forward_bases(propagators, qs[0])
        init = (qs[-1, :, :unstable_dim], jnp.zeros((qs.shape[1], components.count)))
        _, terms = terms_from_propagators(propagators, params, qs[..., :unstable_dim], init)
        return terms, (qs, rs)
    terms = adjoint_sweep(
        system,
        components,
        params,
        states,
        qs[..., :unstable_dim],
        key,
        start,
        flow,
        sweep,
        segment_steps=segment_steps,
        orbits=orbits,
    )
    return terms, None


def _propagators(system, components, params, states, key, start, flow, steps, sweep, orbits):
    """Every segment's propagator, batches of ``sweep.batch`` segments shared by the
    ``orbits`` vmapped together."""
    batch = max(1, sweep.batch // orbits)
    return all_propagators(system, components, params, states, key, start, flow, steps, batch)


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
        propagators = _propagators(
            system, components, params, states, key, start, flow, steps, chosen, orbits
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
            cotangents, sums = segment_at_once(
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
            cotangents, sums = segment_step_by_step(
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


def _segment_end(cotangents, sums, q_k, count: int, columns: int, unstable: bool):
    """Step 3 of the module doc at a segment's start, from the adjoints [nu' | eps] there:
    the projection b, the renormalised adjoints carried on, and the segment's terms."""
    nus, eps = cotangents[:, :columns], cotangents[:, columns:]
    b = _linalg.solve(eps.T @ eps, eps.T @ nus)  # (u, columns)
    nus = nus - eps @ b
    renorm = _linalg.inv(q_k.T @ eps)
    terms = SegmentTerms(b[:, :count], b[:, count] if unstable else None, renorm, sums)
    return (eps @ renorm, nus), terms


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
