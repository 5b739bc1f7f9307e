"""Is the splitting hyperbolic? Angles between the unstable and stable covariant subspaces.

Shadowing and fast adjoint response assume a dominated splitting E^u + E^s whose subspaces
stay apart. Along an orbit, the covariant Lyapunov vectors v_1..v_k (Ginelli et al. 2007)
give E^u = span(v_1..v_u) and the leading part of E^s = span(v_{u+1}..v_k); the smallest
principal angle between them,

    theta_n = arccos( sigma_max(Q_u^T Q_s) ),   Q_u, Q_s orthonormal bases of the two spans,

measures how close the splitting comes to a tangency at step n. Uniform hyperbolicity keeps
min_n theta_n away from 0; angles that reach near 0 mean a homoclinic tangency, where
shadowing estimates become heavy-tailed or meaningless (references §6: a random RNN near the
edge of chaos).

The verdict is a rule on the distribution of the angles, not on their minimum (a single
minimum is a knife edge: it falls with the length of the orbit, and one close pass decides):

    hyperbolic  <=>  the fraction of recorded steps with theta_n < 5 degrees is below 1 %.

Measured with ``hyperbolicity(system, u)`` (5 000 steps, key 1): Lorenz-63 (u = 2) has no
angle below 14.7 degrees (0 % below 5), hyperbolic; Henon (u = 1) 1.6 % below 5 degrees
(minimum 0.09), Roessler (a = b = 0.2, c = 5.7, dt = 0.05, u = 2) 11 % (minimum 0.47) and
Lorenz-96 (n = 20, F = 8, u = 7) 48 % (median 5.4 degrees): not hyperbolic.

Kuptsov & Parlitz, "Theory and computation of covariant Lyapunov vectors", J. Nonlinear
Sci. 22, 727 (2012); Ginelli et al., PRL 99, 130601 (2007).
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

from .._errors import check_positive_int
from .._system import System
from .covariant import covariant_vectors

TANGENCY_DEGREES = 5.0
"""Angles below this (in degrees) count as a near-tangency."""

TANGENT_FRACTION = 0.01
"""A splitting near a tangency at this fraction of the steps or more is not hyperbolic."""


class HyperbolicityResult(eqx.Module):
    """Angles (degrees) between E^u and E^s at the recorded steps, and the verdict.

    Args:
        unstable_dim: u, the dimension of E^u tested.
        angles: the smallest principal angle at each recorded step (degrees).
        min_angle, median_angle: their minimum and median (degrees).
        tangent_fraction: the fraction of them below ``TANGENCY_DEGREES`` (5 degrees).
        hyperbolic: ``tangent_fraction < TANGENT_FRACTION`` (1 %).
    """

    unstable_dim: int
    angles: np.ndarray
    min_angle: float
    median_angle: float
    tangent_fraction: float
    hyperbolic: bool

    @classmethod
    def from_angles(cls, unstable_dim: int, angles) -> HyperbolicityResult:
        """The summary and the verdict (module doc) of the recorded ``angles`` (degrees)."""
        angles = np.asarray(angles, dtype=np.float64)
        tangent = float(np.mean(angles < TANGENCY_DEGREES))
        return cls(
            unstable_dim=unstable_dim,
            angles=angles,
            min_angle=float(np.min(angles)),
            median_angle=float(np.median(angles)),
            tangent_fraction=tangent,
            hyperbolic=tangent < TANGENT_FRACTION,
        )

    def describe(self) -> str:
        """One sentence: the verdict and the numbers behind it."""
        verdict = "hyperbolic" if self.hyperbolic else "not hyperbolic"
        return (
            f"{verdict}: {100 * self.tangent_fraction:.2g} % of the angles between the "
            f"unstable and stable subspaces are below {TANGENCY_DEGREES:g} degrees (the rule: "
            f"hyperbolic below {100 * TANGENT_FRACTION:g} %); smallest {self.min_angle:.2g}, "
            f"median {self.median_angle:.2g} degrees"
        )


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
    """Angles between the u unstable and the next ``stable_dim`` covariant vectors, and the
    verdict of the rule in the module doc (under 1 % of the steps below 5 degrees).

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
    return HyperbolicityResult.from_angles(unstable_dim, angles)
