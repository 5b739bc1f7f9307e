"""linear_response, Estimate and the baselines on systems with closed-form responses."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.estimators import (
    Backprop,
    FastAdjointResponse,
    FiniteDifference,
    Shadowing,
    TruncatedBackprop,
    linear_response,
)
from chaosgrad.statistics import Terminal, TimeAverage

KEY = jax.random.key(0)


def ar1(a=0.8, g=1.0):
    """x' = a x + g: <x> = g / (1 - a), d/dg = 1/(1-a) = 5, d/da = g/(1-a)^2 = 25."""
    return cg.Map(
        lambda t, x, p: p["a"] * x + p["g"], args={"a": jnp.asarray(a), "g": jnp.asarray(g)}, dim=1
    )


def phi(x):
    return x[0]


@pytest.mark.parametrize(
    "estimator",
    [
        Backprop(steps=2000, samples=3, burn_in=500),
        FiniteDifference(steps=2000, eps=1e-4, samples=3, burn_in=500),
        Shadowing(unstable_dim=0, segment_steps=100, segments=100, burn_in=500),
        FastAdjointResponse(unstable_dim=0, segment_steps=100, segments=100, burn_in=500),
    ],
)
def test_every_estimator_gets_the_closed_form_of_a_stable_linear_map(estimator):
    """Bias of a 2000-step window is O(1/T) (the transient; for the adjoint methods (10^4 steps) the
    terminal condition nu_N = 0 cuts the last ~1/(1-a) steps): 1e-2 model error allowed.
    unstable_dim=0 makes Shadowing and FAR the plain adjoint of the long-time average."""
    result = linear_response(ar1(), TimeAverage(phi), estimator, key=KEY)
    assert result.value == pytest.approx(5.0, abs=1e-2)
    assert float(result.grad.args["g"]) == pytest.approx(5.0, abs=1e-2)
    assert float(result.grad.args["a"]) == pytest.approx(25.0, abs=0.1)
    assert result.info.seconds > 0


def test_grad_is_shaped_like_wrt():
    result = linear_response(
        ar1(),
        TimeAverage(phi),
        Backprop(steps=100, burn_in=100),
        wrt=lambda s: s.args["g"],
        key=KEY,
    )
    assert isinstance(result.grad, jax.Array) and result.grad.shape == ()
    result = linear_response(
        cg.Lorenz63(), TimeAverage(lambda x: x[2]), Backprop(steps=50, burn_in=10), key=KEY
    )
    assert isinstance(result.grad, cg.Lorenz63)  # default wrt: every parameter
    assert result.grad.rho.shape == ()


def test_truncation_is_biased_where_memory_is_long():
    """a = 0.95: memory ~ 20 steps, response 1/(1-a) = 20. Chunks of W = 5 steps: the j-th
    step of a chunk sees j steps of history, so the estimate is the chunk mean of
    (1 - a^j)/(1 - a), j = 1..W: biased, and exactly so."""
    system = ar1(a=0.95)
    full = linear_response(
        system,
        TimeAverage(phi),
        Backprop(steps=3000, burn_in=3000),
        wrt=lambda s: s.args["g"],
        key=KEY,
    )
    cut = linear_response(
        system,
        TimeAverage(phi),
        TruncatedBackprop(steps=3000, burn_in=3000, truncation=5),
        wrt=lambda s: s.args["g"],
        key=KEY,
    )
    assert float(full.grad) == pytest.approx(20.0, rel=0.02)
    expected = np.mean([(1 - 0.95**j) / 0.05 for j in range(1, 6)])
    assert float(cut.grad) == pytest.approx(expected, rel=1e-6)


def test_backprop_explodes_on_lorenz_at_the_lyapunov_rate():
    """Fitted growth of the per-sample gradient magnitude within 20% of lambda_1 = 0.906."""
    result = linear_response(
        cg.Lorenz63(),
        TimeAverage(lambda x: x[2]),
        Backprop(steps=4000, samples=8, burn_in=2000),
        wrt=lambda s: s.rho,
        key=KEY,
    )
    assert result.info.growth_rate == pytest.approx(0.9057, rel=0.2)
    magnitudes = result.info.grad_magnitude_by_horizon
    assert magnitudes[-1] > 1e4 * magnitudes[len(magnitudes) // 2]


def test_finite_difference_common_random_numbers_on_noisy_network():
    """d E[sum x_T]/d gamma with the same noise on both sides: finite and repeatable."""
    net = cg.NineNeuronNet(noise=0.5)
    est = FiniteDifference(eps=0.05, samples=2000)
    a = linear_response(net, Terminal(jnp.sum, 10), est, wrt=lambda s: s.gamma, key=KEY)
    b = linear_response(net, Terminal(jnp.sum, 10), est, wrt=lambda s: s.gamma, key=KEY)
    assert float(a.grad) == float(b.grad) and np.isfinite(float(a.stderr))


def test_errors():
    with pytest.raises(ValueError, match="steps must be positive"):
        Backprop(steps=0)
    with pytest.raises(ValueError, match="truncation"):
        linear_response(
            ar1(), TimeAverage(phi), TruncatedBackprop(steps=10, truncation=20), key=KEY
        )
    with pytest.raises(ValueError, match="truncation"):
        linear_response(ar1(), Terminal(phi, 10), TruncatedBackprop(truncation=20), key=KEY)
    # the statistic is an object now; a string (the old statistic="...") is refused
    with pytest.raises(TypeError, match="statistic"):
        linear_response(ar1(), "median", Backprop(steps=10), key=KEY)
    # settings of a TimeAverage given with a finite-horizon statistic, and the reverse
    with pytest.raises(ValueError, match="applies to a TimeAverage only"):
        linear_response(ar1(), Terminal(phi, 10), Backprop(steps=10), key=KEY)
    with pytest.raises(ValueError, match="applies to a TimeAverage only"):
        linear_response(ar1(), Terminal(phi, 10), Backprop(burn_in=10), key=KEY)
    with pytest.raises(ValueError, match="applies to a TimeAverage only"):
        linear_response(ar1(), Terminal(phi, 10), FiniteDifference(steps=10), key=KEY)
    with pytest.raises(ValueError, match="needs steps="):
        linear_response(ar1(), TimeAverage(phi), Backprop(), key=KEY)
    with pytest.raises(ValueError, match="eps"):
        FiniteDifference(steps=10, eps=0.0)
    with pytest.raises(ValueError, match="key is required"):
        linear_response(ar1(), TimeAverage(phi), Backprop(steps=10), key=None)
    with pytest.raises(TypeError, match="estimator"):
        linear_response(ar1(), TimeAverage(phi), "backprop", key=KEY)
    with pytest.raises(TypeError, match="float64"):
        linear_response(
            eqx.tree_at(lambda s: s.a, cg.Henon(), jnp.float32(1.4)),
            TimeAverage(phi),
            Backprop(steps=10),
            key=KEY,
        )
    with pytest.raises(ValueError, match="layers"):
        linear_response(cg.DeepTanhNet(depth=5, width=3), Terminal(jnp.sum, 6), Backprop(), key=KEY)


def test_finite_difference_lorenz63_reference():
    """Forward Euler dt=1e-3, Phi = z: d<z>/drho = 1.017 +- 0.002 (references.md section 2).

    16 windows of T = 500 per side, h = 1 (a run with h = 0.5 gave 1.003 +- 0.008, so the
    curvature bias at h = 1 is below the statistical error). Compared within 3 SE plus the
    reference's own 0.002."""
    system = cg.Lorenz63(dt=1e-3, method="euler")
    result = linear_response(
        system,
        TimeAverage(lambda x: x[2]),
        FiniteDifference(steps=500_000, eps=1.0, samples=16, burn_in=5000),
        wrt=lambda s: s.rho,
        key=KEY,
    )
    assert abs(float(result.grad) - 1.017) <= 3 * float(result.stderr) + 0.002
    assert result.value == pytest.approx(23.68, abs=0.1)


def test_kept_shapes_follow_the_observable_and_the_system():
    """The output structure is traced at every call, so it follows another closed-over
    width, another output shape and a system of another size."""
    estimator = Backprop(samples=2, steps=5, burn_in=0)
    wrt = lambda s: s.args  # noqa: E731
    shapes = []
    for width in (1, 3, 2, 3):  # the same code, a different closed-over width each time
        statistic = TimeAverage(lambda x, w=width: jnp.repeat(x, w))
        result = linear_response(ar1(), statistic, estimator, wrt=wrt, key=KEY)
        shapes.append(np.shape(result.value))
    assert shapes == [(1,), (3,), (2,), (3,)]
    observable = lambda x: x  # noqa: E731
    narrow = cg.Map(lambda t, x, p: p * x, args=jnp.asarray(0.5), dim=1)
    wide = cg.Map(lambda t, x, p: p * x, args=jnp.asarray(0.5), dim=4)
    for system, shape in ((narrow, (1,)), (wide, (4,)), (narrow, (1,))):
        result = linear_response(system, TimeAverage(observable), estimator, key=KEY)
        assert np.shape(result.value) == shape
