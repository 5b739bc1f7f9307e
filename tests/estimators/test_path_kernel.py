"""Adjoint path-kernel against references.md section 3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# the noisy AR(1) of Kernel's path-form test (pytest puts this directory on sys.path)
from test_kernel import noisy_ar1

import chaosgrad as cg
from chaosgrad.estimators import Backprop, PathKernel, linear_response
from chaosgrad.statistics import ParametricObservable, Terminal, TimeAverage, WindowAverage

KEY = jax.random.key(0)


def ornstein_uhlenbeck(gamma0=1.0, gamma1=2.0, dim=4, dt=0.01):
    """dX = (-X + gamma0) dt + gamma1 dB: <mean x^2> = gamma0^2 + gamma1^2 / (2 - dt)."""
    return cg.Flow(
        lambda t, x, g0: -x + g0,
        dt=dt,
        method="euler",
        args=jnp.asarray(gamma0),
        noise=gamma1,
        dim=dim,
    )


@pytest.mark.parametrize("alpha", [0.0, 1.0, 5.0])
def test_ornstein_uhlenbeck(alpha):
    """Exact (2 gamma0, 2 gamma1 / (2 - dt)) = (2, 2.01), within 3 SE over 20 orbits.
    W = 500 steps = 5 correlation times (a window of 1 time unit loses ~e^-1 of the
    response once alpha moves it into the kernel term)."""
    result = linear_response(
        ornstein_uhlenbeck(),
        TimeAverage(lambda x: jnp.mean(x**2)),
        PathKernel(steps=50_000, samples=20, alpha=alpha, window=500, burn_in=500),
        key=KEY,
    )
    assert abs(float(result.grad.args) - 2.0) <= 3 * float(result.stderr.args)
    assert abs(float(result.grad.noise_level) - 4 / 1.99) <= 3 * float(result.stderr.noise_level)
    assert not result.info.exploding


def test_alpha_zero_is_backprop():
    net = cg.NineNeuronNet(gamma=0.3, noise=0.5)
    statistic = Terminal(jnp.sum, 20)
    path = linear_response(net, statistic, PathKernel(samples=500, alpha=0.0), key=KEY)
    back = linear_response(net, statistic, Backprop(samples=500, diagnostics=False), key=KEY)
    np.testing.assert_allclose(path.grad.J, back.grad.J, rtol=1e-9)
    np.testing.assert_allclose(float(path.grad.gamma), float(back.grad.gamma), rtol=1e-9)


@pytest.mark.slow  # a published-number reproduction (13 s)
def test_nine_neuron_network_damped():
    """alpha = 1 per layer (above lambda_1 = 0.06): bounded, within 3 SE of 7.47 at 0.556."""
    net = cg.NineNeuronNet(gamma=0.556, noise=0.5)
    result = linear_response(
        net,
        Terminal(jnp.sum, 50),
        PathKernel(samples=100_000, alpha=1.0),
        wrt=lambda s: s.gamma,
        key=KEY,
    )
    assert abs(float(result.grad) - 7.47) <= 3 * np.hypot(float(result.stderr), 0.03)
    assert float(result.stderr) < 1.5


def test_noisy_lorenz96_small_alpha_is_reported_as_exploding():
    """alpha = 1 is below lambda_1 ~ 1.7: the adjoint grows like e^{0.7 T}; info says so."""
    system = cg.NoisyLorenz96()
    result = linear_response(
        system,
        TimeAverage(lambda x: jnp.mean(x**2)),
        PathKernel(steps=25_000, samples=2, alpha=1.0, window=2, burn_in=2_500),
        key=KEY,
    )
    assert result.info.exploding and "too small" in result.info.warning


@pytest.mark.slow
def test_noisy_lorenz96_reference():
    """alpha = 5, W = 2, 10 orbits of T = 400: within max(2.5 SE, 25%) of (3.15, 1.34).

    W = 2 is in time units, as in the reference runs: 1000 steps of dt = 0.002. (W = 2 steps
    gives d/dgamma0 = 0.90 +- 0.002: the kernel window is then 0.004 time units, far shorter
    than the correlation time, and most of the response is cut off.)"""
    system = cg.NoisyLorenz96()
    result = linear_response(
        system,
        TimeAverage(lambda x: jnp.mean(x**2)),
        PathKernel(steps=200_000, samples=10, alpha=5.0, window=1000, burn_in=2_500),
        key=KEY,
    )
    for value, se, reference in (
        (result.grad.gamma0, result.stderr.gamma0, 3.15),
        (result.grad.gamma1, result.stderr.gamma1, 1.34),
    ):
        assert abs(float(value) - reference) <= max(2.5 * float(se), 0.25 * reference)
    assert not result.info.exploding


@pytest.mark.parametrize("alpha", [0.0, 1.0, 5.0])
def test_path_form_of_a_window_average_ar1(alpha):
    """The WindowAverage of Kernel's path-form test: x' = a x + g + 0.5 xi from x0 = 0,
    burn-in B = 2, window T = 10, exact d/dg = 3.857 and d/da = 11.01 (closed forms in
    test_kernel.py). Every alpha within 4 SE (20 000 paths, key 0): six comparisons in all,
    so 4 SE keeps the chance that one fails by sampling alone near 4e-4 for another key
    (3 SE: 1.6 %); the baseline comes from separate pilot paths, so there is no O(1/N) bias
    to allow for. At alpha = 0 the g-derivative of this linear map is the same on every
    path (no variance): its SE is rounding, so rounding (1e-12 relative) is allowed too."""
    a, g, burn_in, steps = 0.8, 1.0, 2, 10
    times = np.arange(burn_in + 1, burn_in + steps + 1)
    d_g = np.mean((1 - a**times) / (1 - a))
    d_a = np.mean(g * (times * a ** (times - 1) * (a - 1) + 1 - a**times) / (1 - a) ** 2)
    result = linear_response(
        noisy_ar1(a, g),
        WindowAverage(lambda x: x[0], steps, burn_in=burn_in),
        PathKernel(samples=20_000, alpha=alpha),
        wrt=lambda s: s.args,
        x0=jnp.zeros(1),
        key=KEY,
    )
    for name, expected in (("g", d_g), ("a", d_a)):
        error = abs(float(result.grad[name]) - expected)
        assert error <= 4 * float(result.stderr[name]) + 1e-12 * expected, name
    assert result.value == pytest.approx(np.mean(g * (1 - a**times) / (1 - a)), abs=0.02)
    assert result.info.steps == burn_in + steps and result.info.window is None
    assert not result.info.exploding


def nine_neuron_window():
    """The noisy nine-neuron net and a window (burn-in 4, window 8) of a two-component
    observable with an explicit parameter dependence: its per-step term
    sum_t w_t d_theta Phi(x_t; theta)."""
    phi = ParametricObservable(lambda x, s: jnp.stack([jnp.sum(x), s.gamma * x[0] ** 2]))
    return cg.NineNeuronNet(gamma=0.3, noise=0.5), WindowAverage(phi, 8, burn_in=4)


def deep_net_window():
    """A noisy deep net with per-layer weights (their derivatives leave the backward pass
    as layer slices) and a window (burn-in 3, window 5)."""
    net = cg.DeepTanhNet(depth=8, width=4, sigma_w=1.5, sigma_b=0.3, noise=0.3, seed=3)
    return net, WindowAverage(lambda x: jnp.tanh(x[0]) + 0.5 * x[1] ** 2, 5, burn_in=3)


@pytest.mark.parametrize("case", [nine_neuron_window, deep_net_window])
def test_path_form_alpha_zero_is_backprop(case):
    """alpha = 0 is backpropagation of the window average on the same paths, to rounding."""
    system, statistic = case()
    path = linear_response(system, statistic, PathKernel(samples=300, alpha=0.0), key=KEY)
    back = linear_response(system, statistic, Backprop(samples=300, diagnostics=False), key=KEY)
    for ours, theirs in zip(
        jax.tree_util.tree_leaves(path.grad), jax.tree_util.tree_leaves(back.grad), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    for ours, theirs in zip(
        jax.tree_util.tree_leaves(path.stderr), jax.tree_util.tree_leaves(back.stderr), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(path.value, back.value, rtol=1e-12)


def cost_accumulator(a=0.8, g=1.0, c=0.5, target=4.0, sigma=0.5):
    """(x, y)' = (a x + g + sigma xi, y + c (x - target)^2): y accumulates a running cost
    of x deterministically (no noise on y: the noise level is the vector (sigma, 0))."""
    return cg.Map(
        lambda t, z, p: jnp.array([p["a"] * z[0] + p["g"], z[1] + c * (z[0] - target) ** 2]),
        args={"a": jnp.asarray(a), "g": jnp.asarray(g)},
        noise=jnp.array([sigma, 0.0]),
        dim=2,
    )


def accumulated_costs(a, g, steps, c=0.5, target=4.0, sigma=0.5):
    """E[y_n], n = 1 .. steps, from (0, 0): c sum_{s<n} [(m_s - target)^2 + v_s], with
    m_s = g (1 - a^s) / (1 - a) and v_s = sigma^2 (1 - a^{2s}) / (1 - a^2)."""
    s = jnp.arange(steps)
    mean = g * (1 - a**s) / (1 - a)
    variance = sigma**2 * (1 - a ** (2 * s)) / (1 - a**2)
    return c * jnp.cumsum((mean - target) ** 2 + variance)


@pytest.mark.parametrize("kind", ["terminal", "window"])
def test_a_noise_free_component_is_not_damped(kind):
    """The cost accumulator's y has no noise, so no kernel can reweight it: PathKernel
    leaves it undamped (a_y = 0, no division by s_y = 0, which would give NaN) and damps x
    only. At alpha = 2 (a = 0.86 per step) it matches the closed form of E[y_10] (Terminal)
    or of the window average of y over steps 3 .. 12 (WindowAverage) within 4 SE (20 000
    paths, key 0; four comparisons)."""
    steps = 10
    if kind == "terminal":
        statistic = Terminal(lambda z: z[1], steps)
        expected_cost = lambda a, g: accumulated_costs(a, g, steps)[-1]
    else:
        statistic = WindowAverage(lambda z: z[1], steps, burn_in=2)
        expected_cost = lambda a, g: jnp.mean(accumulated_costs(a, g, steps + 2)[2:])
    result = linear_response(
        cost_accumulator(),
        statistic,
        PathKernel(samples=20_000, alpha=2.0),
        wrt=lambda s: s.args,
        x0=jnp.zeros(2),
        key=KEY,
    )
    exact = jax.grad(expected_cost, argnums=(0, 1))(0.8, 1.0)
    for name, expected in zip(("a", "g"), exact, strict=True):
        value, se = float(result.grad[name]), float(result.stderr[name])
        assert np.isfinite(value) and np.isfinite(se), name
        assert abs(value - float(expected)) <= 4 * se, name
    assert not result.info.exploding


def test_errors():
    with pytest.raises(ValueError, match="Shadowing"):
        linear_response(
            cg.Henon(), Terminal(lambda x: x[0], 5), PathKernel(samples=2, alpha=1.0), key=KEY
        )
    # the noise= option is gone (Gaussian transitions only); the settings of the stationary
    # form given with a Terminal statistic are refused instead
    net = cg.NineNeuronNet(noise=0.5)
    for settings in (dict(steps=5), dict(window=2), dict(burn_in=10)):
        with pytest.raises(ValueError, match="apply to a TimeAverage only"):
            linear_response(
                net, Terminal(jnp.sum, 5), PathKernel(samples=2, alpha=1.0, **settings), key=KEY
            )
    # the same for a WindowAverage, whose burn-in is its own (WindowAverage(burn_in=))
    for settings in (dict(steps=5), dict(window=2), dict(burn_in=10)):
        name = next(iter(settings))
        with pytest.raises(ValueError, match=f"{name}=.* apply to a TimeAverage only") as error:
            linear_response(
                net,
                WindowAverage(jnp.sum, 5, burn_in=2),
                PathKernel(samples=2, alpha=1.0, **settings),
                key=KEY,
            )
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="has 6 layers: steps \\+ burn_in = 7 runs past"):
        linear_response(
            cg.DeepTanhNet(depth=6, width=2, noise=0.3),
            WindowAverage(jnp.sum, 6, burn_in=1),
            PathKernel(samples=2, alpha=1.0),
            key=KEY,
        )
    with pytest.raises(ValueError, match="needs steps="):
        linear_response(
            ornstein_uhlenbeck(), TimeAverage(jnp.sum), PathKernel(samples=2, alpha=1.0), key=KEY
        )
    with pytest.raises(ValueError, match="window"):
        linear_response(
            ornstein_uhlenbeck(),
            TimeAverage(jnp.sum),
            PathKernel(steps=10, samples=2, alpha=1.0, window=5),
            key=KEY,
        )
    with pytest.raises(ValueError, match="alpha"):
        PathKernel(steps=10, samples=2, alpha=-1.0)


def test_state_and_parameter_dependent_noise_matches_backprop():
    """x' = 0.7 tanh(x) + g + s (1 + 0.5 tanh x) xi: only the mean part of a step is moved
    into the kernel (the noise-scale part stays pathwise), so any alpha agrees with plain
    backpropagation, which is unbiased for this stable map."""
    system = cg.Map(
        lambda t, x, p: 0.7 * jnp.tanh(x) + p["g"],
        args={"g": jnp.asarray(0.2), "s": jnp.asarray(0.4)},
        noise=lambda t, x, p: p["s"] * (1 + 0.5 * jnp.tanh(x)),
        dim=2,
    )
    phi = lambda x: jnp.sum(jnp.sin(x)) + x[0] ** 2  # noqa: E731
    back = linear_response(
        system, Terminal(phi, 15), Backprop(samples=100_000, diagnostics=False), key=KEY
    )
    path = linear_response(
        system, Terminal(phi, 15), PathKernel(samples=100_000, alpha=3.0), key=jax.random.key(1)
    )
    for name in ("g", "s"):
        difference = float(path.grad.args[name] - back.grad.args[name])
        assert abs(difference) <= 3 * float(
            jnp.hypot(path.stderr.args[name], back.stderr.args[name])
        ), name
