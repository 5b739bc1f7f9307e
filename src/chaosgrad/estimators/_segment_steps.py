"""One segment of the shadowing sweep, evaluated step by step or with its Jacobians at once.

The recursion and what it carries between segments are ``_sweep``'s (its module doc has
the equations). Inside segment k, from the adjoints C_m = [nu' | eps] at its end, the sweep
pulls every column back one step at a time,

    nu'_n = f_*^T nu'_{n+1} + grad Phi~(x_n),   eps_n = f_*^T eps_{n+1}

(with FastAdjointResponse also nu~'_n = f_*^T nu~'_{n+1} + omega_n), and sums the terms
the coefficients need: sum_n nu'_{n+1} . X_n, sum_n eps_{n+1} . X_n, a flow's least-squares
sums and the unstable contribution's psi-weighted sums (:class:`SweepSums`). Two
evaluations give the same sums to rounding:

* :func:`segment_step_by_step` (``StepByStep``): one step at a time, every column pulled
  back together (:func:`pullback_columns`), the sums accumulated in the loop;
* :func:`segment_at_once` (``SegmentJacobians``): the segment's Jacobians first
  (:func:`segment_jacobians`, vectorised over its steps), then only the recursion step by
  step (one product a step), and every sum for all its steps at once.

A. Ni & C. Talnikar, J. Comput. Phys. 395, 690 (2019); A. Ni, "Fast adjoint
differentiation of chaos", arXiv:2111.07692.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._tangent import step_noise
from ._segment_sweep import times
from ._unstable import second_order_terms, trace_gradient
from .sweeps import StepByStep


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


def segment_step_by_step(
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
    the segment's :class:`SweepSums`. ``unstable_inputs`` as for :func:`segment_at_once`."""
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


def _pulled_back(jacobians_x, end, forcing=None, unroll: int = 1):
    """C_n = J_n^T C_{n+1} (+ forcing_n) through a segment from C_m = ``end`` (dim, c), with
    forcing (m, dim, c) or none: (C_0, C_{n+1} for n = 0..m-1 (m, dim, c)). One product a
    step."""

    def back(c, inputs):
        jacobian, force = inputs
        pulled = times(jacobian.T, c)
        return (pulled if force is None else pulled + force), c

    return jax.lax.scan(back, end, (jacobians_x, forcing), reverse=True, unroll=unroll)


def segment_at_once(
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
