"""What every trainability task shares: a method is a function of (seed, budget, evaluate)
returning a :class:`Run`; runs of many seeds are put on one wall-time grid and summarised as
mean +- standard error over seeds.

Fairness rules, the same for every task:

* every method of a task trains the same model size for the same wall-clock ``budget`` of
  iteration time (compilation included: it is part of what a user waits for; evaluation
  excluded: it is the benchmark's, not the method's);
* the metric is measured by the task's own evaluator (independent long orbits, held-out
  data or fresh noise), never by the method's own loss estimate;
* a run that fails (NaN, divergence) keeps its last finite metric until it failed and is
  counted as failed in the table; its metric after the failure is the last value (the
  parameters stop changing), stated in the JSON.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import jax
import numpy as np

from ...train import fit


@dataclass
class Run:
    """One training run: evaluations at cumulative training times, and how it ended."""

    method: str
    seed: int
    times: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    status: str = "ok"
    iterations: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "seed": self.seed,
            "times": self.times,
            "metrics": [{k: _finite_or_none(v) for k, v in m.items()} for m in self.metrics],
            "status": self.status,
            "iterations": self.iterations,
            "seconds": self.seconds,
            "extra": self.extra,
        }


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


class Clock:
    """Training time for the budget and the evaluation schedule: ``tick(seconds)`` adds one
    iteration's time; ``due()`` says when the next evaluation is (every ``every`` seconds)."""

    def __init__(self, every: float):
        self.every, self.elapsed, self.next = every, 0.0, 0.0

    def tick(self, seconds: float) -> None:
        self.elapsed += seconds

    def due(self) -> bool:
        if self.elapsed >= self.next:
            self.next = self.elapsed + self.every
            return True
        return False


class Evaluations:
    """Evaluate on schedule: ``maybe(system)`` after each iteration records
    ``evaluate(system)`` at the current training time when due (its own time is not counted)."""

    def __init__(self, run: Run, evaluate: Callable[[object], dict], every: float):
        self.run, self.evaluate, self.clock = run, evaluate, Clock(every)

    def record(self, system) -> None:
        self.run.times.append(self.clock.elapsed)
        self.run.metrics.append(self.evaluate(system))

    def maybe(self, system, seconds: float) -> None:
        self.clock.tick(seconds)
        if self.clock.due():
            self.record(system)


def thinned(values: list, points: int = 200) -> list:
    """At most ``points`` evenly spaced entries of ``values`` (first and last kept), with
    non-finite numbers as None (strict JSON)."""
    if len(values) > points:
        index = np.unique(np.linspace(0, len(values) - 1, points).round().astype(int))
        values = [values[i] for i in index]
    return [_finite_or_none(v) if v is not None else None for v in values]


def timed(function: Callable, *args, **kwargs):
    """(result, seconds)."""
    began = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - began


def evenly_spaced(budget: float | None, points: int) -> list[float]:
    """The training times of ``points`` evenly spaced measurements from the start to
    ``budget`` (infinite without one), the start left out: the ``marks`` of
    :func:`train_with_marks`."""
    total = budget or float("inf")
    return [total * i / max(points - 1, 1) for i in range(1, points)]


def train_with_marks(
    method: str,
    seed: int,
    model,
    loss: Callable,
    statistic,
    estimator,
    optimizer,
    *,
    budget: float | None,
    eval_every: float,
    evaluate: Callable[[object], dict],
    quality: Callable[[object, jax.Array], dict] | None,
    marks: Sequence[float],
    success: Callable[[dict, dict], bool],
    iterations: int | None = None,
    fit_options: Mapping | None = None,
    at_start: Callable[[object], dict] | None = None,
    quality_iteration: bool = False,
) -> Run:
    """Train ``model`` by :func:`~chaosgrad.train.fit` with ``estimator`` and ``optimizer``
    for ``budget`` seconds (or ``iterations``), and return the :class:`Run` of ``method``
    and ``seed``: ``evaluate`` at the start, on schedule every ``eval_every`` seconds of
    training and at the end (if the last scheduled one came before it, or the run failed),
    and the gradient quality along the way.

    Gradient quality (``run.extra["gradient_quality"]``, entries ``{"time", **quality}``):
    ``quality(system, key)`` at the start, after the first iteration whose cumulative
    training time reaches each of ``marks`` (in order), and once at the end if a mark was
    not reached; none when ``quality`` is None. Keys: the start 2000 + seed, iteration i
    2000 + 10 seed + i, the end 3000 + seed; training 1000 + seed.

    Args:
        method, seed: the run's names; ``seed`` also sets the keys above.
        model: the system at its starting parameters.
        loss, statistic, estimator, optimizer: as for ``fit``.
        budget: seconds of iteration time (None: ``iterations`` alone stops the run).
        eval_every: seconds of training time between evaluations.
        evaluate: system -> metrics (the task's held-out evaluator).
        quality: (system, key) -> gradient-quality entries, or None for no measurements.
        marks: training times after the start at which quality is measured
            (:func:`evenly_spaced`).
        success: (first metrics, last metrics) -> whether the run met the task's
            pre-registered goal (``run.extra["success"]``).
        iterations: an iteration cap (None: 10^9, the budget decides).
        fit_options: further keyword arguments of ``fit`` (``wrt``, ``x0``).
        at_start: system -> entries added to ``run.extra``, called with the start model
            after its quality measurement (before training).
        quality_iteration: also store the iteration of each quality entry (0 at the start,
            -1 at the end).
    """
    run = Run(method, seed)
    evaluations = Evaluations(run, evaluate, eval_every)
    evaluations.record(model)
    pending = list(marks) if quality is not None else []
    measured: list[dict] = []

    def measure(system, key_seed: int, iteration: int) -> None:
        assert quality is not None
        entry = quality(system, jax.random.key(key_seed))
        where = {"iteration": iteration} if quality_iteration else {}
        measured.append({"time": evaluations.clock.elapsed, **where, **entry})

    if quality is not None:
        measure(model, 2000 + seed, 0)
    if at_start is not None:
        run.extra.update(at_start(model))

    def callback(i, system, record):
        evaluations.maybe(system, record["seconds"])
        if pending and evaluations.clock.elapsed >= pending[0]:
            pending.pop(0)
            measure(system, 2000 + 10 * seed + i, i)

    result = fit(
        model,
        loss,
        statistic,
        estimator,
        optimizer,
        iterations=iterations or 10**9,
        key=jax.random.key(1000 + seed),
        budget=budget,
        callback=callback,
        **(fit_options or {}),
    )
    if result.failed or run.times[-1] < evaluations.clock.elapsed:
        evaluations.record(result.system)
    if pending:  # the run ended before the last mark
        measure(result.system, 3000 + seed, -1)
    run.status, run.iterations = result.status, result.iterations
    run.extra["training_loss"] = thinned(result.history["loss"])
    run.extra["gradient_quality"] = measured
    run.extra["success"] = bool(success(run.metrics[0], run.metrics[-1]))
    run.seconds = evaluations.clock.elapsed
    return run


def on_grid(run: Run, metric: str, grid: np.ndarray) -> np.ndarray:
    """The run's last evaluated ``metric`` at or before each grid time (NaN before the first
    evaluation; the last value after the run ended)."""
    times = np.asarray(run.times)
    values = np.array([m.get(metric, np.nan) for m in run.metrics], dtype=float)
    index = np.searchsorted(times, grid, side="right") - 1
    out = np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)
    return out


def mean_and_stderr(values: np.ndarray, axis: int = 0):
    """Mean over seeds and its standard error sd / sqrt(n) (NaN entries excluded; inf kept
    as inf: a diverged metric must not vanish from the average)."""
    values = np.asarray(values, dtype=float)
    count = np.sum(~np.isnan(values), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(values, axis=axis) if values.size else np.nan
        sd = np.nanstd(values, axis=axis, ddof=1) if np.max(count, initial=0) > 1 else np.nan
        stderr = sd / np.sqrt(np.maximum(count, 1))
    return mean, stderr


def summarise(runs: list[Run], metrics: list[str], budget: float, points: int = 40) -> dict:
    """Per method: each metric on a common time grid (mean and SE over seeds), the final
    values (mean +- SE), iterations, and the failed runs."""
    grid = np.linspace(0.0, budget, points)
    methods: dict[str, list[Run]] = {}
    for run in runs:
        methods.setdefault(run.method, []).append(run)
    summary = {"grid": grid.tolist(), "methods": {}}
    for name, group in methods.items():
        entry: dict = {"seeds": len(group), "curves": {}, "final": {}}
        for metric in metrics:
            curves = np.stack([on_grid(run, metric, grid) for run in group])
            mean, stderr = mean_and_stderr(curves)
            finals = np.array(
                [[m.get(metric, np.nan) for m in run.metrics][-1] for run in group], dtype=float
            )
            final_mean, final_se = mean_and_stderr(finals)
            entry["curves"][metric] = {
                "mean": [_finite_or_none(v) for v in np.atleast_1d(mean)],
                "stderr": [_finite_or_none(v) for v in np.atleast_1d(stderr)],
            }
            entry["final"][metric] = {
                "mean": _finite_or_none(final_mean),
                "stderr": _finite_or_none(final_se),
                "per_seed": [_finite_or_none(v) for v in finals],
            }
        entry["iterations"] = [run.iterations for run in group]
        entry["failed"] = [run.status for run in group if run.status != "ok"]
        summary["methods"][name] = entry
    return summary
