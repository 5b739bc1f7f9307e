"""fit(): chain rule, Optax, failure recording, bit-identical resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad.estimators import Backprop, Kernel
from chaosgrad.statistics import Terminal, TimeAverage

KEY = jax.random.key(0)


def ar1(g=0.0):
    return cg.Map(lambda t, x, p: 0.5 * x + p, args=jnp.asarray(g), dim=1)


def test_fit_reaches_a_target_statistic():
    """<x> = g / (1 - 0.5) = 2 g; target 3 => g = 1.5."""
    result = cg.fit(
        ar1(),
        lambda s: (s - 3.0) ** 2,
        TimeAverage(lambda x: x[0]),
        Backprop(steps=200, burn_in=50),
        optax.sgd(0.05),
        iterations=60,
        key=KEY,
    )
    assert result.status == "ok" and result.iterations == 60
    assert float(result.system.args) == pytest.approx(1.5, abs=1e-3)
    assert result.history["loss"][-1] < 1e-5 < result.history["loss"][0]
    assert len(result.history["parameters"]) == 60


def test_resume_is_bit_identical(tmp_path):
    net = cg.NineNeuronNet(gamma=-0.5, noise=0.5)
    settings = dict(
        loss=lambda s: (s - 2.0) ** 2,
        statistic=Terminal(jnp.sum, 10),
        estimator=Kernel(samples=2000),
        optimizer=optax.adam(0.05),
        wrt=lambda s: s.gamma,
        key=KEY,
    )
    straight = cg.fit(net, iterations=10, **settings)
    cg.fit(net, iterations=5, checkpoint=tmp_path / "ckpt", checkpoint_every=5, **settings)
    resumed = cg.fit(net, iterations=10, resume=tmp_path / "ckpt", **settings)
    for name in ("loss", "statistic", "grad_norm", "stderr_norm", "parameters"):
        assert resumed.history[name] == straight.history[name], name  # wall time aside
    assert float(resumed.system.gamma) == float(straight.system.gamma)


def test_divergence_is_recorded_not_hidden():
    """Plain SGD on an exploding gradient: the run stops and says why."""
    result = cg.fit(
        cg.Lorenz63(),
        lambda s: (s - 20.0) ** 2,
        TimeAverage(lambda x: x[2]),
        Backprop(steps=4000, burn_in=500, diagnostics=False),
        optax.sgd(0.1),
        wrt=lambda s: s.rho,
        iterations=5,
        key=KEY,
    )
    assert result.failed
    assert "iteration" in result.status
    assert len(result.history["loss"]) <= 5


def test_clipping_is_an_optax_chain():
    chain = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))
    result = cg.fit(
        ar1(),
        lambda s: (s - 3.0) ** 2,
        TimeAverage(lambda x: x[0]),
        Backprop(steps=100, burn_in=50),
        chain,
        iterations=3,
        key=KEY,
    )
    steps = np.diff([p[0] for p in result.history["parameters"]])
    assert np.all(np.abs(steps) <= 1e-3 + 1e-12)


def test_errors(tmp_path):
    statistic = TimeAverage(lambda x: x[0])
    with pytest.raises(ValueError, match="iterations"):
        cg.fit(
            ar1(), lambda s: s, statistic, Backprop(steps=10), optax.sgd(0.1), iterations=0, key=KEY
        )
    with pytest.raises(ValueError, match="checkpoint"):
        cg.fit(
            ar1(),
            lambda s: s,
            statistic,
            Backprop(steps=10),
            optax.sgd(0.1),
            iterations=2,
            checkpoint_every=1,
            key=KEY,
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        cg.fit(
            ar1(),
            lambda s: s,
            statistic,
            Backprop(steps=10),
            optax.sgd(0.1),
            iterations=2,
            resume=tmp_path,
            key=KEY,
        )
    # the observable lives in the statistic: a bare function in its place is refused
    with pytest.raises(TypeError, match="statistic"):
        cg.fit(
            ar1(),
            lambda s: s,
            lambda x: x[0],
            Backprop(steps=10),
            optax.sgd(0.1),
            iterations=2,
            key=KEY,
        )
    with pytest.raises(ValueError, match="applies to a TimeAverage only"):
        cg.fit(
            ar1(),
            lambda s: s,
            Terminal(lambda x: x[0], 10),
            Backprop(steps=10),
            optax.sgd(0.1),
            iterations=2,
            key=KEY,
        )
