"""Orbit ensembles: vmapped together (the same answer in any device layout: test_parallel)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.estimators import Shadowing, linear_response
from chaosgrad.statistics import TimeAverage

KEY = jax.random.key(0)


def test_a_nan_orbit_is_named_by_its_step():
    blowup = cg.Map(lambda t, x, a: a * x**2, args=jnp.asarray(1.0), dim=2)
    starts = jnp.array([[0.1, 0.1], [10.0, 10.0]])
    with pytest.raises(FloatingPointError, match="step"):
        linear_response(
            blowup,
            TimeAverage(lambda x: x[0]),
            Shadowing(unstable_dim=1, segment_steps=10, segments=4, burn_in=0, orbits=2),
            x0=starts,
            key=jax.random.key(0),
        )


CASES = {
    "shadowing": (
        cg.Lorenz63(dt=1e-3, method="euler"),
        TimeAverage(lambda x: x[2]),
        Shadowing(unstable_dim=2, segment_steps=50, segments=20, burn_in=500, orbits=2),
        lambda s: s.rho,
    ),
    "far": (
        cg.ModifiedSolenoid(dim=5),
        TimeAverage(cg.ModifiedSolenoid.observable),
        cg.FastAdjointResponse(
            unstable_dim=4, segment_steps=10, segments=20, window=5, burn_in=100, orbits=2
        ),
        lambda s: s.gamma1,
    ),
}


@pytest.mark.parametrize(  # Shadowing's recompute path also runs in every resumable run
    "case", [pytest.param("shadowing", marks=pytest.mark.slow), "far"]
)
def test_recomputed_segments_give_the_stored_answer(case):
    """Orbits longer than the sweep strategy's ``store_bytes`` keep one state per segment
    (memory O(K + m)) and the sweep recomputes the rest: the same estimate as with every
    state kept."""
    system, statistic, estimator, wrt = CASES[case]
    kept = linear_response(system, statistic, estimator, wrt=wrt, key=KEY)
    none_kept = dataclasses.replace(estimator, sweep=cg.AutoSweep(store_bytes=0))
    recomputed = linear_response(system, statistic, none_kept, wrt=wrt, key=KEY)
    np.testing.assert_allclose(float(recomputed.grad), float(kept.grad), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(recomputed.value), np.asarray(kept.value), rtol=1e-12)
    np.testing.assert_allclose(float(recomputed.stderr), float(kept.stderr), rtol=1e-10)
