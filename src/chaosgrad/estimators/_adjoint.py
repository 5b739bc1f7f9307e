"""The adjoint shadowing sweep shared by Shadowing and FastAdjointResponse (typed state).

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
from .._errors import as_state
from .._tangent import draw_orbit_starts, positive_qr, step_noise, step_with_tangents
from ..lyapunov.spectrum import run_tangent_blocks
from ..parallel import batch_of_one
from ._rollout import check_finite
from ._segment_sweep import SegmentPropagator, chain, segment_propagators, segment_sums, times

SWEEP_UNROLL = 4
"""Steps of the backward sweep per loop iteration (XLA unrolls them: less loop overhead)."""

DENSE_LIMIT = 16
"""Largest state dimension and parameter count for which the sweep pulls its columns back
through the dense Jacobians (:func:`pullback_columns`), and for which the shadowing sweep
runs parallel over segments (``_segment_sweep``)."""

PRECOMPUTED_LIMIT = 64
"""Largest state dimension and parameter count for which the step-by-step sweep computes
the Jacobians of a whole segment's steps at once, before sweeping it
(:func:`segment_jacobians`)."""

SEGMENT_BATCH = 64
"""Segments swept together by the segment-parallel sweep, over all orbits vmapped together:
one batch's arrays stay in a CPU's cache (Lorenz-63: 40 ns per segment and step in batches
of 50-100, 70 at 200, 125 at 500); an orbit whose states are not kept recomputes one
batch's states at a time."""


def pullback_columns(step, x, params, cotangents):
    """(J_x^T C (dim, c), J_theta^T C (leaves with a leading axis c)) of ``step(x, params)``
    for the c columns of C: the vector-Jacobian products of every adjoint in one step.

    Up to ``DENSE_LIMIT`` state components and parameters, the dense Jacobians (dim + P
    JVPs, ``jax.jacfwd``) are contracted with C by broadcast-and-sum, which XLA fuses into a
    few kernels: 10x faster per step than c VJPs under ``vmap`` on Lorenz-63, whose
    transposed stacks and pads compile to a dozen small kernels a step. Larger systems take
    the c VJPs (no dense Jacobian). The two agree to rounding.
    """
    size = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(params))
    if x.shape[0] > DENSE_LIMIT or size > DENSE_LIMIT:
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


@eqx.filter_jit
def forward_segments(
    system, x, q, key, start, segments: int, segment_steps: int, store=True, tangents=True
):
    """States of every step (K, m, dim), bases Q_k at interfaces and factors R_{k+1},
    k = 0..K-1. With ``store=False`` only each segment's first state (K, dim) is kept: the
    adjoint sweep recomputes a segment's states from it (memory O(K + m), not O(K m)).
    With ``tangents=False`` the tangents are not carried: the bases are Q_0 alone (1, dim, k)
    and the factors empty (0, k, k); the segment-parallel sweep makes the rest from its
    segment propagators (:func:`~chaosgrad.estimators._segment_sweep.forward_bases`)."""
    if not tangents:

        def plain(x, k):
            x_next, states = _segment_run(system, key, x, start + k * segment_steps, segment_steps)
            return x_next, states if store else x

        x_end, states = jax.lax.scan(plain, x, jnp.arange(segments))
        return states, q[None], jnp.zeros((0,) + (q.shape[1],) * 2), x_end

    def segment(carry, k):
        x, q = carry
        t0 = start + k * segment_steps

        def one(state, t):
            x, e = state
            return step_with_tangents(system, t, x, step_noise(system, key, t, x), e), x

        first = x
        (x, e), states = jax.lax.scan(one, (x, q), t0 + jnp.arange(segment_steps))
        q_next, r = positive_qr(e)
        return (x, q_next), (states if store else first, q, r)

    (x_end, q_end), (states, qs, rs) = jax.lax.scan(segment, (x, q), jnp.arange(segments))
    return states, jnp.concatenate([qs, q_end[None]]), rs, x_end


def _segment_run(system, key, first, t0, segment_steps: int):
    """(x_{t0+m}, the states x_{t0} .. x_{t0+m-1}) of a segment from its first state."""

    def one(x, t):
        return system.step(t, x, step_noise(system, key, t, x)), x

    return jax.lax.scan(one, first, t0 + jnp.arange(segment_steps))


def segment_states(system, key, first, t0, segment_steps: int):
    """x_{t0} .. x_{t0+m-1} recomputed from the segment's first state (checkpointing)."""
    return _segment_run(system, key, first, t0, segment_steps)[1]


@eqx.filter_jit
def segment_values(system, components, firsts, key, start, segment_steps: int):
    """Raw components of every state, (K, m, k), recomputed segment by segment from the
    segments' first states."""
    raw = components.with_projection(jnp.eye(components.projection.shape[0]))

    def segment(carry, k):
        states = segment_states(system, key, firsts[k], start + k * segment_steps, segment_steps)
        return carry, jax.vmap(lambda y: raw(y, system))(states)

    return jax.lax.scan(segment, None, jnp.arange(firsts.shape[0]))[1]


@eqx.filter_jit
def mean_values(system, components, firsts, key, start, segment_steps: int):
    """Mean raw components over the segments recomputed from their first states."""
    raw = components.with_projection(jnp.eye(components.projection.shape[0]))

    def segment(total, k):
        states = segment_states(system, key, firsts[k], start + k * segment_steps, segment_steps)
        return total + jnp.sum(jax.vmap(lambda y: raw(y, system))(states), axis=0), None

    count = components.projection.shape[0]
    total, _ = jax.lax.scan(segment, jnp.zeros(count), jnp.arange(firsts.shape[0]))
    return total / (firsts.shape[0] * segment_steps)


def _segment_tangents(system, key, states_k, q_k, t0, jacobians=None):
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


def precomputes_jacobians(dim: int, params, columns: int) -> bool:
    """Whether the step-by-step sweep computes each segment's Jacobians before sweeping it:
    at most ``PRECOMPUTED_LIMIT`` state components and parameters, and dense Jacobians (dim
    + P JVPs a step) not much dearer than the ``columns`` pullbacks they replace: dim + P
    <= 3 columns (measured: the 21-dimensional solenoid with 22 columns 2.6x faster,
    Lorenz-96 n = 40 with 15 columns 1.2x; a tanh RNN n = 40 with 7 columns 2.3x slower)."""
    size = params.size
    return max(dim, size) <= PRECOMPUTED_LIMIT and dim + size <= 3 * columns


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


PACK_LIMIT = 4096
"""Largest number of summed numbers per step that the sweep keeps in one flat vector."""


def _accumulator(zero) -> tuple[Callable[[Any, Any], Any], Any, Callable[[Any], Any]]:
    """(accumulate(total, increment), initial total, finish(total) -> sums) for per-step
    sums shaped like the pytree ``zero``.

    Up to ``PACK_LIMIT`` numbers the total is one flat vector and each step adds the
    raveled increments to it: one fused kernel, where one accumulator per leaf costs one
    kernel per leaf per step (about 50 ns each on a CPU, most of a small system's step).
    Larger sums keep their pytree (their arithmetic outweighs the kernel launches).
    """
    flat, unravel = ravel_pytree(zero)
    if flat.size > PACK_LIMIT:
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


def adjoint_sweep_from(
    system,
    components,
    params,
    states,
    qs,
    key,
    start,
    flow: bool,
    psi=None,
    rs=None,
    segment_steps: int | None = None,
    init=None,
    segment_parallel: bool = True,
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
    ``init`` (default: Q_K and zeros, the end of the orbit).

    Without the unstable contribution, a system of at most ``DENSE_LIMIT`` state components
    and parameters is swept parallel over segments (``_segment_sweep``; the same terms to
    rounding), unless ``segment_parallel`` is False; ``orbits``: how many orbits the caller
    vmaps this sweep over (they share the batches of ``SEGMENT_BATCH`` segments).
    """
    recompute = states.ndim == 2
    if recompute:
        assert segment_steps is not None
        segments, steps = states.shape[0], segment_steps
    else:
        segments, steps = states.shape[:2]
    unstable_dim = qs.shape[2]
    count = components.count
    unstable = psi is not None
    columns = count + 1 if unstable else count
    if init is None:
        init = (qs[-1], jnp.zeros((states.shape[-1], columns)))
    if unstable:  # R_{k+1}^{-T} of every segment at once, not a library call in the loop body
        assert rs is not None
        duals = jnp.swapaxes(_linalg.inv(rs), -1, -2)
    if segment_parallel and not unstable and sweeps_in_parallel(states.shape[-1], params):
        batch = max(1, SEGMENT_BATCH // orbits)
        return _segment_parallel_sweep(
            system, components, params, states, qs, key, start, flow, steps, init, batch
        )

    def segment(carry, k):
        eps, nus = carry
        t0 = start + k * steps
        if recompute:
            states_k = segment_states(system, key, states[k], t0, steps)
        else:
            states_k = states[k]
        jacobians = None
        if precomputes_jacobians(states_k.shape[1], params, columns + unstable_dim):
            jacobians = segment_jacobians(system, key, params, states_k, t0)
        if unstable:
            assert rs is not None and psi is not None
            tangents = _segment_tangents(
                system, key, states_k, qs[k], t0, None if jacobians is None else jacobians[0]
            )
            dual = duals[k]
        if jacobians is not None:
            unstable_inputs = None
            if unstable:
                assert psi is not None
                unstable_inputs = (tangents, dual, psi[k])
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
            )
            return _segment_end(cotangents, sums, qs[k], count, columns, unstable)

        def one(acc, n):
            cotangents, total = acc  # (dim, columns + u): [nu' | eps], one carried matrix
            eps = cotangents[:, columns:]
            t, x = t0 + n, states_k[n]
            xi = step_noise(system, key, t, x)

            def step(y, p):
                return params.substitute(system, p).step(t, y, xi)

            back_x, back_p = pullback_columns(step, x, params.values, cotangents)
            forcing = jax.jacrev(lambda y: components(y, system))(x).T  # (dim, k')
            nu_part = jax.tree_util.tree_map(lambda b: b[:count], back_p)
            eps_part = jax.tree_util.tree_map(lambda b: b[columns:], back_p)
            unstable_part = None
            if unstable:
                assert psi is not None
                weight = psi[k, n]
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
        accumulate, start_total, finish = _accumulator(zero)
        (cotangents, total), _ = jax.lax.scan(
            one,
            (jnp.concatenate([nus, eps], axis=1), start_total),
            jnp.arange(steps),
            reverse=True,
            unroll=SWEEP_UNROLL,
        )
        return _segment_end(cotangents, finish(total), qs[k], count, columns, unstable)

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


def _pulled_back(jacobians_x, end, forcing=None):
    """C_n = J_n^T C_{n+1} (+ forcing_n) through a segment from C_m = ``end`` (dim, c), with
    forcing (m, dim, c) or none: (C_0, C_{n+1} for n = 0..m-1 (m, dim, c)). One product a
    step."""

    def back(c, inputs):
        jacobian, force = inputs
        pulled = times(jacobian.T, c)
        return (pulled if force is None else pulled + force), c

    return jax.lax.scan(back, end, (jacobians_x, forcing), reverse=True, unroll=SWEEP_UNROLL)


def _segment_at_once(
    system, components, params, key, states_k, t0, jacobians, end, flow: bool, unstable_inputs
):
    """One segment of the step-by-step sweep with its Jacobians at hand: only the adjoint
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
        start, nexts = _pulled_back(jacobians_x, jnp.concatenate([nus, eps], axis=1), padded)
    else:  # eps first: the second-order term that forces nu~' needs eps_{n+1}
        tangents, dual, weights = unstable_inputs
        eps_0, eps_next = _pulled_back(jacobians_x, eps)
        omega, d_trace = second_order_terms(
            system, params, key, states_k, ts, tangents, eps_next @ dual
        )
        forcing = jnp.concatenate([forcing, omega[:, :, None]], axis=2)
        nus_0, nus_next = _pulled_back(jacobians_x, nus, forcing)
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


def sweeps_in_parallel(dim: int, params) -> bool:
    """Whether the shadowing sweep of a system with ``dim`` state components for ``params``
    runs parallel over segments (at most ``DENSE_LIMIT`` components and parameters)."""
    return max(dim, params.size) <= DENSE_LIMIT


def state_dimension(system, starts: Starts) -> int:
    """The state dimension of ``system`` (a user model may leave ``dim`` to its start)."""
    if system.dim is not None:
        return int(system.dim)
    if starts.rows is not None:
        return int(starts.rows.shape[1])
    return int(jax.eval_shape(system.initial_state, starts.keys[0]).shape[0])


def _segment_parallel_sweep(
    system, components, params, states, qs, key, start, flow: bool, steps: int, init, batch: int
) -> tuple[tuple[jax.Array, jax.Array], SegmentTerms]:
    """:func:`adjoint_sweep_from` without the unstable contribution, parallel over segments
    (``_segment_sweep``), ``batch`` segments at a time: the same terms to rounding."""
    propagators = all_propagators(
        system, components, params, states, key, start, flow, steps, batch
    )
    return terms_from_propagators(propagators, params, qs, init)


def all_propagators(
    system, components, params, states, key, start, flow: bool, steps: int, batch: int
) -> SegmentPropagator:
    """The :class:`~chaosgrad.estimators._segment_sweep.SegmentPropagator` of every segment
    (leading axis: segment), in ceil(K / ``batch``) batches of equal size (at most
    ``batch``; the last one ends at segment K and recomputes the few it shares with the one
    before). Segments whose states were not kept (``states`` (K, dim)) are recomputed batch
    by batch."""
    segments = states.shape[0]
    t0s = start + jnp.arange(segments) * steps

    def propagators_of(inputs):
        states_b, t0s_b = inputs
        if states_b.ndim == 2:
            states_b = jax.vmap(lambda x, t0: segment_states(system, key, x, t0, steps))(
                states_b, t0s_b
            )
        return segment_propagators(system, components, params, states_b, key, t0s_b, flow)

    count = -(-segments // batch)  # batches of equal size: a small last one costs almost
    size = -(-segments // count)  # what a full one does (the loop's per-step overhead)

    def batch_at(i):  # sliced inside the loop: the orbit's states are not copied
        first = jnp.minimum(i * size, segments - size)  # the last batch ends at the last segment
        return propagators_of(
            (
                jax.lax.dynamic_slice_in_dim(states, first, size),
                jax.lax.dynamic_slice_in_dim(t0s, first, size),
            )
        )

    batches = jax.lax.map(batch_at, jnp.arange(count))
    overlap = count * size - segments  # segments the last batch shares with the one before

    def joined(leaf):
        head = leaf[:-1].reshape(((count - 1) * size,) + leaf.shape[2:])
        return jnp.concatenate([head, leaf[-1, overlap:]])

    return jax.tree_util.tree_map(joined, batches)


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


@eqx.filter_jit
def orbit_values(system, components, states):
    """Raw components of every stored state, (..., k) for states (..., dim)."""
    raw = components.with_projection(jnp.eye(components.projection.shape[0]))
    flat = states.reshape((-1, states.shape[-1]))
    values = jax.vmap(lambda y: raw(y, system))(flat)
    return values.reshape(states.shape[:-1] + values.shape[-1:])


def start_orbits(system, starts: Starts, unstable_dim, probe: int = 0):
    """x0 (R, dim), u + ``probe`` random orthonormal tangent vectors (R, dim, k) and noise
    keys (R,) of the orbits ``starts`` (:func:`orbit_starts`), drawn in one compiled call
    (:func:`~chaosgrad._tangent.draw_orbit_starts`: each orbit's draws are those of drawing
    it alone)."""
    xs, vectors, noise_keys = draw_orbit_starts(
        system, starts.keys, starts.rows, unstable_dim + probe
    )
    dim = xs.shape[1]
    if unstable_dim >= dim:
        raise ValueError(
            f"unstable_dim={unstable_dim} must be smaller than the dimension "
            f"{dim} (it counts the positive exponents, plus the zero one of a flow)"
        )
    return xs, vectors, noise_keys


def prepare_orbit(system, x0, key, unstable_dim, burn_in, probe: int = 0):
    """Burned-in state and u aligned tangent vectors (QR during the burn-in).

    ``probe`` extra vectors (at most dim - u) follow the u: their exponents check
    ``unstable_dim`` (QR keeps the first u columns those of the u alone).
    """
    xs, qs, noise_keys = start_orbits(system, orbit_starts(system, x0, key, 1), unstable_dim, probe)
    x, q, noise_key, t = xs[0], qs[0], noise_keys[0], 0
    if burn_in:
        x, q, _, _, t = run_tangent_blocks(system, x, q, noise_key, 0, burn_in, 1, 1)
    return x, q, noise_key, t


def check_orbit(states, start):
    """NaN/inf in the stored orbit (segments, steps, dim): one clear error naming the step."""
    check_finite(states.reshape((-1,) + states.shape[2:]), "the orbit", start)


def is_flow(system) -> bool:
    """A flow with a vector field (its class defines one: no bound method is made)."""
    return system.time_step is not None and hasattr(type(system), "vector_field")


class Starts(NamedTuple):
    """Where R orbits start: ``keys`` (R,) and ``rows`` the given starts (R, dim), or None
    (each orbit draws its own from ``system.initial_state``)."""

    rows: Any
    keys: Any

    def orbit(self, r: int) -> tuple[Any, Any]:
        """(x0 or None, key) of orbit ``r`` alone (to replay it)."""
        return (None if self.rows is None else self.rows[r]), self.keys[r]


def orbit_starts(system, x0, key, orbits: int) -> Starts:
    """The starts of R orbits: ``key`` itself for one orbit, else ``key`` split R ways; x0
    None (drawn per orbit), shape (R, dim) (one row each), or one shared start of a noisy
    system (the noise makes the orbits independent)."""
    if x0 is not None:
        x0 = as_state(x0, "x0")
    if orbits == 1:
        if x0 is not None and x0.ndim == 2:
            if x0.shape[0] != 1:
                raise ValueError(
                    f"x0 has {x0.shape[0]} rows but orbits=1: give one start of shape (dim,) "
                    f"or set orbits={x0.shape[0]}"
                )
            x0 = x0[0]
        rows, keys = batch_of_one((x0, key))
        return Starts(rows, keys)
    keys = jax.random.split(key, orbits)
    if x0 is None:
        return Starts(None, keys)
    if x0.ndim == 2:
        if x0.shape[0] != orbits:
            raise ValueError(
                f"x0 has {x0.shape[0]} rows but orbits={orbits}: give one start per orbit, "
                "shape (orbits, dim), or x0=None"
            )
        return Starts(x0, keys)
    if not system.stochastic:
        raise ValueError(
            f"orbits={orbits} from one x0 of a deterministic system would repeat one orbit: "
            "give x0 of shape (orbits, dim) or leave x0=None (drawn per orbit)"
        )
    return Starts(jnp.broadcast_to(x0, (orbits,) + x0.shape), keys)
