"""Sparse teacher forcing and measure matching (DySLIM) in fit_trajectory: each lowers its own
objective; the kernel, the MMD and the forcing interval against hand-computed values; clear
refusals of bad settings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad._trajectory_methods import as_method, push_forward
from chaosgrad.reconstruct import (
    STF,
    MeasureMatching,
    fit_trajectory,
    inverse_multiquadric_kernel,
    lyapunov_from_data,
    neural_vector_field,
    rollout_loss,
    squared_mmd,
)

KEY = jax.random.key(0)
LORENZ_LAMBDA_1 = 0.9056


@pytest.fixture(scope="module")
def lorenz_data():
    """The T2 data in short: Lorenz-63, RK4, dt = 0.01, 3000 steps after a burn-in."""
    return np.asarray(cg.simulate(cg.Lorenz63(dt=0.01), steps=3000, burn_in=500, key=KEY))


def _standardised(data):
    return jnp.asarray((data - data.mean(axis=0)) / data.std(axis=0))


def _train(data, method, window, iterations, model=None):
    model = model if model is not None else neural_vector_field(3, 0.01, key=jax.random.key(5))
    fit = fit_trajectory(
        data,
        model=model,
        dt=0.01,
        method=method,
        key=KEY,
        iterations=iterations,
        window=window,
        batch=8,
        learning_rate=1e-2,
    )
    assert fit.status == "ok"
    return model, fit


# --- Sparse teacher forcing -----------------------------------------------------------------


def test_stf_lowers_its_loss(lorenz_data):
    """The STF loss (tau = 10 in windows of 30) on 64 fixed training windows, before and
    after 60 iterations: measured 0.203 -> 0.047 (ratio 0.23; 0.61 after 30 iterations)."""
    model, fit = _train(lorenz_data, STF(tau=10), window=30, iterations=60)
    series = _standardised(lorenz_data)
    windows = jnp.stack([series[i : i + 31] for i in range(0, 2560, 40)])
    before = float(rollout_loss(model, windows, tau=10))
    after = float(rollout_loss(fit.system, windows, tau=10))
    assert after < 0.5 * before, (before, after)
    assert fit.history["tau"] == [10] and "lyapunov" not in fit.history


def test_stf_resets_bound_its_two_extremes():
    """tau = window forces only the start: the BPTT loss; tau = 1 forces every step: the
    one-step prediction error."""
    windows = jax.random.normal(KEY, (3, 13, 2))
    spiral = cg.Flow(lambda t, x, a: a @ x, dt=0.1, args=jnp.array([[0.1, -1.0], [1.0, 0.1]]))
    assert float(rollout_loss(spiral, windows, tau=12)) == float(rollout_loss(spiral, windows))
    one_step = jax.vmap(jax.vmap(lambda x: spiral.step(0, x, None)))(windows[:, :-1])
    expected = float(jnp.mean((one_step - windows[:, 1:]) ** 2))
    assert float(rollout_loss(spiral, windows, tau=1)) == pytest.approx(expected, rel=1e-12)


def test_stf_auto_tau_is_the_predictability_time_of_the_given_exponent():
    train = jnp.zeros((10, 3))
    tau, lyapunov = STF(lyapunov=LORENZ_LAMBDA_1).init(train, dt=0.01, window=100)
    assert tau == round(math.log(2) / (LORENZ_LAMBDA_1 * 0.01)) == 77
    assert lyapunov == LORENZ_LAMBDA_1


def test_lyapunov_from_data_is_close_on_lorenz_and_refuses_periodic_data():
    """Rosenstein's estimate on 2 x 10^4 Lorenz-63 points: measured 0.883 (truth 0.906)."""
    path = np.asarray(cg.simulate(cg.Lorenz63(dt=0.01), steps=20_000, burn_in=1000, key=KEY))
    assert lyapunov_from_data(path, 0.01) == pytest.approx(LORENZ_LAMBDA_1, rel=0.1)
    times = 0.05 * np.arange(4000)
    circle = np.stack([np.cos(times), np.sin(times)], axis=1)
    with pytest.raises(ValueError, match="could not be estimated"):
        lyapunov_from_data(circle, 0.05)


def test_stf_by_name_estimates_the_exponent_and_applies_the_rule(lorenz_data):
    """method="stf": tau = "auto" from the data's own lambda_1 (Rosenstein on the 2700
    training points: measured 1.14, so tau = 61), recorded with the tau it gives."""
    _, fit = _train(lorenz_data, "stf", window=100, iterations=1)
    (lyapunov,), (tau,) = fit.history["lyapunov"], fit.history["tau"]
    assert 0.6 * LORENZ_LAMBDA_1 < lyapunov < 1.4 * LORENZ_LAMBDA_1
    assert tau == round(math.log(2) / (lyapunov * 0.01))


# --- Measure matching -----------------------------------------------------------------------


def test_inverse_multiquadric_kernel_against_hand_values():
    x, y = jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0], [0.0, 0.0]])
    # |x - y|^2 = 25: (1 + 25/1)^(-1/2) + (1 + 25/25)^(-1/2); at distance 0 each scale gives 1
    kernel = inverse_multiquadric_kernel(x, y, bandwidths=(1.0, 5.0))
    assert kernel.shape == (1, 2)
    assert float(kernel[0, 0]) == pytest.approx(1 / math.sqrt(26) + 1 / math.sqrt(2), rel=1e-14)
    assert float(kernel[0, 1]) == 2.0
    assert float(inverse_multiquadric_kernel(x, x)[0, 0]) == 4.0  # four default scales


def test_squared_mmd_is_zero_for_one_sample_and_positive_for_different_gaussians():
    first, second, third = jax.random.split(KEY, 3)
    x = jax.random.normal(first, (200, 3))
    assert abs(float(squared_mmd(x, x))) < 1e-12
    same = float(squared_mmd(x, jax.random.normal(second, (200, 3))))
    shifted = float(squared_mmd(x, 2.0 + jax.random.normal(third, (200, 3))))
    # measured: 0.024 (the V-statistic's bias, ~ 2 (k(0) - E k) / n) and 1.17
    assert 0 < same < 0.05 and shifted > 0.5 and shifted > 20 * same


def test_measure_matching_lowers_its_objective(lorenz_data):
    """MSE on 64 fixed windows of 10 steps + weight MMD^2 of 256 fixed data samples pushed
    10 steps, before and after 100 iterations: measured 0.225 -> 0.103 (ratio 0.46; 0.85
    after 30 iterations, when the MSE term has barely moved)."""
    method = MeasureMatching(weight=1.0, lead=10, samples=128)
    model, fit = _train(lorenz_data, method, window=10, iterations=100)
    series = _standardised(lorenz_data)
    windows = jnp.stack([series[i : i + 11] for i in range(0, 2560, 40)])
    starts, targets = series[:2560:10], series[5:2560:10]

    def objective(system):
        mmd = squared_mmd(push_forward(system, starts, 10), targets)
        return float(rollout_loss(system, windows) + method.weight * mmd)

    before, after = objective(model), objective(fit.system)
    assert after < 0.7 * before, (before, after)
    assert len(fit.history["mmd2"]) == 100


def test_the_measure_term_pulls_a_contracting_model_back_to_the_data():
    """dx/dt = -a x with a = 2 squeezes the data's samples towards 0 over lead = 50 steps.
    In 20 iterations the MMD^2 term (weight 100) lowers a to 0.10 and MMD^2 from 0.53 to
    0.025 (measured); without it (weight 0, the MSE alone) a ends at 1.43, MMD^2 at 0.30."""
    data = np.asarray(cg.simulate(cg.Lorenz63(dt=0.01), steps=1500, burn_in=500, key=KEY))
    decay = cg.Flow(lambda t, x, a: -a * x, dt=0.01, args=jnp.asarray(2.0))

    def train(weight):
        return fit_trajectory(
            data,
            model=decay,
            dt=0.01,
            method=MeasureMatching(weight=weight, lead=50, samples=128),
            key=KEY,
            iterations=20,
            window=5,
            batch=4,
            learning_rate=0.1,
            clip=None,
        )

    matched, unmatched = train(100.0), train(0.0)
    mmd = matched.history["mmd2"]
    assert mmd[-1] < 0.2 * mmd[0], mmd
    assert float(matched.system.args) < 0.5 < 1.0 < float(unmatched.system.args)
    assert unmatched.history["mmd2"][-1] > 0.2


# --- Names and refusals ---------------------------------------------------------------------


def test_the_new_methods_have_names():
    assert as_method("stf") == STF() and as_method("measure_matching") == MeasureMatching()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: STF(tau=0), "tau must be at least 1"),
        (lambda: STF(tau="fast"), 'tau must be "auto" or a number of steps'),
        (lambda: STF(tau=5, lyapunov=0.9), 'lyapunov is used only with tau="auto"'),
        (lambda: STF(lyapunov=-0.9), "lyapunov must be positive"),
        (lambda: MeasureMatching(weight=-1.0), "weight must be >= 0"),
        (lambda: MeasureMatching(lead=0), "lead must be positive"),
        (lambda: MeasureMatching(samples=1), "samples must be at least 2"),
        (lambda: MeasureMatching(bandwidths=()), "bandwidths must name at least one"),
        (lambda: MeasureMatching(bandwidths=(0.5, 0.0)), "each of bandwidths must be positive"),
    ],
)
def test_bad_settings_are_refused_in_one_line(make, message):
    with pytest.raises(ValueError, match=message) as raised:
        make()
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (STF(tau=40), "tau = 40 steps \\(given\\) is longer than the window of 30 steps"),
        (STF(lyapunov=LORENZ_LAMBDA_1), "tau = 77 steps \\(round\\(ln 2"),
    ],
)
def test_tau_longer_than_the_window_is_refused(lorenz_data, method, message):
    with pytest.raises(ValueError, match=message) as raised:
        fit_trajectory(lorenz_data, dt=0.01, method=method, key=KEY, iterations=1, window=30)
    assert "\n" not in str(raised.value) and "window >=" in str(raised.value)
