"""Differentiable finite-time exponents and the gradient-flossing penalty."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from chaosgrad import Lorenz63, TanhRNN, lyapunov_spectrum
from chaosgrad.lyapunov import finite_time_exponents, lyapunov_penalty


@pytest.mark.parametrize(
    ("system", "k", "renorm_every"),
    [(Lorenz63(dt=0.01), 3, 1), (TanhRNN(n=12, g=2.0, seed=3), 6, 2)],
)
def test_exponents_equal_the_spectrum_on_the_same_orbit(system, k, renorm_every):
    key, x0 = jax.random.key(5), jnp.full(system.dim, 0.3)
    ours = finite_time_exponents(system, k, 400, x0=x0, key=key, renorm_every=renorm_every)
    reference = lyapunov_spectrum(
        system, k, steps=400, burn_in=0, x0=x0, key=key, renorm_every=renorm_every
    )
    np.testing.assert_allclose(ours, reference.exponents, rtol=0, atol=1e-10)


def test_penalty_gradient_matches_central_differences():
    system = TanhRNN(n=8, g=1.8, seed=1)
    x0, key = jnp.linspace(-0.5, 0.5, 8), jax.random.key(2)

    def penalty(b):
        s = eqx.tree_at(lambda m: m.b, system, b)
        return lyapunov_penalty(s, 3, 60, x0=x0, key=key, target=0.1)

    b = jnp.linspace(-0.2, 0.2, 8)
    grad = jax.grad(penalty)(b)
    eps = 1e-6
    finite = np.array(
        [(penalty(b.at[i].add(eps)) - penalty(b.at[i].add(-eps))) / (2 * eps) for i in range(8)]
    )
    # central differences: truncation O(eps^2) ~ 1e-12, round-off ~ 1e-16 / eps = 1e-10
    np.testing.assert_allclose(grad, finite, rtol=1e-6, atol=1e-9)


def test_flossing_steps_move_the_top_exponent_towards_the_target():
    """30 Adam steps on the penalty of 8 orbits cut it by more than half (to 0.26-0.33 of
    its start, whichever XLA optimisation level rounds the orbits). The penalty of one
    100-step orbit of this chaotic net is too rough a function of the weights for that: its
    value after 30 steps wandered between 0.2 and 1.2 of the start with the rounding."""
    system = TanhRNN(n=16, g=2.5, seed=0)
    x0, key = jax.random.normal(jax.random.key(1), (8, 16)), jax.random.key(0)
    loss = eqx.filter_jit(
        eqx.filter_value_and_grad(lambda s: lyapunov_penalty(s, 4, 100, x0=x0, key=key))
    )
    optimizer = optax.adam(0.01)
    state = optimizer.init(eqx.filter(system, eqx.is_inexact_array))
    before, _ = loss(system)
    for _ in range(30):
        _, grads = loss(system)
        updates, state = optimizer.update(grads, state)
        system = eqx.apply_updates(system, updates)
    after, _ = loss(system)
    assert after < 0.5 * before


def test_several_orbits_give_one_row_each():
    system = TanhRNN(n=6, g=2.0, seed=0)
    x0s = jnp.stack([jnp.full(6, 0.1), jnp.full(6, -0.2)])
    rows = finite_time_exponents(system, 2, 50, x0=x0s, key=jax.random.key(0))
    assert rows.shape == (2, 2)
    assert not np.allclose(rows[0], rows[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 7}, "exceeds the dimension"),
        ({"steps": 0}, "steps"),
        ({"steps": 9, "renorm_every": 2}, "multiple of renorm_every"),
        ({"key": None}, "key is required"),
        ({"x0": jnp.zeros((1, 1, 6))}, "x0 must have shape"),
        ({"target": jnp.zeros(3)}, "target must be a scalar"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    arguments = {"k": 2, "steps": 10, "x0": jnp.zeros(6), "key": jax.random.key(0)} | kwargs
    k, steps = arguments.pop("k"), arguments.pop("steps")
    with pytest.raises(ValueError, match=message):
        lyapunov_penalty(TanhRNN(n=6, seed=0), k, steps, **arguments)


def test_flossing_schedule_has_preflossing_then_bounded_episodes():
    from chaosgrad.lyapunov import flossing_schedule

    schedule = flossing_schedule(pre=2, every=3, length=2, episodes=2)
    weights = [schedule(i) for i in range(16)]
    floss, train = (0.0, 1.0), (1.0, 0.0)
    expected = [floss] * 2 + ([train] * 3 + [floss] * 2) * 2 + [train] * 4
    assert weights == expected
