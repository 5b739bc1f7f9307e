"""Statistics as objects: vector and pytree statistics, Jacobian layout, refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import (
    Backprop,
    Composite,
    FastAdjointResponse,
    Kernel,
    Shadowing,
    Terminal,
    TimeAverage,
    WindowAverage,
    linear_response,
)

KEY = jax.random.key(0)


def ar1(a=0.8, g=1.0, noise=0.0):
    return cg.Map(
        lambda t, x, p: p["a"] * x + p["g"],
        args={"a": jnp.asarray(a), "g": jnp.asarray(g)},
        noise=noise,
        dim=1,
    )


def test_pytree_statistic_has_jacrev_layout():
    """<x> = 5, <x^2> = 25 on the deterministic AR(1); d/dg = 5 and 2 <x> 5 = 50."""
    statistic = TimeAverage(lambda x: {"mean": x[0], "pair": jnp.stack([x[0], x[0] ** 2])})
    result = linear_response(
        ar1(), statistic, Backprop(steps=2000, burn_in=500), wrt=lambda s: s.args["g"], key=KEY
    )
    assert set(result.value) == {"mean", "pair"}
    assert result.grad["mean"].shape == ()
    assert result.grad["pair"].shape == (2,)
    np.testing.assert_allclose(result.grad["pair"], [5.0, 50.0], rtol=1e-2)
    assert result.stderr["pair"].shape == (2,)


def test_matrix_statistic_grad_is_statistic_shape_plus_parameter_shape():
    net = cg.TanhRNN(n=4, g=0.5, seed=1)
    result = linear_response(
        net,
        WindowAverage(lambda h: jnp.outer(h, h)[:2], 20),
        Backprop(samples=2),
        wrt=lambda s: s.J,
        key=KEY,
    )
    assert result.value.shape == (2, 4)
    assert result.grad.shape == (2, 4, 4, 4)
    assert result.stderr.shape == (2, 4, 4, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: (Shadowing(unstable_dim=1, segment_steps=10, segments=4), Terminal(lambda x: x, 5)),
        lambda: (
            FastAdjointResponse(unstable_dim=1, segment_steps=10, segments=4),
            WindowAverage(lambda x: x, 40),
        ),
        lambda: (Composite(samples=10), WindowAverage(lambda x: x, 5)),
    ],
)
def test_unsupported_statistic_is_refused_in_one_line(make):
    estimator, statistic = make()
    with pytest.raises(ValueError, match="supports") as error:
        linear_response(ar1(noise=0.1), statistic, estimator, key=KEY)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "estimator, statistic, match",
    [
        (Backprop(steps=10), Terminal(lambda x: x[0], 5), "applies to a TimeAverage only"),
        (Backprop(burn_in=10), WindowAverage(lambda x: x[0], 5), "applies to a TimeAverage only"),
        (Backprop(), TimeAverage(lambda x: x[0]), "needs steps="),
        (
            Shadowing(unstable_dim=0, segment_steps=10),
            TimeAverage(lambda x: x[0]),
            "needs segments=",
        ),
        (
            Shadowing(unstable_dim=0, segment_steps=7),
            WindowAverage(lambda x: x[0], 20),
            "multiple of segment_steps",
        ),
        (Kernel(samples=10, steps=5), Terminal(lambda x: x[0], 5), "TimeAverage only"),
    ],
)
def test_settings_that_belong_to_the_statistic_are_refused(estimator, statistic, match):
    with pytest.raises(ValueError, match=match):
        linear_response(ar1(noise=0.1), statistic, estimator, key=KEY)


def test_observable_must_return_floats():
    with pytest.raises(TypeError, match="floating-point"):
        linear_response(
            ar1(), TimeAverage(lambda x: jnp.int32(1)), Backprop(steps=10, burn_in=0), key=KEY
        )
    with pytest.raises(TypeError, match="observable must be a function"):
        TimeAverage(3.0)


def test_window_average_burn_in_belongs_to_the_statistic():
    """A WindowAverage after b steps from x0 = 0: E x_n = 5 (1 - 0.8^n); exact pathwise."""
    statistic = WindowAverage(lambda x: x[0], steps=3, burn_in=2)
    result = linear_response(
        ar1(), statistic, Backprop(), wrt=lambda s: s.args["g"], x0=jnp.zeros(1), key=KEY
    )
    expected = np.mean([5 * (1 - 0.8**n) for n in (3, 4, 5)])
    assert float(result.value[()] if np.ndim(result.value) else result.value) == pytest.approx(
        expected, rel=1e-12
    )
    assert float(result.grad) == pytest.approx(expected, rel=1e-12)  # linear in g
