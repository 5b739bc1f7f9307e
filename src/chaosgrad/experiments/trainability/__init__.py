"""The trainability benchmark: conventional remedies and the seed methods side by side.

``run_trainability(tasks, budget=, seeds=, out=)`` trains every method of every task for the
same wall-clock budget, over several seeds, and writes ``trainability.json`` (every run's
evaluations, the curves on a common time grid as mean +- SE over seeds, the final table)
and one PNG per task and metric (metric against training time, SE bands). Tasks:

* T1 (:mod:`.t1_statistics`): a chaotic student RNN learns a teacher's long-time statistics;
* T2 (:mod:`.t2_lorenz`): learn Lorenz-63 from a time series (``chaosgrad.reconstruct``);
* T3 (:mod:`.t3_supervised`): a noisy depth-50 net and a noisy RNN, supervised;
* A1 (:mod:`.a1_closure`): calibrate Lorenz-63's climate through a 771-weight closure
  (shadowing's design point: a long-time statistic, many parameters);
* A2 (:mod:`.a2_solenoid`): a neural perturbation of the modified solenoid, where the
  unstable contribution dominates (FAR's design point);
* B5, B10, B20 (:mod:`.b_assimilation`): 4D-Var in a nudged stochastic Lorenz-96 (the
  adjoint path-kernel protocol) at T = 5, 10 and 20 time units; Bw5, Bw10, Bw20 the same
  with the nudging 100x weaker (gamma 0.001), where the pathwise gradient grows with T;
* C (:mod:`.c_lorenz`): Lorenz-63's parameters from one 2000-step trajectory (the NRES
  protocol; Kernel's path form with injected noise against the evolution strategies);
* D9, D32 (:mod:`.d_network`): the seeds' noisy 50-layer net, every weight trained to a
  teacher's output law (90 and 1056 parameters);
* control-short (:mod:`.control_short`): a Lorenz-63 parameter fit on a window of one
  Lyapunov time, where backpropagation is exact and cheapest (a control);
* control-xor (:mod:`.control_xor`): the delayed XOR at the gradient-flossing paper's
  settings (80 units, T = 300, delay 10), where gated cells and flossing are the state of
  the art (a control);
* control-T2 (:mod:`.control_t2`): T2 against generalized and sparse teacher forcing and
  measure matching, with the statistics loss balanced (a control).

T1 and T3 are kept as recorded history, not as evidence: T1's student is not hyperbolic
(heavy-tailed shadowing gradients), and T3-deep sits at its information floor.

Tasks with a ``grid`` (a tuple of learning rates) are tuned first (``tune=True``): each
method runs every rate on the tuning seed (``TUNING_SEED``) for ``tune_budget`` seconds,
and the rate with the lowest final first metric trains the fresh seeds. Both are stored.
Over several processes each tuning run is made once, in one process, and every process
chooses from all of them (:func:`tune_shared`). A task whose methods do not all take a
learning rate names those that do in ``tuned``; the others are not tuned.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from ...parallel import gather_json
from ...plot import plot_trainability
from .._common import ExperimentResult, _jsonable
from ._harness import Run, summarise

TASKS = (
    "T1",
    "T2",
    "T3-deep",
    "T3-rnn",
    "A1",
    "A2",
    "B5",
    "B10",
    "B20",
    "Bw5",
    "Bw10",
    "Bw20",
    "C",
    "D9",
    "D32",
    "control-short",
    "control-xor",
    "control-T2",
)
B_TASKS = ("B5", "B10", "B20", "Bw5", "Bw10", "Bw20")
ALIASES = {"T3": ("T3-deep", "T3-rnn"), "B": B_TASKS[:3], "Bw": B_TASKS[3:]}


def expand_tasks(names) -> list[str]:
    """Task names with "T3" standing for both of its parts; unknown names refused."""
    tasks: list[str] = []
    for name in names:
        for task in ALIASES.get(name, (name,)):
            if task not in TASKS:
                raise ValueError(
                    f"unknown task {name!r}; choose from T1, T2, T3 (= T3-deep and T3-rnn), "
                    "A1, A2, B (= B5, B10 and B20), Bw (= Bw5, Bw10 and Bw20), C, D9, D32, "
                    "control-short, control-xor, "
                    "control-T2"
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
    elif name == "A1":
        from .a1_closure import METHODS
    elif name == "A2":
        from .a2_solenoid import METHODS
    elif name in B_TASKS:
        from .b_assimilation import METHODS
    elif name == "C":
        from .c_lorenz import METHODS
    elif name in ("D9", "D32"):
        from .d_network import METHODS
    elif name == "control-short":
        from .control_short import METHODS
    elif name == "control-xor":
        from .control_xor import METHODS
    elif name == "control-T2":
        from .control_t2 import METHODS
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
    if name == "control-short":
        from .control_short import ShortSettings, ShortTask

        return ShortTask(ShortSettings.quick() if quick else None)
    if name == "control-xor":
        from .control_xor import XorSettings, XorTask

        return XorTask(XorSettings.quick() if quick else None)
    if name == "control-T2":
        from .control_t2 import ControlT2Settings, ControlT2Task

        return ControlT2Task(ControlT2Settings.quick() if quick else None)
    if name == "A1":
        from .a1_closure import A1Settings, A1Task

        return A1Task(A1Settings.quick() if quick else None)
    if name == "A2":
        from .a2_solenoid import A2Settings, A2Task

        return A2Task(A2Settings.quick() if quick else None)
    if name in B_TASKS:
        from .b_assimilation import WEAK_GAMMA, BSettings, BTask

        settings = BSettings.quick() if quick else BSettings()
        horizon = int(name.lstrip("Bw")) / 5
        settings = dataclasses.replace(settings, time=settings.time * horizon)
        if name.startswith("Bw"):
            settings = dataclasses.replace(settings, gamma=WEAK_GAMMA, gamma_floor=WEAK_GAMMA)
        return BTask(settings, name)
    if name == "C":
        from .c_lorenz import CSettings, CTask

        return CTask(CSettings.quick() if quick else None)
    if name in ("D9", "D32"):
        from .d_network import DSettings, DTask

        width = int(name[1:])
        return DTask(DSettings.quick(width) if quick else DSettings(width=width))
    if name in ("T3-deep", "T3-rnn"):
        from .t3_supervised import T3Settings, T3Task

        return T3Task(name, T3Settings.quick() if quick else T3Settings())
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")


TUNING_SEED = 100
"""The seed the learning-rate grid is tuned on (the reported seeds are 0, 1, ...)."""


def tuning_run(task, method: str, rate: float, budget: float) -> float:
    """The final first metric of ``method`` at learning rate ``rate`` on the tuning seed
    after ``budget`` seconds (infinite if the run failed or the metric is not finite)."""
    run = task.run(method, TUNING_SEED, budget, budget / 4, learning_rate=rate, quality=False)
    value = run.metrics[-1].get(task.metrics[0], float("inf"))
    return float("inf") if run.status != "ok" or not np.isfinite(value) else value


def choose_rate(finals: dict) -> dict:
    """The tuning record of one method from its final metric per rate: the finals (keyed
    by the rate's text) and the chosen rate, the lowest final (the first in grid order on a
    tie)."""
    chosen = min(finals, key=lambda rate: finals[rate])
    return {"finals": {str(rate): value for rate, value in finals.items()}, "chosen": chosen}


def tune(task, method: str, budget: float) -> dict:
    """Every learning rate of ``task.grid`` on the tuning seed for ``budget`` seconds: the
    final first metric of each, and the chosen rate (the lowest; a failed run counts as
    infinite)."""
    return choose_rate({rate: tuning_run(task, method, rate, budget) for rate in task.grid})


def tuning_plan(task, methods) -> list[tuple[str, float]]:
    """The tuning runs of ``task`` for ``methods``: (method, rate) for each method, each
    rate of ``task.grid``."""
    return [(method, rate) for method in methods for rate in task.grid]


def tune_shared(task, methods, budget: float, share: tuple[int, int], first: int = 0) -> dict:
    """:func:`tune` of each of ``methods``, its runs split over processes: run i of
    ``tuning_plan(task, methods)`` runs in process (first + i) mod N, the finals are
    exchanged by ``parallel.gather_json`` (a collective: every process calls this for the
    same tasks in the same order) and every process chooses each method's rate by the same
    rule. Returns {method: tune's record}, the same in every process."""
    index, count = share
    plan = tuning_plan(task, methods)
    mine = [
        [i, tuning_run(task, method, rate, budget)]
        for i, (method, rate) in enumerate(plan)
        if (first + i) % count == index
    ]
    finals = {i: value for shared in gather_json(mine) for i, value in shared}
    tunings = {}
    for method in methods:
        rates = {rate: finals[i] for i, (m, rate) in enumerate(plan) if m == method and i in finals}
        if rates:  # every rate; only this process's share if it runs alone (one JAX process)
            tunings[method] = choose_rate(rates)
    return tunings


def warm_up(task, method: str, rate: float) -> None:
    """One discarded iteration of ``method`` at learning rate ``rate`` on the tuning seed.
    The compiled training step depends on the rate: a process that did not make the chosen
    rate's tuning run compiles it here (one that did reuses its step), so that its seed
    runs start as in one process, where tuning made every rate's run."""
    task.run(method, TUNING_SEED, None, 1e9, learning_rate=rate, quality=False, iterations=1)


def run_trainability(
    tasks=TASKS,
    *,
    budget: float = 60.0,
    seeds: int = 3,
    methods: list[str] | None = None,
    quick: bool = False,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    share: tuple[int, int] = (0, 1),
    tune_budget: float | None = None,
) -> ExperimentResult:
    """Run the benchmark; return (and with ``out``, write) its summary.

    Args:
        tasks: task names ("T1", "T2", "T3" = "T3-deep" and "T3-rnn").
        budget: seconds of training per run (same for every method of a task).
        seeds: runs per method (mean +- SE over them).
        methods: restrict to these method names (default: every method of each task).
        quick: the shortened sizes (``make bench``, tests).
        progress: called with a description before each run.
        share: (this process's index, number of processes) of a run split over processes
            (``chaosgrad benchmark trainability --processes N``): run i of the plan (tasks,
            then methods, then seeds) runs in process i mod N, each process computing alone
            (``parallel.each_process_alone``); every process then receives all runs
            (``parallel.gather_json``) and returns the same summary. Each run records the
            process that made it (``extra["process"]``). Each process compiles its own
            programs within its runs' budgets, on its share of the machine's cores. The
            tuning runs are shared the same way (:func:`tune_shared`), and a process
            compiles the chosen rate (:func:`warm_up`) before its seed runs of a method.
        tune_budget: seconds per tuning run of the tasks with a learning-rate ``grid``
            (default: a third of ``budget``); 0 skips the tuning (the task's default rate).
            Over N processes the tuning runs (one per task, method and rate, numbered
            across tasks) go round robin, run j to process j mod N, each task's before its
            seeds; every process receives every final and chooses the same rates (the
            summary's ``tuning`` is the same in each).
    """
    if not budget > 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if int(seeds) < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    index, count = share
    began = time.perf_counter()
    summary: dict = {
        "budget_seconds": budget,
        "seeds": int(seeds),
        "quick": quick,
        "machine": {"cpus": jax.local_device_count(), "platform": platform.platform()},
        "processes": count,
        "jax": jax.__version__,
        "tasks": {},
    }
    built, mine, position = {}, [], 0  # position: the run's index in the plan
    tunings: dict = {}
    tuned = 0  # tuning runs planned so far (the round robin continues across tasks)
    seconds = budget / 3 if tune_budget is None else tune_budget
    for name in expand_tasks(tasks):
        if not any(methods is None or m in methods for m in task_methods(name)):
            continue
        task = built[name] = make_task(name, quick)
        selected = [m for m in task.methods if methods is None or m in methods]
        # the methods that take the grid's rate (a task's ``tuned``; default every method)
        rated = [m for m in selected if m in getattr(task, "tuned", selected)]
        tuning = bool(getattr(task, "grid", ())) and seconds > 0
        if tuning and count > 1:
            tunings[name] = tune_shared(task, rated, seconds, share, first=tuned)
            tuned += len(tuning_plan(task, rated))
        for method in selected:
            if tuning and count == 1 and method in rated:
                tunings.setdefault(name, {})[method] = tune(task, method, seconds)
            options = {}
            if method in tunings.get(name, {}):
                options["learning_rate"] = tunings[name][method]["chosen"]
                here = any((position + i) % count == index for i in range(int(seeds)))
                if count > 1 and here:
                    warm_up(task, method, options["learning_rate"])
            for seed in range(int(seeds)):
                position += 1
                if (position - 1) % count != index:
                    continue
                if progress is not None:
                    progress(f"{name} {method} seed {seed}")
                every = budget / getattr(task, "evaluations", 12)
                run = task.run(method, seed, budget, eval_every=every, **options)
                run.extra.update(options)
                run.extra["process"] = index
                mine.append((name, run))
    done = mine
    if count > 1:  # every process's runs, in plan order
        shares = gather_json(
            [[name, dataclasses.asdict(run)] for name, run in mine], default=_jsonable
        )
        done = [(name, Run(**fields)) for share_runs in shares for name, fields in share_runs]
    files: list[str] = []
    for name, task in built.items():
        order = {m: i for i, m in enumerate(task.methods)}
        runs = sorted(
            (run for task_name, run in done if task_name == name),
            key=lambda run: (order[run.method], run.seed),
        )
        summary["tasks"][name] = task_summary(
            task.describe(), list(task.metrics), runs, budget, getattr(task, "relative", ())
        )
        if name in tunings:
            summary["tasks"][name]["tuning"] = tunings[name]
        if out is not None:
            files += plot_task(summary["tasks"][name], name, Path(out))
    summary["seconds"] = time.perf_counter() - began
    result = ExperimentResult("trainability", summary, files)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / "trainability.json"
        path.write_text(json.dumps(summary, indent=1, default=_jsonable) + "\n")
        files.append(path.name)
    return result


def task_summary(description: dict, metrics: list, runs: list[Run], budget, relative=()) -> dict:
    """A task's JSON section: its description, the runs, and their summary, with each
    metric in ``relative`` also divided by its value at the run's start ("metric / start":
    seeds start from different models, and the ratio removes that offset)."""
    names = list(metrics)
    for metric in relative:
        for run in runs:
            first = run.metrics[0].get(metric) if run.metrics else None
            for entry in run.metrics:
                value = entry.get(metric)
                if first is None or value is None or first == 0:
                    entry[f"{metric} / start"] = float("inf")
                else:
                    entry[f"{metric} / start"] = value / first
        names.append(f"{metric} / start")
    table = summarise(runs, names, budget)
    for method, entry in table["methods"].items():
        flags = [r.extra["success"] for r in runs if r.method == method and "success" in r.extra]
        if flags:
            entry["successes"] = f"{sum(flags)}/{len(flags)}"
    return {
        "description": description,
        "metrics": names,
        "summary": table,
        "runs": [run.to_json() for run in runs],
    }


def plot_task(section: dict, name: str, out: Path) -> list[str]:
    """One PNG per metric of a task section; returns the file names."""
    files = []
    for metric in section["metrics"]:
        slug = metric.replace(" / ", "_over_")
        path = out / f"trainability_{name}_{slug}.png"
        plot_trainability(
            path, section["summary"], metric, f"{name}: {metric} against training time"
        )
        files.append(path.name)
    return files


def rebuild(summary: dict, relative: dict, out: Path | None = None) -> dict:
    """Recompute every task's summary (and plots) from the runs stored in ``summary``, with
    ``relative[task]`` metrics added as ratios to their start (for JSON written before)."""
    for name, section in summary["tasks"].items():
        base = [m for m in section["metrics"] if " / start" not in m]
        runs = [
            Run(
                r["method"],
                r["seed"],
                times=r["times"],
                metrics=[
                    {k: (float("inf") if v is None else v) for k, v in m.items()}
                    for m in r["metrics"]
                ],
                status=r["status"],
                iterations=r["iterations"],
                seconds=r["seconds"],
                extra=r["extra"],
            )
            for r in section["runs"]
        ]
        for run in runs:
            for entry in run.metrics:
                for key in [k for k in entry if " / start" in k]:
                    del entry[key]
        summary["tasks"][name] = task_summary(
            section["description"], base, runs, summary["budget_seconds"], relative.get(name, ())
        )
        if out is not None:
            plot_task(summary["tasks"][name], name, out)
    return summary


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


def _format(mean, stderr) -> str:
    if mean is None:
        return "inf"
    if stderr is None:
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {stderr:.2g}"


def markdown_table(summary: dict) -> str:
    """The final table (mean ± SE over seeds) as Markdown, one block per task."""
    blocks = []
    for task, content in summary["tasks"].items():
        metrics = content["metrics"]
        header = ["method", *metrics, "iterations (mean)", "failed"]
        methods = content["summary"]["methods"]
        if any("successes" in entry for entry in methods.values()):
            header.append("success (pre-registered)")
        lines = [f"**{task}**", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for method, entry in methods.items():
            cells = [method]
            cells += [
                _format(entry["final"][m]["mean"], entry["final"][m]["stderr"]) for m in metrics
            ]
            cells.append(f"{np.mean(entry['iterations']):.0f}")
            cells.append(str(len(entry["failed"])))
            if "successes" in entry:
                cells.append(entry["successes"])
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


__all__ = [
    "markdown_table",
    "rebuild",
    "task_summary",
    "TASKS",
    "expand_tasks",
    "make_task",
    "planned_runs",
    "run_trainability",
    "table_rows",
    "tune",
]
