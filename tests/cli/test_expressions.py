"""The observable language: what it accepts, and that it never evaluates code."""

import jax.numpy as jnp
import pytest

from chaosgrad.cli.expressions import ExpressionError, parse_observable

X = jnp.array([1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "text, names, expected",
    [
        ("z", ("x", "y", "z"), 3.0),
        ("x * y - z", ("x", "y", "z"), -1.0),
        ("x[0]**3", (), 1.0),
        ("mean(x**2)", (), 14 / 3),
        ("sum(state[1:])", (), 5.0),
        ("x[-1] + 2 * pi", (), 3.0 + 2 * jnp.pi),
        ("-sqrt(abs(x[0] - 5))", (), -2.0),
    ],
)
def test_accepted(text, names, expected):
    assert float(parse_observable(text, names)(X)) == pytest.approx(float(expected))


@pytest.mark.parametrize(
    "text, message",
    [
        ("__import__('os').system('ls')", "not allowed"),
        ("open('f')", "unknown function"),
        ("x.T", "not allowed"),
        ("q + 1", "unknown name 'q'"),
        ("x[1.5]", "integers"),
        ("x +", "cannot parse"),
        ("lambda: 1", "not allowed"),
        ("[x for x in y]", "not allowed"),
    ],
)
def test_rejected(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse_observable(text)(X)


def test_vector_result_is_rejected():
    with pytest.raises(ExpressionError, match="scalar"):
        parse_observable("x**2")(X)
