"""Fast adjoint response: SC - UC on the modified solenoid (references.md section 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.estimators import FastAdjointResponse, Shadowing, linear_response
from chaosgrad.estimators.fast_adjoint_response import centred_window_sums
from chaosgrad.statistics import TimeAverage

KEY = jax.random.key(0)


def tied_solenoid(gamma=0.1, dim=5):
    """The modified solenoid with gamma1 = gamma2 = gamma (a user-defined Map), so the
    derivative along gamma1 = gamma2 is one number with its own standard error."""

    def step(t, x, g):
        x1, angles = x[0], x[1:]
        x1_next = 0.05 * x1 + 0.1 * jnp.sum(jnp.cos(5 * angles)) + g
        angles_next = jnp.mod(2 * angles + g * (1 + x1) * jnp.sin(2 * angles), 2 * jnp.pi)
        return jnp.concatenate([x1_next[None], angles_next])

    return cg.Map(step, args=jnp.asarray(gamma), dim=dim)


def test_centred_window_sums():
    """psi from an (N, k) array of Phi values (here k = 1)."""
    phis = jnp.arange(12.0) ** 2  # Phi at n = -2 .. 9; window 2; count 6 (mean over n=0..5)
    mean = float(jnp.mean(phis[2:8]))
    psi = centred_window_sums(phis[:, None], 2, 6)[:, 0]
    expected = [sum(float(phis[n + m + 2]) - mean for m in range(-2, 3)) for n in range(1, 7)]
    np.testing.assert_allclose(psi, expected)


def test_solenoid_reference():
    """M=5, u=4, gamma=0.1: FAR 0.0625 +- 0.002 (finite differences 0.0627 +- 0.0001);
    SC ~ 0.110 and UC ~ 0.048, each compared within 3 SE + 0.005 model error."""
    result = linear_response(
        tied_solenoid(),
        TimeAverage(cg.ModifiedSolenoid.observable),
        FastAdjointResponse(
            unstable_dim=4, segment_steps=20, segments=2000, window=10, burn_in=1000
        ),
        key=KEY,
    )
    grad, se = float(result.grad.args), float(result.stderr.args)
    assert abs(grad - 0.0625) <= 0.002 + 3 * se
    info = result.info
    sc, uc = float(info.shadowing_contribution.args), float(info.unstable_contribution.args)
    assert abs(sc - 0.110) <= 0.005 + 3 * float(info.shadowing_contribution_stderr.args)
    assert abs(uc - 0.048) <= 0.005 + 3 * float(info.unstable_contribution_stderr.args)
    assert grad == pytest.approx(sc - uc, abs=1e-12)
    assert result.value == pytest.approx(0.0695, abs=0.002)
    np.testing.assert_allclose(info.lyapunov_exponents, np.log(2), atol=0.01)


def test_shadowing_part_equals_the_shadowing_estimator():
    """SC inside FAR is the same computation as Shadowing on the same orbit."""
    system, phi = tied_solenoid(), TimeAverage(cg.ModifiedSolenoid.observable)
    far = linear_response(
        system,
        phi,
        FastAdjointResponse(unstable_dim=4, segment_steps=20, segments=50, window=0, burn_in=500),
        key=KEY,
    )
    shadow = linear_response(
        system, phi, Shadowing(unstable_dim=4, segment_steps=20, segments=50, burn_in=500), key=KEY
    )
    assert float(far.info.shadowing_contribution.args) == pytest.approx(
        float(shadow.grad.args), rel=1e-10
    )


def test_builtin_solenoid_gives_both_partials():
    result = linear_response(
        cg.ModifiedSolenoid(),
        TimeAverage(cg.ModifiedSolenoid.observable),
        FastAdjointResponse(unstable_dim=4, segment_steps=20, segments=400, burn_in=500),
        key=KEY,
    )
    total = float(result.grad.gamma1 + result.grad.gamma2)
    assert abs(total - 0.0625) < 0.01
    assert result.info.seconds > 0


def test_errors():
    with pytest.raises(ValueError, match="for maps"):
        linear_response(
            cg.Lorenz63(),
            TimeAverage(lambda x: x[2]),
            FastAdjointResponse(unstable_dim=2, segment_steps=10, segments=4, burn_in=10_000),
            key=KEY,
        )
    with pytest.raises(ValueError, match="unstable_dim=5 must be smaller"):
        linear_response(
            cg.ModifiedSolenoid(),
            TimeAverage(cg.ModifiedSolenoid.observable),
            FastAdjointResponse(unstable_dim=5, segment_steps=10, segments=4, burn_in=10_000),
            key=KEY,
        )
    with pytest.raises(ValueError, match="window"):
        FastAdjointResponse(unstable_dim=1, segment_steps=10, segments=4, window=-1)
    with pytest.raises(ValueError, match="supports TimeAverage; got WindowAverage"):
        linear_response(
            cg.ModifiedSolenoid(),
            cg.WindowAverage(cg.ModifiedSolenoid.observable, 40),
            FastAdjointResponse(unstable_dim=4, segment_steps=10),
            key=KEY,
        )


def test_unstable_dim_zero_on_a_chaotic_map_is_named():
    result = linear_response(
        cg.Henon(),
        TimeAverage(lambda x: x[0]),
        FastAdjointResponse(unstable_dim=0, segment_steps=20, segments=100, orbits=2),
        key=KEY,
    )
    assert "exponent 1 is positive" in result.info.warning
    assert result.info.next_exponent == pytest.approx(0.42, abs=0.05)
    assert result.info.stderr_method == "spread of 2 independent orbits"
