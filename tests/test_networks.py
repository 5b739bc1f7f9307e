"""Supervised networks: remedies as model options, per-sample data, every estimator."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import Backprop, Kernel, Terminal, linear_response
from chaosgrad.networks import (
    cross_entropy,
    deep_network,
    readout,
    recurrent_network,
    squared_error,
    trainable,
)
from chaosgrad.systems.mlp import initial_matrix

KEY = jax.random.key(0)


def test_initialisation_schemes():
    q = initial_matrix(KEY, (3, 64, 64), "orthogonal", sigma_w=1.5)
    np.testing.assert_allclose(q[1] @ q[1].T, 2.25 * np.eye(64), atol=1e-12)
    for scheme, variance in (("gaussian", 4.0 / 64), ("xavier", 1 / 64), ("he", 2 / 64)):
        w = initial_matrix(KEY, (200, 64), scheme, sigma_w=2.0)
        # 12800 draws: the sample variance is within 5 % of the true one (4 SE)
        assert float(jnp.var(w)) == pytest.approx(variance, rel=0.05)
    with pytest.raises(ValueError, match="init must be one of"):
        initial_matrix(KEY, (4, 4), "uniform")


def test_residual_and_layer_norm_steps_follow_their_equations():
    u = jnp.linspace(-1.0, 1.0, 4)
    net = cg.DeepTanhNet(depth=3, width=4, sigma_b=0.2, seed=1, residual=0.1, layer_norm=True)
    x = jnp.array([0.3, -0.2, 0.5, 1.0])
    normed = (x - x.mean()) / jnp.sqrt(x.var() + 1e-5)
    expected = x + 0.1 * (net.weights[1] @ jnp.tanh(normed) + net.biases[1])
    np.testing.assert_allclose(net.step(1, x), expected, rtol=1e-12)
    supervised = deep_network(3, 4, u[None], jnp.zeros((1, 2)), key=KEY)
    # layer 0 reads the example, whatever the state
    np.testing.assert_allclose(
        supervised.for_sample(0).step(0, jnp.full(4, 9.0)),
        supervised.weights[0] @ jnp.tanh(u) + supervised.biases[0],
        rtol=1e-12,
    )


def _manual_gradient(system, steps, examples):
    """mean_i d/dtheta Phi(x_T^i) by jax.grad, one example at a time (deterministic)."""

    def loss_of(params, i):
        sample = eqx.tree_at(trainable, system, params).for_sample(i)
        x = jnp.zeros(system.dim)
        for t in range(steps):
            x = sample.step(t, x, None)
        return squared_error()(x, sample)

    grads = [jax.grad(loss_of)(trainable(system), i) for i in range(examples)]
    return jax.tree_util.tree_map(lambda *g: sum(g) / examples, *grads)


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
def test_each_sample_sees_its_own_sequence_and_target(cell):
    inputs = jax.random.normal(KEY, (3, 5, 2))
    targets = jax.random.normal(jax.random.key(1), (3, 2))
    net = recurrent_network(cell, inputs, targets, 4, gain=1.2, layer_norm=cell == "tanh", key=KEY)
    estimate = linear_response(
        net,
        Terminal(squared_error(), 5),
        Backprop(samples=3, diagnostics=False),
        wrt=trainable,
        x0=jnp.zeros(net.dim),
        key=KEY,
    )
    manual = _manual_gradient(net, 5, 3)
    for a, b in zip(
        jax.tree_util.tree_leaves(estimate.grad), jax.tree_util.tree_leaves(manual), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_supervised_deep_net_per_example_gradient():
    inputs = jax.random.normal(KEY, (3, 4))
    targets = jax.random.normal(jax.random.key(1), (3, 2))
    net = deep_network(4, 4, inputs, targets, sigma_w=1.5, residual=0.5, key=KEY)
    estimate = linear_response(
        net,
        Terminal(squared_error(), 4),
        Backprop(samples=3, diagnostics=False),
        wrt=trainable,
        x0=jnp.zeros(4),
        key=KEY,
    )
    manual = _manual_gradient(net, 4, 3)
    for a, b in zip(estimate.grad, manual, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_kernel_agrees_with_backprop_on_a_noisy_gru():
    """Same expectation, two estimators: model error 0, within 4 standard errors (fixed
    key), on the readout bias (6 numbers, each compared)."""
    inputs = jax.random.normal(KEY, (8, 4, 1))
    targets = jax.random.normal(jax.random.key(1), (8, 2))
    net = recurrent_network("gru", inputs, targets, 3, noise=0.3, key=KEY)
    statistic, x0 = Terminal(squared_error(), 4), jnp.zeros(3)

    def wrt(system):
        return system.args.out.bias

    kernel = linear_response(net, statistic, Kernel(samples=8 * 500), wrt=wrt, x0=x0, key=KEY)
    backprop = linear_response(
        net, statistic, Backprop(samples=8 * 100, diagnostics=False), wrt=wrt, x0=x0, key=KEY
    )
    difference = np.abs(np.asarray(kernel.grad) - np.asarray(backprop.grad))
    combined = np.sqrt(np.asarray(kernel.stderr) ** 2 + np.asarray(backprop.stderr) ** 2)
    assert np.all(difference < 4 * combined)


def test_readout_and_cross_entropy():
    inputs, targets = jnp.zeros((2, 3, 1)), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    net = recurrent_network("tanh", inputs, targets, 4, key=KEY).for_sample(1)
    x = jnp.linspace(-1, 1, 4)
    logits = readout(x, net)
    assert logits.shape == (2,)
    expected = -jax.nn.log_softmax(logits)[1]
    np.testing.assert_allclose(cross_entropy()(x, net), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"cell": "rnn"}, "cell must be one of"),
        ({"inputs": jnp.zeros((3, 2))}, "inputs must have shape"),
        ({"targets": jnp.zeros((2, 1))}, "targets must have shape"),
        ({"hidden": 0}, "hidden must be a positive"),
        ({"init": "zeros"}, "init must be one of"),
    ],
)
def test_bad_network_arguments_are_refused(arguments, message):
    settings = {
        "cell": "tanh",
        "inputs": jnp.zeros((3, 5, 1)),
        "targets": jnp.zeros((3, 1)),
        "hidden": 4,
    } | arguments
    init = settings.pop("init", "gaussian")
    with pytest.raises(ValueError, match=message):
        recurrent_network(**settings, init=init, key=KEY)


def test_bad_supervised_deep_net_data_is_refused():
    with pytest.raises(ValueError, match="inputs must have shape"):
        deep_network(3, 4, jnp.zeros((2, 5)), jnp.zeros((2, 1)), key=KEY)
    with pytest.raises(ValueError, match="give both"):
        cg.DeepTanhNet(depth=3, width=4, inputs=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="one row per sample"):
        cg.InputDriven(lambda t, h, u, a: h, jnp.zeros((3, 4, 1)), targets=jnp.zeros((2, 1)))
