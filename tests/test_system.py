"""System, Flow, Map and simulate: shapes, determinism, noise replay, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad._system import (
    check_state_shape,
    check_step,
    integrate_step,
)


def test_simulate_shape_and_start():
    path = cg.simulate(cg.Henon(), jnp.array([0.1, 0.0]), steps=10)
    assert path.shape == (11, 2)
    np.testing.assert_array_equal(path[0], [0.1, 0.0])
    np.testing.assert_allclose(path[1], [1 - 1.4 * 0.01, 0.03])


def test_same_key_same_noisy_trajectory_and_different_key_differs():
    system = cg.NineNeuronNet(noise=0.5)
    a = cg.simulate(system, steps=20, key=jax.random.key(3))
    b = cg.simulate(system, steps=20, key=jax.random.key(3))
    c = cg.simulate(system, steps=20, key=jax.random.key(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_noise_is_a_function_of_key_and_step():
    """Replaying step t by hand with system.noise(key, t) reproduces the trajectory."""
    system = cg.NineNeuronNet(noise=0.5)
    key = jax.random.key(7)
    x0 = jnp.zeros(9)
    path = cg.simulate(system, x0, steps=5, key=key)
    _, noise_key = jax.random.split(key)
    x = x0
    for t in range(5):
        x = system.step(t, x, system.noise(noise_key, t))
    np.testing.assert_allclose(path[-1], x, rtol=1e-12)


def test_burn_in_continues_the_same_orbit():
    system = cg.Henon()
    x0 = jnp.array([0.05, 0.05])
    full = cg.simulate(system, x0, steps=30)
    tail = cg.simulate(system, x0, steps=10, burn_in=20)
    np.testing.assert_allclose(tail, full[20:], rtol=1e-13)


def test_parameters_are_float64_fields_changed_by_tree_at():
    system = cg.Lorenz63()
    assert system.rho.dtype == jnp.float64
    moved = eqx.tree_at(lambda s: s.rho, system, jnp.asarray(35.0))
    assert float(moved.rho) == 35.0 and float(system.rho) == 28.0


def test_user_flow_matches_hand_written_rk4():
    flow = cg.Flow(lambda t, x, args: args * x, dt=0.1, args=jnp.asarray(-1.0))
    path = cg.simulate(flow, jnp.array([1.0]), steps=10)
    np.testing.assert_allclose(path[-1, 0], np.exp(-1.0), rtol=1e-6)


def test_rk4_is_fourth_order():
    field = lambda t, x: jnp.cos(t) * x  # noqa: E731  x(t) = exp(sin t)
    errors = []
    for dt in (0.1, 0.05):
        x = jnp.array([1.0])
        for n in range(int(round(1.0 / dt))):
            x = integrate_step(field, n * dt, x, dt, "rk4")
        errors.append(abs(float(x[0]) - np.exp(np.sin(1.0))))
    assert 12 < errors[0] / errors[1] < 20


def test_euler_maruyama_variance():
    """dx = sigma dB from 0: Var x(T) = sigma^2 T."""
    flow = cg.Flow(lambda t, x, a: jnp.zeros_like(x), dt=0.01, method="euler", noise=0.5)
    finals = cg.simulate(flow, jnp.zeros(4000), 100, key=jax.random.key(0))[-1]
    var, se = np.var(finals), np.var(finals) * np.sqrt(2 / 4000)
    assert abs(var - 0.25) < 4 * se


def test_user_map():
    doubling = cg.Map(lambda t, x, a: a * x, args=jnp.asarray(0.5), dim=1)
    path = cg.simulate(doubling, jnp.array([8.0]), steps=3)
    np.testing.assert_allclose(path[:, 0], [8, 4, 2, 1])


def test_float32_state_is_rejected():
    with pytest.raises(TypeError, match="float64"):
        cg.simulate(cg.Henon(), jnp.array([0.1, 0.1], dtype=jnp.float32), steps=3)


def test_float32_parameters_are_rejected():
    system = eqx.tree_at(lambda s: s.a, cg.Henon(), jnp.asarray(1.4, dtype=jnp.float32))
    with pytest.raises(TypeError, match="system parameters has dtype float32"):
        cg.simulate(system, jnp.array([0.1, 0.1]), steps=3)


def test_nan_reports_the_step():
    blowup = cg.Map(lambda t, x, a: x**2, dim=1)
    # x_n = 10^(2^n): x_8 = 1e256 is finite, x_9 = 1e512 is inf.
    with pytest.raises(FloatingPointError, match="at step 9"):
        cg.simulate(blowup, jnp.array([10.0]), steps=20)


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="steps must be positive"):
        cg.simulate(cg.Henon(), jnp.zeros(2), steps=0)
    with pytest.raises(ValueError, match="x0 has 3 components"):
        cg.simulate(cg.Henon(), jnp.zeros(3), steps=2)
    with pytest.raises(ValueError, match="key is required"):
        cg.simulate(cg.NineNeuronNet(), jnp.zeros(9), steps=2)
    with pytest.raises(ValueError, match="method"):
        cg.Lorenz63(method="rk45")
    with pytest.raises(ValueError, match="Euler-Maruyama"):
        cg.Flow(lambda t, x, a: x, dt=0.1, noise=0.1)
    with pytest.raises(ValueError, match="50 layers"):
        cg.simulate(cg.DeepTanhNet(depth=50, width=4), jnp.zeros(4), steps=51)


def test_a_wrong_step_is_refused_before_anything_runs():
    """The step check (an abstract evaluation) refuses a step that does not map a state to
    one of its shape, naming both, for every function and state shape it is given."""
    good = cg.Map(lambda t, x, a: a * x, args=jnp.asarray(0.5), dim=3)
    check_step(good, jnp.ones(3))
    with pytest.raises(ValueError, match=r"returned shape \(2,\) for a state of shape \(3,\)"):
        check_step(cg.Map(lambda t, x, a: a * x[:2], args=jnp.asarray(0.5), dim=3), jnp.ones(3))
    first_three = cg.Map(lambda t, x, a: a * x[:3], args=jnp.asarray(0.5))
    check_step(first_three, jnp.ones(3))
    with pytest.raises(ValueError, match=r"returned shape \(3,\) for a state of shape \(4,\)"):
        check_step(first_three, jnp.ones(4))
    with pytest.raises(ValueError, match=r"returned shape \(2,\)"):  # through bind, as
        cg.simulate(  # every public function does
            cg.Map(lambda t, x, a: a * x[:2], args=jnp.asarray(0.5), dim=3), jnp.ones(3), steps=2
        )


def test_the_start_checks_name_each_problem():
    """check_state_shape refuses another shape or a float32 state, each with its message,
    and passes a good start again after the refusals."""
    good = cg.Map(lambda t, x, a: a * x, args=jnp.asarray(0.5), dim=3)
    state = jax.ShapeDtypeStruct((3,), jnp.float64)
    check_state_shape(good, state)
    with pytest.raises(ValueError, match="x0 has 4 components"):
        check_state_shape(good, jax.ShapeDtypeStruct((4,), jnp.float64))
    with pytest.raises(TypeError, match="float32"):
        check_state_shape(good, jax.ShapeDtypeStruct((3,), jnp.float32))
    check_state_shape(good, state)  # still passes after the refusals
