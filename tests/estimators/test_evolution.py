"""ES, PES, NRES and SPSA: unbiased for their smoothed objectives (closed forms on a quadratic
and on a noisy AR(1)), calibrated standard errors, PES and NRES against full ES on one
truncated unroll, and the settings they refuse."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad import ES, NRES, PES, SPSA, Terminal, WindowAverage

A, B, X0, NOISE, SIGMA = 0.6, 0.4, 1.5, 0.3, 0.2


AR1 = cg.Map(
    lambda t, x, theta: theta[0] * x + theta[1], args=jnp.array([A, B]), noise=NOISE, dim=1
)
"""x' = a x + b + 0.3 xi from x0 = 1.5; theta = (a, b). Built once: a new function is a new
compiled program."""


HALF = cg.Map(lambda t, x, b: 0.5 * x + b, args=0.5, noise=NOISE, dim=1)

CUBE = Terminal(lambda x: x[0], 3)
"""E[x_3] = a^3 x0 + b (1 + a + a^2): a cubic in theta, so smoothing shows."""


def smoothed_gradient(kind: str, scale: float) -> np.ndarray:
    """The gradient each method estimates, in closed form, for E[x_3] of the AR(1):

    ES, NRES: grad of E_e J(theta + sigma e) = (a^3 + 3 a s^2) x0 + b (1 + a + a^2 + s^2);
    SPSA: grad J + c^2 (x0, 1) (the third-order term of the Rademacher difference);
    PES with truncation 1: every step perturbed independently, E[x_3] = a^3 x0 + a^2 b + a b
    + b (no smoothing term: products of independent perturbations average out), so grad J."""
    a, b, s2 = A, B, scale**2
    exact = np.array([3 * a**2 * X0 + b * (1 + 2 * a), 1 + a + a**2])
    if kind in ("ES", "NRES"):
        return exact + np.array([3 * s2 * X0, s2])
    if kind == "SPSA":
        return exact + np.array([s2 * X0, s2])
    return exact


def estimator(kind: str, samples: int):
    if kind == "ES":
        return ES(sigma=SIGMA, samples=samples)
    if kind == "SPSA":
        return SPSA(c=SIGMA, samples=samples)
    return {"PES": PES, "NRES": NRES}[kind](sigma=SIGMA, samples=samples, truncation=1)


def estimate(kind: str, samples: int, key):
    return cg.linear_response(
        AR1, CUBE, estimator(kind, samples), wrt=lambda s: s.args, x0=jnp.array([X0]), key=key
    )


KINDS = ["ES", "PES", "NRES", "SPSA"]


@pytest.mark.parametrize("kind", KINDS)
def test_noisy_ar1_mean_equals_the_smoothed_gradient_and_errors_are_calibrated(kind):
    """Over 30 keys of 400 pairs: the mean is within 3 SE of the closed-form smoothed
    gradient (model error: none, the closed form is exact), and the reported SE over the
    spread of the 30 estimates lies in [0.7, 1.5]."""
    keys = 30
    found = [estimate(kind, 400, jax.random.key(i)) for i in range(keys)]
    grads = np.stack([np.asarray(r.grad) for r in found])
    stderrs = np.stack([np.asarray(r.stderr) for r in found])
    mean = grads.mean(axis=0)
    error_of_mean = grads.std(axis=0, ddof=1) / np.sqrt(keys)
    expected = smoothed_gradient(kind, SIGMA)
    assert np.all(np.abs(mean - expected) <= 3 * error_of_mean), (mean, expected, error_of_mean)
    ratio = stderrs.mean(axis=0) / grads.std(axis=0, ddof=1)
    assert np.all((ratio >= 0.7) & (ratio <= 1.5)), ratio


@pytest.mark.parametrize("kind", ["ES", "SPSA"])
def test_quadratic_is_estimated_without_bias(kind):
    """x_1 = theta + 0.1 xi in R^5, J = E[x_1' A x_1]: smoothing adds a constant, so ES and
    SPSA estimate grad J = 2 A theta itself; one call of 4000 pairs within 3 SE."""
    weights = jnp.diag(jnp.arange(1.0, 6.0))
    theta = jnp.linspace(-1.0, 1.0, 5)
    system = cg.Map(lambda t, x, th: th, dim=5, noise=0.1, args=theta)
    statistic = Terminal(lambda x: x @ weights @ x, 1)
    method = ES(sigma=0.3, samples=4000) if kind == "ES" else SPSA(c=0.3, samples=4000)
    r = cg.linear_response(
        system, statistic, method, wrt=lambda s: s.args, x0=jnp.zeros(5), key=jax.random.key(1)
    )
    expected = 2 * np.asarray(weights @ theta)
    assert np.all(np.abs(np.asarray(r.grad) - expected) <= 3 * np.asarray(r.stderr))
    assert r.info.parameters == 5 and r.info.runs == 8000


def test_pes_and_nres_on_a_truncated_unroll_equal_full_es():
    """A 40-step window average of the AR(1) cut into 4 truncations of 10: PES and NRES
    equal full ES on the same unroll within 3 combined SE (the smoothing terms, O(s^2) =
    0.0025 here, are far below the SE). NRES reuses ES's perturbation, so with one key it
    equals ES to rounding."""
    statistic = WindowAverage(lambda x: x[0] ** 2, 40)
    found = {}
    for name, method in {
        "ES": ES(sigma=0.05, samples=2000),
        "PES": PES(sigma=0.05, samples=2000, truncation=10),
        "NRES": NRES(sigma=0.05, samples=2000, truncation=10),
    }.items():
        found[name] = cg.linear_response(
            AR1,
            statistic,
            method,
            wrt=lambda s: s.args,
            x0=jnp.array([X0]),
            key=jax.random.key(3),
        )
    es = found["ES"]
    for name in ("PES", "NRES"):
        other = found[name]
        combined = np.hypot(np.asarray(es.stderr), np.asarray(other.stderr))
        assert np.all(np.abs(np.asarray(other.grad) - np.asarray(es.grad)) <= 3 * combined)
        assert other.info.truncations == 4
    np.testing.assert_allclose(found["NRES"].grad, es.grad, rtol=1e-9)


def test_time_average_and_fit():
    """A TimeAverage runs a window of ``steps`` after a burn-in with the perturbed
    parameters (d/d(a, b) of b/(1 - a) within 3 SE plus the 200-step window's 5 % model
    error); ES and SPSA train the mean <x> = 2 b of x' = x/2 + b + 0.3 xi from 1 to 2
    through fit."""
    mean = cg.TimeAverage(lambda x: x[0])
    r = cg.linear_response(
        AR1,
        mean,
        ES(sigma=0.02, samples=64, steps=200, burn_in=50),
        wrt=lambda s: s.args,
        key=jax.random.key(0),
    )
    exact = np.array([B / (1 - A) ** 2, 1 / (1 - A)])
    assert np.all(np.abs(np.asarray(r.grad) - exact) <= 3 * np.asarray(r.stderr) + 0.05 * exact)
    assert r.info.steps == 200
    for method in (ES(sigma=0.02, samples=16, steps=200), SPSA(c=0.02, samples=16, steps=200)):
        result = cg.fit(
            HALF,
            lambda s: (s - 2.0) ** 2,
            mean,
            method,
            optax.sgd(0.05),
            iterations=40,
            key=jax.random.key(1),
        )
        assert result.status == "ok"
        assert result.history["loss"][-1] < 0.05 * result.history["loss"][0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ES(sigma=0.0), "sigma"),
        (lambda: SPSA(c=-1.0), "c"),
        (lambda: ES(samples=1), "samples"),
        (lambda: PES(truncation=0), "truncation"),
    ],
)
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_truncation_that_does_not_divide_the_window_is_refused():
    with pytest.raises(ValueError, match="must divide the window's 3 steps"):
        estimate_with = PES(sigma=0.1, samples=4, truncation=2)
        cg.linear_response(
            AR1,
            CUBE,
            estimate_with,
            wrt=lambda s: s.args,
            x0=jnp.array([X0]),
            key=jax.random.key(0),
        )
