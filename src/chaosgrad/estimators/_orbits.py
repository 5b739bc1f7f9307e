"""Orbits: where they start, the forward runs, and R orbits run together.

Starts. One orbit takes ``key`` itself; R orbits take ``key`` split R ways, and each orbit's
draws (its start from ``system.initial_state``, its tangent basis, its noise key) are those
of drawing it alone (:func:`orbit_starts`, :func:`start_orbits`).

Forward runs. An orbit of K segments of m steps carries u tangent vectors with a QR at each
segment's end (:func:`forward_segments`); the states of every step are kept, or, beyond the
sweep strategy's ``store_bytes``, one state per segment, and each segment is recomputed
from it when it is needed (:func:`segment_states`).

Ensembles. R orbits of Shadowing and FastAdjointResponse do the same steps on different
states, so one ``lax.scan`` carries all of them (``jax.vmap`` over the orbit axis): each step
does R times the work for one step's overhead. When there are several devices or processes
and R is a multiple of their number, the orbit axis is laid on the 1-D mesh of
``chaosgrad.parallel`` and each device runs its own orbits. Every orbit's arithmetic is the
same whatever the layout, so the estimate does not depend on it (to rounding).

The hot loop carries no NaN check: a non-finite orbit is flagged, and replayed alone on the
host by the single-orbit path, which names the step (:func:`check_orbits`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import as_state
from .._memory import state_dim
from .._system import _run as _run_states
from .._tangent import draw_orbit_starts, orbit_keys, positive_qr, step_noise, step_with_tangents
from ..lyapunov.spectrum import _spectrum_block, run_tangent_blocks
from ..parallel import collect, local, map_samples
from ._rollout import check_finite


class Orbits(NamedTuple):
    """R orbits after their burn-ins (leading axis: orbit).

    states (R, K, m, dim), or (R, K, dim) each segment's first state when the orbits are
    too long to keep (more than the sweep strategy's ``store_bytes``: the sweep recomputes
    them);
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
            means = jnp.mean(state_values(system, components, states), axis=(0, 1))
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
    *,
    store_bytes: int,
) -> tuple[Orbits, jax.Array]:
    """(R orbits burned in and recorded, each orbit's finiteness (R,)): ``starts`` as from
    :func:`orbit_starts`; u + ``probe`` tangent vectors, the first u those of u alone. With
    ``window`` (FAR) the segments start W steps later and ``Orbits.edges`` holds the states
    around them. With ``tangents=False`` the tangents stop after the burn-in, which
    orthonormalises them once a segment as the sweep's bases are (``Orbits.qs`` holds Q_0
    only): the segment-parallel sweep makes the bases from its propagators. With
    ``components`` the forward run also takes each orbit's mean of them (``Orbits.means``).
    The flags are checked by the estimator's finish (:func:`check_orbits`)."""
    xs, qs, keys = start_orbits(system, starts, unstable_dim, probe)
    store = xs.shape[0] * segments * segment_steps * xs.shape[1] * 8 <= store_bytes
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


@eqx.filter_jit
def _stored_mean(system, components, states):
    return jnp.mean(state_values(system, components, states), axis=(0, 1, 2))


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
    before, after = (state_values(system, components, edge) for edge in orbits.edges)
    if orbits.stored:
        middle = state_values(system, components, orbits.states)
    else:
        middle = jax.vmap(
            lambda firsts, key: segment_values(
                system, components, firsts, key, jnp.asarray(orbits.start), orbits.segment_steps
            )
        )(orbits.states, orbits.keys)
    middle = middle.reshape(middle.shape[0], -1, middle.shape[-1])
    return jnp.concatenate([before, middle, after], axis=1), jnp.mean(middle, axis=(0, 1))


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


def state_dimension(system, starts: Starts) -> int:
    """The state dimension of ``system`` (a user model may leave ``dim`` to its start)."""
    return state_dim(system, starts.rows, starts.keys[0])


def state_values(system, components, states):
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
    """A discretised flow: a system with a ``time_step``, whose ``vector_field`` gives the
    neutral direction (``System.vector_field``)."""
    return system.time_step is not None


class Starts(NamedTuple):
    """Where R orbits start: ``keys`` (R,) and ``rows`` the given starts (R, dim), or None
    (each orbit draws its own from ``system.initial_state``)."""

    rows: Any
    keys: Any

    def orbit(self, r: int) -> tuple[Any, Any]:
        """(x0 or None, key) of orbit ``r`` alone (to replay it)."""
        return (None if self.rows is None else self.rows[r]), self.keys[r]


def orbit_starts(system, x0, key, orbits: int) -> Starts:
    """The starts of R orbits, keyed by :func:`~chaosgrad._tangent.orbit_keys`; x0
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
        return Starts(None if x0 is None else x0[None], key[None])
    keys = orbit_keys(key, orbits)
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
