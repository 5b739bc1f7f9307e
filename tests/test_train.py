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


def test_regularizer_gradient_is_added_exactly():
    """loss (<x> - 3)^2 plus r (g - 1)^2, <x> = 2g: the minimum of the sum is where
    2 (2g - 3) c + 2 r (g - 1) = 0, i.e. g = (3c + r) / (2c + r), with c = d<x>/dg as
    Backprop sees it: a 200-step window from a burned-in state (not differentiated), so
    c = 2 - (2/200) sum_{n>=1} 0.5^n = 1.99 (not 2: the test would see a 0.5% error)."""
    r, c = 2.0, 1.99
    result = cg.fit(
        ar1(),
        lambda s: (s - 3.0) ** 2,
        TimeAverage(lambda x: x[0]),
        Backprop(steps=200, burn_in=50),
        optax.sgd(0.03),
        iterations=150,
        key=KEY,
        regularizer=lambda system: r * (system.args - 1.0) ** 2,
    )
    assert float(result.system.args) == pytest.approx((3 * c + r) / (2 * c + r), abs=1e-6)
    assert result.history["regularizer"][-1] > 0


def test_schedule_runs_regularizer_only_iterations_without_the_estimator():
    """Two regulariser-only iterations first (loss recorded as NaN, not a failure), then the
    loss alone: the run ends where the loss alone is minimal."""
    schedule = lambda i: (0.0, 1.0) if i < 2 else (1.0, 0.0)  # noqa: E731
    result = cg.fit(
        ar1(),
        lambda s: (s - 3.0) ** 2,
        TimeAverage(lambda x: x[0]),
        Backprop(steps=200, burn_in=50),
        optax.sgd(0.05),
        iterations=60,
        key=KEY,
        regularizer=lambda system: (system.args + 5.0) ** 2,
        schedule=schedule,
    )
    assert result.status == "ok"
    loss = result.history["loss"]
    assert np.isnan(loss[0]) and np.isnan(loss[1]) and np.isfinite(loss[2])
    assert result.history["regularizer"][2:] == [0.0] * 58
    assert float(result.system.args) == pytest.approx(1.5, abs=1e-3)


def test_budget_stops_the_run_and_bad_budget_is_refused():
    settings = dict(
        loss=lambda s: (s - 3.0) ** 2,
        statistic=TimeAverage(lambda x: x[0]),
        estimator=Backprop(steps=20, burn_in=5),
        optimizer=optax.sgd(0.01),
        iterations=10**6,
        key=KEY,
    )
    result = cg.fit(ar1(), budget=0.5, **settings)
    assert result.status == "ok" and 1 <= result.iterations < 10**6
    assert sum(result.history["seconds"]) >= 0.5
    with pytest.raises(ValueError, match="budget must be a positive"):
        cg.fit(ar1(), budget=0.0, **settings)
