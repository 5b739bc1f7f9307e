"""Orbit ensembles: vmapped together, sharded over devices, the same answer in any layout."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.estimators import Shadowing, linear_response
from chaosgrad.estimators._ensemble import orbit_sharding
from chaosgrad.statistics import TimeAverage

KEY = jax.random.key(0)

SCRIPT = """
import json, jax
import chaosgrad as cg
result = cg.linear_response(
    cg.Henon(), cg.TimeAverage(lambda x: x[0]),
    cg.Shadowing(unstable_dim=1, segment_steps=10, segments=50, burn_in=100, orbits=4),
    wrt=lambda s: (s.a, s.b), key=jax.random.key(3))
print(json.dumps({"devices": len(jax.devices()),
                  "grad": [float(g) for g in result.grad],
                  "stderr": [float(s) for s in result.stderr]}))
"""


def _run(devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_estimate_does_not_depend_on_the_device_layout():
    """4 orbits on 1 device and sharded 2 + 2 over 2 devices: equal to 1e-12 relative."""
    one, two = _run(1), _run(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    np.testing.assert_allclose(two["grad"], one["grad"], rtol=1e-12)
    np.testing.assert_allclose(two["stderr"], one["stderr"], rtol=1e-10)


def test_sharding_needs_a_multiple_of_the_devices():
    devices = len(jax.devices())
    assert orbit_sharding(1) is None
    if devices == 1:
        assert orbit_sharding(8) is None


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


def test_recomputed_segments_give_the_stored_answer(monkeypatch):
    """Orbits longer than STORE_LIMIT keep one state per segment (memory O(K + m)) and the
    sweep recomputes the rest: the same estimate as with every state kept."""
    from chaosgrad.estimators import _ensemble

    statistic = TimeAverage(lambda x: x[2])
    estimator = Shadowing(unstable_dim=2, segment_steps=50, segments=20, burn_in=500, orbits=2)
    system = cg.Lorenz63(dt=1e-3, method="euler")
    kept = linear_response(system, statistic, estimator, wrt=lambda s: s.rho, key=KEY)
    monkeypatch.setattr(_ensemble, "STORE_LIMIT", 0)
    recomputed = linear_response(system, statistic, estimator, wrt=lambda s: s.rho, key=KEY)
    np.testing.assert_allclose(float(recomputed.grad), float(kept.grad), rtol=1e-12)
    np.testing.assert_allclose(float(recomputed.value), float(kept.value), rtol=1e-12)
    np.testing.assert_allclose(float(recomputed.stderr), float(kept.stderr), rtol=1e-10)
