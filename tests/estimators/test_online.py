"""Online PES and NRES: at a fixed theta the mean of their per-step gradients is the
fixed-theta estimators' smoothed gradient (closed forms on a noisy AR(1)), the particles
start staggered and move one truncation per step, and the settings they refuse."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad import NRES, PES, Online, TimeAverage, WindowAverage

A, B, X0, NOISE, SIGMA, STEPS = 0.6, 0.4, 1.5, 0.3, 0.2, 4

AR1 = cg.Map(
    lambda t, x, theta: theta[0] * x + theta[1], args=jnp.array([A, B]), noise=NOISE, dim=1
)
WINDOW = WindowAverage(lambda x: x[0], STEPS)
"""J = (1/4) sum_{t=1..4} E[x_t], E[x_t] = a^t x0 + b (1 + a + ... + a^{t-1})."""


def window_gradient(a, b) -> np.ndarray:
    """grad J at (a, b) (arrays: evaluated elementwise for quadrature)."""
    da = sum(
        t * a ** (t - 1) * X0 + b * sum(j * a ** (j - 1) for j in range(1, t))
        for t in range(1, STEPS + 1)
    )
    db = sum(sum(a**j for j in range(t)) for t in range(1, STEPS + 1))
    return np.stack([da, db + 0 * a]) / STEPS


def expected(kind: str) -> np.ndarray:
    """PES with truncation 1 perturbs every step independently: E[x_t] is multilinear in
    the steps' parameters, so it estimates grad J itself. NRES reuses one e for the
    episode: grad E_e J(theta + sigma e), by Gauss-Hermite quadrature (exact: J is a
    polynomial of degree 4 in a)."""
    if kind == "PES":
        return window_gradient(A, B)
    nodes, weights = np.polynomial.hermite_e.hermegauss(8)
    weights = weights / weights.sum()
    # b enters J linearly, so its smoothing changes nothing; average over a's perturbation
    return window_gradient(A + SIGMA * nodes, B) @ weights


def online_gradients(kind: str, samples: int, steps: int, key):
    strategy = {"PES": PES, "NRES": NRES}[kind](sigma=SIGMA, samples=samples, truncation=1)
    step = cg.TrainStep(
        lambda s: s,
        WINDOW,
        Online(strategy),
        optax.sgd(0.0),
        wrt=lambda s: s.args,
        x0=jnp.array([X0]),
    )
    state = step.init(AR1, key=jax.random.fold_in(key, 10**6))
    run = eqx.filter_jit(cg.TrainStep.advance)
    grads = []
    for i in range(steps):
        g, metrics, state = run(step, state, jax.random.fold_in(key, i))
        assert bool(metrics.finite)
        grads.append(np.asarray(g))
    return np.stack(grads), state


@pytest.mark.parametrize("kind", ["PES", "NRES"])
def test_fixed_theta_mean_equals_the_smoothed_gradient(kind):
    """At a fixed theta (SGD with rate 0), 1200 online steps of 64 pairs: the mean gradient
    is within 3.5 SE of the closed form (model error: none). The SE is from batch means over
    blocks of 40 steps (10 episodes: a particle's e and noise last one episode)."""
    grads, _ = online_gradients(kind, 64, 1200, jax.random.key(7))
    blocks = grads.reshape(30, 40, 2).mean(axis=1)
    mean = blocks.mean(axis=0)
    error = blocks.std(axis=0, ddof=1) / np.sqrt(blocks.shape[0])
    assert np.all(np.abs(mean - expected(kind)) <= 3.5 * error), (mean, expected(kind), error)


def test_particles_start_staggered_and_move_one_truncation_per_step():
    """With 8 pairs and 4 truncations, pair i starts at truncation floor(4 i / 8), and
    every step moves each pair to the next, wrapping to a new episode after the last."""
    grads, state = online_gradients("NRES", 8, 3, jax.random.key(0))
    start = (np.arange(8) * 4) // 8
    np.testing.assert_array_equal(np.asarray(state.carry.window), (start + 3) % 4)
    # the last truncation run was start + 2: a pair that ran a second truncation 0 began
    # episode 1 (every pair began episode 0 at its first truncation 0)
    np.testing.assert_array_equal(np.asarray(state.carry.episode), (start + 2) // 4)


def test_outside_training_it_is_the_fixed_theta_estimate():
    key = jax.random.key(3)
    strategy = NRES(sigma=SIGMA, samples=16, truncation=2)
    online = cg.linear_response(
        AR1, WINDOW, Online(strategy), wrt=lambda s: s.args, x0=jnp.array([X0]), key=key
    )
    fixed = cg.linear_response(
        AR1, WINDOW, strategy, wrt=lambda s: s.args, x0=jnp.array([X0]), key=key
    )
    np.testing.assert_array_equal(np.asarray(online.grad), np.asarray(fixed.grad))


def test_fit_trains_online():
    """fit with Online(NRES) moves b so that the window average approaches 2 (from 1.16):
    J(b) = (1/4) sum_t (0.6^t x0 + b (1 - 0.6^t) / 0.4) = 2 at b = 0.8969, reached within
    0.01 (Adam's decayed steps and the gradient's noise; the fixed key gives 0.899)."""
    system = cg.Map(lambda t, x, b: 0.6 * x + b, args=jnp.asarray(0.4), noise=NOISE, dim=1)
    result = cg.fit(
        system,
        lambda s: (s - 2.0) ** 2,
        WINDOW,
        Online(NRES(sigma=0.05, samples=8, truncation=2)),
        optax.adam(optax.cosine_decay_schedule(0.05, 600)),
        iterations=600,
        wrt=lambda s: s.args,
        x0=jnp.array([X0]),
        key=jax.random.key(1),
    )
    assert result.status == "ok"
    b = float(result.system.args)
    assert abs(b - 0.8969) < 0.01, b


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Online(cg.ES(sigma=0.1, samples=4)), r"PES\(\.\.\.\) or NRES"),
        (
            lambda: cg.TrainStep(
                lambda s: s,
                TimeAverage(lambda x: x[0]),
                Online(NRES(samples=4, truncation=2)),
                optax.sgd(0.1),
            ).init(AR1, key=jax.random.key(0)),
            "supports Terminal, WindowAverage",
        ),
        (
            lambda: cg.TrainStep(
                lambda s: s, WINDOW, Online(NRES(samples=4, truncation=2)), optax.sgd(0.1)
            ).init(AR1),
            "step.init\\(system, key=",
        ),
        (
            lambda: cg.TrainStep(
                lambda s: s, WINDOW, Online(NRES(samples=4, truncation=3)), optax.sgd(0.1)
            ).init(AR1, key=jax.random.key(0)),
            "must divide the window",
        ),
    ],
)
def test_bad_input_is_refused(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_gradient_and_checkpoints_are_refused(tmp_path):
    online = Online(NRES(samples=4, truncation=2))
    step = cg.TrainStep(lambda s: s, WINDOW, online, optax.sgd(0.1), x0=jnp.array([X0]))
    state = step.init(AR1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="step.advance"):
        step.gradient(state, jax.random.key(1))
    with pytest.raises(ValueError, match="not Online's particles"):
        cg.fit(
            AR1,
            lambda s: s,
            WINDOW,
            online,
            optax.sgd(0.1),
            iterations=2,
            key=jax.random.key(0),
            x0=jnp.array([X0]),
            checkpoint=tmp_path,
        )
