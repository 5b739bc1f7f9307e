"""An eqx.nn.MLP inside the Lorenz-63 vector field: Shadowing's gradient with respect to
all its weights, projected on random unit directions, against finite differences.

The field is F(x) = Lorenz(x) + 5 MLP(x / 20) with the MLP's weights w + sum_i c_i d_i,
d_i three random unit directions in weight space (1283 weights). At c = 0,
d<z>/dc_i = d_i . d<z>/dw: the shadowing gradient w.r.t. w, projected on d_i, must equal
its gradient w.r.t. c exactly (the same sweep), and FiniteDifference w.r.t. c (6 runs per
sample) within 3 SE.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import chaosgrad as cg
from chaosgrad import FiniteDifference, Shadowing, TimeAverage, linear_response

KEY = jax.random.key(0)


def mlp_lorenz():
    mlp = eqx.nn.MLP(3, 3, 32, 2, activation=jnp.tanh, key=jax.random.key(3))
    weights, unravel = ravel_pytree(eqx.filter(mlp, eqx.is_inexact_array))
    directions = jax.random.normal(jax.random.key(4), (3, weights.size))
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    rest = eqx.filter(mlp, eqx.is_inexact_array, inverse=True)

    def field(t, x, args):
        flat = ravel_pytree(eqx.filter(args["mlp"], eqx.is_inexact_array))[0]
        net = eqx.combine(unravel(flat + args["c"] @ directions), rest)
        lorenz = jnp.stack(
            [10.0 * (x[1] - x[0]), x[0] * (28.0 - x[2]) - x[1], x[0] * x[1] - 8.0 / 3.0 * x[2]]
        )
        return lorenz + 5.0 * net(x / 20.0)

    system = cg.Flow(field, dt=1e-3, method="euler", args={"mlp": mlp, "c": jnp.zeros(3)}, dim=3)
    return system, directions


def _shadowing(system, segments):
    return linear_response(
        system,
        TimeAverage(lambda x: x[2]),
        Shadowing(unstable_dim=2, segment_steps=200, segments=segments, burn_in=10_000),
        wrt=lambda s: s.args,
        x0=jnp.array([1.0, 1.0, 25.0]),
        key=KEY,
    )


def _check(segments, samples, steps):
    system, directions = mlp_lorenz()
    shadow = _shadowing(system, segments)
    projected = directions @ ravel_pytree(shadow.grad["mlp"])[0]
    np.testing.assert_allclose(projected, shadow.grad["c"], rtol=1e-9, atol=1e-12)
    fd = linear_response(
        system,
        TimeAverage(lambda x: x[2]),
        FiniteDifference(eps=1.0, samples=samples, steps=steps, burn_in=10_000),
        wrt=lambda s: s.args["c"],
        key=KEY,
    )
    bound = 3 * np.hypot(np.asarray(shadow.stderr["c"]), np.asarray(fd.stderr))
    assert np.all(np.abs(projected - np.asarray(fd.grad)) <= bound), (projected, fd.grad, bound)


def test_mlp_weights_shadowing_against_finite_differences_fast():
    """Short runs (T = 20 and 4 x T = 20): loose, but the same comparison."""
    _check(segments=100, samples=4, steps=20_000)


@pytest.mark.slow
def test_mlp_weights_shadowing_against_finite_differences():
    """T = 200 shadowing, 16 x T = 500 finite differences. Measured: shadowing
    (-0.0082, 0.0176, 0.0119) +- (0.0036, 0.0031, 0.0047); FD (-0.0063, 0.0065, 0.0055)
    +- (0.0041, 0.0049, 0.0057)."""
    _check(segments=1000, samples=16, steps=500_000)
