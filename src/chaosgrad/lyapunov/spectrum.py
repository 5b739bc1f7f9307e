"""Lyapunov spectrum by QR renormalisation (Benettin et al. 1980; Shimada & Nagashima 1979).

Carry k orthonormal tangent vectors Q (dim x k). Each step V = f_*(x_n) Q (k JVPs under vmap);
every ``renorm_every`` steps Q, R = qr(V) with diag R > 0 and log R_ii is accumulated.
lambda_i = sum log R_ii / steps per step (divided by dt per unit time for a flow). The
burn-in aligns both the state with the attractor and the vectors with the Oseledets
subspaces. Standard errors are batch means over ``blocks`` equal blocks of the run.

G. Benettin, L. Galgani, A. Giorgilli & J.-M. Strelcyn, Meccanica 15, 9-30 (1980).
Failure modes: vectors not renormalised often enough lose rank (keep renorm_every small
when exponents are large); too short a burn-in biases the lower exponents.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_key, check_positive_int, first_nonfinite_step
from .._system import System, _run, check_horizon, resolve_start
from .._tangent import positive_qr, random_orthonormal, step_noise, step_with_tangents
from ..stats import batch_means


class LyapunovResult(eqx.Module):
    """Exponents (per unit time for a flow, per step for a map) with batch-means errors."""

    exponents: np.ndarray
    stderr: np.ndarray
    exponents_per_step: np.ndarray
    stderr_per_step: np.ndarray
    kaplan_yorke_dimension: float
    steps: int
    time_step: float | None
    seconds: float
    final_state: np.ndarray

    @property
    def exponents_per_time(self):
        """Exponents per unit time (None for a map)."""
        return None if self.time_step is None else self.exponents_per_step / self.time_step


def kaplan_yorke_dimension(exponents) -> float:
    """j + sum_{i<=j} lambda_i / |lambda_{j+1}|, j the largest index with partial sum >= 0.

    Returns 0 when lambda_1 < 0 and the number of exponents when every partial sum is >= 0
    (the k computed exponents are then too few to close the sum).
    """
    lams = np.sort(np.asarray(exponents, dtype=float))[::-1]
    partial = np.cumsum(lams)
    if partial[0] < 0:
        return 0.0
    j = int(np.max(np.nonzero(partial >= 0)[0])) + 1
    if j == len(lams):
        return float(j)
    return float(j + partial[j - 1] / abs(lams[j]))


@eqx.filter_jit
def _spectrum_block(system: System, x, vectors, key, start, periods: int, renorm_every: int):
    """Advance ``periods`` renormalisation periods; return the state, Q and sum of log R_ii."""

    def tangent_step(carry, t):
        x, v = carry
        return step_with_tangents(system, t, x, step_noise(system, key, t, x), v), None

    def period(carry, p):
        x, q, logs = carry
        t0 = start + p * renorm_every
        if renorm_every == 1:
            (x, v), _ = tangent_step((x, q), t0)
        else:
            (x, v), _ = jax.lax.scan(tangent_step, (x, q), t0 + jnp.arange(renorm_every))
        q, r = positive_qr(v)
        return (x, q, logs + jnp.log(jnp.diag(r))), None

    k = vectors.shape[1]
    init = (x, vectors, jnp.zeros(k, jnp.float64))
    (x, q, logs), _ = jax.lax.scan(period, init, jnp.arange(periods))
    return x, q, logs


def _raise_nonfinite(system, x, key, start, steps):
    """Locate the first non-finite state of a failed block by replaying it (failure path only;
    the hot loop carries no check, which would cost more than the step itself)."""
    _, path = _run(system, x, key, jnp.asarray(start), steps)
    bad = first_nonfinite_step(path)
    if bad is not None:
        raise FloatingPointError(f"the trajectory became NaN/inf at step {start + bad + 1}")
    raise FloatingPointError(
        f"the tangent vectors became NaN/inf between steps {start} and "
        f"{start + steps}: renormalise more often (smaller renorm_every)"
    )


def run_tangent_blocks(
    system, x, vectors, key, start, periods, renorm_every, blocks, progress=None
):
    """Run ``periods`` periods in ``blocks`` equal blocks (+ a remainder); per-block log sums."""
    per_block, remainder = divmod(periods, blocks)
    sizes = [per_block] * blocks + ([remainder] if remainder else [])
    sums, t = [], start
    for size in sizes:
        if size == 0:
            continue
        x_next, vectors, logs = _spectrum_block(
            system, x, vectors, key, jnp.asarray(t), size, renorm_every
        )
        if not (bool(jnp.all(jnp.isfinite(x_next))) and bool(jnp.all(jnp.isfinite(logs)))):
            _raise_nonfinite(system, x, key, t, size * renorm_every)
        x = x_next
        t += size * renorm_every
        sums.append(np.asarray(logs))
        if progress is not None:
            progress(size * renorm_every)
    return x, vectors, np.array(sums[:blocks]), np.sum(sums, axis=0), t


def lyapunov_spectrum(
    system: System,
    k: int | None = None,
    *,
    steps: int = 100_000,
    burn_in: int = 10_000,
    renorm_every: int = 1,
    x0=None,
    key=None,
    blocks: int = 32,
    progress: Callable[[int], None] | None = None,
) -> LyapunovResult:
    """The k largest Lyapunov exponents of ``system`` with batch-means standard errors.

    Args:
        system: any :class:`System`; a noisy one gives the exponents of the random map
            (noise fixed along the orbit).
        k: number of exponents (default: all, ``system.dim``).
        steps: steps averaged over, after ``burn_in`` steps for state and vectors.
        renorm_every: steps between QR renormalisations (``steps`` and ``burn_in`` are
            rounded up to a multiple of it).
        x0, key: start (default: ``system.initial_state``) and the key for x0, the initial
            vectors and the noise.
        blocks: number of batch-means blocks for the standard error.
        progress: called with the number of steps just completed (for progress bars).
    """
    check_positive_int(steps, "steps")
    check_positive_int(burn_in, "burn_in", allow_zero=True)
    check_positive_int(renorm_every, "renorm_every")
    check_positive_int(blocks, "blocks")
    check_horizon(system, burn_in + steps)
    if key is None:
        raise ValueError("key is required: lyapunov_spectrum(..., key=jax.random.key(0))")
    check_key(key)
    start_key, vector_key = jax.random.split(key)
    x0, noise_key = resolve_start(system, x0, start_key)
    dim = x0.shape[0]
    k = dim if k is None else check_positive_int(k, "k")
    if k > dim:
        raise ValueError(f"k={k} exceeds the dimension {dim}: ask for at most {dim} exponents")
    periods = -(-steps // renorm_every)
    burn_periods = -(-burn_in // renorm_every)
    blocks = min(blocks, periods)

    began = time.perf_counter()
    vectors = random_orthonormal(vector_key, dim, k)
    x, t = x0, 0
    if burn_periods:
        x, vectors, _, _, t = run_tangent_blocks(
            system, x, vectors, noise_key, 0, burn_periods, renorm_every, 1, progress
        )
    x, vectors, block_sums, total, t = run_tangent_blocks(
        system, x, vectors, noise_key, t, periods, renorm_every, blocks, progress
    )
    seconds = time.perf_counter() - began

    counted = periods * renorm_every
    per_step = total / counted
    block_steps = (periods // blocks) * renorm_every
    stderr_step = batch_means(block_sums / block_steps)
    dt = system.time_step
    unit = 1.0 if dt is None else dt
    return LyapunovResult(
        exponents=per_step / unit,
        stderr=stderr_step / unit,
        exponents_per_step=per_step,
        stderr_per_step=stderr_step,
        kaplan_yorke_dimension=kaplan_yorke_dimension(per_step),
        steps=counted,
        time_step=dt,
        seconds=seconds,
        final_state=np.asarray(x),
    )
