"""Tangent propagation and QR renormalisation shared by Lyapunov analysis and estimators.

Tangent vectors move matrix-free: one ``jax.linearize`` of the step, applied to the k
columns under ``vmap`` (k JVPs, never a dense Jacobian when k << dim).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _linalg
from ._errors import as_state
from ._system import check_state_shape


def step_with_tangents(system, t, x, xi, vectors):
    """(x_{t+1}, f_* vectors): the step and its tangent map applied to each column."""
    x_next, tangent_map = jax.linearize(lambda y: system.step(t, y, xi), x)
    return x_next, jax.vmap(tangent_map, in_axes=1, out_axes=1)(vectors)


def step_noise(system, key, t, x):
    """The noise sample of step ``t`` for state ``x`` (None for a deterministic system)."""
    return system.noise(key, t, x.shape[0]) if system.stochastic else None


def positive_qr(vectors, differentiable: bool = False):
    """Q, R with R's diagonal made positive (the unique QR of a full-rank matrix).

    Small k (<= 4) uses modified Gram-Schmidt written out, which XLA fuses into a handful
    of vector operations; larger k calls LAPACK's Householder QR, one matrix at a time on
    CPU (``_linalg``: a batched call can hang), or batched when ``differentiable`` (that
    path has no derivative).
    """
    k = vectors.shape[1]
    if k == 0:
        return vectors, jnp.zeros((0, 0), vectors.dtype)
    if k <= 4:
        return _gram_schmidt(vectors)
    q, r = jnp.linalg.qr(vectors) if differentiable else _linalg.qr(vectors)
    signs = jnp.where(jnp.diag(r) < 0, -1.0, 1.0)
    return q * signs, r * signs[:, None]


def _gram_schmidt(vectors):
    """Modified Gram-Schmidt: q_j = w_j / |w_j|, w_j = v_j - sum_{i<j} (q_i . w) q_i (each
    projection taken from the partly reduced w), R_ij = q_i . w, R_jj = |w_j|. R is
    assembled from its entries in one stack (updating it entry by entry costs one kernel
    per entry inside a loop: a QR every step of a Lorenz-63 spectrum, 0.50 -> 0.42 s)."""
    k = vectors.shape[1]
    columns, entries = [], [[jnp.zeros((), vectors.dtype)] * k for _ in range(k)]
    for j in range(k):
        w = vectors[:, j]
        for i, q in enumerate(columns):
            entries[i][j] = q @ w
            w = w - entries[i][j] * q
        entries[j][j] = jnp.sqrt(w @ w)
        columns.append(w / entries[j][j])
    return jnp.stack(columns, axis=1), jnp.stack([jnp.stack(row) for row in entries])


def random_orthonormal(key, dim, k):
    """k random orthonormal columns in R^dim."""
    q, _ = positive_qr(jax.random.normal(key, (dim, k), dtype=jnp.float64))
    return q


def orbit_keys(key, orbits: int) -> jax.Array:
    """The keys of R orbits, one convention for every ensemble (spectrum, penalty, shadowing,
    FAR): ``key`` itself for one orbit, else ``fold_in(key, r)`` for orbit r, so orbit r of
    an ensemble is the single run with that key and adding orbits keeps the first ones."""
    if orbits == 1:
        return key[None]
    return jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(orbits))


@eqx.filter_jit
def _draw_starts(system, keys, rows, k: int | None):
    def one(key, row):
        start_key, vector_key = jax.random.split(key)
        init_key, noise_key = jax.random.split(start_key)  # as resolve_start
        x = system.initial_state(init_key) if row is None else row
        dim = x.shape[0]
        return x, random_orthonormal(vector_key, dim, dim if k is None else min(k, dim)), noise_key

    if rows is None:
        return jax.vmap(lambda key: one(key, None))(keys)
    return jax.vmap(one)(keys, rows)


def draw_orbit_starts(system, keys, rows, k: int | None):
    """The starts of R orbits in one compiled call: x0 (R, dim), min(k, dim) random
    orthonormal tangent vectors (R, dim, k'; ``k`` None: dim) and the noise keys (R,).

    Orbit r splits ``keys[r]`` into the key of its start and that of its vectors, and the
    start's key into the key of x0 and that of the noise (as ``resolve_start``), so each
    orbit's draws are those of drawing it alone. ``rows``: the given starts (R, dim), or None
    to draw each from ``system.initial_state``. The starts are checked as ``resolve_start``
    checks one (:func:`~chaosgrad._system.check_start`): given rows before the draw, drawn
    ones after it. One compiled call in place of R eager draws (milliseconds each, the
    larger part of a short ensemble's time).
    """
    if rows is not None:
        rows = as_state(rows, "x0")
        check_state_shape(system, jax.ShapeDtypeStruct(rows.shape[1:], rows.dtype))
    xs, vectors, noise_keys = _draw_starts(system, keys, rows, k)
    if rows is None:  # shapes only: no transfer, no device program
        check_state_shape(system, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
    return xs, vectors, noise_keys
