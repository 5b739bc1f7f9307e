"""Lyapunov spectra against references.md section 1 (long versions marked slow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import kaplan_yorke_dimension, lyapunov_spectrum
from chaosgrad.lyapunov.spectrum import auto_renorm_every

KEY = jax.random.key(0)


def within(value, reference, stderr, tolerance, sigmas=3.0):
    """|value - reference| <= tolerance (model error) + sigmas * stderr."""
    return abs(value - reference) <= tolerance + sigmas * stderr


def test_lorenz63_reference_row():
    """0.9057, 0, -14.5724 per unit time, +-0.01 at T = 1e4; sum -13.6667 to 1e-3; D_KY 2.0622."""
    result = lyapunov_spectrum(cg.Lorenz63(), steps=2_000_000, burn_in=20_000, key=KEY)
    for value, reference, se in zip(
        result.exponents, (0.9057, 0.0, -14.5724), result.stderr, strict=True
    ):
        assert within(value, reference, se, 0.01, sigmas=0)
    assert result.exponents.sum() == pytest.approx(-(10 + 1 + 8 / 3), abs=1e-3)
    assert result.kaplan_yorke_dimension == pytest.approx(2.0622, abs=0.002)
    assert result.time_step == 0.005
    np.testing.assert_allclose(result.exponents_per_time, result.exponents)


def test_henon_reference_row():
    """0.41922, -1.62319 (+-1e-3); sum = ln 0.3 to 1e-10; D_KY 1.25827."""
    result = lyapunov_spectrum(cg.Henon(), steps=1_000_000, burn_in=1_000, key=KEY)
    np.testing.assert_allclose(result.exponents, [0.41922, -1.62319], atol=1e-3)
    assert result.exponents.sum() == pytest.approx(np.log(0.3), abs=1e-10)
    assert result.kaplan_yorke_dimension == pytest.approx(1.25827, abs=1e-3)
    assert result.time_step is None


def test_lorenz96_fast_version():
    """Short run (T=200): sum = -40, lambda_14 (the neutral one) = 0 within 3 SE, 12 clearly
    positive, lambda_1 and lambda_40 within 3 SE + model error. (lambda_13 is only ~0.03, so
    telling it from zero needs the long run of the slow test.)"""
    result = lyapunov_spectrum(cg.Lorenz96(), steps=20_000, burn_in=2_000, key=KEY)
    assert result.exponents.sum() == pytest.approx(-40.0, abs=1e-3)
    assert within(result.exponents[13], 0.0, result.stderr[13], 0.0)
    assert np.all(result.exponents[:12] > 3 * result.stderr[:12])
    assert result.exponents[14] < 0
    assert within(result.exponents[0], 1.68, result.stderr[0], 0.03)
    assert within(result.exponents[-1], -4.89, result.stderr[-1], 0.05)


@pytest.mark.slow
def test_lorenz96_reference_row():
    """lambda_1 = 1.68 +- 0.03, lambda_40 = -4.89, D_KY = 27.09 +- 0.2 (T = 5000)."""
    result = lyapunov_spectrum(cg.Lorenz96(), steps=500_000, burn_in=10_000, key=KEY)
    assert abs(result.exponents[0] - 1.68) <= 0.03
    assert result.exponents[1] == pytest.approx(1.49, abs=0.05)
    assert abs(result.exponents[-1] + 4.89) <= 0.05
    assert abs(result.kaplan_yorke_dimension - 27.09) <= 0.2
    assert int(np.sum(result.exponents > 0.01)) == 13
    assert abs(result.exponents[13]) < 0.01


def test_logistic_r4_is_ln2():
    result = lyapunov_spectrum(cg.Logistic(), steps=1_000_000, burn_in=100, key=KEY)
    assert result.exponents[0] == pytest.approx(np.log(2), abs=1e-3)


def test_tent_exponent_is_ln_slope():
    result = lyapunov_spectrum(cg.Tent(slope=1.9), steps=10_000, burn_in=100, key=KEY)
    assert result.exponents[0] == pytest.approx(np.log(1.9), abs=1e-12)


def test_linear_map_exact():
    """x' = A x: exponents are log |eig A| to 1e-8 (from x0 = 0, so the state stays finite)."""
    a = jnp.array([[1.5, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 0.25]])
    linear = cg.Map(lambda t, x, m: m @ x, args=a, dim=3)
    result = lyapunov_spectrum(linear, x0=jnp.zeros(3), steps=20_000, burn_in=2_000, key=KEY)
    np.testing.assert_allclose(result.exponents, np.log([1.5, 0.8, 0.25]), atol=1e-8)


def test_linear_ode_exact_user_defined_flow():
    """A user-written vector field dx/dt = A x: exponents are the eigenvalues (per unit time).

    The RK4 map's exponent is log|R(dt*mu)|/dt with R the RK4 stability polynomial; at
    dt = 0.01 it equals mu to ~1e-13 for these eigenvalues. (A complex pair would be exact
    only in its sum: the split between the two fluctuates by O(1/T).)
    """
    a = jnp.array([[0.3, 1.0, 0.0], [0.0, -0.2, 0.5], [0.0, 0.0, -1.0]])
    flow = cg.Flow(lambda t, x, m: m @ x, dt=0.01, args=a, dim=3)
    result = lyapunov_spectrum(
        flow, x0=jnp.zeros(3), steps=20_000, burn_in=10_000, renorm_every=10, key=KEY
    )
    np.testing.assert_allclose(result.exponents, [0.3, -0.2, -1.0], atol=1e-8)


def test_discrete_tanh_rnn_fast_version():
    """n = 200, g = 2: lambda_1 near mean field 0.1547 (finite-n bias ~ 1/n, 10% allowed)."""
    result = lyapunov_spectrum(cg.TanhRNN(n=200, g=2.0), 5, steps=5_000, burn_in=1_000, key=KEY)
    assert result.exponents[0] == pytest.approx(0.1547, rel=0.10)
    assert result.stderr[0] < 0.005


@pytest.mark.slow
def test_discrete_tanh_rnn_reference_row():
    """n = 1000, g = 2: lambda_1 = 0.1547 +- 3% (a published simulation gave 0.1536)."""
    rnn = cg.TanhRNN(n=1000, g=2.0, seed=0)
    result = lyapunov_spectrum(rnn, 50, steps=10_000, burn_in=2_000, key=KEY)
    assert result.exponents[0] == pytest.approx(0.1547, rel=0.03)


def test_noisy_system_spectrum_runs_and_is_reproducible():
    system = cg.NineNeuronNet(noise=0.5)
    a = lyapunov_spectrum(system, 3, steps=2_000, burn_in=200, key=KEY)
    b = lyapunov_spectrum(system, 3, steps=2_000, burn_in=200, key=KEY)
    np.testing.assert_array_equal(a.exponents, b.exponents)
    assert np.all(np.isfinite(a.stderr))


def test_same_key_identical_results():
    a = lyapunov_spectrum(cg.Lorenz63(), steps=5_000, burn_in=100, key=jax.random.key(5))
    b = lyapunov_spectrum(cg.Lorenz63(), steps=5_000, burn_in=100, key=jax.random.key(5))
    np.testing.assert_array_equal(a.exponents, b.exponents)
    np.testing.assert_array_equal(a.stderr, b.stderr)


def test_renorm_every_agrees():
    a = lyapunov_spectrum(cg.Henon(), steps=200_000, burn_in=1_000, renorm_every=1, key=KEY)
    b = lyapunov_spectrum(cg.Henon(), steps=200_000, burn_in=1_000, renorm_every=5, key=KEY)
    np.testing.assert_allclose(a.exponents, b.exponents, atol=3e-3)


def test_auto_renorm_every_is_a_qr_every_step_to_rounding():
    """The default, renorm_every="auto": the burn-in renormalises every step, its exponents
    choose m (Lorenz-63, dt = 0.005: (0.91 + 14.58) * 0.005 per step, so m = 50 <= 89, a
    divisor of a block's 6250 steps), and the exponents and their errors are those of a
    QR every step from the same burn-in to rounding (stated model error 1e-11 on the
    exponents, the QR's rounding over 2e5 steps; 1e-8 relative on the errors)."""
    every_step = lyapunov_spectrum(
        cg.Lorenz63(), steps=200_000, burn_in=2_000, renorm_every=1, key=KEY
    )
    auto = lyapunov_spectrum(cg.Lorenz63(), steps=200_000, burn_in=2_000, key=KEY)
    assert (every_step.renorm_every, auto.renorm_every) == (1, 50)
    assert auto.steps == 200_000
    np.testing.assert_allclose(auto.exponents, every_step.exponents, rtol=0, atol=1e-11)
    np.testing.assert_allclose(auto.stderr, every_step.stderr, rtol=1e-8)
    no_burn_in = lyapunov_spectrum(cg.Henon(), steps=1_000, burn_in=0, key=KEY)
    assert no_burn_in.renorm_every == 1  # nothing measured: a QR every step


def test_auto_renorm_every_rule():
    """m * max(spread, |lambda_i|) <= log(1e3), m <= 100, m divides a block's steps."""
    lorenz = np.array([0.9108, 0.0, -14.5775]) * 0.005
    assert auto_renorm_every(lorenz, 1_000_000) == 80  # bound 89
    assert auto_renorm_every(lorenz, 1_000_000, 32) == 50  # blocks of 31 250 steps
    assert auto_renorm_every(lorenz, 1_000_003, 32) == 1  # a prime number of steps
    assert auto_renorm_every(np.array([np.log(2), np.log(0.05)]), 10_000) == 1  # solenoid-like
    assert auto_renorm_every(np.array([0.0045]), 1_000_000) == 100  # one slow exponent
    assert auto_renorm_every(np.zeros(2), 10_000) == 100
    assert auto_renorm_every(np.array([0.5, -np.inf]), 10_000) == 1  # an annihilated direction
    assert auto_renorm_every(np.array([-np.inf]), 10_000) == 1
    with pytest.raises(ValueError, match='give a positive int or "auto"'):
        lyapunov_spectrum(cg.Henon(), steps=10, renorm_every="often", key=KEY)


def test_kaplan_yorke_definition():
    assert kaplan_yorke_dimension([0.9057, 0.0, -14.5724]) == pytest.approx(2 + 0.9057 / 14.5724)
    assert kaplan_yorke_dimension([-0.1, -0.2]) == 0.0
    assert kaplan_yorke_dimension([0.5, 0.1]) == 2.0


def test_errors():
    with pytest.raises(ValueError, match="k=4 exceeds the dimension 3"):
        lyapunov_spectrum(cg.Lorenz63(), 4, steps=10, key=KEY)
    with pytest.raises(ValueError, match="steps must be positive"):
        lyapunov_spectrum(cg.Lorenz63(), steps=-5, key=KEY)
    with pytest.raises(ValueError, match="key is required"):
        lyapunov_spectrum(cg.Lorenz63(), steps=10)
    with pytest.raises(TypeError, match="float64"):
        lyapunov_spectrum(cg.Henon(), x0=jnp.zeros(2, dtype=jnp.float32), steps=10, key=KEY)
    with pytest.raises(ValueError, match="layers"):
        lyapunov_spectrum(cg.DeepTanhNet(depth=10, width=4), steps=10, burn_in=5, key=KEY)


def test_nan_orbit_reports_step():
    blowup = cg.Map(lambda t, x, a: x**2, dim=1)
    with pytest.raises(FloatingPointError, match="step"):
        lyapunov_spectrum(blowup, x0=jnp.array([10.0]), steps=100, burn_in=0, key=KEY)
