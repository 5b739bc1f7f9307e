"""Is the splitting hyperbolic? Angles between the unstable and stable covariant subspaces.

Shadowing and fast adjoint response assume a dominated splitting E^u + E^s whose subspaces
stay apart. Along an orbit, the covariant Lyapunov vectors v_1..v_k (Ginelli et al. 2007)
give E^u = span(v_1..v_u) and the leading part of E^s = span(v_{u+1}..v_k); the smallest
principal angle between them,

    theta_n = arccos( sigma_max(Q_u^T Q_s) ),   Q_u, Q_s orthonormal bases of the two spans,

measures how close the splitting comes to a tangency at step n. Uniform hyperbolicity keeps
min_n theta_n away from 0; angles that reach near 0 mean a homoclinic tangency, where
shadowing estimates become heavy-tailed or meaningless (references §6: a random RNN near the
edge of chaos). Kuptsov & Parlitz, "Theory and computation of covariant Lyapunov vectors",
J. Nonlinear Sci. 22, 727 (2012); Ginelli et al., PRL 99, 130601 (2007).
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

from .._errors import check_positive_int
from .._system import System
from .covariant import covariant_vectors

TANGENCY_DEGREES = 1.0
"""Angles below this (in degrees) count as a near-tangency: not hyperbolic."""


class HyperbolicityResult(eqx.Module):
    """Angles (degrees) between E^u and E^s at the recorded steps, and the verdict.

    Args:
        unstable_dim: u, the dimension of E^u tested.
        angles: the smallest principal angle at each recorded step (degrees).
        min_angle, median_angle: their minimum and median (degrees).
        hyperbolic: ``min_angle > TANGENCY_DEGREES`` (1 degree).
    """

    unstable_dim: int
    angles: np.ndarray
    min_angle: float
    median_angle: float
    hyperbolic: bool


def smallest_angle(vectors, unstable_dim: int) -> float:
    """Smallest principal angle (radians) between span(v[:, :u]) and span(v[:, u:])."""
    unstable, _ = np.linalg.qr(vectors[:, :unstable_dim])
    stable, _ = np.linalg.qr(vectors[:, unstable_dim:])
    cosine = np.linalg.svd(unstable.T @ stable, compute_uv=False).max()
    return float(np.arccos(np.clip(cosine, 0.0, 1.0)))


def hyperbolicity(
    system: System,
    unstable_dim: int,
    *,
    stable_dim: int = 1,
    steps: int = 5_000,
    burn_in: int = 2_000,
    burn_out: int = 2_000,
    record_every: int = 1,
    x0=None,
    key=None,
) -> HyperbolicityResult:
    """Angles between the u unstable and the next ``stable_dim`` covariant vectors.

    Args:
        unstable_dim: u (for a flow, count the neutral direction: it belongs to E^u here).
        stable_dim: how many stable vectors span the tested part of E^s (default 1).
        steps, burn_in, burn_out, record_every, x0, key: as in :func:`covariant_vectors`.
    """
    check_positive_int(unstable_dim, "unstable_dim")
    check_positive_int(stable_dim, "stable_dim")
    result = covariant_vectors(
        system,
        unstable_dim + stable_dim,
        steps=steps,
        burn_in=burn_in,
        burn_out=burn_out,
        record_every=record_every,
        x0=x0,
        key=key,
    )
    vectors = np.asarray(result.vectors)
    angles = np.degrees([smallest_angle(v, unstable_dim) for v in vectors])
    smallest = float(np.min(angles))
    return HyperbolicityResult(
        unstable_dim=unstable_dim,
        angles=angles,
        min_angle=smallest,
        median_angle=float(np.median(angles)),
        hyperbolic=smallest > TANGENCY_DEGREES,
    )
