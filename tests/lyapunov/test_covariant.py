"""Covariant and adjoint Lyapunov vectors: the checks of references.md section 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg

KEY = jax.random.key(2)


def _push(system, t, x, vectors):
    """f_*(x) applied to the columns, normalised."""
    out = jax.vmap(
        lambda v: jax.jvp(lambda y: system.step(t, y), (x,), (v,))[1], in_axes=1, out_axes=1
    )(vectors)
    return out / jnp.linalg.norm(out, axis=0)


def _pull(system, t, x, vectors):
    """f_*(x)^T applied to the columns, normalised."""
    _, pullback = jax.vjp(lambda y: system.step(t, y), x)
    out = jax.vmap(lambda c: pullback(c)[0], in_axes=1, out_axes=1)(vectors)
    return out / jnp.linalg.norm(out, axis=0)


@pytest.fixture(scope="module")
def lorenz():
    system = cg.Lorenz63()
    return system, cg.adjoint_vectors(
        system, 3, steps=4_000, burn_in=5_000, burn_out=5_000, key=KEY
    )


def test_covariance_and_adjoint_covariance(lorenz):
    system, result = lorenz
    for n in (0, 1234, 3998):
        t, x = int(result.times[n]), result.states[n]
        pushed = _push(system, t, x, result.vectors[n])
        np.testing.assert_allclose(
            jnp.abs(jnp.sum(pushed * result.vectors[n + 1], axis=0)), 1.0, atol=1e-8
        )
        pulled = _pull(system, t, x, result.adjoint[n + 1])
        np.testing.assert_allclose(
            jnp.abs(jnp.sum(pulled * result.adjoint[n], axis=0)), 1.0, atol=1e-8
        )


def test_growth_rates_equal_the_spectrum(lorenz):
    _, result = lorenz
    spectrum = cg.lyapunov_spectrum(cg.Lorenz63(), steps=1_000_000, burn_in=10_000, key=KEY)
    long = cg.covariant_vectors(
        cg.Lorenz63(), 3, steps=200_000, burn_in=5_000, burn_out=5_000, record_every=1000, key=KEY
    )
    for value, se, reference, ref_se in zip(
        long.exponents, long.stderr, spectrum.exponents, spectrum.stderr, strict=True
    ):
        assert abs(value - reference) <= 3 * np.hypot(se, ref_se) + 0.01


def test_lorenz_zero_exponent_vector_is_the_vector_field(lorenz):
    system, result = lorenz
    for n in (10, 2000, 3999):
        field = system.vector_field(0.0, result.states[n])
        cosine = abs(field @ result.vectors[n][:, 1]) / jnp.linalg.norm(field)
        assert float(cosine) == pytest.approx(1.0, abs=1e-6)


def test_duality_adjoint_times_covariant_is_diagonal(lorenz):
    _, result = lorenz
    products = jnp.einsum("ndi,ndj->nij", result.adjoint, result.vectors)
    off = products * (1 - jnp.eye(3))
    assert float(jnp.max(jnp.abs(off))) < 1e-10
    assert float(jnp.min(jnp.abs(jnp.diagonal(products, axis1=1, axis2=2)))) > 1e-6


@pytest.mark.slow
def test_partial_set_on_lorenz96():
    """k < dim: the leading 4 vectors of Lorenz-96 (n=20) are covariant, adjoints dual."""
    system = cg.Lorenz96(n=20)
    result = cg.adjoint_vectors(system, 4, steps=200, burn_in=3_000, burn_out=3_000, key=KEY)
    n = 100
    t, x = int(result.times[n]), result.states[n]
    pushed = _push(system, t, x, result.vectors[n])
    np.testing.assert_allclose(
        jnp.abs(jnp.sum(pushed * result.vectors[n + 1], axis=0)), 1.0, atol=1e-7
    )
    pulled = _pull(system, t, x, result.adjoint[n + 1])
    np.testing.assert_allclose(jnp.abs(jnp.sum(pulled * result.adjoint[n], axis=0)), 1.0, atol=1e-7)
    products = result.adjoint[n].T @ result.vectors[n]
    assert float(jnp.max(jnp.abs(products - jnp.diag(jnp.diag(products))))) < 1e-10


def test_record_every_and_memory_layout():
    result = cg.covariant_vectors(
        cg.Henon(), 2, steps=1000, burn_in=100, burn_out=500, record_every=50, key=KEY
    )
    assert result.vectors.shape == (20, 2, 2) and result.adjoint is None
    np.testing.assert_array_equal(result.times, 100 + 50 * np.arange(20))
    np.testing.assert_allclose(jnp.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="k=3 exceeds"):
        cg.covariant_vectors(cg.Henon(), 3, steps=10, key=KEY)
    with pytest.raises(ValueError, match="multiple of record_every"):
        cg.covariant_vectors(cg.Henon(), 2, steps=100, record_every=10, segment_steps=15, key=KEY)
