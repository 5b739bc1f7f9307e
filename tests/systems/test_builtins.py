"""Built-in systems: equations, defaults and the facts their docstrings state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "cls",
    [
        cg.Lorenz63,
        cg.Lorenz96,
        cg.Henon,
        cg.Logistic,
        cg.Tent,
        cg.ModifiedSolenoid,
        cg.NoisyLorenz96,
        cg.TanhRNN,
        cg.DeepTanhNet,
        cg.NineNeuronNet,
    ],
)
def test_every_builtin_runs_with_defaults(cls):
    system = cls()
    steps = system.horizon or 200
    path = cg.simulate(system, steps=steps, key=KEY)
    assert path.shape == (steps + 1, system.dim)
    assert bool(jnp.all(jnp.isfinite(path)))


def test_lorenz63_vector_field():
    f = cg.Lorenz63().vector_field(0.0, jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(f, [10.0, 1 * (28 - 3) - 2, 2 - 8.0])


def test_lorenz96_vector_field_is_cyclic():
    x = jnp.arange(5.0)
    f = cg.Lorenz96(n=5, forcing=8.0).vector_field(0.0, x)
    expected = [(x[(i + 1) % 5] - x[i - 2]) * x[i - 1] - x[i] + 8 for i in range(5)]
    np.testing.assert_allclose(f, expected)


def test_noisy_lorenz96_noise_amplitude():
    system = cg.NoisyLorenz96(n=8)
    x = jnp.full(8, 0.5)
    assert system.stochastic and system.method == "euler"
    np.testing.assert_allclose(system.noise_scale(0.0, x), np.exp(-1.0) + 2.0)
    np.testing.assert_allclose(system.diffusion(0, x), (np.exp(-1.0) + 2.0) * np.sqrt(0.002))


def test_solenoid_angles_stay_in_range_and_observable():
    path = cg.simulate(cg.ModifiedSolenoid(dim=5), steps=500, key=KEY)
    assert float(path[1:, 1:].min()) >= 0 and float(path[1:, 1:].max()) < 2 * np.pi
    x = jnp.array([0.5, np.pi, np.pi + 1, np.pi, np.pi])
    assert float(cg.ModifiedSolenoid.observable(x)) == pytest.approx(0.125 + 0.005)


def test_nine_neuron_matrix_norms():
    J = cg.NineNeuronNet().J
    assert float(jnp.linalg.norm(J, 2)) == pytest.approx(5.2011, abs=1e-4)
    assert float(jnp.max(jnp.abs(jnp.linalg.eigvals(J)))) == pytest.approx(2.9543, abs=1e-4)


def test_tanh_rnn_weights_have_variance_g2_over_n():
    rnn = cg.TanhRNN(n=400, g=2.0, seed=1)
    assert float(jnp.var(rnn.J)) * 400 == pytest.approx(4.0, rel=0.02)
    rnn_c = cg.TanhRNN(n=10, continuous=True, dt=0.01)
    h = jnp.ones(10)
    np.testing.assert_allclose(rnn_c.vector_field(0, h), -h + rnn_c.J @ jnp.tanh(h), rtol=1e-12)
    assert rnn_c.time_step == 0.01 and cg.TanhRNN().time_step is None


@pytest.mark.parametrize(
    "init, variance", [("gaussian", 4.0), ("xavier", 1.0), ("he", 2.0), ("critical", 1.761)]
)
def test_deep_net_initialisations(init, variance):
    net = cg.DeepTanhNet(
        depth=20, width=64, init=init, sigma_w=2.0, sigma_b=0.05**0.5 if init == "critical" else 0.0
    )
    assert float(jnp.var(net.weights)) * 64 == pytest.approx(variance, rel=0.03)


def test_orthogonal_initialisation_is_orthogonal():
    net = cg.DeepTanhNet(depth=3, width=16, init="orthogonal", sigma_w=1.0)
    for w in net.weights:
        np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-12)


def test_tent_slope_two_collapse_is_why_the_default_is_1_99():
    assert float(cg.Tent().slope) == 1.99
    path = cg.simulate(cg.Tent(slope=2.0), jnp.array([0.3141592653589793]), steps=80)
    assert float(path[-1, 0]) == 0.0
