"""fit_trajectory: every method lowers its loss; teacher forcing's alpha; clear errors; the
``chaosgrad learn`` command."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import chaosgrad as cg
from chaosgrad.cli.main import app
from chaosgrad.reconstruct import (
    GTF,
    Flossing,
    StatisticsLoss,
    attractor_metrics,
    fit_trajectory,
    forcing_alpha,
    moments,
    neural_vector_field,
    rollout_loss,
)

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def lorenz_data():
    return np.asarray(cg.simulate(cg.Lorenz63(dt=0.01), steps=3000, burn_in=500, key=KEY))


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("bptt", marks=pytest.mark.slow),
        "gtf",
        pytest.param("flossing", marks=pytest.mark.slow),
        pytest.param("statistics", marks=pytest.mark.slow),
    ],
)
def test_every_method_lowers_its_objective(lorenz_data, method):
    """Before and after 30 iterations: the 10-step rollout error on 64 fixed training windows
    (the per-iteration losses are of random windows, too noisy to compare); for
    "statistics", the term that dominates its gradient: the relative error of the long-time
    moments of a 3000-step free run (an untrained model runs off the data, error ~100, so
    the Shadowing gradient of this term is ~10^4 times the MSE term's)."""
    model = neural_vector_field(3, 0.01, key=jax.random.key(5))
    fit = fit_trajectory(
        lorenz_data,
        model=model,
        dt=0.01,
        method=Flossing(steps=50) if method == "flossing" else method,
        key=KEY,
        iterations=30,
        window=10,
        batch=8,
        learning_rate=1e-2,
    )
    assert fit.status == "ok"
    series = jnp.asarray((lorenz_data - fit.mean) / fit.std)
    if method == "statistics":
        target = jnp.mean(jax.vmap(moments)(series), axis=0)

        def error(system):
            path = cg.simulate(system, x0=series[0], steps=3000)
            stats = jnp.mean(jax.vmap(moments)(path), axis=0)
            return float(jnp.sum((stats - target) ** 2) / jnp.sum(target**2))

        assert error(fit.system) < 0.5 * error(model)
        return
    windows = jnp.stack([series[i : i + 11] for i in range(0, 2560, 40)])
    assert float(rollout_loss(fit.system, windows)) < float(rollout_loss(model, windows))
    if method == "gtf":
        assert all(0.0 <= a < 1.0 for a in fit.history["alpha"])


def test_forcing_alpha_is_zero_for_a_contraction_and_positive_for_an_expansion():
    windows = jax.random.normal(KEY, (2, 5, 3))
    decay = cg.Flow(lambda t, x, a: -a * x, dt=0.1, args=jnp.asarray(1.0))
    assert float(forcing_alpha(decay, windows)) == 0.0
    growth = cg.Flow(lambda t, x, a: a * x, dt=0.1, args=jnp.asarray(1.0))
    # |J| = e^{0.1} (RK4 to 1e-6): alpha = 1 - e^{-0.1}
    assert float(forcing_alpha(growth, windows)) == pytest.approx(1 - np.exp(-0.1), rel=1e-5)


def test_metrics_are_recorded_and_a_perfect_model_scores_well(lorenz_data):
    evaluations = []
    fit = fit_trajectory(
        lorenz_data,
        dt=0.01,
        key=KEY,
        iterations=2,
        evaluate=lambda f: evaluations.append(1) or {"x": 1.0},
        eval_every=1e-9,
    )
    assert len(fit.evaluations) == 3 and len(evaluations) == 3  # at 0, after 1 and 2
    # the true Lorenz field in standardised coordinates is a perfect model of its data
    mean, std = jnp.asarray(fit.mean), jnp.asarray(fit.std)
    lorenz = cg.Lorenz63(dt=0.01)
    exact = cg.Flow(lambda t, z, a: lorenz.vector_field(t, mean + std * z) / std, dt=0.01)
    perfect = dataclasses.replace(fit, system=exact)
    metrics = attractor_metrics(perfect, lorenz_data, steps=2500, reference_exponent=0.9056)
    assert metrics["mse_1"] < 1e-12 and metrics["mse_10"] < 1e-10
    assert metrics["d_h"] < 0.3 and metrics["lambda_1_error"] < 0.3


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        (np.zeros(10), {}, "must be a \\(steps, dimensions\\) array"),
        (np.zeros((10, 2)), {}, "too short"),
        (np.full((100, 2), np.nan), {}, "NaN or inf at row 0"),
        (np.zeros((100, 2)), {"method": "adam"}, "unknown method"),
        (np.zeros((100, 2)), {"dt": 0.0}, "dt must be positive"),
        (np.zeros((100, 2)), {"budget": None, "iterations": None}, "give budget"),
    ],
)
def test_bad_input_is_refused(data, options, message):
    settings = {"dt": 0.01, "key": KEY, "iterations": 1} | options
    with pytest.raises(ValueError, match=message):
        fit_trajectory(data, **settings)


def test_a_method_object_refuses_bad_settings_naming_them():
    with pytest.raises(ValueError, match="steps must be positive"):
        Flossing(steps=0)
    with pytest.raises(ValueError, match="alpha_every must be positive"):
        GTF(alpha_every=0)
    with pytest.raises(ValueError, match="weight"):
        StatisticsLoss(weight=float("nan"))
    with pytest.raises(ValueError, match='scale must be "relative" or "variance"'):
        StatisticsLoss(scale="sd")
    with pytest.raises(ValueError, match="warmup"):
        StatisticsLoss(warmup=-1)


def test_statistics_scales_weigh_each_moment():
    """scale="relative": every moment's squared error over |S*|^2; scale="variance": moment
    i's over 9 v_i (v_i its integrand's variance over the series; 9 moments), so the loss
    is the mean of the moments' squared errors in units of their variances."""
    from chaosgrad._trajectory_methods import moments

    train = jnp.asarray(np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 2.0, 0.5])
    integrands = np.asarray(jax.vmap(moments)(train))
    _, target, relative = StatisticsLoss().init(train, dt=0.01, window=10)
    _, _, variance = StatisticsLoss(scale="variance").init(train, dt=0.01, window=10)
    np.testing.assert_allclose(target, integrands.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(relative, np.sum(integrands.mean(axis=0) ** 2), rtol=1e-12)
    np.testing.assert_allclose(variance, 9 * integrands.var(axis=0), rtol=1e-12)


def test_learn_command_writes_strict_json(tmp_path, lorenz_data):
    np.save(tmp_path / "data.npy", lorenz_data[:1200])
    out = tmp_path / "out"
    arguments = ["learn", "--data", str(tmp_path / "data.npy"), "--dt", "0.01", "--out", str(out)]
    result = CliRunner().invoke(
        app, [*arguments, "--budget", "1", "--method", "bptt", "--window", "10"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "learn.json").read_text())
    assert payload["method"] == "bptt" and set(payload["final"]) >= {"d_stsp", "d_h", "mse_10"}
    assert (out / "learn.png").stat().st_size > 0
    missing = CliRunner().invoke(app, ["learn", "--data", "nope.npy", "--dt", "0.01"])
    assert missing.exit_code == 2 and "no such file" in missing.output


def _roessler_data(steps: int = 4000):
    """A Roessler time series (a = b = 0.2, c = 5.7), dt = 0.05, burn-in 1000 steps."""

    def field(t, x, args):
        a, b, c = args
        return jnp.stack([-x[1] - x[2], x[0] + a * x[1], b + x[2] * (x[0] - c)])

    flow = cg.Flow(field, dt=0.05, args=(0.2, 0.2, 5.7), dim=3)
    path = cg.simulate(flow, x0=jnp.array([1.0, 1.0, 0.0]), steps=steps, burn_in=1000)
    return np.asarray(path)


def test_statistics_method_caps_u_when_every_exponent_is_above_the_threshold(monkeypatch):
    """The condition that crashed long runs ("unstable_dim=3 must be smaller than the
    dimension 3"): the model's three exponents all above -0.05. It is met here on purpose
    (the measurement returns 3); the run goes on with u = 2 and records both numbers."""
    import chaosgrad._trajectory_methods as methods

    monkeypatch.setattr(methods, "unstable_dimension", lambda *args, **kwargs: 3)
    fit = fit_trajectory(
        _roessler_data(1500),
        model=neural_vector_field(3, 0.05, key=jax.random.key(5)),
        dt=0.05,
        method=StatisticsLoss(
            estimator=cg.Shadowing(unstable_dim=1, segment_steps=10, segments=6, burn_in=20),
            spectrum_every=1,
        ),
        key=KEY,
        iterations=2,
        window=10,
        batch=4,
    )
    assert fit.status == "ok"
    assert fit.history["unstable_dim_measured"] == [3, 3]
    assert fit.history["unstable_dim"] == [2, 2]
    assert len(fit.history["loss"]) == 2


def test_statistics_warmup_trains_on_the_mse_alone_first(monkeypatch):
    """warmup=2: iterations 0 and 1 are BPTT's (the same losses, no Shadowing sweep and no
    measurement of u); the term enters at iteration 2, where u is measured first."""
    import chaosgrad._trajectory_methods as methods

    monkeypatch.setattr(methods, "unstable_dimension", lambda *args, **kwargs: 1)
    settings = dict(dt=0.05, key=KEY, iterations=4, window=10, batch=4)
    data, model = _roessler_data(1500), neural_vector_field(3, 0.05, key=jax.random.key(5))
    warmed = fit_trajectory(
        data,
        model=model,
        method=StatisticsLoss(
            estimator=cg.Shadowing(unstable_dim=1, segment_steps=10, segments=6, burn_in=20),
            spectrum_every=1,
            warmup=2,
        ),
        **settings,
    )
    plain = fit_trajectory(data, model=model, method="bptt", **settings)
    assert warmed.history["loss"][:3] == plain.history["loss"][:3]
    assert warmed.history["loss"][3] != plain.history["loss"][3]
    assert warmed.history["unstable_dim"] == [1, 1]


@pytest.mark.slow
def test_statistics_method_trains_on_roessler_data_for_45_seconds():
    """The run that crashed after minutes: 45 s of the statistics method on Roessler data."""
    fit = fit_trajectory(
        _roessler_data(),
        model=neural_vector_field(3, 0.05, key=jax.random.key(5)),
        dt=0.05,
        method="statistics",
        key=KEY,
        budget=45.0,
        window=10,
        batch=8,
        learning_rate=1e-2,
    )
    assert fit.status == "ok"
    assert len(fit.history["loss"]) > 0
    assert all(u <= 2 for u in fit.history["unstable_dim"])
