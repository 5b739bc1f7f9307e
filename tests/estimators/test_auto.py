"""Auto and the "auto" settings: the pilot's measurements, the choices and their report."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import chaosgrad as cg
from chaosgrad._error_bars import count_unstable
from chaosgrad.estimators import Auto, FastAdjointResponse, Shadowing, linear_response
from chaosgrad.estimators._pilot import decorrelation_steps, divisor_near
from chaosgrad.statistics import TimeAverage, WindowAverage

KEY = jax.random.key(0)


def test_unstable_dims_are_counted_with_their_errors():
    # a map counts clearly positive exponents; a flow also its neutral one
    assert count_unstable([0.9, 0.01, -14.0], [0.05, 0.05, 0.1], flow=False) == 1
    assert count_unstable([0.9, 0.01, -14.0], [0.05, 0.05, 0.1], flow=True) == 2
    assert count_unstable([-0.2], [0.01], flow=False) == 0


def test_decorrelation_time_of_an_ar1_series():
    """rho(k) = a^k: below 0.05 first at k = ceil(ln 0.05 / ln a) = 14 for a = 0.8."""
    rng = np.random.default_rng(0)
    a, n = 0.8, 200_000
    noise = rng.normal(size=n)
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = a * x[t - 1] + noise[t]
    assert abs(decorrelation_steps(x[:, None], 100) - 14) <= 1


def test_divisor_near_tiles_a_window():
    assert divisor_near(1000, 226) == 250
    assert 1000 % divisor_near(1000, 7) == 0


def test_auto_settings_of_shadowing_are_the_pilots_and_reported():
    """u and m from the pilot; the estimate is the hand-configured run with those values."""
    system, statistic = cg.Lorenz63(dt=1e-3, method="euler"), TimeAverage(lambda x: x[2])
    auto = Shadowing(unstable_dim="auto", segment_steps="auto", segments=40, burn_in=2000)
    result = linear_response(system, statistic, auto, wrt=lambda s: s.rho, key=KEY)
    report = result.info.auto
    assert report.pilot.unstable_dim == 2
    m = int(report.estimator.split("segment_steps=")[1].split(",")[0])
    assert 150 <= m <= 400  # lambda_1 m dt = 0.2 with lambda_1 = 0.9
    assert any("unstable_dim = 2" in reason for reason in report.reasons)
    by_hand = Shadowing(unstable_dim=2, segment_steps=m, segments=40, burn_in=2000)
    expected = linear_response(system, statistic, by_hand, wrt=lambda s: s.rho, key=KEY)
    assert float(result.grad) == float(expected.grad)
    assert result.info.warning is None


def test_auto_setting_must_say_auto():
    with pytest.raises(ValueError, match="unstable_dim must be an integer or 'auto'"):
        Shadowing(unstable_dim="three", segment_steps=10, segments=4)
    with pytest.raises(ValueError, match="window must be an integer or 'auto'"):
        FastAdjointResponse(unstable_dim=1, segment_steps=10, segments=4, window="wide")


def test_auto_on_a_stable_map_is_the_plain_adjoint_with_the_closed_form():
    """x' = a x + b: <x> = b / (1 - a), d<x>/db = 1 / (1 - a) = 2 for a = 0.5; the adjoint
    starts at 0 at each orbit's end, which leaves out O(1/N) of an N-step orbit (model
    error 3/N, relative)."""
    system = cg.Map(lambda t, x, p: p[0] * x + p[1], args=jnp.array([0.5, 1.0]), dim=1)
    result = linear_response(
        system, TimeAverage(lambda x: x[0]), Auto(steps=20_000, pilot_steps=2000), key=KEY
    )
    assert result.info.auto.pilot.unstable_dim == 0
    assert "Shadowing(unstable_dim=0" in result.info.auto.estimator
    steps = result.info.steps
    np.testing.assert_allclose(np.asarray(result.grad.args), [2.0 * 2.0, 2.0], rtol=3 / steps)


@pytest.mark.slow  # 18 s; the slow auto matrix runs Henon too
def test_auto_on_henon_switches_to_central_differences():
    """Henon has homoclinic tangencies (2 % of the angles below 5 degrees): the check must
    find them, and Auto must switch to a method that needs no hyperbolicity."""
    result = linear_response(
        cg.Henon(),
        TimeAverage(lambda x: x[0]),
        Auto(steps=40_000, pilot_steps=5000),
        wrt=lambda s: s.a,
        key=KEY,
    )
    report = result.info.auto
    assert report.estimator.startswith("FiniteDifference(")
    assert report.pilot.unstable_dim == 1
    assert report.hyperbolicity is not None and not report.hyperbolicity.hyperbolic
    assert any("not hyperbolic" in reason for reason in report.reasons)


@pytest.mark.parametrize(
    "auto, reference",
    [
        pytest.param(
            Auto(pilot_steps=5000, steps=200_000),
            cg.FiniteDifference(eps=0.8, samples=64, steps=25_000),
            id="short",
        ),
        pytest.param(
            Auto(),
            cg.FiniteDifference(eps=0.4, samples=256, steps=25_000),
            id="defaults",
            marks=pytest.mark.slow,  # 50 s at the default suite's optimisation level 0
        ),
    ],
)
def test_auto_on_lorenz96_switches_to_central_differences_that_agree(auto, reference):
    """Lorenz-96, n = 20, F = 8, d<mean x>/dF: not hyperbolic (6 % of the angles below 5
    degrees), where shadowing gave 1221 +- 1519. Auto must switch to central differences
    and agree with a reference, central differences at a larger eps (SE 0.003; at 1024
    runs a side, eps 0.2 / 0.4 / 0.8 gave 0.1339 +- 0.0029 / 0.1323 +- 0.0015 / 0.1358 +-
    0.0007, so 0.0035 is the reference's eps bias, the model error): within 3 combined SE
    plus that model error, with an SE of at most 0.03."""
    system, statistic = cg.Lorenz96(n=20), TimeAverage(lambda x: jnp.mean(x))
    result = linear_response(system, statistic, auto, wrt=lambda s: s.forcing, key=KEY)
    report = result.info.auto
    assert report.estimator.startswith("FiniteDifference(")
    assert report.hyperbolicity is not None and not report.hyperbolicity.hyperbolic
    truth = linear_response(
        system, statistic, reference, wrt=lambda s: s.forcing, key=jax.random.key(2)
    )
    assert float(result.stderr) <= 0.03
    bound = 3 * np.hypot(float(result.stderr), float(truth.stderr)) + 0.0035
    assert abs(float(result.grad) - float(truth.grad)) <= bound, report.reasons


def test_auto_refuses_a_non_hyperbolic_system_with_many_parameters():
    """Henon with a = the mean of 9 parameters: deterministic, not hyperbolic, and more
    parameters than finite differences take. Auto refuses, says why and names the ways on."""
    henon9 = cg.Map(
        lambda t, x, a: jnp.stack([1.0 - jnp.mean(a) * x[0] ** 2 + x[1], 0.3 * x[0]]),
        args=jnp.full(9, 1.4),
        dim=2,
    )
    with pytest.raises(ValueError) as refused:
        linear_response(
            henon9,
            TimeAverage(lambda x: x[0]),
            Auto(pilot_steps=5000),
            wrt=lambda s: s.args,
            x0=jnp.array([0.1, 0.1]),
            key=KEY,
        )
    message = str(refused.value)
    assert message.startswith("Auto has no method that holds here: the Map is deterministic")
    assert "with u = 1, and not hyperbolic" in message
    assert "not hyperbolic" in message and "9 parameter elements, more than the 8" in message
    assert "give the system noise" in message and "with wrt=" in message


def test_auto_window_average_segments_tile_the_window():
    statistic = WindowAverage(lambda x: x[2], 1000, burn_in=2000)
    auto = Shadowing(unstable_dim=2, segment_steps="auto", orbits=2)
    result = linear_response(cg.Lorenz63(dt=1e-3, method="euler"), statistic, auto, key=KEY)
    m = int(result.info.auto.estimator.split("segment_steps=")[1].split(",")[0])
    assert 1000 % m == 0


def _lorenz63():
    return cg.Lorenz63(dt=1e-3, method="euler")


# (name, system, statistic, wrt, the hand-configured estimator the references use)
BUILTINS = [
    (
        "lorenz63",
        _lorenz63,
        TimeAverage(lambda x: x[2]),
        lambda s: s.rho,
        Shadowing(unstable_dim=2, segment_steps=200, segments=250, burn_in=5000, orbits=8),
    ),
    (
        "lorenz96",  # not hyperbolic (36 % of the angles below 5 degrees): central differences
        lambda: cg.Lorenz96(n=10),
        TimeAverage(lambda x: jnp.mean(x**2)),
        lambda s: s.forcing,
        cg.FiniteDifference(eps=0.08, samples=64, steps=25_000),
    ),
    (
        "henon",  # not hyperbolic (2 % of the angles below 5 degrees): central differences
        cg.Henon,
        TimeAverage(lambda x: x[0]),
        lambda s: s.a,
        cg.FiniteDifference(eps=0.014, samples=64, steps=25_000),
    ),
    (
        "logistic",
        lambda: cg.Logistic(r=3.9),
        TimeAverage(lambda x: x[0]),
        lambda s: s.r,
        cg.FiniteDifference(eps=0.039, samples=16, steps=25_000),
    ),
    (
        "tent",
        cg.Tent,
        TimeAverage(lambda x: x[0] ** 2),
        lambda s: s.slope,
        cg.FiniteDifference(eps=0.0199, samples=16, steps=25_000),
    ),
    (
        "modified_solenoid",
        cg.ModifiedSolenoid,
        TimeAverage(cg.ModifiedSolenoid.observable),
        lambda s: s.gamma1,
        FastAdjointResponse(unstable_dim=4, segment_steps=20, segments=500, window=10, orbits=8),
    ),
    (
        "nine_neuron_net",
        lambda: cg.NineNeuronNet(gamma=0.556, noise=0.5),
        cg.Terminal(jnp.sum, 50),
        lambda s: s.gamma,
        cg.PathKernel(samples=40_000, alpha=1.0),
    ),
    (
        "noisy_lorenz96",
        lambda: cg.NoisyLorenz96(n=10),
        TimeAverage(lambda x: jnp.mean(x**2)),
        lambda s: s.gamma0,
        cg.PathKernel(samples=10, alpha=5.0, steps=50_000, window=1000, burn_in=2500),
    ),
    (
        "deep_tanh_net",
        lambda: cg.DeepTanhNet(depth=20, width=16, sigma_w=2.0, noise=0.2),
        cg.Terminal(lambda x: jnp.mean(jnp.tanh(x) ** 2), 20),
        lambda s: s.biases,
        cg.Kernel(samples=40_000),
    ),
    (
        "tanh_rnn",
        lambda: cg.TanhRNN(n=64, g=2.0),
        TimeAverage(lambda x: jnp.mean(jnp.tanh(x) ** 2)),
        lambda s: s.b,
        Shadowing(unstable_dim=6, segment_steps=20, segments=2500, burn_in=2000, orbits=8),
    ),
]


REFUSED = {"tanh_rnn"}
"""Built-ins with no method Auto can trust: the tanh RNN is deterministic, not hyperbolic
(23 % of the angles below 5 degrees; the shadowing family gave 1e68 by hand and by Auto
alike) and b has 64 elements, too many for central differences: Auto must refuse."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, build, statistic, wrt, by_hand", BUILTINS, ids=[b[0] for b in BUILTINS]
)
def test_auto_agrees_with_the_hand_configured_estimator_on_every_builtin(
    name, build, statistic, wrt, by_hand
):
    """|auto - by hand| <= z sqrt(SE_auto^2 + SE_hand^2) for every parameter element, z = 3
    for one element and the same family-wise level (0.27 %, Bonferroni) for n elements
    (z = 4.3 for the deep net's 320 biases); the report names the estimator and the pilot's
    exponents. Where no method holds, Auto must refuse instead."""
    system = build()
    if name in REFUSED:
        with pytest.raises(ValueError, match="Auto has no method that holds here"):
            linear_response(system, statistic, Auto(), wrt=wrt, key=jax.random.key(1))
        return
    auto = linear_response(system, statistic, Auto(), wrt=wrt, key=jax.random.key(1))
    assert auto.info.auto.reasons[0].startswith("pilot exponents")
    hand = linear_response(system, statistic, by_hand, wrt=wrt, key=jax.random.key(2))
    grads = np.ravel(np.asarray(auto.grad)), np.ravel(np.asarray(hand.grad))
    errors = np.ravel(np.asarray(auto.stderr)), np.ravel(np.asarray(hand.stderr))
    bound = norm.isf(0.0027 / 2 / grads[0].size) * np.hypot(*errors)
    assert np.all(np.abs(grads[0] - grads[1]) <= bound), (name, auto.info.auto.reasons)


def test_kernel_window_auto_is_the_decorrelation_time():
    """Noisy AR(1), a = 0.8: rho(k) = a^k falls below 0.05 at k = 14, so W = 28;
    d<x>/dg = 1/(1-a) = 5, and the response beyond W, a^29 of it (0.2 %), is inside 3 SE."""
    system = cg.Map(lambda t, x, p: p[0] * x + p[1], args=jnp.array([0.8, 1.0]), noise=0.5, dim=1)
    result = linear_response(
        system,
        TimeAverage(lambda x: x[0]),
        cg.Kernel(samples=8, steps=20_000, window="auto"),
        wrt=lambda s: s.args,
        key=KEY,
    )
    report = result.info.auto
    assert 24 <= result.info.window <= 34, report.reasons
    assert abs(float(result.grad[1]) - 5.0) <= 3 * float(result.stderr[1])


@pytest.mark.slow  # 24 s; the auto matrix covers alpha='auto' too
def test_path_kernel_alpha_auto_is_one_of_the_pilot_candidates():
    result = linear_response(
        cg.NineNeuronNet(gamma=0.556, noise=0.5),
        cg.Terminal(jnp.sum, 50),
        cg.PathKernel(samples=4000, alpha="auto"),
        wrt=lambda s: s.gamma,
        key=KEY,
    )
    alpha = result.info.alpha
    assert any(np.isclose(alpha, f * 0.1) for f in (1.5, 3.0, 6.0, 12.0)), alpha
    assert "smallest pilot standard error" in result.info.auto.reasons[-1]
    assert abs(float(result.grad) - 7.47) <= 3 * np.hypot(float(result.stderr), 0.03)
    with pytest.raises(TypeError, match="alpha must be a number"):
        cg.PathKernel(samples=10, alpha="large")


def test_auto_backpropagates_a_short_chaotic_window():
    """A WindowAverage of deterministic chaos over a few Lyapunov times (Lorenz-63, 300 steps
    of 0.01 after 100 of burn-in: lambda_1 T ~ 3.6) grows by at most e^5: Auto backpropagates
    (exact and cheapest, as the trainability control measured) instead of taking a long-time
    method; over 30 Lyapunov times it keeps the shadowing family."""
    system = cg.Lorenz63(dt=0.01)
    short = WindowAverage(lambda x: x[2], 300, burn_in=100)
    result = linear_response(system, short, Auto(samples=4), wrt=lambda s: s.rho, key=KEY)
    assert result.info.auto.estimator.startswith("Backprop(")
    reason = result.info.auto.reasons[-1]
    assert (
        reason.startswith("WindowAverage over T = 400 steps: lambda_1 T = 3.") and "exact" in reason
    )
    assert np.isfinite(result.grad)
    long = WindowAverage(lambda x: x[2], 3000, burn_in=100)
    chosen = cg.configure(system, long, Auto(pilot_steps=5000), wrt=lambda s: s.rho, key=KEY)
    assert isinstance(chosen, Shadowing)
