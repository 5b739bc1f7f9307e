"""No stale compiled program: a user function's globals, closed-over values and config
objects are read at every call (chaosgrad._functions). Each test changes a value the
function reads and asserts that both the value and the gradient follow it, against the
same function written with the new value as a literal."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad import Backprop, Shadowing, TimeAverage
from chaosgrad._functions import reads

KEY = jax.random.key(0)
LORENZ = cg.Lorenz63(dt=0.01)
BACKPROP = Backprop(samples=4, steps=200, burn_in=100)
SHADOWING = Shadowing(unstable_dim=1, segment_steps=20, segments=10, burn_in=200)
RHO = lambda s: s.rho  # noqa: E731
Z = TimeAverage(lambda x: x[2])

target = 23.0  # read by the loss below, changed by the tests (reset by the fixture)
scale = 1.0
weights = np.ones(3)


@pytest.fixture(autouse=True)
def _reset_globals():
    global target, scale
    target, scale = 23.0, 1.0
    weights[:] = 1.0
    yield
    target, scale = 23.0, 1.0
    weights[:] = 1.0


def loss_of_global(s):
    return (s - target) ** 2


def _vg(loss, estimator, statistic=Z):
    value, grad, _ = cg.value_and_grad(LORENZ, loss, statistic, estimator, wrt=RHO, key=KEY)
    return float(value), float(grad)


@pytest.mark.parametrize("estimator", [BACKPROP, SHADOWING], ids=["backprop", "shadowing"])
def test_a_loss_reading_a_global_follows_it(estimator):
    global target
    before = _vg(loss_of_global, estimator)
    target = 100.0
    after = _vg(loss_of_global, estimator)
    literal = _vg(lambda s: (s - 100.0) ** 2, estimator)
    assert after == pytest.approx(literal, rel=1e-12)
    assert after[0] != pytest.approx(before[0]) and after[1] != pytest.approx(before[1])


def test_a_second_fit_reads_the_changed_global():
    """The reported issue: the second fit reported the first one's loss (518.15, not the
    new target's loss)."""
    global target

    def run():
        return cg.fit(
            LORENZ,
            loss_of_global,
            Z,
            Backprop(samples=2, steps=100, burn_in=50),
            optax.sgd(1e-4),
            wrt=RHO,
            iterations=1,
            key=KEY,
        ).history["loss"][0]

    first = run()
    target = 0.0
    second = run()
    # the same orbit (same key, same start parameters): (S - 23)^2 first, then S^2
    assert np.sqrt(second) == pytest.approx(np.sqrt(first) + 23.0, rel=1e-9)


def test_a_global_numpy_array_mutated_in_place():
    statistic = TimeAverage(lambda x: weights @ x)
    before = cg.linear_response(LORENZ, statistic, BACKPROP, wrt=RHO, key=KEY)
    weights[:] = (0.0, 0.0, 2.0)
    after = cg.linear_response(LORENZ, statistic, BACKPROP, wrt=RHO, key=KEY)
    literal = cg.linear_response(
        LORENZ, TimeAverage(lambda x: 2.0 * x[2]), BACKPROP, wrt=RHO, key=KEY
    )
    assert float(after.value) == pytest.approx(float(literal.value), rel=1e-12)
    assert float(after.grad) == pytest.approx(float(literal.grad), rel=1e-12)
    assert float(after.value) != pytest.approx(float(before.value))


def test_a_large_closed_over_array_mutated_in_place_changes_a_map():
    """More than 65 536 elements (the size the old key stopped hashing at)."""
    table = np.full(70_000, 3.7)

    def logistic(t, x, a):
        return a * table[0] * x * (1 - x)

    system = cg.Map(logistic, args=1.0, dim=1)
    x0 = jnp.array([0.3])
    before = cg.simulate(system, x0, steps=5)
    table[:] = 3.2
    after = cg.simulate(system, x0, steps=5)
    literal = cg.simulate(
        cg.Map(lambda t, x, a: a * 3.2 * x * (1 - x), args=1.0, dim=1), x0, steps=5
    )
    np.testing.assert_allclose(after, literal, rtol=1e-12)
    assert not np.allclose(after, before)
    statistic = TimeAverage(lambda x: x[0])
    estimator = Backprop(samples=2, steps=20, burn_in=10)
    grad_after = cg.linear_response(system, statistic, estimator, x0=x0, key=KEY).grad
    table[:] = 3.7
    grad_before = cg.linear_response(system, statistic, estimator, x0=x0, key=KEY).grad
    assert float(grad_after.args) != pytest.approx(float(grad_before.args))


@pytest.mark.parametrize("holder", ["object", "dict"])
def test_a_closure_over_a_config_whose_entry_changes(holder):
    config = types.SimpleNamespace(target=23.0) if holder == "object" else {"target": 23.0}
    get = (lambda: config.target) if holder == "object" else (lambda: config["target"])  # type: ignore[union-attr,index]

    def loss(s):
        return (s - get()) ** 2

    before = _vg(loss, BACKPROP)
    if holder == "object":
        config.target = 50.0  # type: ignore[union-attr]
    else:
        config["target"] = 50.0  # type: ignore[index]
    after = _vg(loss, BACKPROP)
    assert after == pytest.approx(_vg(lambda s: (s - 50.0) ** 2, BACKPROP), rel=1e-12)
    assert after[0] != pytest.approx(before[0]) and after[1] != pytest.approx(before[1])


def test_an_observable_reading_a_changed_scale_changes_value_and_gradient():
    """The reported issue: the value stayed stale (23.86) while the gradient doubled."""
    global scale
    statistic = TimeAverage(lambda x: scale * x[2])
    before = cg.linear_response(LORENZ, statistic, BACKPROP, wrt=RHO, key=KEY)
    scale = 2.0
    after = cg.linear_response(LORENZ, statistic, BACKPROP, wrt=RHO, key=KEY)
    assert float(after.value) == pytest.approx(2 * float(before.value), rel=1e-12)
    assert float(after.grad) == pytest.approx(2 * float(before.grad), rel=1e-12)


def test_reads_are_equal_for_a_fresh_lambda_and_differ_with_what_it_reads():
    """The key itself: the same code and values give the same digest, a changed global
    scalar or a mutated array another one."""
    global scale
    state = jax.ShapeDtypeStruct((3,), jnp.float64)
    first, _ = reads(lambda x: scale * x[2], state)
    again, _ = reads(lambda x: scale * x[2], state)
    scale = 1.0 + 1e-15
    nudged, _ = reads(lambda x: scale * x[2], state)
    big = np.zeros(100_000)
    one, _ = reads(lambda x: x + big[:3], state)
    big[1] = 1e-300
    other, _ = reads(lambda x: x + big[:3], state)
    assert first == again
    assert nudged != first
    assert one != other


def test_a_fresh_lambda_of_the_same_code_does_not_compile_again():
    """Counted with JAX's compile events, not timed."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        _vg(lambda s: (s - 23.0) ** 2, BACKPROP)
        compiles.clear()
        _vg(lambda s: (s - 23.0) ** 2, BACKPROP)
        warm = len(compiles)
        _vg(lambda s: (s - 24.0) ** 2, BACKPROP)
        changed = len(compiles) - warm
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert warm == 0
    assert changed >= 1


def test_a_changed_closed_over_array_is_an_input_not_a_new_program():
    """An observable and a loss reading arrays: the arrays are inputs of the compiled
    program (chaosgrad._functions.TracedFunction), so new values give the new value and
    gradient without compiling again; a changed Python scalar is part of the program."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    offset = jnp.asarray([0.0, 0.0, 0.0])
    goal = jnp.asarray(23.0)

    def run():
        statistic = TimeAverage(lambda x: (x + offset)[2])
        return _vg(lambda s: (s - goal) ** 2, BACKPROP, statistic)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        before = run()
        compiles.clear()
        offset, goal = jnp.asarray([0.0, 0.0, 1.0]), jnp.asarray(20.0)
        after = run()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    # the same orbit: <z + 1> - 20 = (<z> - 23) + 4, so the loss and its slope follow
    z = np.sqrt(before[0]) + 23.0  # before: (<z> - 23)^2, <z> above 23 on this orbit
    assert after[0] == pytest.approx((z + 1.0 - 20.0) ** 2, rel=1e-10)
    assert after[1] == pytest.approx(before[1] * (z - 19.0) / (z - 23.0), rel=1e-10)


def test_a_system_rebuilt_with_a_fresh_lambda_does_not_compile_again():
    """A Map built afresh inside a loop (a new lambda and a new noise function each time)
    reuses the compiled programs (its functions are compared by the digest of the step,
    chaosgrad._functions.StepFunction); the same code reading another value compiles afresh
    and gives the other answer."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    def estimate(scale):
        system = cg.Map(
            lambda t, x, a: a * x + scale, args=0.5, noise=lambda t, x, a: 0.1 + 0 * x, dim=1
        )
        return cg.linear_response(
            system,
            cg.Terminal(lambda x: x[0], 5),
            cg.Backprop(samples=8),
            wrt=lambda s: s.args,
            x0=jnp.ones(1),
            key=jax.random.key(0),
        )

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = estimate(1.0)
        compiles.clear()
        again = estimate(1.0)
        warm = len(compiles)
        other = estimate(2.0)
        changed = len(compiles) - warm
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert warm == 0
    assert changed >= 1
    assert float(again.grad) == float(first.grad)
    assert float(other.value) != float(first.value)
