"""The trainability benchmark: harness arithmetic, and every method of every task lowers
its training loss in a few iterations (fixed keys, tiny sizes)."""

import json
import os
import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest

from chaosgrad.experiments.trainability import expand_tasks, planned_runs, tune
from chaosgrad.experiments.trainability._harness import Run, mean_and_stderr, on_grid, summarise
from chaosgrad.experiments.trainability.t1_statistics import METHODS as T1_METHODS
from chaosgrad.experiments.trainability.t1_statistics import T1Settings, T1Task
from chaosgrad.experiments.trainability.t2_lorenz import METHODS as T2_METHODS
from chaosgrad.experiments.trainability.t2_lorenz import T2Settings, T2Task
from chaosgrad.experiments.trainability.t3_supervised import (
    DEEP_METHODS,
    RNN_METHODS,
    T3Settings,
    T3Task,
)


def test_runs_on_a_common_grid_and_mean_with_standard_error():
    a = Run("m", 0, times=[0.0, 1.0, 2.0], metrics=[{"loss": 3.0}, {"loss": 2.0}, {"loss": 1.0}])
    b = Run("m", 1, times=[0.0, 1.5], metrics=[{"loss": 5.0}, {"loss": 1.0}])
    grid = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    np.testing.assert_array_equal(on_grid(a, "loss", grid), [3, 3, 2, 2, 1, 1])
    np.testing.assert_array_equal(on_grid(b, "loss", grid), [5, 5, 5, 1, 1, 1])
    mean, se = mean_and_stderr(np.array([1.0, 3.0]))
    assert mean == 2.0 and se == pytest.approx(np.sqrt(2.0) / np.sqrt(2.0))
    summary = summarise([a, b], ["loss"], budget=2.0, points=3)
    final = summary["methods"]["m"]["final"]["loss"]
    assert final["mean"] == 1.0 and final["stderr"] == 0.0 and final["per_seed"] == [1.0, 1.0]
    assert summary["methods"]["m"]["curves"]["loss"]["mean"] == [4.0, 3.5, 1.0]  # b: 5 until 1.5


def test_task_names_and_planned_runs():
    assert expand_tasks(["T3", "T1"]) == ["T3-deep", "T3-rnn", "T1"]
    assert expand_tasks(["Bw", "B5"]) == ["Bw5", "Bw10", "Bw20", "B5"]
    assert planned_runs(["T1"], 3) == 3 * len(T1_METHODS)
    with pytest.raises(ValueError, match="unknown task"):
        expand_tasks(["T4"])


def tiny(name):
    if name == "T1":
        settings = T1Settings(
            hidden=12,
            gain=6.0,
            readouts=3,
            unstable_dim=2,
            segments=20,
            backprop_steps=30,
            truncated_steps=60,
            samples=2,
            learning_rate=1e-2,
            floss_exponents=3,
            floss_steps=20,
            floss_pre=2,
            floss_every=6,
            floss_length=2,
            teacher_steps=5000,
            eval_steps=2000,
            spectrum_steps=2000,
        )
        return T1Task(settings)
    if name == "T2":
        return T2Task(replace(T2Settings.quick(), steps=3000, batch=4, learning_rate=1e-2))
    settings = T3Settings(
        depth=6,
        width=8,
        outputs=3,
        train_examples=8,
        test_examples=16,
        hidden=8,
        delay=2,
        rnn_train=8,
        learning_rate=1e-2,
        floss_exponents=3,
        floss_steps=6,
        floss_pre=2,
        floss_every=6,
        floss_length=2,
    )
    return T3Task(name, settings)


def lowers_its_loss(task, method, iterations=16):
    run = task.run(method, 0, budget=None, eval_every=1e9, iterations=iterations)
    assert run.status == "ok", run.status
    if task.name == "T2":
        # T2's per-iteration losses are of random windows (too noisy to compare): the
        # evaluator's held-out 10-step error for the MSE methods, the spectrum distance
        # for the statistics method (its gradient is dominated by the moment term)
        metric = "d_h" if method.startswith("statistics") else "mse_10"
        assert run.metrics[-1][metric] < run.metrics[0][metric], (method, run.metrics)
        return
    losses = [v for v in run.extra["training_loss"] if v is not None]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), (method, losses)


# the default suite runs the seed method of T1; T2's gradients are tested in
# test_reconstruct.py and T3's networks in test_networks.py (all combinations: slow suite)
FAST = [("T1", "shadowing")]
ALL = (
    [("T1", m) for m in T1_METHODS]
    + [("T2", m) for m in T2_METHODS]
    + [("T3-deep", m) for m in DEEP_METHODS]
    + [("T3-rnn", m) for m in RNN_METHODS]
)


@pytest.mark.parametrize(("task", "method"), FAST)
def test_the_seed_method_of_t1_lowers_its_training_loss(task, method):
    lowers_its_loss(tiny(task), method)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "method"), [c for c in ALL if c not in FAST])
def test_every_method_of_every_task_lowers_its_training_loss(task, method):
    lowers_its_loss(tiny(task), method)


def test_ratio_to_start_and_rebuild_from_stored_runs():
    from chaosgrad.experiments.trainability import markdown_table, rebuild, task_summary

    runs = [
        Run("m", 0, times=[0.0, 1.0], metrics=[{"loss": 2.0}, {"loss": 1.0}]),
        Run("m", 1, times=[0.0, 1.0], metrics=[{"loss": 4.0}, {"loss": 1.0}]),
    ]
    section = task_summary({}, ["loss"], runs, 1.0, relative=("loss",))
    final = section["summary"]["methods"]["m"]["final"]["loss / start"]
    assert final["per_seed"] == [0.5, 0.25] and final["mean"] == 0.375
    stored = {"budget_seconds": 1.0, "tasks": {"T1": section}}
    rebuilt = rebuild(stored, {"T1": ("loss",)})
    assert rebuilt["tasks"]["T1"]["metrics"] == ["loss", "loss / start"]
    assert "| m | 1 ± 0 | 0.375 ± 0.12 |" in markdown_table(rebuilt)  # SE = 0.1768 / sqrt 2


def tiny_d():
    from chaosgrad.experiments.trainability.d_network import DSettings, DTask

    settings = replace(
        DSettings.quick(9),
        depth=10,
        samples=64,
        zeroth_order_pairs=32,
        target_samples=4000,
        eval_samples=1000,
        quality_draws=3,
        reference_samples=1000,
    )
    return DTask(settings)


def test_task_d_trains_every_weight_and_records_gradient_quality():
    """Task D (tiny): Kernel lowers the held-out loss in 15 iterations; the run records
    the gradient quality at its start and end (cosine in [-1, 1] with an SE, against a
    PathKernel reference), and every method builds its estimator."""
    task = tiny_d()
    assert task.describe()["parameters"] == 90
    run = task.run("kernel", 0, None, eval_every=1e9, iterations=15, learning_rate=0.03)
    assert run.status == "ok" and run.iterations == 15
    assert run.metrics[-1]["test_loss"] < run.metrics[0]["test_loss"]
    quality = run.extra["gradient_quality"]
    assert len(quality) >= 2 and all(-1 <= q["cosine"] <= 1 for q in quality)
    assert all(q["cosine_stderr"] >= 0 and q["n"] == 3 for q in quality)
    for method in task.methods:
        task.estimator_and_optimizer(method)
    with pytest.raises(ValueError, match="unknown D9 method"):
        task.estimator_and_optimizer("oracle")


def test_tuning_picks_the_rate_with_the_lowest_final_metric():
    class Fake:
        metrics = ("loss",)
        grid = (0.1, 0.01, 1.0)

        def run(self, method, seed, budget, every, learning_rate, quality):
            final = {0.1: 2.0, 0.01: 1.0, 1.0: float("nan")}[learning_rate]
            return Run(method, seed, times=[0.0, budget], metrics=[{"loss": 3.0}, {"loss": final}])

    result = tune(Fake(), "m", 1.0)
    assert result["chosen"] == 0.01
    assert result["finals"] == {"0.1": 2.0, "0.01": 1.0, "1.0": float("inf")}


class Graded:
    """A task whose final loss is a fixed function of (method, rate): "a" fails at 0.3,
    "c" is NaN at 0.1 (both count as infinite). Each run is recorded as (task, method,
    seed, rate, process, iterations)."""

    methods = ("a", "b", "c")
    metrics = ("loss",)
    grid = (0.1, 0.2, 0.3, 0.4)
    finals = {
        "a": {0.1: 3.0, 0.2: 1.0, 0.3: 0.5, 0.4: 2.0},
        "b": {0.1: 4.0, 0.2: 4.0, 0.3: 5.0, 0.4: 6.0},
        "c": {0.1: float("nan"), 0.2: 9.0, 0.3: 8.0, 0.4: 7.0},
    }

    def __init__(self, name, calls, process):
        self.name, self.calls, self.process = name, calls, process

    def describe(self):
        return {}

    def run(self, method, seed, budget, eval_every, learning_rate, quality=True, iterations=None):
        self.calls.append((self.name, method, seed, learning_rate, self.process(), iterations))
        final = self.finals[method][learning_rate]
        status = "failed" if (method, learning_rate) == ("a", 0.3) else "ok"
        return Run(method, seed, [0.0, budget], [{"loss": 9.0}, {"loss": final}], status)


class ThreadProcesses:
    """``count`` processes simulated by threads: ``gather_json`` exchanges the values of
    every thread at a barrier (the collective's contract: every process calls it, in the
    same order; a thread calling it more often than another breaks the barrier)."""

    def __init__(self, count):
        self.count, self.values, self.local = count, {}, threading.local()
        self.barrier = threading.Barrier(count, timeout=60)

    def index(self):
        return self.local.index

    def gather_json(self, value, default=None):
        self.local.calls = getattr(self.local, "calls", 0) + 1
        text = json.dumps(value, default=default)
        self.values[self.local.calls, self.local.index] = json.loads(text)
        self.barrier.wait()
        return [self.values[self.local.calls, i] for i in range(self.count)]

    def run(self, function):
        results, errors = [None] * self.count, []

        def target(i):
            self.local.index = i
            try:
                results[i] = function(i)
            except BaseException as error:
                errors.append(error)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(i,)) for i in range(self.count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_tuning_runs_are_split_over_processes_and_every_process_chooses_alike(monkeypatch, count):
    """share=(i, N): each (task, method, rate) tuning run is made once, tuning run j (task by
    task, method by method, rate by rate) in process j mod N; every process stores the
    same tuning, equal to ``tune``'s, and trains its seeds at the chosen rate, after one
    warm-up iteration at that rate (N > 1)."""
    import chaosgrad.experiments.trainability as trainability

    processes = ThreadProcesses(count)
    calls = []
    monkeypatch.setattr(trainability, "gather_json", processes.gather_json)
    monkeypatch.setattr(trainability, "task_methods", lambda name: Graded.methods)
    monkeypatch.setattr(
        trainability, "make_task", lambda name, quick: Graded(name, calls, processes.index)
    )

    def one(index):
        return trainability.run_trainability(
            ["D9", "D32"], budget=1.0, seeds=2, share=(index, count), tune_budget=0.5
        ).summary

    summaries = processes.run(one)
    tuning_calls = [c for c in calls if c[2] == trainability.TUNING_SEED and c[5] is None]
    plan = [(t, m, r) for t in ("D9", "D32") for m in Graded.methods for r in Graded.grid]
    assert sorted((t, m, r) for t, m, _, r, _, _ in tuning_calls) == sorted(plan)
    if count > 1:
        assert {(t, m, r): p for t, m, _, r, p, _ in tuning_calls} == {
            run: j % count for j, run in enumerate(plan)
        }
    expected = {m: tune(Graded("x", [], lambda: 0), m, 0.5) for m in Graded.methods}
    assert [expected[m]["chosen"] for m in Graded.methods] == [0.2, 0.1, 0.4]
    assert expected["a"]["finals"]["0.3"] == float("inf")
    assert expected["c"]["finals"]["0.1"] == float("inf")
    for summary in summaries:
        for name in ("D9", "D32"):
            assert summary["tasks"][name]["tuning"] == expected
            for run in summary["tasks"][name]["runs"]:
                assert run["extra"]["learning_rate"] == expected[run["method"]]["chosen"]
    warm_ups = [(t, m, r, p) for t, m, seed, r, p, n in calls if n == 1]
    seeded = {
        (name, run["method"], expected[run["method"]]["chosen"], run["extra"]["process"])
        for name in ("D9", "D32")
        for run in summaries[0]["tasks"][name]["runs"]
    }
    assert sorted(warm_ups) == (sorted(seeded) if count > 1 else [])


def test_two_processes_tune_once_and_train_their_seeds_alike(tmp_path):
    """``--processes 2`` on D9 (quick, Kernel; launched as in tests/cli/test_benchmark.py):
    the stored tuning holds every rate's final and its choice, and both processes train
    their seed at the chosen rate."""
    command = [sys.executable, "-m", "chaosgrad", "benchmark", "trainability", "--task", "D9"]
    options = ["--method", "kernel", "--quick", "--budget", "1", "--seeds", "2"]
    run = subprocess.run(
        [*command, *options, "--tune-budget", "0.3", "--out", str(tmp_path), "--processes", "2"],
        env=dict(os.environ, CHAOSGRAD_CACHE_DIR=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    section = json.loads((tmp_path / "trainability.json").read_text())["tasks"]["D9"]
    tuning = section["tuning"]["kernel"]
    assert list(tuning["finals"]) == ["0.003", "0.01", "0.03", "0.1"]
    assert tuning["chosen"] == float(min(tuning["finals"], key=tuning["finals"].get))
    runs = section["runs"]
    assert [(r["seed"], r["extra"]["process"]) for r in runs] == [(0, 0), (1, 1)]
    assert all(r["extra"]["learning_rate"] == tuning["chosen"] for r in runs)


def test_the_short_window_control_fits_lorenz_parameters_by_bptt():
    """control-short (quick: 60 steps): the data ride along as an input, so the trajectory
    loss is a WindowAverage; at the truth the loss is 0 (to rounding), and 30 BPTT steps
    lower the loss and the parameter error from the NRES start (22.6, 40.4)."""
    import jax.numpy as jnp

    from chaosgrad.experiments.trainability.control_short import TRUTH, ShortSettings, ShortTask

    task = ShortTask(ShortSettings.quick())
    at_truth = task.evaluate(task.model(jnp.log(jnp.asarray(TRUTH))))
    assert at_truth["loss"] < 1e-20 and at_truth["parameter_error"] < 1e-12
    run = task.run("bptt", 0, None, eval_every=1e9, iterations=30, learning_rate=0.03)
    first, last = run.metrics[0], run.metrics[-1]
    assert last["loss"] < 0.5 * first["loss"]
    assert last["parameter_error"] < first["parameter_error"]
    for method in task.methods:
        task.estimator(method)


def test_task_c_fits_the_long_trajectory_with_every_method():
    """Task C (quick: 200 steps): every method, Kernel's path form on the noisy model
    included, lowers the unperturbed loss in 3 Adam steps from the NRES start; the kernel
    methods train the noisy model but are evaluated on the noise-free one."""
    from chaosgrad.experiments.trainability.c_lorenz import CSettings, CTask

    task = CTask(CSettings.quick())
    assert task.start_model("kernel-0.1").noise_level == 0.1
    for method in task.methods:
        run = task.run(method, 0, None, eval_every=1e9, iterations=3, learning_rate=0.01)
        assert run.status == "ok"
        assert run.metrics[-1]["loss"] < run.metrics[0]["loss"], method
    with pytest.raises(ValueError, match="unknown C method"):
        task.estimator("oracle")


def test_task_b_assimilates_with_every_method():
    """Task B (quick: 100 Euler-Maruyama steps of the nudged Lorenz-96): 10 + 3 + 10 x 100
    parameters; every method lowers Phi on 16 fresh paths in 3 iterations of the paper's
    capped step (Adam for bptt-adam); the horizon names stretch the path (B10: 200 steps)."""
    from chaosgrad.experiments.trainability import make_task

    task = make_task("B5", quick=True)
    assert task.describe()["parameters"] == 10 + 3 + 10 * 100
    assert make_task("B10", quick=True).settings.steps == 200
    weak = make_task("Bw10", quick=True)
    assert weak.settings.steps == 200 and weak.name == "Bw10"
    model = weak.start_model()
    assert float(model.gamma) == 0.001 and model.gamma_floor == 0.001
    assert task.start_model().gamma_floor == 0.1
    for method in task.methods:
        run = task.run(method, 0, None, eval_every=1e9, iterations=3, quality=False)
        assert run.status == "ok", (method, run.status)
        assert run.metrics[-1]["phi"] < run.metrics[0]["phi"], method
    with pytest.raises(ValueError, match="unknown B5 method"):
        task.estimator_and_optimizer("oracle", None)


def test_the_delayed_xor_control_reads_each_steps_target():
    """control-xor (quick: 16 units, T = 40, d = 4): the batch's targets are b_{t-d} XOR
    b_{t-2d}; without noise the statistic's value (Backprop's loss estimate on a batch) is
    the evaluator's mean cross-entropy over steps t >= 2d on the same batch, to rounding
    (the step counter and the evaluator's own indexing agree); every method runs, with its
    gradient quality measured."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from chaosgrad.estimators import Backprop, value_and_grad
    from chaosgrad.experiments.trainability.control_xor import XorSettings, XorTask, xor_batch
    from chaosgrad.train import with_data

    settings = XorSettings.quick()
    batch = xor_batch(jax.random.key(5), 6, settings.length, settings.delay)
    bits, targets, d = np.asarray(batch["inputs"][..., 0]), np.asarray(batch["targets"]), 4
    for t in range(settings.length):
        want = (bits[:, t - d] != bits[:, t - 2 * d]).astype(float) if t >= 2 * d else 0.0
        np.testing.assert_array_equal(targets[:, t], want)

    task = XorTask(dataclasses.replace(settings, noise=0.0, test_sequences=6))
    task.test = batch
    model = task.model("bptt+clip", 0)
    value, _, _ = value_and_grad(
        with_data(model, batch),
        lambda loss: loss,
        task.statistic,
        Backprop(samples=6),
        wrt=lambda m: m.args,
        x0=jnp.zeros(model.dim),
        key=jax.random.key(0),
    )
    assert float(value) == pytest.approx(task.evaluate(model)["test_loss"], rel=1e-12)

    task = XorTask(settings)
    for method in task.methods:
        run = task.run(method, 0, None, eval_every=1e9, iterations=3)
        assert run.status == "ok", (method, run.status)
        assert 0.3 < run.metrics[-1]["test_accuracy"] < 0.7  # chance after 3 steps
        # no budget: the marks are never reached, so quality at the start and at the end
        assert [q["cosine"] is not None for q in run.extra["gradient_quality"]] == [True] * 2
    with pytest.raises(ValueError, match="unknown control-xor method"):
        task.estimator_and_optimizer("oracle")


def test_the_reconstruction_control_runs_every_method():
    """control-T2 (quick): every method trains 3 iterations on T2's data and is evaluated
    by T2's metrics; STF resets every tau, and the balanced statistics term waits for its
    warm-up (2 iterations) before Shadowing measures u."""
    from chaosgrad.experiments.trainability import make_task

    task = make_task("control-T2", quick=True)
    runs = {m: task.run(m, 0, None, eval_every=1e9, iterations=3) for m in task.methods}
    for method, run in runs.items():
        assert run.status == "ok", (method, run.status)
        assert set(run.metrics[-1]) >= {"d_stsp", "d_h", "mse_10"}, method
        assert len(run.extra["grad_norm"]) == 3
    assert runs["stf"].extra["tau"] == [10]
    assert len(runs["statistics(balanced)"].extra["unstable_dim"]) == 1
    with pytest.raises(ValueError, match="unknown control-T2 method"):
        task.options("oracle")
