"""Deep nets: a step's derivative touches only its own layer's slice (System.layered), and
gives exactly what the full-size derivative gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import Backprop, Kernel, PathKernel, Terminal, linear_response

KEY = jax.random.key(0)


def nets():
    """The same noisy network twice: DeepTanhNet (layered) and a plain Map around it."""
    net = cg.DeepTanhNet(depth=6, width=5, sigma_w=1.5, sigma_b=0.3, noise=0.4, seed=2)
    plain = cg.Map(lambda t, x, n: n.drift(t, x), args=net, noise=0.4, dim=5)
    return net, plain


@pytest.mark.parametrize(
    "estimator",
    [  # Kernel's case in the slow suite (10 s; the other two cover the layered slices)
        Backprop(samples=16, diagnostics=False),
        pytest.param(Kernel(samples=64), marks=pytest.mark.slow),
        PathKernel(samples=64, alpha=1),
    ],
)
def test_layer_slices_give_the_full_size_derivative(estimator):
    net, plain = nets()
    statistic = Terminal(lambda x: jnp.stack([jnp.sum(x), x[0] ** 2]), 6)
    sliced = linear_response(
        net, statistic, estimator, wrt=lambda s: (s.weights, s.biases), key=KEY
    )
    full = linear_response(
        plain, statistic, estimator, wrt=lambda s: (s.args.weights, s.args.biases), key=KEY
    )
    assert sliced.grad[0].shape == (2, 6, 5, 5)
    for a, b in zip(sliced.grad, full.grad, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(sliced.stderr, full.stderr, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_parameters_know_which_leaves_are_stacked_layers():
    from chaosgrad.estimators import Parameters

    net, _ = nets()
    assert Parameters.of(net, None).layer_fields == ("weights", "biases", None)
    assert Parameters.of(net, lambda s: s.noise_level).layer_fields is None
