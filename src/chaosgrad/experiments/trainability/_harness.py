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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


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
