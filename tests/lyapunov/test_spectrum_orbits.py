"""lyapunov_spectrum(orbits=R): R independent orbits in one vmapped computation."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import kaplan_yorke_dimension, lyapunov_spectrum

KEY = jax.random.key(0)
LORENZ = {"steps": 1_000, "burn_in": 200, "blocks": 4}

SCRIPT = """
import json, jax
import chaosgrad as cg
result = cg.lyapunov_spectrum(cg.Lorenz63(), steps=1000, burn_in=200, blocks=4, orbits=4,
                              key=jax.random.key(2))
print(json.dumps({"devices": len(jax.devices()),
                  "exponents": result.exponents.tolist(), "stderr": result.stderr.tolist(),
                  "per_orbit": result.per_orbit.tolist(),
                  "final_state": result.final_state.tolist()}))
"""


@pytest.fixture(scope="module")
def ensemble():
    return lyapunov_spectrum(cg.Lorenz63(), key=KEY, orbits=3, **LORENZ)


def test_orbit_r_is_the_single_run_with_key_fold_in_r(ensemble):
    assert ensemble.orbits == 3
    assert ensemble.per_orbit.shape == (3, 3)
    assert ensemble.final_state.shape == (3, 3)
    for r in range(3):
        single = lyapunov_spectrum(cg.Lorenz63(), key=jax.random.fold_in(KEY, r), **LORENZ)
        np.testing.assert_allclose(ensemble.per_orbit[r], single.exponents, rtol=1e-12)
        np.testing.assert_allclose(ensemble.final_state[r], single.final_state, rtol=1e-12)


def test_stderr_is_the_spread_of_the_orbits(ensemble):
    per_orbit = ensemble.per_orbit
    np.testing.assert_allclose(ensemble.exponents, per_orbit.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(
        ensemble.stderr, per_orbit.std(axis=0, ddof=1) / np.sqrt(3), rtol=1e-12
    )
    np.testing.assert_allclose(ensemble.exponents_per_step, ensemble.exponents * 0.005, rtol=1e-14)
    assert ensemble.kaplan_yorke_dimension == kaplan_yorke_dimension(ensemble.exponents_per_step)
    assert ensemble.steps == 1_000


def test_given_starts_one_per_orbit():
    starts = jnp.array([[0.1, 0.0], [0.0, 0.1]])
    result = lyapunov_spectrum(cg.Henon(), x0=starts, steps=500, burn_in=50, orbits=2, key=KEY)
    for r in range(2):
        single = lyapunov_spectrum(
            cg.Henon(), x0=starts[r], steps=500, burn_in=50, key=jax.random.fold_in(KEY, r)
        )
        np.testing.assert_allclose(result.per_orbit[r], single.exponents, rtol=1e-12)


def test_bad_starts_and_orbits_are_refused():
    with pytest.raises(ValueError, match=r"x0 has shape \(2,\) but orbits=3 .* \(3, 2\)"):
        lyapunov_spectrum(cg.Henon(), x0=jnp.zeros(2), steps=10, orbits=3, key=KEY)
    with pytest.raises(ValueError, match=r"x0 has shape \(2, 2\) but orbits=3"):
        lyapunov_spectrum(cg.Henon(), x0=jnp.zeros((2, 2)), steps=10, orbits=3, key=KEY)
    with pytest.raises(ValueError, match="orbits must be positive"):
        lyapunov_spectrum(cg.Henon(), steps=10, orbits=0, key=KEY)
    with pytest.raises(TypeError, match="orbits must be an integer"):
        lyapunov_spectrum(cg.Henon(), steps=10, orbits=2.0, key=KEY)


def test_a_nan_orbit_is_named_with_its_step():
    blowup = cg.Map(lambda t, x, a: x**2, dim=1)
    starts = jnp.array([[0.5], [10.0], [20.0]])
    with pytest.raises(FloatingPointError) as single:
        lyapunov_spectrum(blowup, x0=starts[1], steps=100, burn_in=0, key=KEY)
    assert "step 9" in str(single.value)  # 10 ** (2 ** 9) overflows
    with pytest.raises(FloatingPointError, match="orbit 1 of 3") as ensemble:
        lyapunov_spectrum(blowup, x0=starts, steps=100, burn_in=0, orbits=3, key=KEY)
    assert str(single.value) in str(ensemble.value)


def _run(devices: int) -> dict:
    flags = [os.environ.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={devices}"]
    env = dict(os.environ, XLA_FLAGS=" ".join(flags).strip())
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the default suite has it in tests/test_parallel.py
def test_the_ensemble_does_not_depend_on_the_device_layout():
    """4 orbits on 1 device and 2 + 2 on 2 devices: equal to 1e-12 relative."""
    one, two = _run(1), _run(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    for name in ("exponents", "stderr", "per_orbit", "final_state"):
        np.testing.assert_allclose(two[name], one[name], rtol=1e-12, err_msg=name)
