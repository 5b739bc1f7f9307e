"""Dense linear algebra on batches of small matrices, one matrix at a time on CPU.

jaxlib 0.10's CPU LAPACK kernels (QR, LU, triangular solves, ...) split a batch of matrices
over XLA's intra-op thread pool and block until every piece is done. The kernel itself runs
on a worker of that pool. When as many such calls run at once as the pool has threads, every
worker waits for a piece that no free worker is left to run, and the process hangs at zero
CPU. On a 2-core CPU two calls suffice: the two independent solves of one segment's end in
the adjoint sweep, or one call on each of two devices. Measured with jax 0.10.2:
FastAdjointResponse of the 21-dimensional solenoid never finished with ``orbits`` >= 33
(both pool threads parked in the LU and triangular-solve kernels), nor of the 41-dimensional
one with 64 orbits; four independent inverses of 640 matrices 20 x 20 in one loop iteration,
or one on each of 2 devices, hang the same way. A single matrix (a batch of one) runs in the
calling thread and cannot hang; ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` does not
help. jax 0.9 has no such path, and later jaxlib builds leave it out.

The functions below therefore hand the library one matrix at a time on CPU: under ``vmap``
(orbits, samples) through ``jax.custom_batching.sequential_vmap``, a loop over the batch,
and over any leading batch axes of their arguments likewise. On other backends they are the
plain batched calls. They have no derivative: differentiated code (the Lyapunov penalty)
calls ``jnp.linalg`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.custom_batching import sequential_vmap


def _one_at_a_time(function: Callable, core_dims: tuple[int, ...]) -> Callable:
    """``function`` of arrays with ``core_dims`` dimensions each, applied to one set of
    matrices per library call on CPU: leading axes (beyond ``core_dims``) and vmapped axes
    are looped over."""
    serial = sequential_vmap(function)

    def apply(*arrays):
        if jax.default_backend() != "cpu":
            return function(*arrays)
        leading = arrays[0].shape[: arrays[0].ndim - core_dims[0]]
        if not leading:
            return serial(*arrays)
        flat = [
            jnp.broadcast_to(a, (*leading, *a.shape[a.ndim - d :])).reshape(
                (math.prod(leading), *a.shape[a.ndim - d :])
            )
            for a, d in zip(arrays, core_dims, strict=True)
        ]
        result = jax.vmap(serial)(*flat)
        return jax.tree_util.tree_map(lambda r: r.reshape(*leading, *r.shape[1:]), result)

    return apply


inv = _one_at_a_time(lambda a: jnp.linalg.inv(a), (2,))
"""A^-1 of a square matrix (or of each of a batch, ``jnp.linalg.inv``)."""

solve = _one_at_a_time(lambda a, b: jnp.linalg.solve(a, b), (2, 2))
"""X with A X = B, B a matrix (``jnp.linalg.solve``)."""

qr = _one_at_a_time(lambda a: jnp.linalg.qr(a), (2,))
"""The reduced Q, R of a matrix (``jnp.linalg.qr``)."""


def _upper_solve(a, b):
    return jax.scipy.linalg.solve_triangular(a, b, lower=False)


solve_upper = _one_at_a_time(_upper_solve, (2, 2))
"""X with R X = B for an upper triangular R (``solve_triangular(..., lower=False)``)."""
