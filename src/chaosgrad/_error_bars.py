"""Error bars and exponent diagnostics: one module for every estimate chaosgrad reports.

Batch means. A time average over one long run has the standard error of the spread of its
block means (blocks long compared with the correlation time are nearly independent):
:func:`batch_means`, with :func:`short_run_warning` when the run has fewer rows than
blocks. Independent samples: :func:`mean_and_stderr`. ``lyapunov_spectrum``,
``covariant_vectors`` and the estimators all use these.

Orbit estimators (Shadowing, FAR) return per-segment sums of every orbit, stacked
(R, K, k', ...). Their estimate is the mean per step; its standard error is

* R >= 2 orbits: the spread of the R orbit means, sd / sqrt(R) (the orbits are
  independent, so this holds whatever the correlation inside an orbit);
* R = 1: batch means over ``blocks`` blocks of segments (see :func:`stderr_method` for
  what that overstates).

Those means are array functions (they run inside the compiled estimator); the diagnostics
(outlying orbits, the exponents seen on the orbit from its QR factors, the warnings) read
host arrays in the estimator's finish.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def batch_means(block_values, axis: int = 0):
    """Standard error of the mean of ``block_values`` (one row per block): std / sqrt(B).

    Blocks long compared with the correlation time are nearly independent, so the spread of
    block means measures the error of the overall mean (batch-means method). With a single
    block the error is unknown: NaN.
    """
    values = np.asarray(block_values, dtype=float)
    count = values.shape[axis]
    if count < 2:
        return np.full(np.delete(values.shape, axis), np.nan)
    return np.std(values, axis=axis, ddof=1) / np.sqrt(count)


def short_run_warning(rows: int, blocks: int, row: str, fix: str) -> str | None:
    """A sentence when a run has fewer ``rows`` (segments, renormalisation periods) than the
    ``blocks`` of batch means asked: then each block is a single row, rows that close
    together are correlated, and the spread of so few, so short block means can be far
    from the error (too small by an unknown factor); None when every block has rows."""
    if rows >= blocks:
        return None
    return (
        f"batch means over only {rows} blocks of one {row} each ({blocks} asked): the run is "
        f"too short for them, and the standard error may be far too small: {fix}"
    )


def mean_and_stderr(samples, axis: int = 0):
    """Sample mean and its standard error std / sqrt(n) over ``axis``."""
    samples = np.asarray(samples, dtype=float)
    return samples.mean(axis=axis), batch_means(samples, axis=axis)


def _spread(values, axis: int = 0):
    """std / sqrt(count) over ``axis`` (NaN with fewer than two rows): batch means."""
    count = values.shape[axis]
    if count < 2:
        return jnp.full(values.shape[:axis] + values.shape[axis + 1 :], jnp.nan)
    return jnp.std(values, axis=axis, ddof=1) / np.sqrt(count)


def blocked_mean(contributions, segment_steps, blocks):
    """Mean per step of one orbit's per-segment sums (leaves (K, ...)), with batch-means
    errors over ``blocks`` blocks of segments."""

    leaves, treedef = jax.tree_util.tree_flatten(contributions)
    means, errors = [], []
    for leaf in leaves:
        per_step = leaf / segment_steps
        count = min(blocks, per_step.shape[0])
        usable = (per_step.shape[0] // count) * count
        block_means = per_step[:usable].reshape((count, -1) + per_step.shape[1:]).mean(axis=1)
        means.append(per_step.mean(axis=0))
        errors.append(_spread(block_means))
    return treedef.unflatten(means), treedef.unflatten(errors)


def ensemble_mean(stacked, segment_steps, blocks):
    """Mean per step over R orbits of per-segment sums (leaves (R, K, ...)), and its error:
    the spread of the R orbit means for R >= 2, batch means over blocks for R = 1."""
    count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    if count == 1:
        return blocked_mean(
            jax.tree_util.tree_map(lambda leaf: leaf[0], stacked), segment_steps, blocks
        )
    orbit_means = jax.tree_util.tree_map(lambda leaf: leaf.mean(axis=1) / segment_steps, stacked)
    mean = jax.tree_util.tree_map(lambda leaf: leaf.mean(axis=0), orbit_means)
    return mean, jax.tree_util.tree_map(_spread, orbit_means)


def largest_orbit_deviation(stacked) -> float | None:
    """max over parameters of max_r |g_r - median| / (1.4826 MAD): how far the most outlying
    of R >= 8 orbit estimates g_r lies, in robust standard deviations (None for R < 8).

    The per-orbit estimates of a non-uniformly hyperbolic system are heavy-tailed (Lorenz-63,
    T = 200: kurtosis 76, one orbit in 160 at 10 sd): a near-tangency makes one orbit's
    estimate an outlier that then dominates the mean and the spread.
    """
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(stacked)]
    if leaves[0].shape[0] < 8:
        return None
    flat = np.concatenate([leaf.mean(axis=1).reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)
    centre = np.median(flat, axis=0)
    scale = 1.4826 * np.median(np.abs(flat - centre), axis=0)
    usable = scale > 1e-12 * (1.0 + np.abs(centre))
    if not usable.any():
        return 0.0
    return float(np.max(np.abs(flat - centre)[:, usable] / scale[usable]))


def outlier_warning(deviation: float | None, orbits: int) -> str | None:
    """A sentence when one orbit lies beyond 6 robust sd (rare for R <= 100 normal orbits)."""
    if deviation is None or deviation <= 6.0:
        return None
    return (
        f"one of the {orbits} orbit estimates lies {deviation:.1f} robust standard deviations "
        "from their median (a near-tangency: the per-orbit estimates are heavy-tailed); the "
        "mean and its standard error are dominated by it"
    )


def join_warnings(*sentences: str | None) -> str | None:
    """The given sentences joined, or None when there are none."""
    present = [s for s in sentences if s]
    return "; ".join(present) if present else None


def blocks_warning(orbits: int, segments: int, blocks: int) -> str | None:
    """One orbit with fewer segments than batch-means blocks (:func:`short_run_warning`)."""
    if orbits >= 2:
        return None  # the spread of independent orbits: no blocks
    return short_run_warning(
        segments, blocks, "segment", f"give segments >= {blocks} (better 10 x), or orbits >= 8"
    )


def stderr_method(orbits: int, segments: int, blocks: int, fixed_orbit: bool = False) -> str:
    """What the reported standard error of an orbit estimator is (goes into ``info``).

    ``fixed_orbit``: a deterministic system from a given x0, whose orbit no key changes.
    """
    if orbits >= 2:
        return f"spread of {orbits} independent orbits"
    if fixed_orbit:
        return (
            f"batch means over {min(blocks, segments)} blocks of the one orbit fixed by x0 "
            "(a deterministic system: every key gives this orbit); it estimates the distance "
            "of this orbit's average from the ergodic one, not a spread over keys"
        )
    return (
        f"batch means over {min(blocks, segments)} blocks of one orbit; it overstates the "
        "error when the per-segment sums carry boundary terms (Lorenz-63: 3.5x): use "
        "orbits >= 8 for a calibrated one"
    )


_TINY = np.finfo(np.float64).tiny


class OrbitExponents(NamedTuple):
    """Exponents seen on the orbit(s) (per unit time for a flow) and their standard errors.

    ``values``/``stderr`` hold the u exponents the estimator uses and one more, the
    (u+1)-th, measured only to check ``unstable_dim``.
    """

    values: np.ndarray
    stderr: np.ndarray


def orbit_exponents(rs_per_orbit, segment_steps, time_step, blocks: int = 20) -> OrbitExponents:
    """Mean log diag R per segment, per unit time; errors over orbits or blocks of segments."""
    per_segment = [
        # a direction the map annihilates (R_ii = 0) reads as the most negative float's log
        np.log(np.maximum(np.abs(np.diagonal(np.asarray(rs), axis1=1, axis2=2)), _TINY))
        / (segment_steps * (time_step or 1.0))
        for rs in rs_per_orbit
    ]
    if len(per_segment) > 1:
        means = np.stack([logs.mean(axis=0) for logs in per_segment])
        return OrbitExponents(means.mean(axis=0), batch_means(means))
    logs = per_segment[0]
    count = min(blocks, logs.shape[0])
    usable = (logs.shape[0] // count) * count
    block_means = logs[:usable].reshape(count, -1, logs.shape[1]).mean(axis=1)
    return OrbitExponents(logs.mean(axis=0), batch_means(block_means))


def count_unstable(exponents, stderr, flow: bool) -> int:
    """u: the exponents clearly > 0 (a map), or not clearly < 0 (a flow: its neutral one
    counts); "clearly" means by more than 3 SE + 0.02."""
    margin = 3 * np.nan_to_num(np.asarray(stderr), nan=0.0) + 0.02
    values = np.asarray(exponents)
    return int(np.sum(values > -margin)) if flow else int(np.sum(values > margin))


def unstable_dim_warning(seen: OrbitExponents, unstable_dim: int, flow: bool) -> str | None:
    """A sentence when the exponents seen on the orbit contradict ``unstable_dim``.

    u must count the exponents >= 0: the positive ones, plus a flow's neutral one. An
    exponent is taken as nonzero when it is more than 3 standard errors + 0.02 from 0. The
    u-th exponent must not be clearly negative; the (u+1)-th must be clearly negative (a
    flow) or not clearly positive (a map).
    """
    values, errors = seen.values, np.nan_to_num(seen.stderr, nan=0.0)
    margin = 3 * errors + 0.02
    unit = "per unit time" if flow else "per step"
    if unstable_dim and values[unstable_dim - 1] < -margin[unstable_dim - 1]:
        counted = count_unstable(values, errors, flow)
        problem = f"exponent {unstable_dim} is negative; unstable_dim={counted} fits them"
    elif unstable_dim < len(values) and (
        values[unstable_dim] > -margin[unstable_dim]
        if flow
        else values[unstable_dim] > margin[unstable_dim]
    ):
        kind = (
            "not clearly negative (a flow's neutral direction counts; clearly: more than "
            "3 SE + 0.02 below 0)"
            if flow
            else "positive"
        )
        problem = (
            f"exponent {unstable_dim + 1} is {kind}; use unstable_dim={unstable_dim + 1} or "
            "more (only one exponent beyond u is measured)"
        )
    else:
        return None
    shown = ", ".join(f"{v:.3g} ± {e:.2g}" for v, e in zip(values, errors, strict=True))
    return (
        f"unstable_dim={unstable_dim} contradicts the exponents seen on the orbit "
        f"({shown} {unit}): {problem}"
    )
