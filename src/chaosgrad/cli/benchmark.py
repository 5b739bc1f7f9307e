"""``chaosgrad benchmark trainability``: the remedies and the seed methods side by side."""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .report import write_html

benchmark_app = typer.Typer(help="Benchmarks that train (results as JSON + PNG + report.html).")
console = Console()
error_console = Console(stderr=True)


@contextlib.contextmanager
def _runs_bar(total: int):
    """A progress bar over the runs on a terminal, else a no-op."""
    if not sys.stderr.isatty():
        yield lambda description: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=error_console, transient=True) as progress:
        task = progress.add_task("trainability", total=total)
        started = {"n": 0}

        def advance(description: str) -> None:
            if started["n"]:
                progress.advance(task, 1)
            started["n"] += 1
            progress.update(task, description=description)

        yield advance


def _cell(value) -> str:
    mean, stderr = value
    if mean is None:
        return "inf/nan"
    if stderr is None or not math.isfinite(stderr):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {stderr:.2g}"


@benchmark_app.command("trainability")
def trainability(
    out: Annotated[Path, typer.Option(help="directory for JSON, PNGs and report.html")],
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            help="T1, T2, T3, A1, A2, B (= B5, B10, B20), Bw (= Bw5, Bw10, Bw20), C, D9, "
            "D32, control-short, control-xor, control-T2 (repeatable; default T1, T2, T3)",
        ),
    ] = None,
    budget: Annotated[float, typer.Option(help="seconds of training per run")] = 60.0,
    seeds: Annotated[int, typer.Option(help="runs per method (mean ± SE)")] = 3,
    method: Annotated[
        list[str] | None, typer.Option("--method", help="only these methods (repeatable)")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="shortened task sizes")] = False,
    tune_budget: Annotated[
        float | None,
        typer.Option(
            help="seconds per learning-rate tuning run of the tasks with a grid (A1, A2, B, C, "
            "D9, D32, control-short; default a third of --budget; 0: no tuning)"
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            help="split the runs over N local processes, each computing its runs alone (run "
            "i in process i mod N, each process on its own share of the cores); on several "
            "hosts set CHAOSGRAD_COORDINATOR, CHAOSGRAD_PROCESSES and CHAOSGRAD_PROCESS_ID "
            "instead"
        ),
    ] = 1,
):
    """Train every method of each task for the same wall-clock budget over several seeds."""
    import jax

    from .. import parallel
    from ..experiments.trainability import (
        expand_tasks,
        planned_runs,
        run_trainability,
        table_rows,
        task_methods,
    )
    from .errors import UserError, user_errors
    from .options import check_numbers
    from .processes import run_as_processes, writer
    from .report import prepare_out

    run_as_processes(processes)
    with user_errors(memory="add --quick (the shortened task sizes)"):
        if not budget > 0:
            raise UserError(f"--budget must be a positive number of seconds, got {budget}")
        if seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {seeds}")
        check_numbers({"budget": budget})  # and finite
        tasks = expand_tasks(task or ["T1", "T2", "T3"])
        known = list(dict.fromkeys(m for name in tasks for m in task_methods(name)))
        for name in method or []:
            if name not in known:
                raise UserError(
                    f"unknown --method {name!r} for {', '.join(tasks)}; choose from: "
                    f"{', '.join(known)}"
                )
        written = writer(out)
        if written is not None:
            prepare_out(written)
        index, count = jax.process_index(), jax.process_count()
        mine = -(-(planned_runs(tasks, seeds, method) - index) // count)
        with _runs_bar(mine) as advance, parallel.each_process_alone():
            result = run_trainability(
                tasks,
                budget=budget,
                seeds=seeds,
                methods=method,
                quick=quick,
                out=written,
                progress=advance,
                share=(index, count),
                tune_budget=tune_budget,
            )
    if written is None:
        return
    rows = table_rows(result.summary)
    table = Table(title=f"trainability: final metrics, mean ± SE over {seeds} seeds")
    metrics = sorted({key for row in rows for key in row if isinstance(row[key], tuple)})
    for column in ("task", "method", *metrics, "failed", "successes"):
        table.add_column(column)
    for row in rows:
        cells = [_cell(row[m]) if m in row else "" for m in metrics]
        table.add_row(
            row["task"], row["method"], *cells, str(row["failed"]), row.get("successes", "")
        )
    console.print(table)
    images = [name for name in result.files if name.endswith(".png")]
    text = (
        f"Every method trained for {budget:g} s per run, {seeds} seeds; curves are means "
        "with 1-SE bands. Full results: trainability.json."
    )
    write_html(out / "report.html", "chaosgrad trainability", [("Trainability", text, images)])
    console.print(
        f"wrote {out / 'trainability.json'}, {out / 'report.html'} and {len(images)} PNGs"
    )


@benchmark_app.command("scale")
def scale(
    out: Annotated[Path, typer.Option(help="directory for JSON, PNG and report.html")],
    quick: Annotated[bool, typer.Option("--quick", help="shortened sizes")] = False,
    repeats: Annotated[int, typer.Option(help="timed calls per gradient after the first")] = 3,
):
    """Task A3: A1's estimators at p = 131, 771 and 9987 weights, cost and gradient quality."""
    import json

    from ..experiments._common import _jsonable
    from ..experiments.trainability.a3_scale import WIDTHS, scale_sweep
    from ..plot import plot_scale
    from .errors import UserError, user_errors
    from .report import prepare_out

    with user_errors(memory="add --quick (the shortened sizes)"):
        if repeats < 1:
            raise UserError(f"--repeats must be >= 1, got {repeats}")
        prepare_out(out)
        widths = (4, 8) if quick else WIDTHS
        result = scale_sweep(widths, repeats=repeats, quick=quick, progress=error_console.print)
    (out / "scale.json").write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    plot_scale(out / "scale.png", result["rows"])
    table = Table(title="A3: seconds per gradient and its quality against p")
    for column in ("p", "method", "seconds", "descent ratio", "draw cosine"):
        table.add_column(column)
    for row in result["rows"]:
        ratio = row["ratio"]
        shown = "-" if ratio is None else f"{ratio:.3g} ± {row['ratio_stderr']:.2g}"
        cosine = "-" if row["draw_cosine"] is None else f"{row['draw_cosine']:.2f}"
        table.add_row(str(row["parameters"]), row["method"], f"{row['seconds']:.3g}", shown, cosine)
    console.print(table)
    text = (
        "Task A1's estimators at growing parameter counts: seconds per gradient (compiled, "
        "median) and the descent ratio and draw cosine at seed 0's start. Full results: "
        "scale.json."
    )
    write_html(out / "report.html", "chaosgrad A3 scale", [("Scale", text, ["scale.png"])])
    console.print(f"wrote {out / 'scale.json'}, {out / 'scale.png'} and {out / 'report.html'}")
