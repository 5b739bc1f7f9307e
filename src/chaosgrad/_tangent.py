"""Tangent propagation and QR renormalisation shared by Lyapunov analysis and estimators.

Tangent vectors move matrix-free: one ``jax.linearize`` of the step, applied to the k
columns under ``vmap`` (k JVPs, never a dense Jacobian when k << dim).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def step_with_tangents(system, t, x, xi, vectors):
    """(x_{t+1}, f_* vectors): the step and its tangent map applied to each column."""
    x_next, tangent_map = jax.linearize(lambda y: system.step(t, y, xi), x)
    return x_next, jax.vmap(tangent_map, in_axes=1, out_axes=1)(vectors)


def step_noise(system, key, t, x):
    """The noise sample of step ``t`` for state ``x`` (None for a deterministic system)."""
    return system.noise(key, t, x.shape[0]) if system.stochastic else None


def positive_qr(vectors):
    """Q, R with R's diagonal made positive (the unique QR of a full-rank matrix).

    Small k (<= 4) uses modified Gram-Schmidt written out, which XLA fuses into a handful
    of vector operations; larger k calls LAPACK's Householder QR.
    """
    k = vectors.shape[1]
    if k == 0:
        return vectors, jnp.zeros((0, 0), vectors.dtype)
    if k <= 4:
        return _gram_schmidt(vectors)
    q, r = jnp.linalg.qr(vectors)
    signs = jnp.where(jnp.diag(r) < 0, -1.0, 1.0)
    return q * signs, r * signs[:, None]


def _gram_schmidt(vectors):
    k = vectors.shape[1]
    columns, r = [], jnp.zeros((k, k), vectors.dtype)
    for j in range(k):
        v = vectors[:, j]
        for i, q in enumerate(columns):
            coefficient = q @ v
            r = r.at[i, j].set(coefficient)
            v = v - coefficient * q
        norm = jnp.linalg.norm(v)
        r = r.at[j, j].set(norm)
        columns.append(v / norm)
    return jnp.stack(columns, axis=1), r


def random_orthonormal(key, dim, k):
    """k random orthonormal columns in R^dim."""
    q, _ = positive_qr(jax.random.normal(key, (dim, k), dtype=jnp.float64))
    return q
