"""The differentiable statistic: ``average``'s derivative is the estimator's Jacobian, and it
composes with jax.jit, jax.vmap, jax.grad, eqx.filter_grad and a plain optax loop."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad import (
    Backprop,
    FastAdjointResponse,
    FiniteDifference,
    Kernel,
    PathKernel,
    Shadowing,
    Terminal,
    TimeAverage,
    TruncatedBackprop,
)

KEY = jax.random.key(0)
Z = TimeAverage(lambda x: x[2])
LORENZ = cg.Lorenz63(dt=1e-3, method="euler")
SHADOWING = Shadowing(unstable_dim=2, segment_steps=100, segments=20)


def ar1(a=0.5):
    """x' = a x + 0.3 xi: a noisy AR(1)."""
    return cg.Map(lambda t, x, a: a * x, args=jnp.asarray(a), noise=0.3, dim=1)


def at(system, where, value):
    return eqx.tree_at(where, system, value)


CASES = {
    "lorenz63-shadowing": (LORENZ, Z, SHADOWING, lambda s: s.rho),
    "solenoid-far": (
        cg.ModifiedSolenoid(),
        TimeAverage(lambda x: x[2]),
        FastAdjointResponse(unstable_dim=1, segment_steps=20, segments=50),
        lambda s: s.gamma1,
    ),
    "nine-neuron-kernel": (
        cg.NineNeuronNet(),
        Terminal(lambda x: jnp.sum(x), 20),
        Kernel(samples=500),
        lambda s: s.gamma,
    ),
    "nine-neuron-path-kernel": (
        cg.NineNeuronNet(),
        Terminal(lambda x: jnp.sum(x), 20),
        PathKernel(samples=500, alpha=1.0),
        lambda s: s.gamma,
    ),
    "nine-neuron-composite": (
        cg.NineNeuronNet(),
        Terminal(lambda x: jnp.sum(x), 20),
        cg.Composite(samples=500),
        lambda s: s.gamma,
    ),
    "ar1-backprop": (
        ar1(),
        Terminal(lambda x: x[0] ** 2, 30),
        Backprop(samples=64),
        lambda s: s.args,
    ),
    "ar1-truncated": (
        ar1(),
        Terminal(lambda x: x[0] ** 2, 30),
        TruncatedBackprop(samples=64, truncation=5),
        lambda s: s.args,
    ),
    **{
        f"ar1-{type(estimator).__name__.lower()}": (
            ar1(),
            Terminal(lambda x: x[0] ** 2, 30),
            estimator,
            lambda s: s.args,
        )
        for estimator in (
            cg.ES(sigma=0.05, samples=64),
            cg.PES(sigma=0.05, samples=64, truncation=10),
            cg.NRES(sigma=0.05, samples=64, truncation=10),
            cg.SPSA(c=0.05, samples=64),
        )
    },
    "lorenz63-fd": (
        LORENZ,
        Z,
        FiniteDifference(eps=0.1, samples=4, steps=500),
        lambda s: s.rho,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_grad_equals_linear_response(name):
    """jax.grad through average (under jit too) equals linear_response's grad to 1e-10,
    and its value equals linear_response's value."""
    system, statistic, estimator, where = CASES[name]
    reference = cg.linear_response(system, statistic, estimator, wrt=where, key=KEY)

    def value(theta):
        return cg.average(at(system, where, theta), statistic, adjoint=estimator, key=KEY)

    theta = where(system)
    grad = jax.grad(value)(theta)
    compiled = jax.jit(jax.value_and_grad(value))(theta)
    expected = float(reference.grad)
    assert abs(float(grad) - expected) <= 1e-10 * max(1.0, abs(expected))
    assert abs(float(compiled[1]) - expected) <= 1e-10 * max(1.0, abs(expected))
    assert abs(float(compiled[0]) - float(reference.value)) <= 1e-10 * abs(float(reference.value))


def test_vmap_over_keys_and_over_a_parameter():
    """vmap over keys gives each key's linear_response gradient; vmap over rho gives each
    rho's value and gradient."""

    def value(rho, key):
        return cg.average(at(LORENZ, lambda s: s.rho, rho), Z, adjoint=SHADOWING, key=key)

    keys = jax.random.split(KEY, 3)
    by_key = jax.vmap(jax.grad(value), in_axes=(None, 0))(LORENZ.rho, keys)
    for key, grad in zip(keys, by_key, strict=True):
        expected = cg.linear_response(LORENZ, Z, SHADOWING, wrt=lambda s: s.rho, key=key).grad
        assert abs(float(grad) - float(expected)) <= 1e-10 * abs(float(expected))
    rhos = jnp.asarray([26.0, 30.0])
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(value), in_axes=(0, None)))(rhos, KEY)
    for rho, v, g in zip(rhos, values, grads, strict=True):
        expected = cg.linear_response(
            at(LORENZ, lambda s: s.rho, rho), Z, SHADOWING, wrt=lambda s: s.rho, key=KEY
        )
        assert abs(float(v) - float(expected.value)) <= 1e-10 * abs(float(v))
        assert abs(float(g) - float(expected.grad)) <= 1e-10 * abs(float(expected.grad))


def test_filter_grad_over_the_whole_system_and_a_vector_statistic():
    """eqx.filter_grad of a loss of a two-component statistic: every parameter's gradient is
    the loss's cotangent times linear_response's Jacobian rows."""
    statistic = TimeAverage(lambda x: (x[0] ** 2, x[2]))

    def loss(system):
        first, second = cg.average(system, statistic, adjoint=SHADOWING, key=KEY)
        return 0.5 * first + 2.0 * second

    grads = eqx.filter_grad(loss)(LORENZ)
    jacobian = cg.linear_response(LORENZ, statistic, SHADOWING, key=KEY).grad
    for name in ("rho", "sigma", "beta"):
        expected = 0.5 * getattr(jacobian[0], name) + 2.0 * getattr(jacobian[1], name)
        got = getattr(grads, name)
        assert abs(float(got) - float(expected)) <= 1e-10 * max(1.0, abs(float(expected)))


def test_plain_optax_loop_tunes_lorenz63_to_its_mean_z():
    """A plain optax loop around average tunes rho from 35 until <z> = 23.55 (the value at
    rho = 28): each iteration's <z> has a sampling error of about 0.3 (T = 20), SGD at rate
    0.1 with d<z>/drho ~ 1 contracts by 0.8 an iteration and then wanders by ~0.1 in rho;
    the tolerance 1.0 also covers Shadowing's finite-orbit bias (references: 1.01 +- 0.04)."""
    system = at(cg.Lorenz63(), lambda s: s.rho, jnp.asarray(35.0))
    estimator = Shadowing(unstable_dim=2, segment_steps=40, segments=100)
    optimizer = optax.sgd(0.1)

    def loss(rho, key):
        tuned = at(system, lambda s: s.rho, rho)
        return (cg.average(tuned, Z, adjoint=estimator, key=key) - 23.55) ** 2

    @jax.jit
    def step(rho, state, key):
        value, grad = jax.value_and_grad(loss)(rho, key)
        updates, state = optimizer.update(grad, state)
        return optax.apply_updates(rho, updates), state, value

    rho, state = system.rho, optimizer.init(system.rho)
    losses = []
    for i in range(30):
        rho, state, value = step(rho, state, jax.random.fold_in(KEY, i))
        losses.append(float(value))
    assert abs(float(rho) - 28.0) < 1.0
    assert losses[0] > 20 and np.mean(losses[-5:]) < 1.0


def test_configure_resolves_auto_settings_for_average():
    """ "auto" settings and Auto are refused inside average with the way on; configure
    resolves them on the host, and the resolved estimator matches linear_response's."""
    estimator = Shadowing(unstable_dim="auto", segment_steps=100, segments=20)
    with pytest.raises(ValueError, match="configure"):
        cg.average(LORENZ, Z, adjoint=estimator, key=KEY)
    with pytest.raises(ValueError, match="configure"):
        cg.average(LORENZ, Z, adjoint=cg.Auto(steps=2000), key=KEY)
    resolved = cg.configure(LORENZ, Z, estimator, key=KEY)
    assert resolved.unstable_dim == 2
    assert cg.configure(LORENZ, Z, SHADOWING, key=KEY) is SHADOWING
    automatic = cg.linear_response(LORENZ, Z, estimator, wrt=lambda s: s.rho, key=KEY)
    grad = jax.grad(
        lambda rho: cg.average(at(LORENZ, lambda s: s.rho, rho), Z, adjoint=resolved, key=KEY)
    )(LORENZ.rho)
    assert abs(float(grad) - float(automatic.grad)) <= 1e-10 * abs(float(automatic.grad))


def test_average_refuses_bad_adjoints(tmp_path):
    with pytest.raises(TypeError, match="adjoint must be a chaosgrad estimator"):
        cg.average(LORENZ, Z, adjoint="shadowing", key=KEY)  # type: ignore[arg-type]
    resumable = Shadowing(unstable_dim=2, segment_steps=100, segments=20, checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="linear_response for a resumable run"):
        cg.average(LORENZ, Z, adjoint=resumable, key=KEY)
    with pytest.raises(ValueError, match="key is required"):
        cg.average(LORENZ, Z, adjoint=SHADOWING, key=None)


def test_a_diverging_run_raises_under_jit():
    """An orbit that overflows is an error inside a compiled computation, not a NaN."""
    blowing = cg.Map(lambda t, x, a: a * x, args=jnp.asarray(1e3), dim=1)
    statistic = Terminal(lambda x: x[0], 200)
    estimator = FiniteDifference(eps=1.0, samples=2)

    @jax.jit
    def value(a):
        return cg.average(at(blowing, lambda s: s.args, a), statistic, adjoint=estimator, key=KEY)

    with pytest.raises(Exception, match="stopped being finite"):
        jax.block_until_ready(value(jnp.asarray(1e3)))
