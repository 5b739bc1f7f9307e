"""A user's Flow integrated by a diffrax fixed-step solver, beside the built-in RK4 and Euler."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad._integrate import integrate_step

KEY = jax.random.key(0)


def lorenz(t, x, rho):
    return jnp.array([10.0 * (x[1] - x[0]), x[0] * (rho - x[2]) - x[1], x[0] * x[1] - 8 / 3 * x[2]])


def field(time, x):
    return lorenz(time, x, 28.0)


X = jnp.array([1.0, -2.0, 20.0])


def test_a_diffrax_euler_step_is_the_built_in_euler_step():
    """diffrax.Euler takes x + (t1 - t0) F(t0, x): the built-in step up to the rounding of
    (t + dt) - t."""
    t, dt = 0.35, 0.005
    ours = integrate_step(field, t, X, dt, "euler")
    theirs = integrate_step(field, t, X, dt, diffrax.Euler())
    np.testing.assert_allclose(theirs, ours, rtol=1e-13)


def test_a_diffrax_heun_step_is_heuns_method():
    t, dt = 0.0, 0.01
    k1 = field(t, X)
    k2 = field(t + dt, X + dt * k1)
    expected = X + dt / 2 * (k1 + k2)
    np.testing.assert_allclose(
        integrate_step(field, t, X, dt, diffrax.Heun()), expected, rtol=1e-14
    )


def test_a_fifth_order_solver_converges_at_fifth_order():
    """Tsit5 as a Flow's method: over half a time unit of Lorenz-63, halving dt divides its
    error (against RK4 at dt/64) by at least 2^4.5 (global order 5 or more), where RK4's
    falls by about 2^4."""

    def error(method, dt):
        steps = round(0.5 / dt)
        end = cg.simulate(cg.Flow(lorenz, dt=dt, args=28.0, method=method), X, steps=steps)[-1]
        return float(jnp.max(jnp.abs(end - reference)))

    reference = cg.simulate(cg.Flow(lorenz, dt=0.01 / 64, args=28.0), X, steps=3200)[-1]
    tsit5 = [error(diffrax.Tsit5(), dt) for dt in (0.01, 0.005)]
    rk4 = [error("rk4", dt) for dt in (0.01, 0.005)]
    assert np.log2(tsit5[0] / tsit5[1]) > 4.5  # measured 6.1 (not yet asymptotic)
    assert 3.5 < np.log2(rk4[0] / rk4[1]) < 4.5  # measured 4.06
    assert tsit5[1] < rk4[1] / 100  # measured 3.8e-9 against 5.1e-6


def test_shadowing_differentiates_a_flow_of_a_diffrax_solver():
    """The estimators differentiate through the solver's step: Shadowing's d<z>/drho on a
    Tsit5 flow equals the RK4 flow's on the same start, to the integrators' difference
    amplified along the orbit (1e-3 relative: both are about 1.0)."""
    estimator = cg.Shadowing(unstable_dim=2, segment_steps=40, segments=40, burn_in=200)
    statistic = cg.TimeAverage(lambda x: x[2])
    grads = [
        cg.linear_response(
            cg.Flow(lorenz, dt=0.005, args=28.0, method=method, dim=3),
            statistic,
            estimator,
            key=KEY,
        ).grad.args
        for method in ("rk4", diffrax.Tsit5())
    ]
    assert np.isfinite(grads[1])
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-3)


@pytest.mark.parametrize(
    "method, noise, words",
    [
        (diffrax.ReversibleHeun(), 0.0, "not a one-step explicit solver"),
        (diffrax.ImplicitEuler(), 0.0, "not a one-step explicit solver"),
        (diffrax.Heun(), 0.5, "Euler-Maruyama"),
        ("rk5", 0.0, "'rk4', 'euler' or a diffrax solver"),
    ],
)
def test_solvers_that_are_not_one_step_maps_are_refused(method, noise, words):
    with pytest.raises(ValueError, match=words):
        cg.Flow(lorenz, dt=0.005, args=28.0, method=method, noise=noise)
