"""Version-2 core: vector statistics in one sweep, any Equinox model, input sequences,
losses of many statistics, no needless recompilation."""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad import (
    Backprop,
    FiniteDifference,
    InputDriven,
    Kernel,
    PathKernel,
    Shadowing,
    Terminal,
    TimeAverage,
    linear_response,
    value_and_grad,
)

KEY = jax.random.key(0)


def lorenz_euler():
    return cg.Lorenz63(dt=1e-3, method="euler")


def three(x):
    return jnp.stack([x[2], x[0] ** 2, x[2] ** 2])


def test_shadowing_jacobian_of_three_statistics_equals_three_scalar_runs():
    """One sweep with 3 cotangents gives, to 1e-10, the three scalar sweeps (same key)."""
    system = lorenz_euler()
    estimator = Shadowing(unstable_dim=2, segment_steps=200, segments=20, burn_in=2000)
    wrt = lambda s: (s.rho, s.sigma, s.beta)  # noqa: E731
    joint = linear_response(system, TimeAverage(three), estimator, wrt=wrt, key=KEY)
    for i in range(3):
        single = linear_response(
            system, TimeAverage(lambda x, i=i: three(x)[i]), estimator, wrt=wrt, key=KEY
        )
        assert float(joint.value[i]) == pytest.approx(float(single.value), rel=1e-12)
        for j in range(3):
            assert float(joint.grad[j][i]) == pytest.approx(
                float(single.grad[j]), rel=1e-10, abs=1e-10
            )
            assert float(joint.stderr[j][i]) == pytest.approx(
                float(single.stderr[j]), rel=1e-8, abs=1e-12
            )


@pytest.mark.slow
def test_shadowing_jacobian_agrees_with_finite_differences():
    """d<(z, x^2, z^2)>/d(rho, beta) on Lorenz-63 (Euler, dt=1e-3), T = 200 per estimate.
    The sigma column is left out: there shadowing misses the unstable contribution (0.133
    against 0.147 for <z>, references.md), a method bias, not noise. Model error: 2 % of the
    value (shadowing's own bias, ~1.034 vs 1.017 for d<z>/drho)."""
    system = lorenz_euler()
    wrt = lambda s: (s.rho, s.beta)  # noqa: E731
    shadow = linear_response(
        system,
        TimeAverage(three),
        Shadowing(unstable_dim=2, segment_steps=200, segments=1000, burn_in=10_000),
        wrt=wrt,
        key=KEY,
    )
    fd = linear_response(
        system,
        TimeAverage(three),
        FiniteDifference(eps=0.5, samples=16, steps=500_000, burn_in=10_000),
        wrt=wrt,
        key=KEY,
    )
    for j in range(2):
        for i in range(3):
            a, b = float(shadow.grad[j][i]), float(fd.grad[j][i])
            se = np.hypot(float(shadow.stderr[j][i]), float(fd.stderr[j][i]))
            assert abs(a - b) <= 3 * se + 0.02 * abs(b), (j, i, a, b, se)


def _gru_problem(noise=0.0, samples=4, steps=12):
    m, n = 3, 5
    cell = eqx.nn.GRUCell(m, n, key=jax.random.key(1))
    inputs = jax.random.normal(jax.random.key(2), (samples, steps, m))
    system = InputDriven(lambda t, h, u, c: c(u, h), inputs, args=cell, noise=noise, dim=n)
    return system, cell, inputs


def _lstm_problem(samples=4, steps=12):
    m, n = 2, 4
    cell = eqx.nn.LSTMCell(m, n, key=jax.random.key(5))

    def step(t, x, u, c):
        h, state = c(u, (x[:n], x[n:]))
        return jnp.concatenate([h, state])

    inputs = jax.random.normal(jax.random.key(6), (samples, steps, m))
    return InputDriven(step, inputs, args=cell, dim=2 * n), cell, inputs, step


def _unrolled(step, x0, inputs, observable):
    def run(cell):
        def one(u):
            x = x0
            for t in range(inputs.shape[1]):
                x = step(t, x, u[t], cell)
            return observable(x)

        return jnp.mean(jax.vmap(one)(inputs), axis=0)

    return run


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_backprop_of_a_cell_with_input_sequences_equals_jax_grad_of_the_loop(kind):
    observable = lambda h: jnp.stack([jnp.sum(h), h[0] ** 2])  # noqa: E731
    if kind == "gru":
        system, cell, inputs = _gru_problem()
        step = lambda t, h, u, c: c(u, h)  # noqa: E731
    else:
        system, cell, inputs, step = _lstm_problem()
    x0 = 0.1 * jnp.ones(system.dim)
    result = linear_response(
        system,
        Terminal(observable, inputs.shape[1]),
        Backprop(samples=inputs.shape[0], diagnostics=False),
        wrt=lambda s: s.args,
        x0=x0,
        key=KEY,
    )
    reference = eqx.filter_jacrev(_unrolled(step, x0, inputs, observable))(cell)
    for got, want in zip(
        jax.tree_util.tree_leaves(eqx.filter(result.grad, eqx.is_array)),
        jax.tree_util.tree_leaves(eqx.filter(reference, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        result.value, _unrolled(step, x0, inputs, observable)(cell), rtol=1e-12
    )


@pytest.mark.parametrize("estimator", [Kernel(samples=16_384), PathKernel(samples=2048, alpha=0.5)])
def test_kernel_estimators_agree_with_backprop_on_a_noisy_gru(estimator):
    """Depth 6, noise 0.3, each sample its own input sequence (inputs repeat every 4 samples).
    Within 3 combined SE; no model error (both unbiased for this finite-depth statistic)."""
    system, _, _ = _gru_problem(noise=0.3, samples=4, steps=6)
    statistic = Terminal(lambda h: jnp.sum(jnp.tanh(h)), 6)
    wrt = lambda s: s.args.bias  # noqa: E731
    reference = linear_response(
        system, statistic, Backprop(samples=2048, diagnostics=False), wrt=wrt, key=KEY
    )
    result = linear_response(system, statistic, estimator, wrt=wrt, key=jax.random.key(1))
    difference = np.abs(np.asarray(result.grad) - np.asarray(reference.grad))
    bound = 3 * np.hypot(np.asarray(result.stderr), np.asarray(reference.stderr))
    assert np.all(difference <= bound), (result.grad, reference.grad, bound)


def test_input_sequences_are_data_not_parameters():
    system, _, _ = _gru_problem()
    result = linear_response(
        system, Terminal(lambda h: jnp.sum(h), 12), Backprop(samples=4), x0=jnp.zeros(5), key=KEY
    )
    assert result.grad.inputs is None
    assert result.grad.args.weight_hh.shape == (15, 5)


def test_wrt_may_select_a_module_with_non_array_leaves():
    """An eqx.nn.MLP inside a Flow: the activation function is filtered out, not refused."""
    mlp = eqx.nn.MLP(3, 3, 8, 1, activation=jnp.tanh, key=jax.random.key(3))
    flow = cg.Flow(lambda t, x, net: -x + 0.1 * net(x), dt=0.05, args=mlp, dim=3)
    result = linear_response(
        flow,
        TimeAverage(lambda x: x[0]),
        Shadowing(unstable_dim=0, segment_steps=20, segments=10, burn_in=100),
        wrt=lambda s: s.args,
        key=KEY,
    )
    assert result.grad.layers[0].weight.shape == (8, 3)  # shaped like wrt(system)
    assert result.grad.activation is None  # non-arrays filtered out, as eqx.filter_grad


def test_value_and_grad_of_a_quadratic_loss_matches_the_closed_form_on_a_noisy_ar1():
    """x' = a x + g + s xi from x0 = 0, Terminal at T = 5: m = E x_T = g (1 - a^T)/(1 - a).
    Loss (m - 1)^2: d/dg = 2 (m - 1) (1 - a^T)/(1 - a). Kernel takes the cotangent from its
    pilot run (the first 1024 samples; independent of the score for a quadratic loss up to
    O(1/samples)), PathKernel from separate pilot samples, Backprop from its own samples.
    The reported stderr holds the cotangent fixed, so the bound adds the cotangent's own
    sampling error, |L''| |dm/dg| sd(x_T)/sqrt(n), n the samples the value came from."""
    a, g, T = 0.8, 1.0, 5
    system = cg.Map(
        lambda t, x, p: p["a"] * x + p["g"],
        args={"a": jnp.asarray(a), "g": jnp.asarray(g)},
        noise=0.5,
        dim=1,
    )
    mean = g * (1 - a**T) / (1 - a)
    exact = 2 * (mean - 1) * (1 - a**T) / (1 - a)
    sd_x = 0.5 * np.sqrt(sum(a ** (2 * k) for k in range(T)))
    for estimator, n_value in (
        (Kernel(samples=20_000), 1024),
        (PathKernel(samples=20_000, alpha=1.0), 1024),
        (Backprop(samples=2000), 2000),
    ):
        loss, grad, stderr = value_and_grad(
            system,
            lambda m: (m[0] - 1.0) ** 2,
            Terminal(lambda x: x, T),
            estimator,
            wrt=lambda s: s.args["g"],
            x0=jnp.zeros(1),
            key=KEY,
        )
        cotangent_error = 2 * (1 - a**T) / (1 - a) * sd_x / np.sqrt(n_value)
        bound = 3 * np.hypot(float(stderr), cotangent_error)
        assert abs(float(grad) - exact) <= bound, (estimator, grad, exact, bound)
        loss_error = 2 * abs(mean - 1) * sd_x / np.sqrt(n_value)
        assert abs(float(loss) - (mean - 1) ** 2) <= 3 * loss_error + 1e-3


def test_value_and_grad_equals_the_chain_rule_on_the_same_orbit():
    """Shadowing: the one-sweep loss gradient equals w . Jacobian with w = loss'(value) of
    the same orbit (the cotangent comes from the forward pass of the same run)."""
    system = lorenz_euler()
    estimator = Shadowing(unstable_dim=2, segment_steps=200, segments=10, burn_in=1000)
    target = jnp.array([23.0, 60.0, 600.0])

    def loss(s):
        return jnp.sum(((s - target) / target) ** 2)

    value, grad, _ = value_and_grad(
        system, loss, TimeAverage(three), estimator, wrt=lambda s: s.rho, key=KEY
    )
    jacobian = linear_response(system, TimeAverage(three), estimator, wrt=lambda s: s.rho, key=KEY)
    w = jax.grad(loss)(jnp.asarray(jacobian.value))
    assert float(value) == pytest.approx(float(loss(jnp.asarray(jacobian.value))), rel=1e-12)
    assert float(grad) == pytest.approx(float(w @ jacobian.grad), rel=1e-9)


def test_fit_trains_a_vector_statistic_to_targets():
    """Deterministic AR(1) pair x' = A x + g: <x> = (I - A)^{-1} g; fit g to a target mean."""
    system = cg.Map(lambda t, x, p: 0.5 * x + p, args=jnp.zeros(2), dim=2)
    target = jnp.array([1.0, -2.0])
    result = cg.fit(
        system,
        lambda s: jnp.sum((s - target) ** 2),
        TimeAverage(lambda x: x),
        Backprop(steps=200, burn_in=100),
        optax.adam(0.1),
        iterations=150,
        key=KEY,
    )
    np.testing.assert_allclose(result.system.args, 0.5 * target, atol=1e-2)


def test_a_fresh_lambda_of_the_same_code_does_not_recompile():
    system = cg.Lorenz63(dt=1e-3, method="euler")
    estimator = Shadowing(unstable_dim=2, segment_steps=50, segments=4, burn_in=100)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("jax")
    with jax.log_compiles(True):
        logger.addHandler(handler)
        try:
            for call, rho in enumerate((28.0, 27.0, 28.5)):
                if call == 1:
                    records.clear()  # the first call compiles; the next ones must not
                moved = eqx.tree_at(lambda s: s.rho, system, jnp.asarray(rho))  # weak-typed
                linear_response(
                    moved,
                    TimeAverage(lambda x: x[2]),
                    estimator,
                    wrt=lambda s: s.rho,
                    key=jax.random.key(call),
                )
        finally:
            logger.removeHandler(handler)
    compiled = [
        r.getMessage()
        for r in records
        if "Compiling" in r.getMessage()
        and ("sweep" in r.getMessage() or "forward_segments" in r.getMessage())
    ]
    assert compiled == []


def test_noise_switched_on_after_construction_is_refused():
    net = cg.NineNeuronNet(noise=0.0)
    noisy = eqx.tree_at(lambda s: s.noise_level, net, jnp.asarray(0.5))
    with pytest.raises(ValueError, match="switched on or off at construction"):
        linear_response(noisy, Terminal(lambda x: jnp.sum(x), 5), Backprop(samples=2), key=KEY)


def test_backprop_says_it_explodes_even_when_the_first_step_has_no_derivative():
    """Euler Lorenz: after one step z does not depend on rho (magnitude 0 at T = 1); the
    explosion (growth ~ lambda_1 = 0.91 over 10 time units) must still be reported."""
    result = linear_response(
        lorenz_euler(),
        TimeAverage(lambda x: x[2]),
        Backprop(samples=4, steps=10_000, burn_in=1000),
        wrt=lambda s: s.rho,
        key=KEY,
    )
    assert result.info.exploding
    assert result.info.warning is not None and "exploding" in result.info.warning
    assert result.info.growth_rate == pytest.approx(0.906, rel=0.25)
