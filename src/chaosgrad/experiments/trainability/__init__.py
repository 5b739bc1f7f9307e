"""The trainability benchmark: conventional remedies and the seed methods side by side.

``run_trainability(tasks, budget=, seeds=, out=)`` trains every method of every task for the
same wall-clock budget, over several seeds, and writes ``trainability.json`` (every run's
evaluations, the curves on a common time grid as mean +- SE over seeds, the final table)
and one PNG per task and metric (metric against training time, SE bands). Tasks:

* T1 (:mod:`.t1_statistics`): a chaotic student RNN learns a teacher's long-time statistics;
* T2 (:mod:`.t2_lorenz`): learn Lorenz-63 from a time series (``chaosgrad.reconstruct``);
* T3 (:mod:`.t3_supervised`): a noisy depth-50 net and a noisy RNN, supervised.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import jax

from ...plot import plot_trainability
from .._common import ExperimentResult, _jsonable
from ._harness import Run, summarise

TASKS = ("T1", "T2", "T3-deep", "T3-rnn")
ALIASES = {"T3": ("T3-deep", "T3-rnn")}


def expand_tasks(names) -> list[str]:
    """Task names with "T3" standing for both of its parts; unknown names refused."""
    tasks: list[str] = []
    for name in names:
        for task in ALIASES.get(name, (name,)):
            if task not in TASKS:
                raise ValueError(
                    f"unknown task {name!r}; choose from T1, T2, T3 (= T3-deep and T3-rnn)"
                )
            if task not in tasks:
                tasks.append(task)
    return tasks


def task_methods(name: str) -> tuple[str, ...]:
    """The method names of a task (without building it)."""
    if name == "T1":
        from .t1_statistics import METHODS
    elif name == "T2":
        from .t2_lorenz import METHODS
    elif name == "T3-deep":
        from .t3_supervised import DEEP_METHODS as METHODS
    else:
        from .t3_supervised import RNN_METHODS as METHODS
    return METHODS


def planned_runs(tasks, seeds: int, methods=None) -> int:
    """How many runs ``run_trainability`` will make."""
    count = 0
    for name in expand_tasks(tasks):
        count += sum(1 for m in task_methods(name) if methods is None or m in methods)
    return count * int(seeds)


def make_task(name: str, quick: bool = False):
    """The task object of ``name`` (full sizes, or the shortened ``quick`` version)."""
    if name == "T1":
        from .t1_statistics import T1Settings, T1Task

        return T1Task(T1Settings(teacher_steps=20_000, eval_steps=5000) if quick else None)
    if name == "T2":
        from .t2_lorenz import T2Settings, T2Task

        return T2Task(T2Settings.quick() if quick else None)
    if name in ("T3-deep", "T3-rnn"):
        from .t3_supervised import T3Settings, T3Task

        return T3Task(name, T3Settings.quick() if quick else T3Settings())
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")


def run_trainability(
    tasks=TASKS,
    *,
    budget: float = 60.0,
    seeds: int = 3,
    methods: list[str] | None = None,
    quick: bool = False,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Run the benchmark; return (and with ``out``, write) its summary.

    Args:
        tasks: task names ("T1", "T2", "T3" = "T3-deep" and "T3-rnn").
        budget: seconds of training per run (same for every method of a task).
        seeds: runs per method (mean +- SE over them).
        methods: restrict to these method names (default: every method of each task).
        quick: the shortened sizes (``make bench``, tests).
        progress: called with a description before each run.
    """
    if not budget > 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if int(seeds) < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    began = time.perf_counter()
    summary: dict = {
        "budget_seconds": budget,
        "seeds": int(seeds),
        "quick": quick,
        "machine": {"cpus": jax.local_device_count(), "platform": platform.platform()},
        "jax": jax.__version__,
        "tasks": {},
    }
    files: list[str] = []
    for name in expand_tasks(tasks):
        task = make_task(name, quick)
        chosen = [m for m in task.methods if methods is None or m in methods]
        runs: list[Run] = []
        for method in chosen:
            for seed in range(int(seeds)):
                if progress is not None:
                    progress(f"{name} {method} seed {seed}")
                every = budget / getattr(task, "evaluations", 12)
                runs.append(task.run(method, seed, budget, eval_every=every))
        table = summarise(runs, list(task.metrics), budget)
        for method, entry in table["methods"].items():
            flags = [
                r.extra["success"] for r in runs if r.method == method and "success" in r.extra
            ]
            if flags:
                entry["successes"] = f"{sum(flags)}/{len(flags)}"
        summary["tasks"][name] = {
            "description": task.describe(),
            "metrics": list(task.metrics),
            "summary": table,
            "runs": [run.to_json() for run in runs],
        }
        if out is not None:
            for metric in task.metrics:
                path = Path(out) / f"trainability_{name}_{metric}.png"
                plot_trainability(path, table, metric, f"{name}: {metric} against training time")
                files.append(path.name)
    summary["seconds"] = time.perf_counter() - began
    result = ExperimentResult("trainability", summary, files)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / "trainability.json"
        path.write_text(json.dumps(summary, indent=1, default=_jsonable) + "\n")
        files.append(path.name)
    return result


def table_rows(summary: dict) -> list[dict]:
    """One row per (task, method): final metrics as mean +- SE, failures, iterations."""
    rows = []
    for task, content in summary["tasks"].items():
        for method, entry in content["summary"]["methods"].items():
            row = {"task": task, "method": method, "seeds": entry["seeds"]}
            for metric, final in entry["final"].items():
                row[metric] = (final["mean"], final["stderr"])
            row["failed"] = len(entry["failed"])
            if "successes" in entry:
                row["successes"] = entry["successes"]
            row["iterations"] = entry["iterations"]
            rows.append(row)
    return rows


__all__ = ["TASKS", "expand_tasks", "make_task", "planned_runs", "run_trainability", "table_rows"]
