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


def test_schedule_weights_scale_the_two_gradients():
    """Weights (0.5, 2) run as the loss halved and the regulariser doubled."""

    def penalty(system):
        return (system.args - 1.0) ** 2

    weighted = cg.fit(
        ar1(), iterations=3, regularizer=penalty, schedule=lambda i: (0.5, 2.0), **quick()
    )
    halved = quick(loss=lambda s: 0.5 * (s - 3.0) ** 2)
    scaled = cg.fit(ar1(), iterations=3, regularizer=lambda s: 2.0 * penalty(s), **halved)
    for name in ("grad_norm", "parameters"):
        np.testing.assert_allclose(weighted.history[name], scaled.history[name], rtol=1e-12)


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


# ---------------------------------------------------------------- checkpoints


def quick(**changes):
    """fit settings for ar1() that run in milliseconds once compiled."""
    settings = dict(
        loss=lambda s: (s - 3.0) ** 2,
        statistic=TimeAverage(lambda x: x[0]),
        estimator=Backprop(steps=20, burn_in=5),
        optimizer=optax.sgd(0.05),
        wrt=lambda s: s.args,
        key=KEY,
    )
    settings.update(changes)
    return settings


def same_run(a, b):
    for name in ("loss", "statistic", "grad_norm", "stderr_norm", "parameters"):
        np.testing.assert_equal(a.history[name], b.history[name], err_msg=name)  # not time
    assert float(a.system.args) == float(b.system.args)
    assert a.status == b.status and a.iterations == b.iterations


def test_checkpoint_is_one_self_checking_file(tmp_path):
    from chaosgrad import _checkpoint

    result = cg.fit(ar1(), iterations=4, checkpoint=tmp_path, **quick())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.eqx"]  # no temp left
    stored = _checkpoint.read(tmp_path)
    assert (stored.iteration, stored.status) == (4, "ok")
    assert stored.history["loss"] == result.history["loss"]
    assert set(stored.fingerprint) >= {"key", "estimator", "statistic", "wrt", "optimizer"}
    assert stored.fingerprint["wrt"].startswith(".args:float64[]")


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The second save dies after its temporary file is written: the first checkpoint is
    intact, no temporary file is left, and resuming from it is bit-identical."""
    import os

    straight = cg.fit(ar1(), iterations=10, **quick())
    real_replace, calls = os.replace, []

    def crashing_replace(source, target):
        calls.append(source)
        if len(calls) == 2:
            assert os.path.getsize(source) > 0  # the new checkpoint was written in full
            raise OSError("simulated crash")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        cg.fit(ar1(), iterations=10, checkpoint=tmp_path, checkpoint_every=5, **quick())
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.eqx"]
    resumed = cg.fit(ar1(), iterations=10, resume=tmp_path, **quick())
    same_run(resumed, straight)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_checkpoint_is_refused(tmp_path, damage):
    cg.fit(ar1(), iterations=2, checkpoint=tmp_path, **quick())
    path = tmp_path / "checkpoint.eqx"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "garbage":
        data = bytearray(b"not a checkpoint at all, but long enough to be read as one" * 3)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"^checkpoint {tmp_path} is corrupt: "):
        cg.fit(ar1(), iterations=4, resume=tmp_path, **quick())


@pytest.mark.parametrize(
    "setting, change",
    [
        ("key", dict(key=jax.random.key(1))),
        ("estimator", dict(estimator=Backprop(steps=21, burn_in=5))),
        ("wrt", dict(wrt=lambda s: s.noise_level)),  # same shape, another parameter
        ("statistic", dict(statistic=cg.statistics.WindowAverage(lambda x: x[0], 20))),
        ("optimizer", dict(optimizer=optax.adam(0.05))),
    ],
)
def test_resume_refuses_different_settings_naming_them(tmp_path, setting, change):
    cg.fit(ar1(), iterations=2, checkpoint=tmp_path, **quick())
    with pytest.raises(ValueError, match=f"different {setting} ") as info:
        cg.fit(ar1(), iterations=4, resume=tmp_path, **quick(**change))
    assert "\n" not in str(info.value)


def test_resume_refuses_a_changed_learning_rate(tmp_path):
    """An ok run resumed with sgd(0.01) instead of sgd(0.05): the same state structure, but
    a different optimizer (its update of a probe gradient differs), refused by name."""
    cg.fit(ar1(), iterations=2, checkpoint=tmp_path, **quick())
    with pytest.raises(ValueError, match="written with a different optimizer"):
        cg.fit(ar1(), iterations=4, resume=tmp_path, **quick(optimizer=optax.sgd(0.01)))
    result = cg.fit(ar1(), iterations=4, resume=tmp_path, **quick())  # the same one resumes
    assert result.status == "ok" and result.iterations == 4


def test_old_two_file_checkpoint_is_read_and_replaced_by_one_file(tmp_path):
    import json

    import equinox as eqx

    from chaosgrad import _checkpoint

    straight = cg.fit(ar1(), iterations=6, **quick())
    first = cg.fit(ar1(), iterations=3, checkpoint=tmp_path, **quick())
    stored = _checkpoint.read(tmp_path)
    values = first.system.args
    opt_state = _checkpoint.deserialise(stored.opt_state, optax.sgd(0.05).init(values))
    (tmp_path / "checkpoint.eqx").unlink()
    eqx.tree_serialise_leaves(tmp_path / "state.eqx", (values, opt_state))
    meta = {"iteration": 3, "status": "ok", "history": stored.history}
    (tmp_path / "history.json").write_text(json.dumps(meta))
    resumed = cg.fit(ar1(), iterations=6, resume=tmp_path, checkpoint=tmp_path, **quick())
    same_run(resumed, straight)
    assert _checkpoint.read(tmp_path).fingerprint is not None  # the new file, read first
    (tmp_path / "history.json").unlink()  # half of an old pair (an interrupted old save)
    (tmp_path / "checkpoint.eqx").unlink()
    with pytest.raises(ValueError, match="is corrupt: state.eqx without history.json"):
        cg.fit(ar1(), iterations=6, resume=tmp_path, **quick())


def guarded_loss(s):
    """(s - 3)^2, NaN once |s - 3| > 10 (a model that breaks far from its optimum)."""
    return (s - 3.0) ** 2 + 0.0 * jnp.sqrt(100.0 - (s - 3.0) ** 2)


def test_diverged_run_keeps_last_good_parameters_and_resumes_only_when_changed(tmp_path):
    """sgd(0.3) overshoots ever more (error x -1.39 per step) until the loss is NaN at
    iteration 5, at the parameters iteration 4 produced: the last good parameters are those
    iteration 4 started from (after iteration 3). Resuming with the same settings is
    refused; with sgd(0.05) it redoes iteration 4 from there and converges."""
    settings = quick(loss=guarded_loss, optimizer=optax.sgd(0.3))
    failed = cg.fit(ar1(), iterations=20, checkpoint=tmp_path, **settings)
    assert failed.status == "diverged at iteration 5: non-finite loss or gradient"
    assert len(failed.history["loss"]) == 6 and np.isnan(failed.history["loss"][5])
    good = cg.fit(ar1(), iterations=4, **settings)  # the same run, stopped after iteration 3
    assert good.status == "ok"
    assert np.isfinite(float(failed.system.args))
    assert float(failed.system.args) == float(good.system.args) != 0.0
    assert failed.history["parameters"][4] == [float(good.system.args)]

    with pytest.raises(
        ValueError, match="ended with 'diverged at iteration 5: .*'; resuming"
    ) as info:
        cg.fit(ar1(), iterations=20, resume=tmp_path, **settings)
    assert str(info.value).endswith(
        "resuming with the same settings would repeat it: change the optimizer or estimator "
        "(e.g. a smaller learning rate)"
    )

    gentle = dict(settings, optimizer=optax.sgd(0.05))
    resumed = cg.fit(ar1(), iterations=40, resume=tmp_path, checkpoint=tmp_path, **gentle)
    assert resumed.status == "ok" and resumed.iterations == 40
    for name in ("loss", "parameters"):
        assert resumed.history[name][:4] == good.history[name]
    assert resumed.history["parameters"][4] == [float(good.system.args)]
    assert resumed.history["loss"][-1] < 1e-4 < 1.0 < resumed.history["loss"][4]


def test_non_finite_update_at_the_first_iteration_keeps_the_start(tmp_path):
    """sgd(1e308) sends the parameter to inf at once: the checkpoint keeps the start and a
    smaller learning rate then runs exactly as if it had been the choice from the start."""
    failed = cg.fit(ar1(), iterations=6, checkpoint=tmp_path, **quick(optimizer=optax.sgd(1e308)))
    assert failed.status == "diverged at iteration 0: parameters became non-finite"
    assert float(failed.system.args) == 0.0
    resumed = cg.fit(ar1(), iterations=6, resume=tmp_path, **quick())
    same_run(resumed, cg.fit(ar1(), iterations=6, **quick()))


def breaking(limit: float):
    """ar1() whose states are NaN once g > limit (a model past its range)."""
    return cg.Map(
        lambda t, x, p: 0.5 * x + p + 0.0 * jnp.sqrt(limit - p), args=jnp.asarray(0.0), dim=1
    )


def test_estimator_failure_resumes_with_changed_estimator_settings(tmp_path, monkeypatch):
    """An estimator failing (a NaN orbit) at iteration 3, at the parameters iteration 2
    produced: the step flags it (``metrics.finite`` False, simulated here), and the host
    checks, run at that iteration only, raise FloatingPointError naming the step (simulated
    too). The same settings are refused, other estimator settings redo iteration 2 from the
    parameters it started from."""
    import equinox as eqx

    import chaosgrad.train as train

    checks = []
    real = train._iteration

    def flagging(step, state, *args):
        updated, metrics, *rest = real(step, state, *args)
        flagged = metrics.finite & (state.iteration != 3)  # traced: the compiled program's
        return (updated, eqx.tree_at(lambda m: m.finite, metrics, flagged), *rest)

    def naming(*args, **kwargs):
        checks.append(1)
        raise FloatingPointError("NaN in the orbit at step 17")

    jax.clear_caches()  # the iteration program is compiled afresh with the flagging step
    monkeypatch.setattr(train, "_iteration", flagging)
    monkeypatch.setattr(train, "loss_estimate", naming)
    failed = cg.fit(ar1(), iterations=8, checkpoint=tmp_path, **quick())
    monkeypatch.undo()
    jax.clear_caches()
    assert len(checks) == 1  # no host round trip at the good iterations
    assert failed.status == "failed at iteration 3: NaN in the orbit at step 17"
    assert failed.iterations == 3
    assert float(failed.system.args) == float(cg.fit(ar1(), iterations=2, **quick()).system.args)
    with pytest.raises(ValueError, match="would repeat it"):
        cg.fit(ar1(), iterations=8, resume=tmp_path, **quick())
    other = quick(estimator=Backprop(steps=25, burn_in=5))
    resumed = cg.fit(ar1(), iterations=8, resume=tmp_path, **other)
    assert resumed.status == "ok" and resumed.iterations == 8
    assert resumed.history["loss"][:2] == failed.history["loss"][:2]
    assert resumed.history["loss"][2] != failed.history["loss"][2]  # redone, other settings


def test_a_nan_orbit_is_named_by_the_host_checks():
    failed = cg.fit(breaking(1.0), iterations=8, **quick())
    assert failed.status.startswith("failed at iteration 3: the trajectory became NaN/inf")
    assert "step" in failed.status and failed.iterations == 3


def test_auto_settings_are_resolved_once_before_the_first_iteration():
    """fit with Shadowing(unstable_dim="auto") runs as with configure's estimator given by
    hand (the pilot at the start, with fit's key)."""
    system, z = cg.Lorenz63(dt=1e-3, method="euler"), TimeAverage(lambda x: x[2])
    auto = cg.Shadowing(unstable_dim="auto", segment_steps=40, segments=20)
    settings = dict(
        loss=lambda s: (s - 23.0) ** 2,
        statistic=z,
        optimizer=optax.sgd(1e-3),
        wrt=lambda s: s.rho,
        iterations=2,
        key=KEY,
    )
    by_hand = cg.configure(system, z, auto, wrt=lambda s: s.rho, key=KEY)
    assert by_hand.unstable_dim == 2
    resolved = cg.fit(system, estimator=auto, **settings)
    given = cg.fit(system, estimator=by_hand, **settings)
    assert resolved.status == "ok" and resolved.history["loss"] == given.history["loss"]
    assert float(resolved.system.rho) == float(given.system.rho) != float(system.rho)


def test_log_every_prints_rate_limited_progress_on_stderr(capsys):
    cg.fit(ar1(), iterations=3, **quick())
    assert capsys.readouterr().err == ""  # silent by default
    cg.fit(ar1(), iterations=3, log_every=0, **quick())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("fit: iteration 1/3, loss ")
    assert " it/s, eta " in lines[0]
    assert lines[-1].startswith("fit: ended at iteration 3/3 after ") and "status ok" in lines[-1]
    cg.fit(ar1(), iterations=3, log_every=3600.0, **quick())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fit: ended")
    with pytest.raises(ValueError, match="log_every"):
        cg.fit(ar1(), iterations=3, log_every=-1.0, **quick())


def linear_readout(samples=4):
    """y = a u in one step, per-sample inputs u and targets: a supervised toy."""
    return cg.InputDriven(
        lambda t, x, u, a: a * u,
        jnp.ones((samples, 1, 1)),
        args=jnp.asarray(0.0),
        targets=jnp.zeros((samples, 1)),
        dim=1,
    )


def fresh_batch(key, samples=4):
    """u ~ N(0, 1), target 2 u + 0.5 noise."""
    u_key, noise_key = jax.random.split(key)
    u = jax.random.normal(u_key, (samples, 1, 1), dtype=jnp.float64)
    noise = jax.random.normal(noise_key, (samples, 1), dtype=jnp.float64)
    return {"inputs": u, "targets": 2.0 * u[:, 0] + 0.5 * noise}


SQUARED = Terminal(cg.ParametricObservable(lambda x, s: (x[0] - s.targets[0]) ** 2), 1)


def test_data_draws_a_fresh_batch_inside_each_iteration():
    """fit(data=...) equals the hand loop TrainStep + with_data(fold_in(key_i, DATA_STREAM)),
    every iteration sees another batch, and the slope approaches the population's 2 (not a
    fixed batch's least-squares slope)."""
    from chaosgrad.train import DATA_STREAM, with_data

    seen = []
    optimizer = optax.sgd(0.05)
    result = cg.fit(
        linear_readout(),
        lambda s: s,
        SQUARED,
        Backprop(samples=4),
        optimizer,
        iterations=300,
        key=KEY,
        data=fresh_batch,
        callback=lambda i, system, record: seen.append(np.asarray(system.inputs).ravel()),
    )
    assert len({tuple(row) for row in seen}) == 300
    step = cg.TrainStep(lambda s: s, SQUARED, Backprop(samples=4), optimizer)
    state = step.init(linear_readout())
    for i in range(300):
        key_i = jax.random.fold_in(KEY, i)
        system = with_data(state.system, fresh_batch(jax.random.fold_in(key_i, DATA_STREAM)))
        state, _ = step(type(state)(system, state.opt_state, state.iteration), key_i)
    assert float(result.system.args) == pytest.approx(float(state.system.args), abs=1e-12)
    # SGD at rate 0.05 on batches of 4: the slope's stationary spread about 2 is
    # sqrt(rate * 0.5^2 / (2 * 4)) ~ 0.04; 0.15 is nearly 4 of those
    assert float(result.system.args) == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize(
    "data, message",
    [
        (lambda key: jnp.zeros((4, 1, 1)), "must return a dict"),
        (lambda key: {"weights": jnp.zeros(3)}, "not a data field of InputDriven"),
        (lambda key: {"inputs": jnp.zeros((8, 1, 1))}, "a fresh batch must match it"),
        (lambda key: {"inputs": jnp.zeros((4, 1, 1), jnp.float32)}, "a fresh batch must match"),
    ],
)
def test_data_of_the_wrong_form_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        cg.fit(
            linear_readout(),
            lambda s: s,
            SQUARED,
            Backprop(samples=4),
            optax.sgd(0.05),
            iterations=2,
            key=KEY,
            data=data,
        )


@pytest.mark.parametrize(
    "case",
    ["plain", "schedule", "diverging", "breaking parameters", "data"],
)
def test_scan_runs_the_same_iterations_in_fewer_calls(tmp_path, case):
    """fit(scan=4) against scan=1: the same history (but its seconds) and parameters, the
    same status, and the same checkpoint; a schedule cuts the calls where its weights
    change; a run that diverges inside a call keeps the same last good parameters."""
    settings = quick()
    model, iterations = ar1(), 11
    if case == "schedule":
        settings.update(
            regularizer=lambda system: (system.args - 1.0) ** 2,
            schedule=lambda i: (0.0, 1.0) if i < 3 or 6 <= i < 8 else (1.0, 0.5),
        )
    elif case == "diverging":
        settings.update(loss=guarded_loss, optimizer=optax.sgd(0.3))
    elif case == "breaking parameters":
        model = breaking(1.0)
    elif case == "data":
        model, iterations = linear_readout(), 9
        settings.update(
            loss=lambda s: s, statistic=SQUARED, estimator=Backprop(samples=4), data=fresh_batch
        )
    runs = {}
    for scan in (1, 4):
        directory = tmp_path / str(scan)
        runs[scan] = cg.fit(
            model, iterations=iterations, scan=scan, checkpoint=directory, **settings
        )
    same_run(runs[1], runs[4])
    if case in ("plain", "schedule", "data"):
        assert runs[4].status == "ok" and runs[4].iterations == iterations
        # the scanned run's checkpoint resumes into the run made in one go
        resumed = cg.fit(
            model, iterations=iterations + 3, scan=4, resume=tmp_path / "4", **settings
        )
        same_run(resumed, cg.fit(model, iterations=iterations + 3, **settings))
    else:
        assert runs[4].status != "ok"
    with pytest.raises(ValueError, match="scan must be positive"):
        cg.fit(model, iterations=2, scan=0, **settings)
