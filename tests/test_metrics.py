"""Attractor metrics on known answers."""

import jax.numpy as jnp
import numpy as np
import pytest

from chaosgrad.metrics import (
    power_spectrum_distance,
    prediction_error,
    relative_exponent_error,
    state_space_divergence,
    state_space_divergence_gmm,
)


def test_identical_data_give_zero():
    data = np.random.default_rng(0).standard_normal((5000, 3))
    assert state_space_divergence(data, data) == pytest.approx(0.0, abs=1e-12)
    assert power_spectrum_distance(data, data) == pytest.approx(0.0, abs=1e-7)
    assert state_space_divergence_gmm(data, data, sigma=0.5) == pytest.approx(0.0, abs=1e-12)


def test_state_space_divergence_of_two_gaussians_matches_the_closed_form():
    """KL(N(0,1) || N(mu, s^2)) = log s + (1 + mu^2) / (2 s^2) - 1/2 = 0.2052 for mu = 0.3,
    s = 1.3. Histogram accuracy: with 10^6 points and 30 bins over about 10 sd, the bin
    width (0.33) biases the KL by O(width^2 / 12 * curvature) ~ 1e-3 and the sampling error of
    the empty-ish tail bins is a few 1e-3; tolerance 0.01."""
    rng = np.random.default_rng(1)
    mu, s = 0.3, 1.3
    p = rng.standard_normal((1_000_000, 1))
    q = mu + s * rng.standard_normal((1_000_000, 1))
    exact = np.log(s) + (1 + mu**2) / (2 * s**2) - 0.5
    assert state_space_divergence(p, q, bins=30) == pytest.approx(exact, abs=0.01)


def test_power_spectrum_distance_of_two_tones_matches_the_analytic_value():
    """Tones at integer frequencies k1, k2 (periodic series: one FFT bin each) smoothed by a
    Gaussian of width sigma bins: sum sqrt(f g) = exp(-(k1 - k2)^2 / (8 sigma^2)), so
    H = sqrt(1 - exp(-D^2 / (8 sigma^2))); D = 20, sigma = 10: H = 0.6273."""
    n, sigma = 4096, 10.0
    t = np.arange(n)
    a = np.sin(2 * np.pi * 400 * t / n)[:, None]
    b = np.sin(2 * np.pi * 420 * t / n)[:, None]
    exact = np.sqrt(1 - np.exp(-(20**2) / (8 * sigma**2)))
    assert power_spectrum_distance(a, b, smoothing=sigma) == pytest.approx(exact, rel=1e-3)


def test_prediction_error_of_the_exact_step_is_zero_and_of_a_wrong_one_is_not():
    step = lambda x: 0.9 * x  # noqa: E731
    data = jnp.stack([0.9**k * jnp.ones(2) for k in range(30)])
    assert prediction_error(step, data, 10) == pytest.approx(0.0, abs=1e-24)
    assert prediction_error(lambda x: 0.8 * x, data, 1) > 0


def test_diverged_model_is_infinitely_far_and_bad_shapes_are_refused():
    data = np.random.default_rng(0).standard_normal((100, 3))
    model = data.copy()
    model[5, 1] = np.nan
    assert state_space_divergence(data, model) == np.inf
    assert power_spectrum_distance(data, model) == np.inf
    with pytest.raises(ValueError, match="3 dimensions but model has 2"):
        state_space_divergence(data, data[:, :2])
    with pytest.raises(ValueError, match="horizon"):
        prediction_error(lambda x: x, jnp.asarray(data), 100)
    with pytest.raises(ValueError, match="reference exponent is 0"):
        relative_exponent_error(1.0, 0.0)
    assert relative_exponent_error(0.8, 1.0) == pytest.approx(0.2)
