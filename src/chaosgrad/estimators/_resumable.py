"""Shadowing in pieces, with the run saved after each: resumable after a kill.

With ``Shadowing(..., checkpoint=DIR)`` the R orbits (vmapped together, as in
``_orbits``) run in pieces of ``P`` segments; after every piece the whole state of the run
goes to ``DIR/run.ckpt`` (``chaosgrad._runstate``):

* forward, piece by piece: the states x and tangent bases Q where the piece ends, and for
  every segment done its first state, Q_k and R_{k+1} (one state per segment: memory and
  file O(K + m) per orbit; the sweep recomputes each segment from its first state);
* backward, piece by piece from the end: the adjoints (eps, nu') at the piece's first
  segment, the ``SegmentTerms`` of every segment swept.

The coefficients a_k couple all segments (a flow's neutral coefficient is one least-squares
problem over the orbit), so they are solved once at the end from the saved terms. Every
piece is a deterministic function of the saved state, so a run killed at any moment and
started again with the same settings returns exactly (bit for bit) what an uninterrupted
run with the same checkpoint setting returns; against the run without checkpoint the
difference is rounding (recomputed segments, other compiled pieces: 1e-12 relative).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._runstate import RunCheckpoint
from ..parallel import local, map_samples, per_device, sample_parallel, to_host
from ._orbits import Orbits, _forward, check_orbits, start_orbits
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


def run_orbits_resumable(
    system, starts, unstable_dim, burn_in, segments, segment_steps, checkpoint: RunCheckpoint
) -> tuple[Orbits, dict]:
    """``run_orbits`` (one state per segment kept) in pieces, saved after each; a saved run
    continues where it stopped. Returns the orbits and the saved arrays (for the sweep)."""
    xs, qs, keys = start_orbits(system, starts, unstable_dim, 1)
    saved = checkpoint.load() or {"done": np.asarray(0), "x": np.asarray(xs), "q": np.asarray(qs)}
    for first, size in pieces(segments):
        if first < int(saved["done"]):
            continue
        firsts, _, collected = _forward(
            system,
            jnp.asarray(saved["x"]),
            jnp.asarray(saved["q"]),
            keys,
            burn_in if first == 0 else 0,
            None,
            size,
            segment_steps,
            False,
            jnp.asarray(0 if first == 0 else burn_in + first * segment_steps),
        )
        bases, rs, x_end, finite, _ = local(collected)
        if not np.all(finite):  # replay that orbit in one piece: names the step
            check_orbits(system, starts, finite, unstable_dim, burn_in, segments, segment_steps)
        saved = dict(
            saved,
            done=np.asarray(first + size),
            x=np.asarray(x_end),
            q=np.asarray(bases)[:, -1],
            firsts=_extend(saved.get("firsts"), to_host(firsts)),
            qs=_extend(saved.get("qs"), np.asarray(bases)[:, :-1]),
            rs=_extend(saved.get("rs"), rs),
        )
        checkpoint.save(saved)
    orbits = Orbits(
        jnp.asarray(saved["firsts"]),
        jnp.concatenate([jnp.asarray(saved["qs"]), jnp.asarray(saved["q"])[:, None]], axis=1),
        jnp.asarray(saved["rs"]),
        keys,
        jnp.asarray(saved["x"]),
        burn_in,
        segment_steps,
    )
    return orbits, saved


def _sweep(
    system, components, params, firsts, qs, keys, start, init, u, flow, segment_steps, sweep
):
    """The adjoint sweep of one piece of every orbit (vmapped): (the adjoints at the
    piece's first segment, its SegmentTerms)."""

    def one(firsts, qs, key, init):
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
            segment_steps=segment_steps,
            init=init,
            orbits=per_device(keys.shape[0]),
        )

    return map_samples(one, firsts, qs, keys, init)


_sweep_piece = sample_parallel(_sweep)


@eqx.filter_jit
def _combine(terms):
    """Coefficients and per-segment contributions of every orbit from its SegmentTerms."""

    def one(terms):
        coefficients = shadowing_coefficients(terms.b, terms.M, terms.sums.least_squares)
        return segment_contributions(terms.sums.nu, terms.sums.eps, coefficients), coefficients

    return jax.vmap(one)(terms)


def shadowing_contributions_resumable(
    system,
    components,
    params,
    orbits: Orbits,
    u,
    flow,
    checkpoint: RunCheckpoint,
    saved,
    sweep: AbstractSweep,
):
    """``shadowing_contributions`` with the sweep in pieces from the end, saved after each."""
    segments, m = orbits.states.shape[1], orbits.segment_steps
    count = components.count
    dim = orbits.states.shape[-1]

    def arguments(first, size, init):
        start = jnp.asarray(orbits.start + first * m)
        piece_qs = orbits.qs[:, first : first + size + 1]
        states = orbits.states[:, first : first + size]
        return (system, components, params, states, piece_qs, orbits.keys, start, init)

    init = (orbits.qs[:, -1, :, :u], jnp.zeros((orbits.qs.shape[0], dim, count)))
    layout = eqx.filter_eval_shape(
        functools.partial(_sweep, u=u, flow=flow, segment_steps=m, sweep=sweep),
        *arguments(*pieces(segments)[-1], init),
    )
    treedef = jax.tree_util.tree_structure(layout[1])
    if "swept" not in saved:
        saved = dict(saved, swept=np.asarray(segments))
    for first, size in reversed(pieces(segments)):
        if first >= int(saved["swept"]):
            continue
        if first + size < segments:
            init = (jnp.asarray(saved["eps"]), jnp.asarray(saved["nus"]))
        carry, terms = _sweep_piece(*arguments(first, size, init), u, flow, m, sweep)
        leaves = jax.tree_util.tree_leaves(terms)
        saved = dict(
            saved,
            swept=np.asarray(first),
            eps=np.asarray(carry[0]),
            nus=np.asarray(carry[1]),
            **{
                f"terms{i}": _extend(saved.get(f"terms{i}"), leaf, before=True)
                for i, leaf in enumerate(leaves)
            },
        )
        checkpoint.save(saved)
    leaves = [jnp.asarray(saved[f"terms{i}"]) for i in range(treedef.num_leaves)]
    return _combine(jax.tree_util.tree_unflatten(treedef, leaves))
