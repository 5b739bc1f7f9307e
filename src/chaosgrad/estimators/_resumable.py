"""Shadowing and FastAdjointResponse in pieces, the run saved after each: resumable.

With ``checkpoint=DIR`` the R orbits (vmapped together, as in ``_orbits``) run in pieces
of ``P`` segments through the resumable-run driver (:mod:`chaosgrad._runstate`), each
piece one compiled program; after every piece the whole state of the run goes to
``DIR/run.ckpt``:

* forward, piece by piece (stage ``forward``): the states x and tangent bases Q where the
  piece ends, and for every segment done its first state, Q_k and R_{k+1} (one state per
  segment: memory and file O(K + m) per orbit; the sweep recomputes each segment from its
  first state). The first piece also runs the burn-in, and for FAR the W steps before the
  segments, whose states (x_{-W} .. x_{-1}) it keeps;
* backward, piece by piece from the end (stage ``backward``): the adjoints (eps, nu') at
  the piece's first segment, the ``SegmentTerms`` of every segment swept (for FAR with the
  psi-weighted unstable sums: psi comes from the observable's values along the orbit,
  recomputed from the saved first states, and the W + 1 states after the segments).

The coefficients a_k couple all segments (a flow's neutral coefficient is one least-squares
problem over the orbit), so they are solved once at the end from the saved terms. Every
piece is a deterministic function of the saved state, so a run killed at any moment and
started again with the same settings returns exactly (bit for bit) what an uninterrupted
run with the same checkpoint setting returns; against the run without checkpoint the
difference is rounding (recomputed segments, other compiled pieces: 1e-12 relative).
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._fingerprint import (
    describe,
    describe_function,
    describe_key,
    describe_observable,
    describe_statistic,
    describe_system,
    describe_wrt,
)
from .._runstate import RunCheckpoint, State, advance, resume
from .._system import _run
from ..parallel import local, map_samples, per_device, sample_parallel, to_host
from ._base import Estimate
from ._orbits import Orbits, _forward, check_orbits, start_orbits, state_dimension
from ._sweep import adjoint_sweep_from, segment_contributions, shadowing_coefficients
from .sweeps import AbstractSweep

PIECES = 16
"""Pieces per pass (forward and backward): a kill loses at most 1/16 of either."""


def pieces(segments: int, count: int = PIECES) -> list[tuple[int, int]]:
    """(first segment, size) of at most ``count`` consecutive pieces of ``segments``."""
    size = -(-segments // min(count, segments))
    return [(first, min(size, segments - first)) for first in range(0, segments, size)]


def _extend(stored, new, before: bool = False) -> np.ndarray:
    """``new`` appended to (or put before) ``stored`` along the segment axis (axis 1)."""
    new = np.asarray(new)
    if stored is None:
        return new
    return np.concatenate([new, stored] if before else [stored, new], axis=1)


def estimate_in_pieces(estimator, in_pieces, system, components, params, x0, key, cotangent):
    """``estimator.estimate`` with a checkpoint: "auto" settings resolved (their pilot run
    is not saved), then ``in_pieces`` (the resolved estimator's resumable run)."""
    resolved, report = estimator.resolve(system, components, params, x0, key)
    if report is not None:
        raw = resolved.estimate(system, components, params, x0, key, cotangent)
        return Estimate(raw.value, raw.grad, raw.stderr, dataclasses.replace(raw.info, auto=report))
    return in_pieces(system, components, params, x0, key, cotangent)


def orbit_checkpoint(estimator, system, components, params, starts, x0, key, cotangent):
    """The run's :class:`~chaosgrad._runstate.RunCheckpoint` in ``estimator.checkpoint``,
    with the fingerprint of :mod:`chaosgrad._fingerprint`: the system and its parameters,
    the key, the estimator (but where it saves), the statistic, what the observable and the
    loss's cotangent (if any) compute, wrt and x0."""
    dim = state_dimension(system, starts)
    observable, _ = describe_observable(components.statistic, system, dim)
    loss = "None"
    if cotangent is not None:  # a function of the k raw components' values
        value = jax.ShapeDtypeStruct((components.projection.shape[0],), jnp.float64)
        loss = describe_function(cotangent, value)[0]
    fingerprint = {
        "run": type(estimator).__name__,
        **describe_system(system),
        "key": describe_key(key),
        "estimator": describe(dataclasses.replace(estimator, checkpoint=None)),
        "statistic": describe_statistic(components.statistic),
        "observable": observable,
        "loss": loss,
        "wrt": describe_wrt(system, params.values),
        "x0": describe(x0),
    }
    return RunCheckpoint(estimator.checkpoint, fingerprint)


@sample_parallel
def _states_after(system, x_end, keys, end, window: int):
    """x_N .. x_{N+W} of every orbit, (R, W + 1, dim): the states after the segments that
    FAR's window sums need."""

    def one(x, key):
        _, path = _run(system, x, key, end, window)
        return jnp.concatenate([x[None], path])

    return map_samples(one, x_end, keys)


def forward_in_pieces(
    system,
    starts,
    unstable_dim,
    burn_in,
    segments,
    segment_steps,
    checkpoint: RunCheckpoint,
    window: int | None = None,
) -> tuple[Orbits, State]:
    """``forward_orbits`` (one state per segment kept) in pieces, saved after each; a saved run
    continues where it stopped. With ``window`` W (FAR) the segments start W steps after
    the burn-in and ``Orbits.edges`` holds the states around them. Returns the orbits and
    the run's state (for the sweep)."""
    xs, qs, keys = start_orbits(system, starts, unstable_dim, 1)
    lead = window or 0

    def forward(state: State, piece: tuple[int, int]) -> State:
        first, size = piece
        firsts, edges, collected = _forward(
            system,
            jnp.asarray(state["x"]),
            jnp.asarray(state["q"]),
            keys,
            burn_in if first == 0 else 0,
            window if first == 0 else None,
            size,
            segment_steps,
            False,
            jnp.asarray(0 if first == 0 else burn_in + lead + first * segment_steps),
        )
        bases, rs, x_end, finite, _ = local(collected)
        if not np.all(finite):  # replay that orbit in one piece: names the step
            check_orbits(
                system,
                starts,
                finite,
                unstable_dim,
                burn_in,
                segments,
                segment_steps,
                window=window,
            )
        bases = np.asarray(bases)
        state = dict(
            state,
            x=np.asarray(x_end),
            q=bases[:, -1],
            firsts=_extend(state.get("firsts"), to_host(firsts)),
            qs=_extend(state.get("qs"), bases[:, :-1]),
            rs=_extend(state.get("rs"), rs),
        )
        if edges is not None:
            state["before"] = to_host(edges[0])
        return state

    state = resume(checkpoint, lambda: {"x": np.asarray(xs), "q": np.asarray(qs)})
    state = advance(checkpoint, state, "forward", pieces(segments), forward)
    edges = None
    if window is not None:
        end = jnp.asarray(burn_in + window + segments * segment_steps)
        after = _states_after(system, jnp.asarray(state["x"]), keys, end, window)
        edges = (jnp.asarray(state["before"]), after)
    orbits = Orbits(
        jnp.asarray(state["firsts"]),
        jnp.concatenate([jnp.asarray(state["qs"]), jnp.asarray(state["q"])[:, None]], axis=1),
        jnp.asarray(state["rs"]),
        keys,
        jnp.asarray(state["x"]),
        burn_in + lead,
        segment_steps,
        edges,
    )
    return orbits, state


def _sweep(
    system,
    components,
    params,
    firsts,
    qs,
    keys,
    start,
    init,
    psi,
    rs,
    u,
    flow,
    segment_steps,
    sweep,
):
    """The adjoint sweep of one piece of every orbit (vmapped): (the adjoints at the
    piece's first segment, its SegmentTerms); with ``psi`` and ``rs``, FAR's unstable sums."""

    def one(firsts, qs, key, init, psi, rs):
        return adjoint_sweep_from(
            system,
            components,
            params,
            firsts,
            qs[..., :u],
            key,
            start,
            flow,
            sweep,
            psi=psi,
            rs=rs,
            segment_steps=segment_steps,
            init=init,
            orbits=per_device(keys.shape[0]),
        )

    return map_samples(one, firsts, qs, keys, init, psi, rs)


_sweep_piece = sample_parallel(_sweep)


@eqx.filter_jit
def shadowing_sums(terms):
    """Coefficients and per-segment contributions of every orbit from its SegmentTerms."""

    def one(terms):
        coefficients = shadowing_coefficients(terms.b, terms.M, terms.sums.least_squares)
        return segment_contributions(terms.sums.nu, terms.sums.eps, coefficients), coefficients

    return jax.vmap(one)(terms)


def sweep_in_pieces(
    system,
    components,
    params,
    orbits: Orbits,
    u,
    flow,
    checkpoint: RunCheckpoint,
    state: State,
    sweep: AbstractSweep,
    psi=None,
):
    """``adjoint_sweep`` of every orbit in pieces from the end, saved after each: (the
    SegmentTerms of every segment (leading axes: orbit, segment), the run's state). With
    ``psi`` (R, K, m, k'), FAR's unstable sums too (QR factors from ``orbits.rs``)."""
    segments, m = orbits.states.shape[1], orbits.segment_steps
    columns = components.count + (0 if psi is None else 1)
    end = (orbits.qs[:, -1, :, :u], jnp.zeros((orbits.qs.shape[0], orbits.qs.shape[2], columns)))

    def arguments(first, size, init):
        start = jnp.asarray(orbits.start + first * m)
        piece_qs = orbits.qs[:, first : first + size + 1]
        states = orbits.states[:, first : first + size]
        psi_piece = rs = None
        if psi is not None:
            psi_piece = psi[:, first : first + size]
            rs = orbits.rs[:, first : first + size, :u, :u]
        return (
            system,
            components,
            params,
            states,
            piece_qs,
            orbits.keys,
            start,
            init,
            psi_piece,
            rs,
        )

    layout = eqx.filter_eval_shape(
        functools.partial(_sweep, u=u, flow=flow, segment_steps=m, sweep=sweep),
        *arguments(*pieces(segments)[-1], end),
    )
    treedef = jax.tree_util.tree_structure(layout[1])

    def backward(state: State, piece: tuple[int, int]) -> State:
        first, size = piece
        init = end
        if first + size < segments:
            init = (jnp.asarray(state["eps"]), jnp.asarray(state["nus"]))
        carry, terms = _sweep_piece(*arguments(first, size, init), u, flow, m, sweep)
        leaves = jax.tree_util.tree_leaves(terms)
        return dict(
            state,
            eps=np.asarray(carry[0]),
            nus=np.asarray(carry[1]),
            **{
                f"terms{i}": _extend(state.get(f"terms{i}"), leaf, before=True)
                for i, leaf in enumerate(leaves)
            },
        )

    state = advance(checkpoint, state, "backward", pieces(segments)[::-1], backward)
    leaves = [jnp.asarray(state[f"terms{i}"]) for i in range(treedef.num_leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves), state
