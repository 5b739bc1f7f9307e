"""The adjoint sweep of a small system, parallel over segments (same terms as the sequential one).

Inside segment k (steps n = 0..m-1, states x_n) the backward recursion of ``_sweep`` is
linear in the adjoints C_m = [nu'_m | eps_m] it starts from at the segment's end:

    C_n = J_n^T C_{n+1} + [F_n | 0],   so   C_n = P_n C_m + [G_n | 0],
    P_n = J_n^T P_{n+1} (P_m = I),      G_n = J_n^T G_{n+1} + F_n (G_m = 0),

with J_n = d x_{n+1} / d x_n and F_n = grad Phi~(x_n) (dim, k'). Every per-segment sum of the
sweep is then a fixed linear (or, for the least-squares terms, quadratic) function of C_m:

    sum_n X_n^T C_{n+1}       = A C_m + [g | 0],  A = sum_n X_n^T P_{n+1},  g = sum_n X_n^T G_{n+1}
    sum_n eps_n^T eps_n       = eps_m^T S eps_m,  S = sum_n P_n^T P_n
    sum_n eps_n^T nu'_n       = eps_m^T (S nu'_m + h),  h = sum_n P_n^T G_n
    sum_n eps_n^T F(x_n)      = eps_m^T w,  w = sum_n P_n^T F(x_n)
    sum_n nu'_n^T F(x_n)      = nu'_m^T w + z,  z = sum_n G_n^T F(x_n)

(X_n = d_theta x_{n+1}; F the vector field of a flow). So the long loop over every step
becomes: (1) one ``lax.scan`` over the m steps of a segment for a batch of segments at once
(the segment axis innermost), that builds (P_0, G_0, A, g, S, h, w, z) from dense Jacobians
(dim + P JVPs a step); (2) the
short sequential chain over the K segments (C_0 = P_0 C_m + [G_0 | 0], the projection b_k and
the renormalisation M_k of ``_sweep``); (3) the sums, batched over the segments. The
sequential part has K steps instead of K m, and each of the m steps of part (1) does a
batch of segments' work, where one step of the sequential sweep costs a CPU's per-kernel launch
overhead several times over for a few dozen flops.

The work is O(dim^2 (dim + P)) a step instead of O(dim (u + k') (dim + P)): it is used up to
``AutoSweep.parallel_limit`` state components and parameters (the ``SegmentParallel``
strategy), and for the shadowing contribution only
(the unstable contribution's trace term of FastAdjointResponse is bilinear in the forward
tangents and the adjoints: it keeps the sequential sweep).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .. import _linalg
from .._tangent import positive_qr, step_noise
from ._orbits import segment_states


class SegmentPropagator(NamedTuple):
    """Segment k's backward propagator and the linear forms of its sums (module doc).

    P: (dim, dim) P_0; G: (dim, k') G_0; A: (P, dim); g: (P, k'); and, for a flow, S (dim,
    dim), h (dim, k'), w (dim,), z (k',) (else None). P counts the raveled parameters.
    """

    P: jax.Array
    G: jax.Array
    A: jax.Array
    g: jax.Array
    S: jax.Array | None
    h: jax.Array | None
    w: jax.Array | None
    z: jax.Array | None


def _contract(a, b):
    """sum_i a[i, j, s] b[i, l, s] -> (j, l, s): a^T b for every segment s (the segment axis
    last, innermost: these tiny products vectorise over the segments)."""
    return jnp.sum(a[:, :, None, :] * b[:, None, :, :], axis=0)


def segment_propagators(system, components, params, states, key, t0s, flow: bool):
    """The :class:`SegmentPropagator` of B segments (leading axis B) with states ``states``
    (B, m, dim) from steps ``t0s`` (B,): one reverse ``lax.scan`` over the m steps carrying
    Z = [P_n | G_n] (module doc) for all B segments at once, the segment axis last."""
    batch, steps, dim = states.shape
    count = components.count
    size = ravel_pytree(params.values)[0].shape[0]

    def local(x, t):
        """Segment-local pieces of step t at x: J (dim, dim), X (dim, P), F~ (dim, k'), F."""
        xi = step_noise(system, key, t, x)

        def step(y, p):
            return params.substitute(system, p).step(t, y, xi)

        jx, jp = jax.jacfwd(step, argnums=(0, 1))(x, params.values)
        jp = jnp.concatenate(
            [leaf.reshape(dim, -1) for leaf in jax.tree_util.tree_leaves(jp)], axis=1
        )  # (dim, P), in ravel_pytree's order
        forcing = jax.jacrev(lambda y: components(y, system))(x).T
        direction = system.vector_field(t * system.dt, x) if flow else jnp.zeros(dim)
        return jx, jp, forcing, direction

    def one(carry, inputs):
        Z, AG, SH, WZ = carry
        x, n = inputs
        jx, jp, forcing, direction = jax.vmap(local, in_axes=(1, 0), out_axes=-1)(x, t0s + n)
        AG = AG + _contract(jp, Z)  # [A | g] += X_n^T [P_{n+1} | G_{n+1}]
        Z = _contract(jx, Z) + jnp.concatenate([jnp.zeros((dim, dim, batch)), forcing], axis=1)
        if flow:
            SH = SH + _contract(Z[:, :dim], Z)  # [S | h] += P_n^T [P_n | G_n]
            WZ = WZ + jnp.sum(Z * direction[:, None, :], axis=0)  # [w; z] += Z^T F(x_n)
        return (Z, AG, SH, WZ), None

    identity = jnp.concatenate([jnp.eye(dim), jnp.zeros((dim, count))], axis=1)
    zeros = jnp.zeros
    start = (
        jnp.broadcast_to(identity[:, :, None], (dim, dim + count, batch)),
        zeros((size, dim + count, batch)),
        zeros((dim, dim + count, batch)) if flow else None,
        zeros((dim + count, batch)) if flow else None,
    )
    by_step = jnp.transpose(states, (1, 2, 0))  # (m, dim, B): each step's states, B innermost
    (Z, AG, SH, WZ), _ = jax.lax.scan(one, start, (by_step, jnp.arange(steps)), reverse=True)
    Z, AG = jnp.moveaxis(Z, -1, 0), jnp.moveaxis(AG, -1, 0)  # the segment axis first
    least_squares = (None,) * 4
    if SH is not None and WZ is not None:
        SH, WZ = jnp.moveaxis(SH, -1, 0), jnp.moveaxis(WZ, -1, 0)
        least_squares = (SH[:, :, :dim], SH[:, :, dim:], WZ[:, :dim], WZ[:, dim:])
    return SegmentPropagator(
        Z[:, :, :dim], Z[:, :, dim:], AG[:, :, :dim], AG[:, :, dim:], *least_squares
    )


SMALL = 4
"""Up to this many unstable directions the chain's u x u inverses are written out."""


DENSE_PRODUCT_LIMIT = 16
"""Largest operand side multiplied by broadcast-and-sum rather than a dot (:func:`times`)."""


def times(a, b):
    """a (i, j) @ b (j, l): broadcast-and-sum for small operands (one kernel fused with its
    neighbours, where a dot is a library call of its own), else a dot."""
    if max(a.shape) <= DENSE_PRODUCT_LIMIT:
        return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)
    return a @ b


def _transposed_times(a, b):
    """a^T @ b for a (j, i), b (j, l)."""
    return times(a.T, b)


def _inverse(a):
    """a^-1 of a u x u matrix: Gauss-Jordan written out for u <= ``SMALL`` (a few fused
    vector operations, where LAPACK's inverse is a library call per segment), else LAPACK.

    No pivoting: the chain inverts Gram matrices eps^T eps (symmetric positive definite) and
    Q_k^T eps, which equals R_{k+1}^T up to rounding (``_sweep``: lower triangular with the
    positive growth factors of the unstable directions on its diagonal)."""
    size = a.shape[0]
    if size == 0:  # no unstable direction (a stable system)
        return a
    if size > SMALL:
        return _linalg.inv(a)
    rows = [a[i] for i in range(size)]
    inverse = [jnp.eye(size, dtype=a.dtype)[i] for i in range(size)]
    for j in range(size):
        pivot = rows[j][j]
        rows[j], inverse[j] = rows[j] / pivot, inverse[j] / pivot
        for i in range(size):
            if i != j:
                factor = rows[i][j]
                rows[i] = rows[i] - factor * rows[j]
                inverse[i] = inverse[i] - factor * inverse[j]
    return jnp.stack(inverse)


def chain(propagators: SegmentPropagator, qs, init):
    """The sequential part: adjoints C_m at each segment's end (K, dim, .), projections
    b_k (K, u, k') and renormalisations M_k (K, u, u), from the end adjoints ``init``
    (eps, nu'), and the adjoints at the first segment (after its renormalisation)."""

    def segment(carry, k):
        eps, nus = carry
        P, G = propagators.P[k], propagators.G[k]
        eps_0, nus_0 = times(P, eps), times(P, nus) + G  # C_0 = P_0 C_m + [G_0 | 0]
        b = times(_inverse(_transposed_times(eps_0, eps_0)), _transposed_times(eps_0, nus_0))
        renorm = _inverse(_transposed_times(qs[k], eps_0))
        return (times(eps_0, renorm), nus_0 - times(eps_0, b)), (eps, nus, b, renorm)

    return jax.lax.scan(segment, init, jnp.arange(qs.shape[0] - 1), reverse=True)


def forward_bases(propagators: SegmentPropagator, q0):
    """Q_k (K + 1, dim, k) and R_{k+1} (K, k, k) of the forward tangents from Q_0 ``q0``:
    Q_{k+1} R_{k+1} = Phi_k Q_k with Phi_k = P_0^T, segment k's tangent map (the product of
    its Jacobians, which the propagator already holds), instead of carrying the k tangents
    through every step of the forward run."""

    def segment(q, k):
        q_next, r = positive_qr(_transposed_times(propagators.P[k], q))  # P_0^T q
        return q_next, (q_next, r)

    _, (qs, rs) = jax.lax.scan(segment, q0, jnp.arange(propagators.P.shape[0]))
    return jnp.concatenate([q0[None], qs]), rs


def segment_sums(propagators: SegmentPropagator, eps, nus):
    """Every segment's sums from its end adjoints eps (K, dim, u) and nu' (K, dim, k'):
    (sum X^T nu' (K, P, k'), sum X^T eps (K, P, u), and for a flow the least-squares sums
    (C (K, u, u), d (K, u, k'), dwf (K, u), dvf (K, k')), else None), batched over K."""
    p = propagators
    nu_sums = jnp.einsum("kpd,kdc->kpc", p.A, nus) + p.g
    eps_sums = jnp.einsum("kpd,kdu->kpu", p.A, eps)
    if p.S is None:
        return nu_sums, eps_sums, None
    assert p.h is not None and p.w is not None and p.z is not None
    least_squares = (
        jnp.einsum("kdu,kde,kev->kuv", eps, p.S, eps),
        jnp.einsum("kdu,kdc->kuc", eps, jnp.einsum("kde,kec->kdc", p.S, nus) + p.h),
        jnp.einsum("kdu,kd->ku", eps, p.w),
        jnp.einsum("kdc,kd->kc", nus, p.w) + p.z,
    )
    return nu_sums, eps_sums, least_squares


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
