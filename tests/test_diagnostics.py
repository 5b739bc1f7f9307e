"""Gradient quality (chaosgrad.diagnostics): Hill's tail index, the cosine and its bootstrap
error bar against a reference, refusals of bad input, and draws from an estimator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.diagnostics import (
    GradientQuality,
    default_tail_count,
    gradient_draws,
    gradient_quality,
    hill_index,
)


def pareto(alpha: float, n: int, seed: int) -> np.ndarray:
    """Pareto samples with P(X > x) = x^-alpha for x >= 1 (inverse transform)."""
    return np.random.default_rng(seed).uniform(size=n) ** (-1.0 / alpha)


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_hill_recovers_the_pareto_tail_index(alpha):
    # n = 20 000, k = 2000: the relative standard error is 1/sqrt(k) = 2.2 %, so 10 % is 4.5 SE
    samples = pareto(alpha, 20_000, seed=1)
    assert hill_index(samples, k=2000) == pytest.approx(alpha, rel=0.10)


def test_hill_default_k_is_the_square_root_rule():
    samples = pareto(2.5, 20_000, seed=2)
    assert default_tail_count(20_000) == 141
    assert default_tail_count(20) == 10
    assert hill_index(samples) == hill_index(samples, k=141)
    # the default k = 141 has a relative standard error of 8.4 %: within 3 of them
    assert hill_index(samples) == pytest.approx(2.5, rel=0.25)


def test_hill_of_equal_samples_is_infinite():
    assert hill_index(np.full(30, 2.0)) == math.inf


@pytest.mark.parametrize(
    "samples, k, message",
    [
        (np.ones(19), None, "at least 20 samples"),
        (np.r_[np.ones(29), np.nan], None, "finite"),
        (np.r_[np.ones(29), 0.0], None, "positive"),
        (np.ones((5, 5)), None, "1-D"),
        (np.ones(30), 0, "between 1 and n - 1 = 29"),
        (np.ones(30), 30, "between 1 and n - 1 = 29"),
    ],
)
def test_hill_refuses_bad_input(samples, k, message):
    with pytest.raises(ValueError, match=message):
        hill_index(samples, k=k)


def test_reference_against_itself_gives_cosine_one():
    reference = {"w": jnp.arange(1.0, 13.0).reshape(3, 4), "b": jnp.array([-2.0, 0.5])}
    draws = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf] * 5), reference)
    quality = gradient_quality(draws, reference)
    assert isinstance(quality, GradientQuality)
    assert abs(quality.cosine - 1.0) < 1e-12
    assert quality.relative_error < 1e-12
    assert quality.cosine_stderr < 1e-12
    assert quality.sign_agreement == quality.draw_sign_agreement == 1.0
    assert quality.snr == math.inf
    assert (quality.n, quality.dimension) == (5, 14)
    assert quality.tail_index is None and quality.heavy_tailed is None  # n < 20


def test_random_directions_give_cosine_near_zero():
    # independent directions in p = 400 dimensions: the cosine has sd 1/sqrt(p) = 0.05
    p = 400
    rng = np.random.default_rng(3)
    quality = gradient_quality(rng.normal(size=(10, p)), rng.normal(size=p))
    assert abs(quality.cosine) < 3 / math.sqrt(p)
    assert abs(quality.sign_agreement - 0.5) < 3 * 0.5 / math.sqrt(p)
    assert quality.snr < 3 and "SNR" in quality.note


@pytest.mark.parametrize(
    "bias, low, high",
    [
        (0.5, 1 / 1.5, 1.5),  # a biased mean (cosine about 0.9): calibrated
        (0.0, 1.0, 3.0),  # unbiased, the cosine short of 1 by noise only: overstated
    ],
)
def test_bootstrap_stderr_against_the_spread_over_repeated_draw_sets(bias, low, high):
    # 30 independent sets of n = 40 draws in p = 50, mean = reference + bias (a unit
    # reference, the bias perpendicular to it), noise of norm 1 per draw. The mean bootstrap
    # SE over the sets against the spread of their 30 cosines (itself uncertain by about
    # 13 %). Near cosine 1 the cosine is quadratic in the noise, and resampling adds a
    # cross term: the bootstrap overstates the SE there (2.0x here).
    p, n, sets = 50, 40, 30
    rng = np.random.default_rng(4)
    reference = rng.normal(size=p)
    reference /= np.linalg.norm(reference)
    across = rng.normal(size=p)
    across -= (across @ reference) * reference
    mean = reference + bias * across / np.linalg.norm(across)
    cosines, errors = [], []
    for index in range(sets):
        draws = mean + rng.normal(size=(n, p)) / math.sqrt(p)
        quality = gradient_quality(draws, reference, key=jax.random.key(index))
        cosines.append(quality.cosine)
        errors.append(quality.cosine_stderr)
    ratio = np.mean(errors) / np.std(cosines, ddof=1)
    assert low < ratio < high, ratio


def test_bootstrap_in_chunks_for_many_components():
    # p = 8192: 512 resamples at a time, so 1000 resamples take two chunks
    rng = np.random.default_rng(9)
    reference = rng.normal(size=8192)
    draws = reference + rng.normal(size=(20, 8192))
    quality = gradient_quality(draws, reference, bootstrap=1000)
    assert 0 < quality.cosine_stderr < 0.05 and 0.9 < quality.cosine < 1


def test_heavy_tailed_draws_are_flagged():
    # norms with a Pareto tail of index 1.2: infinite variance
    rng = np.random.default_rng(5)
    directions = rng.normal(size=(400, 3))
    draws = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    draws = draws * pareto(1.2, 400, seed=6)[:, None]
    quality = gradient_quality(draws, np.ones(3))
    assert quality.heavy_tailed and quality.tail_index < 2
    assert "infinite" in quality.note


def test_reference_noise_gives_the_cosine_ceiling():
    reference = np.array([3.0, 4.0])
    draws = reference + np.array([[0.1, -0.1], [-0.1, 0.1], [0.05, 0.0]])
    quality = gradient_quality(draws, reference, reference_stderr=np.array([0.9, 1.2]))
    assert quality.reference_noise == pytest.approx(0.3)
    assert quality.cosine_ceiling == pytest.approx(math.sqrt(0.91))
    assert "caps the cosine at about 0.954" in quality.note
    assert quality.as_dict()["cosine_ceiling"] == quality.cosine_ceiling
    assert "cosine ceiling 0.954" in str(quality)
    noisy = gradient_quality(draws, reference, reference_stderr=np.array([1.5, 2.0]))
    assert "too noisy to referee (relative noise 0.5" in noisy.note


def test_estimates_as_draws_and_reference():
    def estimate(grad, stderr):
        return cg.Estimate(value=0.0, grad=grad, stderr=stderr, info=None)

    draws = [estimate(jnp.array([1.0, 2.0 + 0.1 * i]), jnp.array([0.1, 0.1])) for i in range(4)]
    reference = estimate(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.2]))
    quality = gradient_quality(draws, reference)
    assert quality.n == 4 and quality.cosine > 0.99
    assert quality.reference_noise == pytest.approx(0.2 / math.sqrt(5))


@pytest.mark.parametrize(
    "draws, reference, message",
    [
        ({"a": np.ones((3, 2))}, {"b": np.ones(2)}, "different structures"),
        (np.ones((3, 2)), np.ones(3), r"expected \(n, \*reference shape\) = \(3, 3\)"),
        (np.ones((1, 2)), np.ones(2), "at least 2 draws"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), np.ones(2), "draws hold 1 NaN/inf"),
        (np.ones((3, 2)), np.array([1.0, np.inf]), "reference holds 1 NaN/inf"),
        (np.ones((3, 2)), np.zeros(2), "reference is zero"),
        (np.float64(1.0), np.float64(1.0), "leading axis n"),
    ],
)
def test_gradient_quality_refuses_bad_input(draws, reference, message):
    with pytest.raises(ValueError, match=message):
        gradient_quality(draws, reference)


def test_gradient_quality_refuses_bad_settings():
    with pytest.raises(ValueError, match="bootstrap must be at least 2"):
        gradient_quality(np.ones((3, 2)), np.ones(2), bootstrap=1)
    with pytest.raises(ValueError, match="reference_stderr has 3 components"):
        gradient_quality(np.ones((3, 2)), np.ones(2), reference_stderr=np.ones(3))
    with pytest.raises(TypeError, match="PRNG key"):
        gradient_quality(np.ones((3, 2)), np.ones(2), key=0)


def test_gradient_draws_stack_estimates_whose_mean_agrees_with_one_long_run():
    net = cg.NineNeuronNet(gamma=0.556, noise=0.5)
    statistic = cg.Terminal(lambda x: x.sum(), 10)

    def wrt(system):
        return system.gamma, system.J

    key = jax.random.key(7)
    draws = gradient_draws(net, statistic, cg.Backprop(samples=32), wrt=wrt, key=key, repeats=4)
    assert draws[0].shape == (4,) and draws[1].shape == (4, 9, 9)
    long_run = cg.linear_response(
        net, statistic, cg.Backprop(samples=128), wrt=wrt, key=jax.random.key(8)
    )
    spread = float(np.std(draws[0], ddof=1)) / 2.0  # SE of the mean of 4 draws
    gap = abs(float(np.mean(draws[0])) - float(long_run.grad[0]))
    assert gap < 4 * math.hypot(spread, float(long_run.stderr[0]))
    quality = gradient_quality(draws, long_run)
    assert quality.n == 4 and quality.dimension == 82
    assert quality.reference_noise is not None  # from the long run's stderr


def test_gradient_draws_refuses_one_repeat():
    with pytest.raises(ValueError, match="repeats must be at least 2"):
        gradient_draws(
            cg.NineNeuronNet(),
            cg.Terminal(lambda x: x.sum(), 5),
            cg.Backprop(samples=4),
            key=jax.random.key(0),
            repeats=1,
        )
