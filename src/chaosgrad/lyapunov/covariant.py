"""Covariant Lyapunov vectors (Ginelli et al.) and their adjoint (dual) vectors.

Forward: QR-propagate k tangent vectors, f_*(x_n) Q_n = Q_{n+1} R_{n+1}.
Backward: from a random upper-triangular C at the end of a backward transient (``burn_out``),
iterate C_n = R_{n+1}^{-1} C_{n+1} with columns normalised; the covariant vectors are
v_i(n) = Q_n C_n[:, i]. They satisfy f_* v_i(n) || v_i(n+1) and grow at exactly lambda_i;
the growth log |R_{n+1} C_n[:, i]| averaged over the window gives the exponents.

Adjoint vectors w_i(n) are the dual basis: w_i . v_j = 0 for j != i. The span of the top k is
(span{v_{k+1}, ...})^perp, found by QR-propagating k adjoint vectors backwards with f_*^T
(P_n R~ = f_*(x_n)^T P_{n+1}); then w = P (V^T P)^{-1}, columns normalised. They grow under
f_*^T backwards at the same rates lambda_i.

F. Ginelli, P. Poggi, A. Turchi, H. Chate, R. Livi & A. Politi, "Characterizing dynamics with
covariant Lyapunov vectors", Phys. Rev. Lett. 99, 130601 (2007); C. L. Wolfe & R. M. Samelson,
Tellus A 59, 355 (2007) (duality).

Memory: the forward pass keeps only a checkpoint (x, Q) every ``segment_steps`` steps; the
backward pass recomputes each segment's R factors from its checkpoint (two forward passes in
all). RAM is O((steps/segment_steps + segment_steps) * dim * k) plus the recorded vectors,
never O(steps * dim * k) unless ``record_every=1`` asks for every step.
"""

from __future__ import annotations

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _linalg
from .._error_bars import batch_means
from .._errors import check_key, check_positive_int, check_x64
from .._system import System, bind, check_horizon, resolve_start
from .._tangent import positive_qr, random_orthonormal, step_noise, step_with_tangents
from .spectrum import run_tangent_blocks


class CovariantResult(eqx.Module):
    """Covariant (and, if asked, adjoint) vectors at ``times``, with their growth rates."""

    vectors: jax.Array  # (records, dim, k), unit columns
    adjoint: jax.Array | None  # (records, dim, k), unit columns, or None
    states: jax.Array  # (records, dim)
    times: np.ndarray  # (records,) step index of each record
    exponents: np.ndarray  # growth rates of the vectors (per unit time for a flow)
    stderr: np.ndarray
    exponents_per_step: np.ndarray
    time_step: float | None
    seconds: float


def _segment_forward(system, key, x, q, start, length):
    """Recompute one segment: states x_n, bases Q_n, factors R_{n+1}, n = start..start+length-1."""

    def one(carry, t):
        x, q = carry
        x_next, v = step_with_tangents(system, t, x, step_noise(system, key, t, x), q)
        q_next, r = positive_qr(v)
        return (x_next, q_next), (x, q, r)

    (x, q), trace = jax.lax.scan(one, (x, q), start + jnp.arange(length))
    return (x, q), trace


@eqx.filter_jit
def _checkpoints(system, key, x, q, start, segments: int, length: int):
    def segment(carry, j):
        x, q = carry
        (x, q), _ = _segment_forward(system, key, x, q, start + j * length, length)
        return (x, q), carry

    _, (xs, qs) = jax.lax.scan(segment, (x, q), jnp.arange(segments))
    return xs, qs


def _adjoint_step(system, key, t, x, p):
    """P_n from P_{n+1}: QR of f_*(x_n)^T P_{n+1} (one VJP per column)."""
    _, pullback = jax.vjp(lambda y: system.step(t, y, step_noise(system, key, t, x)), x)
    back = jax.vmap(lambda c: pullback(c)[0], in_axes=1, out_axes=1)(p)
    return positive_qr(back)[0]


@eqx.filter_jit
def _backward(system, key, xs, qs, c, p, start, length: int, record_every: int, adjoint: bool):
    """Ginelli's backward sweep over all segments, last to first."""

    def segment(carry, j):
        c, p = carry
        seg_start = start + j * length
        _, (x_n, q_n, r_next) = _segment_forward(system, key, xs[j], qs[j], seg_start, length)

        def back(carry, n):
            c, p = carry
            c = _linalg.solve_upper(r_next[n], c)
            c = c / jnp.linalg.norm(c, axis=0)
            growth = jnp.log(jnp.linalg.norm(r_next[n] @ c, axis=0))
            v = q_n[n] @ c
            if adjoint:
                p = _adjoint_step(system, key, seg_start + n, x_n[n], p)
                w = p @ _linalg.inv(v.T @ p)
                w = w / jnp.linalg.norm(w, axis=0)
            else:
                w = jnp.zeros((0,))
            return (c, p), (v, w, growth)

        (c, p), (v, w, growth) = jax.lax.scan(back, (c, p), jnp.arange(length), reverse=True)
        return (c, p), (v[::record_every], w[::record_every], x_n[::record_every], growth)

    _, out = jax.lax.scan(segment, (c, p), jnp.arange(xs.shape[0]), reverse=True)
    return out


def covariant_vectors(
    system: System,
    k: int,
    *,
    steps: int = 10_000,
    burn_in: int = 10_000,
    burn_out: int = 10_000,
    record_every: int = 1,
    segment_steps: int | None = None,
    adjoint: bool = False,
    x0=None,
    key=None,
) -> CovariantResult:
    """The k leading covariant Lyapunov vectors along ``steps`` steps of an orbit.

    Args:
        k: number of vectors (the k largest exponents).
        steps: the window in which vectors are recorded (every ``record_every`` steps) and
            growth rates averaged; rounded up to a multiple of ``record_every``.
        burn_in: forward transient (state on the attractor, Q aligned).
        burn_out: backward transient after the window (C aligned); padded up so that the
            recomputed segments tile the run.
        segment_steps: checkpoint interval (default about sqrt(steps + burn_out)).
        adjoint: also compute the adjoint (dual) vectors.
    """
    check_x64()
    check_positive_int(k, "k")
    check_positive_int(steps, "steps")
    check_positive_int(burn_in, "burn_in", allow_zero=True)
    check_positive_int(burn_out, "burn_out")
    check_positive_int(record_every, "record_every")
    check_horizon(system, burn_in + steps + burn_out)
    if key is None:
        raise ValueError("key is required: covariant_vectors(..., key=jax.random.key(0))")
    check_key(key)
    start_key, vector_key, c_key, p_key = jax.random.split(key, 4)
    x0, noise_key = resolve_start(system, x0, start_key)
    system = bind(system, x0)
    dim = x0.shape[0]
    if k > dim:
        raise ValueError(f"k={k} exceeds the dimension {dim}: ask for at most {dim} vectors")
    steps = -(-steps // record_every) * record_every
    total = steps + burn_out
    if segment_steps is None:
        segment_steps = record_every * max(1, round(math.sqrt(total / record_every)))
    check_positive_int(segment_steps, "segment_steps")
    if segment_steps % record_every:
        raise ValueError(
            f"segment_steps ({segment_steps}) must be a multiple of record_every ({record_every})"
        )
    segments = -(-total // segment_steps)

    began = time.perf_counter()
    q = random_orthonormal(vector_key, dim, k)
    x, t = x0, 0
    if burn_in:
        x, q, _, _, t = run_tangent_blocks(system, x, q, noise_key, 0, burn_in, 1, 1)
    start = jnp.asarray(t)
    xs, qs = _checkpoints(system, noise_key, x, q, start, segments, segment_steps)
    if not bool(jnp.all(jnp.isfinite(xs))):
        bad = int(np.argmin(np.all(np.isfinite(np.asarray(xs)), axis=1)))
        raise FloatingPointError(
            f"the trajectory became NaN/inf before step {t + bad * segment_steps}"
        )
    c = jnp.triu(jax.random.uniform(c_key, (k, k), dtype=jnp.float64, minval=0.5, maxval=1.0))
    p = random_orthonormal(p_key, dim, k)
    v, w, states, growth = _backward(
        system, noise_key, xs, qs, c, p, start, segment_steps, record_every, adjoint
    )
    records = steps // record_every
    flat = lambda a: a.reshape((-1,) + a.shape[2:])[:records]  # noqa: E731
    growth = np.asarray(growth.reshape(-1, k)[:steps])
    seconds = time.perf_counter() - began

    blocks = min(32, steps)
    usable = (steps // blocks) * blocks
    per_step = growth.mean(axis=0)
    stderr = batch_means(growth[:usable].reshape(blocks, -1, k).mean(axis=1))
    unit = system.time_step or 1.0
    return CovariantResult(
        vectors=flat(v),
        adjoint=flat(w) if adjoint else None,
        states=flat(states),
        times=t + record_every * np.arange(records),
        exponents=per_step / unit,
        stderr=stderr / unit,
        exponents_per_step=per_step,
        time_step=system.time_step,
        seconds=seconds,
    )


def adjoint_vectors(system: System, k: int, **kwargs) -> CovariantResult:
    """Covariant vectors together with their adjoint (dual) vectors: ``result.adjoint``.

    w_i(n) . v_j(n) = 0 for i != j, and f_*^T w_i(n+1) || w_i(n). Same arguments as
    :func:`covariant_vectors`.
    """
    return covariant_vectors(system, k, adjoint=True, **kwargs)
