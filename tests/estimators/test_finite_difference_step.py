"""FiniteDifference's step: an eps lost in rounding is refused, one far below
sqrt(machine epsilon) x |theta| is warned about, a sensible one passes silently."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.estimators import FiniteDifference, linear_response
from chaosgrad.estimators.finite_difference import check_step
from chaosgrad.statistics import Terminal

KEY = jax.random.key(0)


def scaled_map(c=28.0):
    """x' = c x / 2 for 3 steps from x0 = 1: E[x_3] = c^3 / 8, d/dc = 3 c^2 / 8."""
    return cg.Map(lambda t, x, c: 0.5 * c * x, args=jnp.asarray(c), dim=1)


def estimate(eps, c=28.0):
    return linear_response(
        scaled_map(c),
        Terminal(lambda x: x[0], 3),
        FiniteDifference(eps=eps, samples=2),
        wrt=lambda s: s.args,
        x0=jnp.ones(1),
        key=KEY,
    )


def test_an_eps_lost_in_rounding_is_refused_naming_the_smallest_that_works():
    with pytest.raises(ValueError) as caught:
        estimate(1e-300)
    message = str(caught.value)
    assert "\n" not in message
    assert "eps=1e-300 is lost in rounding" in message and "|theta| = 28" in message
    smallest = float(np.sqrt(np.finfo(np.float64).eps)) * 28.0
    assert f"use eps >= {smallest:.2g}" in message  # 4.2e-07


def test_the_check_sees_the_largest_selected_element_and_either_sign():
    values = jnp.array([0.0, -3.0, 1e20])
    with pytest.raises(ValueError, match=r"\|theta\| = 1e\+20"):
        check_step(1.0, values)  # 1e20 + 1 == 1e20; 0 and -3 would take it
    with pytest.raises(ValueError, match="lost in rounding"):
        check_step(1e-17, jnp.array([-1.0]))  # -1 - 1e-17 == -1
    assert check_step(1e-300, jnp.array([0.0])) is None  # 0 has no scale: 1e-300 moves it


def test_an_eps_far_below_sqrt_machine_epsilon_gets_a_warning():
    result = estimate(1e-13)  # 28 + 1e-13 != 28, but 1e-13 << 1.5e-8 x 28
    warning = result.info.warning
    assert warning is not None and "\n" not in warning
    assert "eps=1e-13 is far below sqrt(machine epsilon) x |theta|" in warning
    assert np.isfinite(float(result.grad))


@pytest.mark.parametrize("eps", [1e-2, 1e-6, 5e-10])
def test_a_sensible_eps_passes_without_a_warning(eps):
    result = estimate(eps)
    assert result.info.warning is None
    assert float(result.grad) == pytest.approx(3 * 28.0**2 / 8, rel=1e-3)
