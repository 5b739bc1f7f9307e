"""Lyapunov spectrum by QR renormalisation (Benettin et al. 1980; Shimada & Nagashima 1979).

Carry k orthonormal tangent vectors Q (dim x k). Each step V = f_*(x_n) Q (k JVPs under vmap);
every ``renorm_every`` steps Q, R = qr(V) with diag R > 0 and log R_ii is accumulated.
lambda_i = sum log R_ii / steps per step (divided by dt per unit time for a flow). The
burn-in aligns both the state with the attractor and the vectors with the Oseledets
subspaces. Standard errors are batch means over ``blocks`` equal blocks of the run, or,
for an ensemble of R independent orbits (``orbits=R``), the spread of the R orbits'
exponents; the R orbits advance together in one vmapped computation laid out over the
devices (:mod:`chaosgrad.parallel`). With ``checkpoint=DIR`` the run saves its state after
every block and a killed run resumes where it stopped (the resumable-run driver of
:mod:`chaosgrad._runstate`).

G. Benettin, L. Galgani, A. Giorgilli & J.-M. Strelcyn, Meccanica 15, 9-30 (1980).
Failure modes: vectors not renormalised often enough lose rank (keep renorm_every small
when exponents are large); too short a burn-in biases the lower exponents.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._error_bars import batch_means, short_run_warning
from .._errors import as_state, check_key, check_positive_int, check_x64, first_nonfinite_step
from .._fingerprint import describe_key, describe_settings, describe_system
from .._memory import check_memory, state_dim
from .._runstate import RunCheckpoint, advance, resume
from .._system import System, _run, bind, check_horizon
from .._tangent import draw_orbit_starts, orbit_keys, positive_qr, step_noise, step_with_tangents
from ..parallel import map_samples, sample_parallel


class LyapunovResult(eqx.Module):
    """Exponents (per unit time for a flow, per step for a map) with their standard errors:
    batch means over blocks of one orbit, or the spread of ``orbits`` independent orbits
    (then ``per_orbit`` holds each orbit's exponents, shape (orbits, k), per unit time, and
    ``final_state`` is (orbits, dim)). ``renorm_every``: the steps between QR
    renormalisations the run used (the one ``"auto"`` chose)."""

    exponents: np.ndarray
    stderr: np.ndarray
    exponents_per_step: np.ndarray
    stderr_per_step: np.ndarray
    kaplan_yorke_dimension: float
    steps: int
    time_step: float | None
    seconds: float
    final_state: np.ndarray
    orbits: int = 1
    per_orbit: np.ndarray | None = None
    renorm_every: int = 1
    warning: str | None = None

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


def _advance(system: System, x, vectors, key, start, periods: int, renorm_every: int):
    """``periods`` renormalisation periods of one orbit from step ``start``: each period
    V = f_*(x_{n+m-1}) ... f_*(x_n) Q (m = ``renorm_every`` tangent steps), then
    Q, R = qr(V) with diag R > 0; returns the state, Q and sum of log R_ii."""

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


@eqx.filter_jit
def _spectrum_block(system: System, x, vectors, key, start, periods: int, renorm_every: int):
    """Advance ``periods`` renormalisation periods; return the state, Q and sum of log R_ii."""
    return _advance(system, x, vectors, key, start, periods, renorm_every)


@sample_parallel
def _ensemble_block(system: System, xs, qs, keys, start, periods: int, renorm_every: int):
    """:func:`_advance` for R orbits at once (leading axis: orbit), the orbits laid out over
    the devices; returns states (R, dim), bases (R, dim, k) and log sums (R, k)."""
    return map_samples(
        lambda x, q, key: _advance(system, x, q, key, start, periods, renorm_every), xs, qs, keys
    )


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


def _checked_block(system, x, vectors, key, start, periods, renorm_every, ensemble=False):
    """One block of ``periods`` periods from step ``start``: (state, Q, log sums as numpy).

    With ``ensemble`` the leading axis of ``x``, ``vectors`` and ``key`` is the orbit, and a
    non-finite orbit is replayed alone, so that the error names the orbit and the step.
    """
    steps = periods * renorm_every
    if not ensemble:
        x_next, vectors, logs = _spectrum_block(
            system, x, vectors, key, jnp.asarray(start), periods, renorm_every
        )
        if not (bool(jnp.all(jnp.isfinite(x_next))) and bool(jnp.all(jnp.isfinite(logs)))):
            _raise_nonfinite(system, x, key, start, steps)
        return x_next, vectors, np.asarray(logs)
    x_next, vectors, logs = _ensemble_block(
        system, x, vectors, key, jnp.asarray(start), periods, renorm_every
    )
    logs = np.asarray(logs)
    finite = np.all(np.isfinite(np.asarray(x_next)), axis=1) & np.all(np.isfinite(logs), axis=1)
    if not finite.all():
        r = int(np.argmin(finite))
        try:
            _raise_nonfinite(system, x[r], key[r], start, steps)
        except FloatingPointError as error:
            raise FloatingPointError(f"orbit {r} of {len(finite)}: {error}") from None
    return x_next, vectors, logs


def _block_sizes(periods: int, blocks: int) -> list[int]:
    """``blocks`` equal blocks of periods, then the remainder (if any) as one more."""
    per_block, remainder = divmod(periods, blocks)
    sizes = [per_block] * blocks + ([remainder] if remainder else [])
    return [size for size in sizes if size]


def run_tangent_blocks(
    system, x, vectors, key, start, periods, renorm_every, blocks, progress=None
):
    """Run ``periods`` periods in ``blocks`` equal blocks (+ a remainder); per-block log sums."""
    sums, t = [], start
    for size in _block_sizes(periods, blocks):
        x, vectors, logs = _checked_block(system, x, vectors, key, t, size, renorm_every)
        t += size * renorm_every
        sums.append(logs)
        if progress is not None:
            progress(size * renorm_every)
    return x, vectors, np.array(sums[:blocks]), np.sum(sums, axis=0), t


TANGENT_COPIES = 8
"""A lower bound on the dim x k arrays a spectrum run keeps at once (the basis, the step's
linearisation of it, the QR factors); measured peak: 23 copies (Lorenz-96, n = k = 2000)."""


def check_tangent_memory(system, x0, key, k: int | None, orbits: int) -> None:
    """Refuse, before any array is made, k tangent vectors that cannot fit in memory."""
    dim = state_dim(system, x0, key)
    kept = dim if k is None else min(k, dim)
    check_memory(
        TANGENT_COPIES * orbits * dim * kept,
        f"{orbits} orbit(s) of {kept} tangent vectors of dimension {dim} "
        f"({TANGENT_COPIES} copies of the dim x k basis at least)",
        "ask for fewer exponents with k (the leading ones decide u and lambda_1), or fewer orbits",
    )


def _orbit_starts(system, x0, key, orbits: int, k: int | None):
    """(states (R, dim) or (dim,) for one orbit, tangent bases, noise key(s)), drawn in one
    call (:func:`~chaosgrad._tangent.draw_orbit_starts`). One orbit splits ``key`` into the
    keys of its start and of its vectors; orbit r of R > 1 does the same with
    ``fold_in(key, r)``, so it is the single run with that key. ``k``: None for all."""
    if orbits == 1:
        rows = None if x0 is None else as_state(x0, "x0")[None]
    else:
        if x0 is not None:
            shape = tuple(np.shape(x0))
            if len(shape) != 2 or shape[0] != orbits:
                dim = shape[-1] if shape else "dim"
                raise ValueError(
                    f"x0 has shape {shape} but orbits={orbits} needs one start per orbit, "
                    f"shape ({orbits}, {dim}), or x0=None to draw each (one start would "
                    "repeat one orbit)"
                )
        rows = x0
    keys = orbit_keys(key, orbits)
    x, vectors, noise_keys = draw_orbit_starts(system, keys, rows, k)
    dim = x.shape[1]
    if k is not None and k > dim:
        raise ValueError(f"k={k} exceeds the dimension {dim}: ask for at most {dim} exponents")
    if orbits == 1:
        return x[0], vectors[0], noise_keys[0]
    return x, vectors, noise_keys


AUTO_GROWTH = 1e3
"""``renorm_every="auto"``: the largest growth (or shrinkage) of a tangent vector, and
ratio between the k vectors' growths, allowed between two renormalisations, from the
exponents the burn-in measured: 3 of double precision's 16 digits."""

AUTO_MOST = 100
"""``renorm_every="auto"``: at most this many steps between renormalisations."""


def auto_renorm_every(per_step, steps: int, blocks: int = 1) -> int:
    """The steps m between renormalisations for exponents ``per_step`` (per step; the
    burn-in's estimate): the largest m <= ``AUTO_MOST`` with
    m * max(lambda_1 - lambda_k, |lambda_i|) <= log(``AUTO_GROWTH``) that divides the
    length of a block, steps / ``blocks`` (or, when the blocks are unequal, the steps): the
    run has exactly ``steps`` steps and the blocks of a QR every step, so its exponents and
    their batch-means errors are those of a QR every step to rounding (the sums of
    log R_ii are equal in exact arithmetic). An exponent that is not finite (a direction
    the map annihilates) gives m = 1."""
    values = np.asarray(per_step, dtype=float)
    if not np.all(np.isfinite(values)):  # a direction the map annihilates (log R_ii = -inf)
        return 1
    rate = max(float(values.max() - values.min()), float(np.max(np.abs(values))))
    bound = AUTO_MOST if rate <= 0 else min(AUTO_MOST, int(np.log(AUTO_GROWTH) / rate))
    unit = steps // blocks if steps % blocks == 0 else steps
    return max(m for m in range(1, max(bound, 1) + 1) if unit % m == 0)


def _run_blocks(
    system,
    x,
    vectors,
    key,
    burn_periods: int,
    burn_every: int,
    cadence: int | Callable[[Any], int],
    plan: Callable[[int], list[int]],
    ensemble: bool,
    store: RunCheckpoint | None,
    progress,
):
    """The burn-in (``burn_periods`` of ``burn_every`` steps, not counted), then blocks of
    ``plan(every)`` periods of ``every = cadence(burn-in log sums)`` steps from x and Q,
    through the resumable-run driver (:mod:`chaosgrad._runstate`): with a checkpoint
    ``store``, continue from what it holds and save after each block. ``cadence`` is a
    fixed number of steps, or chooses it from the burn-in (``"auto"``). Returns the final
    state(s), the per-block log sums (blocks, (R,) k) and ``every``."""
    sums_shape = np.shape(vectors)[:-2] + np.shape(vectors)[-1:]  # a block's: (R,) k

    def initial() -> dict:
        return {
            "state": x,
            "vectors": vectors,
            "t": np.asarray(0),
            "log_sums": np.zeros((0, *sums_shape)),
        }

    state = resume(store, initial)
    if progress is not None and int(state["t"]):
        progress(int(state["t"]))  # once, so that progress bars count the steps already done

    def burn(state, periods: int) -> dict:
        x, q, logs = _checked_block(
            system, state["state"], state["vectors"], key, 0, periods, burn_every, ensemble
        )
        return dict(state, state=x, vectors=q, t=np.asarray(periods * burn_every), burn_logs=logs)

    def block(state, size: int) -> dict:
        t = int(state["t"])
        x, q, logs = _checked_block(
            system, state["state"], state["vectors"], key, t, size, every, ensemble
        )
        sums = np.concatenate([state["log_sums"], logs[None]])
        return dict(state, state=x, vectors=q, t=np.asarray(t + size * every), log_sums=sums)

    def report(steps: int) -> None:
        if progress is not None:
            progress(steps)

    burn_in = [burn_periods] if burn_periods else []
    state = advance(store, state, "burn-in", burn_in, burn, lambda p: report(p * burn_every))
    every = cadence if isinstance(cadence, int) else cadence(state.get("burn_logs"))
    state = advance(store, state, "blocks", plan(every), block, lambda p: report(p * every))
    return state["state"], state["log_sums"], every


def lyapunov_spectrum(
    system: System,
    k: int | None = None,
    *,
    steps: int = 100_000,
    burn_in: int = 10_000,
    renorm_every: int | str = "auto",
    x0=None,
    key=None,
    blocks: int = 32,
    progress: Callable[[int], None] | None = None,
    orbits: int = 1,
    checkpoint: str | os.PathLike | None = None,
) -> LyapunovResult:
    """The k largest Lyapunov exponents of ``system`` with standard errors.

    lambda_i = (1 / N) sum_n log R_ii(n), with f_*(x_n) Q_n = Q_{n+1} R_{n+1} the QR
    renormalisation of the tangent vectors (Benettin et al., Meccanica 15, 9-30 (1980)).

    Args:
        system: any :class:`System`; a noisy one gives the exponents of the random map
            (noise fixed along the orbit).
        k: number of exponents (default: all, ``system.dim``).
        steps: steps averaged over (per orbit), after ``burn_in`` steps (per orbit) for
            state and vectors.
        renorm_every: steps between QR renormalisations (``steps`` and ``burn_in`` are
            rounded up to a multiple of it), or ``"auto"``: the burn-in renormalises every
            step and measures the exponents, and the run then renormalises every m steps,
            the largest divisor of a block's steps (at most 100) over which no tangent
            vector grows or shrinks, nor two vectors' growths part, by more than 10^3
            (:func:`auto_renorm_every`). The sum of log R_ii is the same in exact arithmetic
            (Lorenz-63: the exponents agree with a QR every step to 1e-14); without a
            burn-in it is 1. ``renorm_every`` of the result says which was used.
        x0, key: start (default: ``system.initial_state``) and the key for x0, the initial
            vectors and the noise. With ``orbits=R > 1``, x0 is None (each orbit draws its
            own) or has shape (R, dim), one start per orbit.
        blocks: number of blocks; one orbit's standard error is batch means over them.
        progress: called with the number of steps just completed (for progress bars); on a
            resumed run, first once with the steps the checkpoint already holds.
        orbits: R independent orbits run together in one vmapped computation, laid out
            over the devices (:mod:`chaosgrad.parallel`). Orbit r is the run of
            ``lyapunov_spectrum(..., key=jax.random.fold_in(key, r))``. ``exponents`` is
            the mean of the R orbits' exponents and ``stderr`` their standard deviation
            (ddof=1) over sqrt(R): the honest spread of independent orbits, where batch
            means on one orbit assume its blocks independent (``per_orbit`` holds each
            orbit's exponents).
        checkpoint: a directory; the run saves its state there (``run.ckpt``) after the
            burn-in and after every block, and a run started again with the same settings
            after a kill continues from the last saved block, with exactly the result of
            an uninterrupted run. A checkpoint made with other settings is refused
            (ValueError naming the setting), as is a corrupt one.
    """
    check_x64()
    check_positive_int(steps, "steps")
    check_positive_int(burn_in, "burn_in", allow_zero=True)
    auto = renorm_every == "auto"
    if not auto:
        if isinstance(renorm_every, str):
            raise ValueError(f'renorm_every={renorm_every!r}: give a positive int or "auto"')
        check_positive_int(renorm_every, "renorm_every")
    check_positive_int(blocks, "blocks")
    check_positive_int(orbits, "orbits")
    check_horizon(system, burn_in + steps)
    if key is None:
        raise ValueError("key is required: lyapunov_spectrum(..., key=jax.random.key(0))")
    check_key(key)
    k = None if k is None else check_positive_int(k, "k")
    check_tangent_memory(system, x0, key, k, orbits)
    x, vectors, noise_key = _orbit_starts(system, x0, key, orbits, k)
    system = bind(system, x[0] if orbits > 1 else x)
    k = vectors.shape[-1]
    burn_every = 1 if auto else int(renorm_every)
    burn_periods = -(-burn_in // burn_every)
    ensemble = orbits > 1

    def plan(every: int) -> list[int]:
        periods = -(-steps // every)
        return _block_sizes(periods, min(blocks, periods))

    def cadence(logs) -> int:
        if logs is None:  # no burn-in: nothing measured
            return 1
        per_step = np.asarray(logs).reshape(-1, k).mean(axis=0) / burn_periods
        return auto_renorm_every(per_step, steps, min(blocks, steps))

    store = None
    if checkpoint is not None:
        settings = {
            "run": "lyapunov_spectrum",
            **describe_system(system),
            "key": describe_key(key),
            **describe_settings(
                k=k,
                steps=steps,
                burn_in=burn_in,
                renorm_every=renorm_every,
                blocks=blocks,
                orbits=orbits,
                x0=x0,
            ),
        }
        store = RunCheckpoint(checkpoint, settings)

    began = time.perf_counter()
    x, sums, renorm_every = _run_blocks(
        system,
        x,
        vectors,
        noise_key,
        burn_periods,
        burn_every,
        renorm_every if not auto else cadence,
        plan,
        ensemble,
        store,
        progress,
    )
    seconds = time.perf_counter() - began
    periods = -(-steps // renorm_every)  # as plan() counted them
    requested_blocks, blocks = blocks, min(blocks, periods)

    counted = periods * renorm_every
    dt = system.time_step
    unit = 1.0 if dt is None else dt
    total = np.sum(sums, axis=0)
    if ensemble:
        per_orbit = total / counted
        per_step = np.mean(per_orbit, axis=0)
        stderr_step = np.std(per_orbit, axis=0, ddof=1) / np.sqrt(orbits)
    else:
        per_orbit = None
        per_step = total / counted
        block_steps = (periods // blocks) * renorm_every
        stderr_step = batch_means(np.array(sums[:blocks]) / block_steps)
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
        orbits=orbits,
        per_orbit=None if per_orbit is None else per_orbit / unit,
        renorm_every=renorm_every,
        warning=None
        if ensemble
        else short_run_warning(
            periods,
            requested_blocks,
            "renormalisation period",
            f"give steps >= {requested_blocks * renorm_every} (better 10 x), or orbits >= 8",
        ),
    )
