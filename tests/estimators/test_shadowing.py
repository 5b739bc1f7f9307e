"""Adjoint shadowing: consistency, an exact zero, and the Lorenz-63 reference numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.estimators import Shadowing, linear_response
from chaosgrad.estimators._orbits import forward_segments, prepare_orbit
from chaosgrad.estimators._parameters import Parameters
from chaosgrad.estimators._sweep import LeastSquaresSums, adjoint_sweep, shadowing_coefficients
from chaosgrad.statistics import Components, TimeAverage

KEY = jax.random.key(0)


def cat_map(gamma=0.0):
    """Arnold's cat map translated by gamma: Lebesgue measure stays invariant, so the
    response of any average to gamma is exactly 0."""
    a = jnp.array([[2.0, 1.0], [1.0, 1.0]])
    return cg.Map(
        lambda t, x, g: jnp.mod(a @ x + g * jnp.array([1.0, 0.5]), 1.0),
        args=jnp.asarray(gamma),
        dim=2,
    )


def cat_phi(x):
    return jnp.cos(2 * jnp.pi * x[0]) + jnp.sin(2 * jnp.pi * x[1]) ** 2


def test_cat_map_response_is_zero():
    result = linear_response(
        cat_map(),
        TimeAverage(cat_phi),
        Shadowing(unstable_dim=1, segment_steps=10, segments=2000, burn_in=100),
        key=KEY,
    )
    assert abs(float(result.grad.args)) <= 3 * float(result.stderr.args) + 1e-3
    assert result.value == pytest.approx(0.5, abs=0.05)


def _sweep(system, observable, unstable_dim, segment_steps, segments, wrt):
    params = Parameters.of(system, wrt)
    components = Components(TimeAverage(observable), jnp.eye(1))
    x, q, key, t = prepare_orbit(system, None, KEY, unstable_dim, 2000)
    states, qs, rs, _ = forward_segments(system, x, q, key, jnp.asarray(t), segments, segment_steps)
    terms = adjoint_sweep(
        system, components, params, states, qs, key, jnp.asarray(t), False, cg.StepByStep()
    )
    return params, states, qs, rs, terms, key, t


@pytest.mark.parametrize(
    "system, unstable_dim", [(cg.Henon(), 1), (cg.Lorenz63(dt=1e-3, method="euler"), 2)]
)
def test_duality_is_invariant_inside_segments(system, unstable_dim):
    """eps enters segment k with eps^T Q_{k+1} = I; the forward tangents leave it as
    Q_{k+1} R_{k+1}, so eps^T e = R_{k+1} all along the segment and the adjoint sweep's
    eps at t_k meets Q_k with Q_k^T eps = R_{k+1}^T, i.e. M_k = R_{k+1}^{-T}."""
    params, states, qs, rs, terms, key, t = _sweep(
        system, lambda x: x[0], unstable_dim, 50, 6, None
    )
    expected = np.linalg.inv(np.transpose(np.asarray(rs), (0, 2, 1)))
    np.testing.assert_allclose(np.asarray(terms.M), expected, rtol=1e-8, atol=1e-10)


def test_nu_is_the_continuous_adjoint_solution():
    """Rebuild nu by the plain recursion from the end (no projections, short orbit) and
    compare sum_n nu_{n+1} . X_n with the segment-wise assembly."""
    system = cg.Henon()
    observable = lambda x: x[0] ** 2  # noqa: E731
    params, states, qs, rs, terms, key, t = _sweep(system, observable, 1, 6, 5, lambda s: s.a)
    a = shadowing_coefficients(terms.b, terms.M, None)[..., 0]  # one component: (K, u)
    flat_states = states.reshape(-1, 2)
    steps = flat_states.shape[0]
    # nu at the very end: nu'_N = 0, eps at the end = Q_K, coefficient a_{K-1}
    nu = qs[-1] @ a[-1]
    total = 0.0
    for n in range(steps - 1, -1, -1):
        x = flat_states[n]
        _, pull = jax.vjp(
            lambda y, p, n=n: params.substitute(system, p).step(t + n, y), x, params.values
        )
        back_x, back_p = pull(nu)
        total = total + back_p
        nu = back_x + jax.grad(observable)(x)
    assembled = jnp.sum(terms.sums.nu) + jnp.sum(a * terms.sums.eps.reshape(a.shape))
    assert float(total) == pytest.approx(float(assembled), rel=1e-8)
    # and nu_0 has no component along eps_0 (a_0 = -b_0)
    assert float(a[0, 0]) == pytest.approx(-float(terms.b[0, 0, 0]))


def test_lorenz63_shadowing_reference():
    """Forward Euler dt=1e-3, Phi = z, T = 200: d<z>/drho in [1.00, 1.06] (shadowing alone,
    ~1.034) and d<z>/dsigma = 0.133 +- 0.01 (references.md section 2)."""
    system = cg.Lorenz63(dt=1e-3, method="euler")
    result = linear_response(
        system,
        TimeAverage(lambda x: x[2]),
        Shadowing(unstable_dim=2, segment_steps=200, segments=1000, burn_in=20_000),
        wrt=lambda s: (s.rho, s.sigma),
        key=KEY,
    )
    d_rho, d_sigma = (float(g) for g in result.grad)
    se_rho, se_sigma = (float(s) for s in result.stderr)
    assert 1.00 - 3 * se_rho <= d_rho <= 1.06 + 3 * se_rho
    assert abs(d_sigma - 0.133) <= 0.01 + 3 * se_sigma
    assert result.value == pytest.approx(23.68, abs=0.3)
    assert result.info.lyapunov_exponents[0] == pytest.approx(0.9, abs=0.1)


def test_errors():
    with pytest.raises(ValueError, match="unstable_dim=3 must be smaller"):
        linear_response(
            cg.Lorenz63(),
            TimeAverage(lambda x: x[2]),
            Shadowing(unstable_dim=3, segment_steps=10, segments=4, burn_in=10_000),
            key=KEY,
        )
    with pytest.raises(ValueError, match="segments must be at least 2"):
        Shadowing(unstable_dim=1, segment_steps=10, segments=1)
    blowup = cg.Map(lambda t, x, a: a * x**2, args=jnp.asarray(1.0), dim=2)
    with pytest.raises(FloatingPointError, match="step"):
        linear_response(
            blowup,
            TimeAverage(lambda x: x[0]),
            Shadowing(unstable_dim=1, segment_steps=10, segments=4, burn_in=0),
            x0=jnp.array([10.0, 10.0]),
            key=KEY,
        )
    # orbit settings of a TimeAverage given with a WindowAverage (it has its own steps)
    with pytest.raises(ValueError, match="apply to a TimeAverage only"):
        linear_response(
            cg.Henon(),
            cg.WindowAverage(lambda x: x[0], 40),
            Shadowing(unstable_dim=1, segment_steps=10, segments=4),
            key=KEY,
        )
    with pytest.raises(ValueError, match="needs segments="):
        linear_response(
            cg.Henon(),
            TimeAverage(lambda x: x[0]),
            Shadowing(unstable_dim=1, segment_steps=10),
            key=KEY,
        )
    with pytest.raises(ValueError, match="supports TimeAverage, WindowAverage"):
        linear_response(
            cg.Henon(),
            cg.Terminal(lambda x: x[0], 40),
            Shadowing(unstable_dim=1, segment_steps=10),
            key=KEY,
        )


def test_nilsas_least_squares_unit_case():
    """references.md section 2: two segments, u = 2, C = blockdiag(I, diag(4, 1)),
    d = [[1, 0], [1, 4]], dwf = [[1, 1], [3, 1]], dvf = [1, 2], R_1 = [[1, 1], [0, 2]],
    b_1 = [0, 1]  =>  a = [[-1, -1], [0, -1]] exactly.

    The published continuity a_0 - R_1 a_1 = b_1 is a_1 = M_1 a_0 - b'_1 in this module's
    convention with M_1 = R_1^{-1} and b'_1 = R_1^{-1} b_1. One statistic component: the
    right-hand sides b and d carry a trailing component axis of 1, dvf one column.
    """
    r1, b1 = jnp.array([[1.0, 1.0], [0.0, 2.0]]), jnp.array([0.0, 1.0])
    r1_inv = jnp.linalg.inv(r1)
    m = jnp.stack([jnp.eye(2), r1_inv])
    b = jnp.stack([jnp.zeros(2), r1_inv @ b1])[..., None]
    least_squares = LeastSquaresSums(
        C=jnp.stack([jnp.eye(2), jnp.diag(jnp.array([4.0, 1.0]))]),
        d=jnp.array([[1.0, 0.0], [1.0, 4.0]])[..., None],
        dwf=jnp.array([[1.0, 1.0], [3.0, 1.0]]),
        dvf=jnp.array([1.0, 2.0])[:, None],
    )
    np.testing.assert_allclose(
        shadowing_coefficients(b, m, least_squares)[..., 0], [[-1.0, -1.0], [0.0, -1.0]], atol=1e-12
    )


def test_orbits_average_independent_orbits_and_report_their_spread():
    """orbits=R: the mean of R single-orbit estimates (keys split R ways) and sd / sqrt(R)."""
    statistic, wrt = TimeAverage(lambda x: x[0]), lambda s: s.a
    single = Shadowing(unstable_dim=1, segment_steps=10, segments=40, burn_in=100)
    ensemble = Shadowing(unstable_dim=1, segment_steps=10, segments=40, burn_in=100, orbits=3)
    result = linear_response(cg.Henon(), statistic, ensemble, wrt=wrt, key=KEY)
    parts = [
        linear_response(cg.Henon(), statistic, single, wrt=wrt, key=k)
        for k in jax.random.split(KEY, 3)
    ]
    grads = np.array([float(p.grad) for p in parts])
    assert float(result.grad) == pytest.approx(grads.mean(), rel=1e-12)
    assert float(result.stderr) == pytest.approx(grads.std(ddof=1) / np.sqrt(3), rel=1e-10)
    assert float(result.value) == pytest.approx(np.mean([float(p.value) for p in parts]))
    assert result.info.orbits == 3
    assert result.info.stderr_method == "spread of 3 independent orbits"
    assert "batch means" in parts[0].info.stderr_method
    # one start per orbit, given explicitly
    starts = jnp.array([[0.1, 0.0], [0.0, 0.1], [-0.1, 0.05]])
    given = linear_response(cg.Henon(), statistic, ensemble, wrt=wrt, x0=starts, key=KEY)
    assert np.isfinite(float(given.grad))


def test_orbit_starts_that_would_not_be_independent_are_refused():
    statistic = TimeAverage(lambda x: x[0])
    ensemble = Shadowing(unstable_dim=1, segment_steps=10, segments=4, burn_in=10, orbits=3)
    with pytest.raises(ValueError, match="would repeat one orbit"):
        linear_response(cg.Henon(), statistic, ensemble, x0=jnp.array([0.1, 0.0]), key=KEY)
    with pytest.raises(ValueError, match="x0 has 2 rows but orbits=3"):
        linear_response(cg.Henon(), statistic, ensemble, x0=jnp.zeros((2, 2)), key=KEY)
    with pytest.raises(ValueError, match="orbits must be positive"):
        Shadowing(unstable_dim=1, segment_steps=10, segments=4, orbits=0)


def test_a_fixed_orbit_says_its_error_is_not_a_spread_over_keys():
    """A deterministic system from a given x0: every key gives the same orbit."""
    result = linear_response(
        cg.Henon(),
        TimeAverage(lambda x: x[0]),
        Shadowing(unstable_dim=1, segment_steps=10, segments=40, burn_in=100),
        x0=jnp.array([0.1, 0.0]),
        key=KEY,
    )
    assert "not a spread over keys" in result.info.stderr_method


@pytest.mark.parametrize(
    "unstable_dim, problem", [(1, "exponent 2 is not clearly negative"), (2, None)]
)
def test_unstable_dim_contradicting_the_orbit_is_named(unstable_dim, problem):
    """Lorenz-63 has exponents (0.9, 0, -14.6): u must count the neutral one. The (u+1)-th
    exponent is measured alongside, so u = 1 is caught (0.1 ran to -63.9 +- 62.7)."""
    result = linear_response(
        cg.Lorenz63(dt=1e-3, method="euler"),
        TimeAverage(lambda x: x[2]),
        Shadowing(unstable_dim=unstable_dim, segment_steps=200, segments=50, burn_in=2000),
        wrt=lambda s: s.rho,
        key=KEY,
    )
    assert len(result.info.lyapunov_exponents) == unstable_dim
    if problem is None:
        assert result.info.warning is None
        assert result.info.next_exponent == pytest.approx(-14.6, abs=1.0)
    else:
        assert problem in result.info.warning
        assert "use unstable_dim=2" in result.info.warning
