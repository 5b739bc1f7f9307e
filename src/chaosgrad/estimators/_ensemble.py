"""Independent orbits run together: vmapped over an orbit axis, sharded over the devices.

R orbits of Shadowing and FastAdjointResponse do the same steps on different states, so one
``lax.scan`` carries all of them (``jax.vmap`` over the orbit axis): each step does R times
the work for one step's overhead. When there are several devices or processes and R is a
multiple of their number, the orbit axis is laid on the 1-D mesh of ``chaosgrad.parallel``
and each device runs its own orbits. Every orbit's arithmetic is the same whatever the
layout, so the estimate does not depend on it (to rounding).

The hot loop carries no NaN check: a non-finite orbit is found after the run and replayed
alone by the single-orbit path, which names the step.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._system import _run as _run_states
from ..lyapunov.spectrum import _spectrum_block
from ..parallel import collect, local, map_samples, per_device, sample_parallel
from ._adjoint import (
    SEGMENT_BATCH,
    adjoint_sweep,
    all_propagators,
    check_orbit,
    forward_segments,
    mean_values,
    orbit_values,
    prepare_orbit,
    segment_contributions,
    segment_values,
    shadowing_coefficients,
    start_orbits,
    terms_from_propagators,
)
from ._segment_sweep import forward_bases

STORE_LIMIT = 256 * 2**20
"""Bytes of states kept for the adjoint sweep; longer orbits keep one state per segment
and recompute the rest segment by segment (memory O(K + m) per orbit, not O(K m))."""


class Orbits(NamedTuple):
    """R orbits after their burn-ins (leading axis: orbit).

    states (R, K, m, dim), or (R, K, dim) each segment's first state when the orbits are
    too long to keep (more than ``STORE_LIMIT`` bytes: the sweep recomputes them);
    qs (R, K + 1, dim, k) bases at the interfaces; rs (R, K, k, k) (before a
    segment-parallel sweep that makes them: Q_0 alone (R, 1, dim, k), rs (R, 0, k, k));
    keys (R,) noise keys;
    x_end (R, dim); start: the step index where the segments begin;
    edges, for FastAdjointResponse: (x_{-W} .. x_{-1} (R, W, dim), x_N .. x_{N+W}
    (R, W + 1, dim)), the states around the segments its window sums need; else None;
    means (R, k): each orbit's mean of the raw components over its segments, when the
    forward run was given them and kept the states (else None: :func:`orbit_mean`
    computes it).
    """

    states: jax.Array
    qs: jax.Array
    rs: jax.Array
    keys: jax.Array
    x_end: jax.Array
    start: int
    segment_steps: int
    edges: tuple[jax.Array, jax.Array] | None = None
    means: jax.Array | None = None

    @property
    def stored(self) -> bool:
        """Every state kept (states (R, K, m, dim)), or only each segment's first."""
        return self.states.ndim == 4


@eqx.filter_jit
def _forward(
    system,
    xs,
    qs,
    keys,
    burn_in: int,
    window: int | None,
    segments,
    segment_steps,
    store,
    offset: int | jax.Array = 0,
    tangents: bool = True,
    components=None,
):
    """Burn-in and recorded segments of every orbit. With ``window`` W (FAR), also the W
    states before and the W + 1 from the end of the segments (the tangents aligned through
    the first W). ``offset``: the step index of ``xs``
    (a resumed run's next piece). With ``components`` and the states kept, also each
    orbit's mean of the raw components (the statistic's value: no second program reads the
    states again).

    The states stay laid out over the mesh (each device keeps its own orbits' states);
    the small arrays and each orbit's finiteness are collected on every device."""

    def one(x, q, key):
        if burn_in:
            # the segment-parallel sweep orthonormalises once a segment (its bases come from
            # the segments' tangent maps): its burn-in does the same, the rest step by step
            every = 1 if tangents else segment_steps
            periods, rest = divmod(burn_in, every)
            at = jnp.asarray(offset)
            if periods:
                x, q, _ = _spectrum_block(system, x, q, key, at, periods, every)
            if rest:
                x, q, _ = _spectrum_block(system, x, q, key, at + periods * every, rest, 1)
        start = offset + burn_in
        before = None
        if window is not None:
            _, path = _run_states(system, x, key, jnp.asarray(start), window)
            before = jnp.concatenate([x[None], path])[:window]
            if window:
                x, q, _ = _spectrum_block(system, x, q, key, jnp.asarray(start), window, 1)
            start += window
        states, bases, rs, x_end = forward_segments(
            system, x, q, key, jnp.asarray(start), segments, segment_steps, store, tangents
        )
        edges = None
        if window is not None:
            assert before is not None
            end = jnp.asarray(start + segments * segment_steps)
            _, after = _run_states(system, x_end, key, end, window)
            edges = (before, jnp.concatenate([x_end[None], after]))
        means = None
        if components is not None and store:
            means = jnp.mean(orbit_values(system, components, states), axis=(0, 1))
        return states, bases, rs, x_end, edges, means

    states, bases, rs, x_end, edges, means = map_samples(one, xs, qs, keys)
    finite = jnp.all(jnp.isfinite(states), axis=tuple(range(1, states.ndim))) & jnp.all(
        jnp.isfinite(x_end), axis=1
    )
    return states, edges, collect((bases, rs, x_end, finite, means))


def forward_orbits(
    system,
    starts,
    unstable_dim,
    burn_in,
    segments,
    segment_steps,
    probe=1,
    window=None,
    tangents=True,
    components=None,
) -> tuple[Orbits, jax.Array]:
    """(R orbits burned in and recorded, each orbit's finiteness (R,)): the pure part of
    :func:`run_orbits` (a compiled estimator checks the flags in its finish)."""
    xs, qs, keys = start_orbits(system, starts, unstable_dim, probe)
    store = xs.shape[0] * segments * segment_steps * xs.shape[1] * 8 <= STORE_LIMIT
    states, edges, collected = _forward(
        system,
        xs,
        qs,
        keys,
        burn_in,
        window,
        segments,
        segment_steps,
        store,
        0,
        tangents,
        components,
    )
    bases, rs, x_end, finite, means = local(collected)
    start = burn_in + (window or 0)
    return Orbits(states, bases, rs, keys, x_end, start, segment_steps, edges, means), finite


def check_orbits(
    system, starts, finite, unstable_dim, burn_in, segments, segment_steps, probe=1, window=None
) -> None:
    """On the host: when an orbit was not finite, replay it alone to name the step."""
    finite = np.asarray(finite)
    if finite.all():
        return
    x0, key = starts.orbit(int(np.argmin(finite)))  # replay that orbit alone: names the step
    x, q, noise_key, t = prepare_orbit(system, x0, key, unstable_dim, burn_in, probe)
    t += window or 0
    replay, *_ = forward_segments(system, x, q, noise_key, jnp.asarray(t), segments, segment_steps)
    check_orbit(replay, t)
    raise FloatingPointError("an orbit became NaN/inf")


def run_orbits(
    system,
    starts,
    unstable_dim,
    burn_in,
    segments,
    segment_steps,
    probe=1,
    window=None,
    tangents=True,
    components=None,
) -> Orbits:
    """Burn in and record R orbits: ``starts`` as from ``orbit_starts``; u + ``probe``
    tangent vectors, the first u those of u alone. With ``window`` (FAR) the segments start
    W steps later and ``Orbits.edges`` holds the states around them. With
    ``tangents=False`` the tangents stop after the burn-in, which orthonormalises them once
    a segment as the sweep's bases are (``Orbits.qs`` holds Q_0 only):
    the segment-parallel sweep makes the bases from its propagators. With ``components``
    the forward run also takes each orbit's mean of them (``Orbits.means``). A non-finite
    orbit is replayed alone and the error names its step."""
    orbits, finite = forward_orbits(
        system,
        starts,
        unstable_dim,
        burn_in,
        segments,
        segment_steps,
        probe,
        window,
        tangents,
        components,
    )
    check_orbits(
        system, starts, finite, unstable_dim, burn_in, segments, segment_steps, probe, window
    )
    return orbits


@sample_parallel
def shadowing_contributions(system, components, params, orbits: Orbits, unstable_dim, flow):
    """Per-orbit, per-segment shadowing sums (leaves (R, K, k', ...)), coefficients, and
    the orbits' bases and QR factors when they are made here, from the segment propagators
    (the forward run left them: ``Orbits.qs`` of one basis), else None (not copied)."""
    count = orbits.keys.shape[0]

    def one(states, qs, rs, key):
        start = jnp.asarray(orbits.start)
        if qs.shape[0] == 1:  # the tangents from the propagators (segment-parallel sweep)
            propagators = all_propagators(
                system,
                components,
                params,
                states,
                key,
                start,
                flow,
                orbits.segment_steps,
                max(1, SEGMENT_BATCH // per_device(count)),
            )
            qs, rs = forward_bases(propagators, qs[0])
            bases = (qs, rs)
            init = (qs[-1, :, :unstable_dim], jnp.zeros((qs.shape[1], components.count)))
            _, terms = terms_from_propagators(propagators, params, qs[..., :unstable_dim], init)
        else:
            bases = None
            terms = adjoint_sweep(
                system,
                components,
                params,
                states,
                qs[..., :unstable_dim],
                key,
                start,
                flow,
                segment_steps=orbits.segment_steps,
                orbits=per_device(count),
            )
        coefficients = shadowing_coefficients(terms.b, terms.M, terms.sums.least_squares)
        contributions = segment_contributions(terms.sums.nu, terms.sums.eps, coefficients)
        return contributions, coefficients, bases

    return map_samples(one, orbits.states, orbits.qs, orbits.rs, orbits.keys)


@eqx.filter_jit
def _stored_mean(system, components, states):
    return jnp.mean(orbit_values(system, components, states), axis=(0, 1, 2))


def orbit_mean(system, components, orbits: Orbits):
    """The raw components' mean over every state of every orbit (recomputed if not kept):
    the mean of the orbits' means (equal lengths), taken by the forward run when it could."""
    if orbits.means is not None:
        return jnp.mean(orbits.means, axis=0)
    if orbits.stored:
        return _stored_mean(system, components, orbits.states)
    means = jax.vmap(
        lambda firsts, key: mean_values(
            system, components, firsts, key, jnp.asarray(orbits.start), orbits.segment_steps
        )
    )(orbits.states, orbits.keys)
    return jnp.mean(means, axis=0)


@eqx.filter_jit
def padded_values(system, components, orbits: Orbits):
    """Raw components at x_{-W} .. x_{N+W} of every orbit, (R, N + 2W + 1, k): what the
    window sums of FastAdjointResponse need (O(N k) numbers per orbit; the states of the
    segments are recomputed when they were not kept), and their mean over the segments'
    N states of every orbit (k,), the statistic's value: one compiled program (each eager
    piece would be one more program to trace and load in a new process)."""
    assert orbits.edges is not None
    before, after = (orbit_values(system, components, edge) for edge in orbits.edges)
    if orbits.stored:
        middle = orbit_values(system, components, orbits.states)
    else:
        middle = jax.vmap(
            lambda firsts, key: segment_values(
                system, components, firsts, key, jnp.asarray(orbits.start), orbits.segment_steps
            )
        )(orbits.states, orbits.keys)
    middle = middle.reshape(middle.shape[0], -1, middle.shape[-1])
    return jnp.concatenate([before, middle, after], axis=1), jnp.mean(middle, axis=(0, 1))
