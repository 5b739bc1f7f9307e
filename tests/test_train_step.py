"""TrainStep: value_and_grad's gradient and one optax update, pure, in one compiled program."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad import Auto, Backprop, Kernel, Shadowing, Terminal, TimeAverage

KEY = jax.random.key(0)
Z = TimeAverage(lambda x: x[2])
LORENZ = cg.Lorenz63(dt=1e-3, method="euler")
SHADOWING = Shadowing(unstable_dim=2, segment_steps=40, segments=20)


def ar1(a=0.5):
    """x' = a x + 0.3 xi: a noisy AR(1)."""
    return cg.Map(lambda t, x, a: a * x, args=jnp.asarray(a), noise=0.3, dim=1)


CASES = {
    "lorenz63-shadowing": (
        LORENZ,
        Z,
        SHADOWING,
        lambda s: (s.rho, s.sigma),
        lambda s: (s - 23.55) ** 2,
    ),
    "nine-neuron-kernel": (
        cg.NineNeuronNet(),
        Terminal(lambda x: jnp.sum(x), 20),
        Kernel(samples=500),
        lambda s: s.gamma,
        lambda s: (s - 2.0) ** 2,
    ),
    "ar1-backprop": (
        ar1(),
        Terminal(lambda x: x[0] ** 2, 30),
        Backprop(samples=64),
        lambda s: s.args,
        lambda s: (s - 1.0) ** 2,
    ),
}


def largest_difference(a, b) -> float:
    """max |a - b| / max(1, |b|) over the leaves of two pytrees of the same structure."""
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y)) / np.maximum(1.0, np.abs(y))))
        for x, y in pairs
    )


def norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(leaf) ** 2) for leaf in jax.tree.leaves(tree))))


@pytest.mark.parametrize("name", list(CASES))
def test_step_under_jit_is_value_and_grad_and_one_optax_update(name):
    """The step's gradient, loss and norms are value_and_grad's, and its new parameters are
    one optax update with that gradient, to 1e-10 (relative where above 1)."""
    system, statistic, estimator, wrt, loss = CASES[name]
    optimizer = optax.adam(0.05)
    step = cg.TrainStep(loss, statistic, estimator, optimizer, wrt=wrt)
    state = step.init(system)
    updated, metrics = eqx.filter_jit(step)(state, KEY)
    grads, _ = eqx.filter_jit(step.gradient)(state, KEY)

    value, grad, stderr = cg.value_and_grad(system, loss, statistic, estimator, wrt=wrt, key=KEY)
    theta = wrt(system)
    updates, _ = optimizer.update(grad, optimizer.init(theta), theta)
    assert largest_difference(grads, grad) <= 1e-10
    assert largest_difference(wrt(updated.system), optax.apply_updates(theta, updates)) <= 1e-10
    assert largest_difference(metrics.loss, value) <= 1e-10
    assert abs(float(metrics.grad_norm) - norm(grad)) <= 1e-10 * max(1.0, norm(grad))
    assert abs(float(metrics.stderr_norm) - norm(stderr)) <= 1e-10 * max(1.0, norm(stderr))
    assert bool(metrics.finite) and int(updated.iteration) == 1


def test_a_plain_optax_loop_moves_rho_to_the_target():
    """The loop of the docs: rho 35 -> 28, where <z> = 23.55 (RK4, dt = 0.005)."""
    system = eqx.tree_at(lambda s: s.rho, cg.Lorenz63(), jnp.asarray(35.0))
    step = cg.TrainStep(
        lambda s: (s - 23.55) ** 2,
        Z,
        Shadowing(unstable_dim=2, segment_steps=40, segments=50),
        optax.sgd(0.1),
        wrt=lambda s: s.rho,
    )
    state = step.init(system)
    run = eqx.filter_jit(step)
    losses = []
    for i in range(20):
        state, metrics = run(state, jax.random.fold_in(KEY, i))
        losses.append(float(metrics.loss))
    assert int(state.iteration) == 20
    assert abs(float(state.system.rho) - 28.0) < 1.0 < 7.0 == 35.0 - 28.0
    assert np.mean(losses[-5:]) < 0.05 * losses[0]


def test_later_steps_reuse_the_compiled_program():
    """The state a step returns has the structure and dtypes of the one it was given, so
    the second and later steps run the first one's program (the loss is not traced again)."""
    traced = []

    def loss(s):
        traced.append(1)
        return (s - 1.0) ** 2

    step = cg.TrainStep(
        loss, Terminal(lambda x: x[0] ** 2, 10), Backprop(samples=4), optax.sgd(0.1)
    )
    run = eqx.filter_jit(step)
    state, _ = run(step.init(ar1(0.5)), KEY)
    seen = len(traced)
    for i in range(3):
        state, _ = run(state, jax.random.fold_in(KEY, i))
    assert seen > 0 and len(traced) == seen


@pytest.mark.parametrize(
    "estimator, named",
    [
        (Shadowing(unstable_dim="auto", segment_steps=40, segments=20), "unstable_dim"),
        (Auto(), "Auto"),
    ],
)
def test_auto_settings_are_refused_naming_configure(estimator, named):
    with pytest.raises(ValueError, match="chaosgrad.configure") as info:
        cg.TrainStep(lambda s: s, Z, estimator, optax.sgd(0.1))
    assert named in str(info.value) and "\n" not in str(info.value)


def test_configured_settings_are_accepted():
    auto = Shadowing(unstable_dim="auto", segment_steps=40, segments=20)
    concrete = cg.configure(LORENZ, Z, auto, wrt=lambda s: s.rho, key=KEY)
    step = cg.TrainStep(lambda s: s, Z, concrete, optax.sgd(0.1), wrt=lambda s: s.rho)
    assert isinstance(step.estimator, Shadowing) and step.estimator.unstable_dim == 2


def test_bad_arguments_are_refused_naming_them(tmp_path):
    with pytest.raises(TypeError, match="statistic must be"):
        cg.TrainStep(lambda s: s, lambda x: x[0], SHADOWING, optax.sgd(0.1))
    with pytest.raises(TypeError, match="optimizer must be an Optax transformation"):
        cg.TrainStep(lambda s: s, Z, SHADOWING, optax.sgd)
    with pytest.raises(TypeError, match="estimator must be a chaosgrad estimator"):
        cg.TrainStep(lambda s: s, Z, "shadowing", optax.sgd(0.1))
    with pytest.raises(ValueError, match="leave checkpoint out"):
        cg.TrainStep(
            lambda s: s,
            Z,
            Shadowing(unstable_dim=2, segment_steps=40, segments=20, checkpoint=tmp_path),
            optax.sgd(0.1),
        )
    step = cg.TrainStep(
        lambda s: s, Terminal(lambda x: x[0], 10), Kernel(samples=8), optax.sgd(0.1)
    )
    with pytest.raises(ValueError, match="needs a noisy system"):  # init runs the host checks
        step.init(LORENZ)


def breaking(limit: float):
    """x' = 0.5 x + p, whose states are NaN once p > limit (a model past its range)."""
    return cg.Map(
        lambda t, x, p: 0.5 * x + p + 0.0 * jnp.sqrt(limit - p), args=jnp.asarray(0.0), dim=1
    )


def test_a_run_that_stops_being_finite_is_flagged_not_raised():
    step = cg.TrainStep(
        lambda s: (s - 3.0) ** 2,
        TimeAverage(lambda x: x[0]),
        Backprop(steps=20, burn_in=5),
        optax.sgd(0.05),
        wrt=lambda s: s.args,
    )
    run = eqx.filter_jit(step)
    state = step.init(breaking(1.0))
    state, metrics = run(state, KEY)
    assert bool(metrics.finite) and np.isfinite(float(metrics.loss))
    state = eqx.tree_at(lambda s: s.system.args, state, jnp.asarray(2.0))
    _, metrics = run(state, KEY)
    assert not bool(metrics.finite)
    assert np.isnan(float(metrics.loss))


def test_fit_is_a_loop_over_the_step():
    """Without a regulariser or schedule, fit's iterations are the step's, with the keys
    fold_in(key, i): the same losses, statistics, norms and parameters as a plain loop."""
    settings = dict(
        loss=lambda s: (s - 3.0) ** 2,
        statistic=TimeAverage(lambda x: x[0]),
        estimator=Backprop(steps=50, burn_in=20, samples=4),
        optimizer=optax.adam(0.1),
        wrt=lambda s: s.args,
    )
    system = ar1(0.0)
    result = cg.fit(system, **settings, iterations=5, key=KEY)
    step = cg.TrainStep(**settings)
    state, run = step.init(system), eqx.filter_jit(step)
    for i in range(5):
        before = float(state.system.args)
        state, metrics = run(state, jax.random.fold_in(KEY, i))
        for name in ("loss", "statistic", "grad_norm", "stderr_norm"):
            expected = result.history[name][i]
            assert abs(float(getattr(metrics, name)) - expected) <= 1e-12 * max(1.0, abs(expected))
        assert abs(before - result.history["parameters"][i][0]) <= 1e-12 * max(1.0, abs(before))
    assert abs(float(state.system.args) - float(result.system.args)) <= 1e-12


def test_an_optimizer_that_takes_the_loss_value_gets_it():
    """Polyak's step min(f / |g|^2, max) g on loss (b - 2)^2 of the terminal state x_1 = b:
    f / |g|^2 = 1/4, so each step halves the distance to 2, from 0: 1, 1.5, 1.75. The same
    through TrainStep and through fit (whose compiled update takes the value as an input)."""
    system = cg.Map(lambda t, x, b: jnp.broadcast_to(b, x.shape), args=jnp.asarray(0.0), dim=1)
    loss, statistic = (lambda s: (s - 2.0) ** 2), Terminal(lambda x: x[0], 1)
    polyak = optax.polyak_sgd(max_learning_rate=10.0)
    step = cg.TrainStep(loss, statistic, Backprop(samples=2), polyak, x0=jnp.zeros(1))
    state = step.init(system)
    found = []
    for i in range(3):
        state, _ = eqx.filter_jit(step)(state, jax.random.fold_in(KEY, i))
        found.append(float(state.system.args))
    np.testing.assert_allclose(found, [1.0, 1.5, 1.75], rtol=1e-12)
    result = cg.fit(
        system,
        loss,
        statistic,
        Backprop(samples=2),
        polyak,
        iterations=3,
        key=KEY,
        x0=jnp.zeros(1),
    )
    np.testing.assert_allclose(float(result.system.args), 1.75, rtol=1e-12)


def test_a_second_fit_with_an_equal_optimizer_does_not_compile_again():
    """optax.adam is a GradientTransformationExtraArgs, whose update fit calls with the loss
    as value: a second fit with a fresh but equal optimizer finds the compiled iteration
    again (counted with JAX's compile events, not timed)."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    system = ar1()

    def run():
        return cg.fit(
            system,
            lambda s: (s - 1.0) ** 2,
            Terminal(lambda x: x[0], 5),
            Kernel(samples=50),
            optax.adam(0.01),
            iterations=2,
            key=KEY,
            x0=jnp.ones(1),
        )

    run()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
