"""Tangent (jax.linearize) and adjoint (jax.vjp) maps are transposes of each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad._tangent import positive_qr

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "system",
    [
        cg.Lorenz63(),
        cg.Lorenz63(dt=1e-3, method="euler"),
        cg.Lorenz96(n=10),
        cg.Henon(),
        cg.ModifiedSolenoid(),
        cg.TanhRNN(n=12),
        cg.NineNeuronNet(noise=0.5),
    ],
)
def test_adjoint_tangent_dot_products(system):
    x = system.initial_state(KEY) + 0.1
    xi = system.noise(KEY, 3) if system.stochastic else None
    v, w = jax.random.normal(jax.random.key(1), (2, system.dim))
    _, tangent = jax.linearize(lambda y: system.step(3, y, xi), x)
    _, adjoint = jax.vjp(lambda y: system.step(3, y, xi), x)
    assert float(w @ tangent(v)) == pytest.approx(float(adjoint(w)[0] @ v), rel=1e-12)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_positive_qr(k):
    vectors = jax.random.normal(KEY, (8, k))
    q, r = positive_qr(vectors)
    np.testing.assert_allclose(q @ r, vectors, atol=1e-12)
    np.testing.assert_allclose(q.T @ q, np.eye(k), atol=1e-12)
    assert bool(jnp.all(jnp.diag(r) > 0)) and bool(jnp.allclose(r, jnp.triu(r)))
