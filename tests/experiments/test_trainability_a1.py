"""Task A1 of the trainability benchmark and the directional-difference reference it rests on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.experiments.trainability._directional import (
    descent_check,
    directional_slope,
    orbit_averages,
    projection_check,
    random_directions,
)


class Contracting(cg.Map):
    """x' = 0.5 x + theta: every orbit converges to 2 theta, so <x> = 2 theta exactly."""

    def initial_state(self, key):
        return jax.random.normal(key, (2,), dtype=jnp.float64)


def contracting(theta):
    return Contracting(lambda t, x, args: 0.5 * x + args, args=jnp.asarray(theta), dim=2)


def keys(count):
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(count))


def test_directional_differences_recover_an_exact_gradient():
    """L = |<x>|^2 = 4 |theta|^2 has gradient 8 theta: the central difference along any unit
    direction equals 8 theta . d (the loss is quadratic: no O(eps^2) term), with a jackknife
    SE of 0 (every orbit has the same average); along the gradient's own direction the
    descent ratio is 1, and an unbiased candidate's projections have cosine 1."""
    theta = np.array([0.3, -0.7])
    system = contracting(theta)

    def wrt(s):
        return s.args

    def averages(s):
        return orbit_averages(s, lambda x: x, keys(4), 200, 50)

    def loss(mean):
        return jnp.sum(mean**2)

    np.testing.assert_allclose(averages(system), np.tile(2 * theta, (4, 1)), atol=1e-12)
    directions = random_directions(system, wrt, 3, jax.random.key(1))
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    reference = np.array(
        [directional_slope(system, wrt, loss, averages, d, eps=0.01) for d in directions]
    )
    np.testing.assert_allclose(reference[:, 0], directions @ (8 * theta), rtol=1e-8)
    assert np.all(reference[:, 1] < 1e-8)
    check = descent_check(system, wrt, loss, averages, 8 * theta, eps=0.01)
    assert check["ratio"] == pytest.approx(1.0, rel=1e-8)
    assert check["slope_2eps"] == pytest.approx(check["slope"], rel=1e-8)
    wrong_sign = descent_check(system, wrt, loss, averages, -8 * theta, eps=0.01)
    assert wrong_sign["ratio"] == pytest.approx(-1.0, rel=1e-8)
    projected = projection_check(8 * theta, directions, reference)
    assert projected["cosine"] == pytest.approx(1.0)


def test_task_a1_builds_its_closure_and_records_gradient_quality():
    """A1 (quick sizes: a 3-8-3 closure, 59 weights): the truth is at the evaluation's
    noise floor and the wrong-rho start is above it; a shadowing run records its held-out
    loss and the gradient quality at its start and end (descent check and draw cosine);
    every method builds its estimator; an unknown method is refused."""
    from chaosgrad.experiments.trainability.a1_closure import A1Settings, A1Task

    task = A1Task(A1Settings.quick())
    description = task.describe()
    assert description["parameters"] == 3 * 8 + 8 + 8 * 3 + 3
    start = task.evaluate(task.model(0))["test_loss"]
    assert description["evaluation_noise_floor"] < 0.2 * start
    run = task.run("shadowing", 0, None, eval_every=1e9, iterations=2)
    assert run.status == "ok" and run.iterations == 2
    assert all(np.isfinite(m["test_loss"]) for m in run.metrics)
    quality = run.extra["gradient_quality"]
    assert len(quality) == 2
    for entry in quality:
        assert entry["norm"] > 0 and np.isfinite(entry["ratio"]) and entry["slope_stderr"] > 0
        assert -1 <= entry["draw_cosine"] <= 1
    for method in task.methods:
        task.estimator_and_optimizer(method)
    guarded = task.run("shadowing+reject", 0, None, eval_every=1e9, iterations=2, quality=False)
    assert guarded.status == "ok" and guarded.iterations == 2
    with pytest.raises(ValueError, match="unknown A1 method"):
        task.estimator_and_optimizer("oracle")
