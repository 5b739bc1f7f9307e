"""Step rules that read the loss: the capped step's size and switch, and reject_jumps's
undo, kept optimizer state and shrink, on hand-made sequences; the settings they refuse."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from chaosgrad.step_rules import capped_step, reject_jumps


def test_capped_step_caps_the_predicted_decrease_and_switches():
    """g = (3, 4), |g|^2 = 25: at L = 100 the cap 0.1 x 100 / 25 = 0.4 is below eta = 1; at
    L = 1000 eta = 1 binds; after L <= 6 once, eta = 0.1 for good."""
    rule = capped_step(rate=1.0, later=0.1, switch=6.0, fraction=0.1)
    g = jnp.array([3.0, 4.0])
    state = rule.init(g)
    step, state = rule.update(g, state, value=jnp.asarray(100.0))
    np.testing.assert_allclose(step, -0.4 * g)
    step, state = rule.update(g, state, value=jnp.asarray(1000.0))
    np.testing.assert_allclose(step, -1.0 * g)
    step, state = rule.update(g, state, value=jnp.asarray(5.0))  # cap 0.02 < 0.1
    np.testing.assert_allclose(step, -0.02 * g)
    step, state = rule.update(g, state, value=jnp.asarray(1000.0))
    np.testing.assert_allclose(step, -0.1 * g)


def test_reject_jumps_undoes_a_jump_keeps_the_state_and_shrinks():
    """SGD(1) inside: accept at L = 1 (step -g1); at L = 10 > 3 x 1 the step is undone
    (+g1) and the gradient unused; at L = 1.2 accepted with half the step (-g3 / 2); the
    count of undone steps is 1. L = 2.5 is accepted (below 3 x the lowest, 1) and L = 3.5
    is not, though below 3 x 2.5. With momentum inside, the undone step leaves its state."""
    rule = reject_jumps(optax.sgd(1.0), factor=3.0, shrink=0.5)
    g1, g2, g3 = jnp.array([1.0, 2.0]), jnp.array([5.0, 5.0]), jnp.array([2.0, 0.0])
    state = rule.init(g1)
    step, state = rule.update(g1, state, value=jnp.asarray(1.0))
    np.testing.assert_allclose(step, -g1)
    step, state = rule.update(g2, state, value=jnp.asarray(10.0))
    np.testing.assert_allclose(step, g1)
    step, state = rule.update(g3, state, value=jnp.asarray(1.2))
    np.testing.assert_allclose(step, -0.5 * g3)
    assert int(state.rejected) == 1
    # the reference is the lowest accepted loss: a creep 1 -> 2.5 -> 3.5 is caught at 3.5
    step, state = rule.update(g3, state, value=jnp.asarray(2.5))
    step, state = rule.update(g3, state, value=jnp.asarray(3.5))
    np.testing.assert_allclose(step, 0.5 * g3)
    assert int(state.rejected) == 2

    momentum = reject_jumps(optax.sgd(1.0, momentum=0.9))
    inner_before = None
    state = momentum.init(g1)
    _, state = momentum.update(g1, state, value=jnp.asarray(1.0))
    inner_before = state.inner
    _, state = momentum.update(g2, state, value=jnp.asarray(10.0))
    np.testing.assert_allclose(state.inner[0].trace, inner_before[0].trace)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: capped_step(rate=0.0), "rate"),
        (lambda: capped_step(later=0.1), "later= and switch= together"),
        (lambda: reject_jumps(optax.sgd(0.1), factor=0.5), "factor must be above 1"),
        (lambda: reject_jumps(optax.sgd(0.1), shrink=2.0), r"shrink must be in \(0, 1\]"),
    ],
)
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
