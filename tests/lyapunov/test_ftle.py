"""Finite-time exponents of deep networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg


def test_linear_network_gives_log_top_singular_value():
    """A 'network' x' = M x for 8 layers: (1/8) ln sigma_1(M^8)."""
    m = jnp.array([[1.2, 0.5], [0.0, 0.7]])
    linear = cg.Map(lambda t, x, a: a @ x, args=m, dim=2)
    value = cg.ftle(linear, jnp.ones((3, 2)), steps=8)
    expected = np.log(np.linalg.svd(np.linalg.matrix_power(np.asarray(m), 8))[1][0]) / 8
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_very_deep_unstable_net_does_not_overflow():
    """sigma_1 ~ e^(0.16 * 5000) > 1e308 overflows float64 as a number, not as a log."""
    net = cg.DeepTanhNet(depth=5000, width=32, sigma_w=2.0)
    value = cg.ftle(net, jax.random.normal(jax.random.key(0), (2, 32)))
    assert bool(jnp.all(jnp.isfinite(value))) and float(value.min()) > 0.1


def test_chaotic_versus_critical_initialisation():
    x0s = jax.random.normal(jax.random.key(1), (128, 32))
    chaotic = cg.ftle(cg.DeepTanhNet(depth=50, width=32, sigma_w=2.0), x0s)
    critical = cg.ftle(cg.DeepTanhNet(depth=50, width=32, init="critical", sigma_b=0.05**0.5), x0s)
    assert float(chaotic.mean()) > 0.1
    assert abs(float(critical.mean())) < 0.05


def test_errors():
    net = cg.DeepTanhNet(depth=5, width=4)
    with pytest.raises(ValueError, match="shape"):
        cg.ftle(net, jnp.ones(4))
    with pytest.raises(ValueError, match="5 layers"):
        cg.ftle(net, jnp.ones((2, 4)), steps=6)
    with pytest.raises(ValueError, match="key"):
        cg.ftle(cg.DeepTanhNet(depth=5, width=4, noise=0.1), jnp.ones((2, 4)))
