"""What estimators/_base.py refuses instead of returning a silent NaN, zero or garbage:
each a one-line error naming the argument and the fix (design.md, Errors)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import chaosgrad as cg
from chaosgrad import Backprop, TimeAverage

KEY = jax.random.key(0)
LORENZ = cg.Lorenz63(dt=0.01)
TINY = Backprop(samples=2, steps=20, burn_in=10)
Z = TimeAverage(lambda x: x[2])
X0 = jnp.array([1.0, 1.0, 20.0])


def _response(wrt=lambda s: s.rho, statistic=Z, system=LORENZ, estimator=TINY):
    return cg.linear_response(system, statistic, estimator, wrt=wrt, x0=X0, key=KEY)


def _loss(loss):
    return cg.value_and_grad(LORENZ, loss, Z, TINY, wrt=lambda s: s.rho, x0=X0, key=KEY)


ROWS = [
    (
        "duplicate wrt",
        lambda: _response(wrt=lambda s: (s.rho, s.rho)),
        ValueError,
        ["s.rho", "more than once"],
    ),
    (
        "computed wrt",
        lambda: _response(wrt=lambda s: s.rho * 2),
        TypeError,
        ["wrt must select fields", "tree_at"],
    ),
    ("constant wrt", lambda: _response(wrt=lambda s: 3.0), TypeError, ["wrt", "Python float"]),
    (
        "float field",
        lambda: _response(system=eqx.tree_at(lambda s: s.rho, LORENZ, 28.0)),
        ValueError,
        ["wrt selects no parameters", "s.rho is a Python float", "jnp.asarray"],
    ),
    (
        "int field",
        lambda: _response(system=eqx.tree_at(lambda s: s.rho, LORENZ, jnp.asarray(28))),
        ValueError,
        ["s.rho is a int64 array"],
    ),
    (
        "string observable",
        lambda: _response(statistic=TimeAverage(lambda x: "z")),
        TypeError,
        ["observable", "a str"],
    ),
    (
        "complex observable",
        lambda: _response(statistic=TimeAverage(lambda x: x[2] * 1j)),
        TypeError,
        ["observable", "complex128"],
    ),
    (
        "NaN loss",
        lambda: _loss(lambda s: jnp.log(-s)),
        FloatingPointError,
        ["the loss is nan", "change the loss"],
    ),
    (
        "integer loss",
        lambda: _loss(lambda s: jnp.round(s).astype(int)),
        TypeError,
        ["loss returns dtype int64", "no gradient"],
    ),
    (
        "loss returning None",
        lambda: _loss(lambda s: None),
        TypeError,
        ["loss must return a scalar", "None"],
    ),
    (
        "vector loss",
        lambda: _loss(lambda s: jnp.stack([s, s])),
        ValueError,
        ["loss must return a scalar", "(2,)"],
    ),
    (
        "overflow behind tanh",
        lambda: cg.linear_response(
            cg.Map(lambda t, x, a: a * x, args=1.5, dim=1),
            TimeAverage(lambda x: jnp.tanh(x[0])),
            Backprop(samples=2, steps=1800, burn_in=0),
            x0=jnp.array([1.0]),
            key=KEY,
        ),
        FloatingPointError,
        ["states of Map stopped being finite at step 1751", "tanh" if False else "diverges"],
    ),
    (
        "noise of the wrong shape",
        lambda: cg.simulate(
            cg.Map(lambda t, x, a: 0.5 * x, noise=lambda t, x, a: jnp.ones(2), dim=3),
            steps=5,
            key=KEY,
        ),
        ValueError,
        ["the noise function returned shape (2,)", "(3,)"],
    ),
    (
        "fit without an optimizer",
        lambda: cg.fit(
            LORENZ, lambda s: s, Z, TINY, None, wrt=lambda s: s.rho, iterations=1, key=KEY
        ),  # type: ignore[arg-type]
        TypeError,
        ["optimizer", "optax"],
    ),
    (
        "fit with an uncalled optimizer",
        lambda: cg.fit(
            LORENZ, lambda s: s, Z, TINY, optax.sgd, wrt=lambda s: s.rho, iterations=1, key=KEY
        ),  # type: ignore[arg-type]
        TypeError,
        ["optimizer", "optax.sgd(learning_rate)"],
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "words"), ROWS, ids=[row[0] for row in ROWS])
def test_refused_in_one_line(case, call, error, words):
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


def test_a_bounded_observable_of_finite_states_with_an_exploding_gradient_is_a_warning():
    """The other side of the overflow check: finite states, an overflowing derivative
    (Backprop through a chaotic map) is returned with the warning, not refused."""
    henon = cg.Henon()
    estimate = cg.linear_response(
        henon,
        TimeAverage(lambda x: jnp.tanh(x[0])),
        Backprop(samples=2, steps=3000, burn_in=100),
        x0=jnp.array([0.1, 0.1]),
        key=KEY,
    )
    assert jnp.isfinite(estimate.value)
    assert estimate.info.warning is not None and "NaN or inf" in estimate.info.warning
