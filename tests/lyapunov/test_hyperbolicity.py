"""The hyperbolicity rule: under 1 % of the angles between E^u and E^s below 5 degrees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.lyapunov.hyperbolicity import (
    TANGENCY_DEGREES,
    TANGENT_FRACTION,
    HyperbolicityResult,
    hyperbolicity,
)


def test_the_verdict_is_on_the_distribution_not_on_the_minimum():
    """One close pass (0.1 degrees once in 1000 steps) is not a tangency; 2 % of the steps
    below 5 degrees is, even when no angle comes below 1 degree."""
    angles = np.full(1000, 40.0)
    angles[0] = 0.1
    once = HyperbolicityResult.from_angles(1, angles)
    assert once.hyperbolic and once.min_angle == 0.1 and once.tangent_fraction == 0.001
    angles = np.full(1000, 40.0)
    angles[:20] = 3.0
    often = HyperbolicityResult.from_angles(1, angles)
    assert not often.hyperbolic and often.tangent_fraction == 0.02
    assert "not hyperbolic: 2 % of the angles" in often.describe()


def roessler():
    def field(t, x, args):
        a, b, c = args
        return jnp.stack([-x[1] - x[2], x[0] + a * x[1], b + x[2] * (x[0] - c)])

    return cg.Flow(field, dt=0.05, args=(0.2, 0.2, 5.7), dim=3)


# (name, system, u (a flow's neutral direction counted), x0, hyperbolic)
SYSTEMS = [
    ("lorenz63", cg.Lorenz63, 2, None, True),
    ("henon", cg.Henon, 1, None, False),
    ("roessler", roessler, 2, jnp.array([1.0, 1.0, 0.0]), False),
    ("lorenz96", lambda: cg.Lorenz96(n=20), 8, None, False),
]


@pytest.mark.parametrize("name, build, u, x0, expected", SYSTEMS, ids=[s[0] for s in SYSTEMS])
def test_the_rule_on_four_systems(name, build, u, x0, expected):
    """Measured (5 000 steps, key 1): Lorenz-63 no angle below 14.7 degrees; Henon 1.6 % of
    them below 5 degrees (1.6-2.2 % over keys 0-4), Roessler 11 %, Lorenz-96 n = 20 with
    the pilot's u = 8, 6 %. The old rule (minimum above 1 degree) called Roessler, whose
    minimum is about 1 degree, hyperbolic on some orbits."""
    result = hyperbolicity(build(), u, x0=x0, key=jax.random.key(1))
    assert result.hyperbolic is expected, result.describe()
    if expected:
        assert result.tangent_fraction == 0.0 and result.min_angle > 2 * TANGENCY_DEGREES
    else:
        assert result.tangent_fraction >= TANGENT_FRACTION
        assert result.median_angle > TANGENCY_DEGREES  # near a tangency at times, not always
