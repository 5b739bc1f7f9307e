"""The ``chaosgrad`` command: systems, lyapunov, demo."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import jax
import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import lyapunov_spectrum
from .registry import SYSTEMS, build_system, settable_parameters
from .report import plot_spectrum, write_json

jax.config.update("jax_enable_x64", True)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Non-exploding gradients and Lyapunov analysis for chaotic systems.")
console = Console()
error_console = Console(stderr=True, soft_wrap=True)


class UserError(Exception):
    """A mistake in the command line: one line on stderr, exit code 2."""


def fail(message: str, code: int = 2):
    error_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors():
    """Turn the library's input errors into one-line messages with exit code 2."""
    try:
        yield
    except (ValueError, TypeError, UserError) as exc:
        fail(str(exc))
    except FloatingPointError as exc:
        fail(str(exc), code=1)


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool):
    """A Rich progress bar on a terminal; a no-op callback otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeRemainingColumn())
    with Progress(*columns, console=error_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def jsonable(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


@app.command()
def systems():
    """List the built-in systems and their parameters."""
    table = Table(title="built-in systems (set parameters with -p name=value)")
    table.add_column("name")
    table.add_column("parameters (defaults)")
    table.add_column("what it is")
    for name, cls in SYSTEMS.items():
        params = ", ".join(f"{k}={v!r}" for k, v in settable_parameters(cls).items())
        doc = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        table.add_row(name, params, doc)
    console.print(table)


@app.command()
def lyapunov(
    system: Annotated[str, typer.Argument(help="built-in system, e.g. lorenz63")],
    param: Annotated[list[str], typer.Option("-p", "--param", help="name=value")] = [],  # noqa: B006
    k: Annotated[Optional[int], typer.Option("--k", help="number of exponents (default: all)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="steps averaged (default 100000; a network: its depth)")] = None,
    burn_in: Annotated[Optional[int], typer.Option("--burn-in", help="transient steps (default 10000; a network: 0)")] = None,
    renorm_every: Annotated[int, typer.Option("--renorm-every")] = 1,
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out: Annotated[Optional[Path], typer.Option(help="write spectrum.json and spectrum.png here")] = None,
):
    """Lyapunov spectrum with standard errors and the Kaplan-Yorke dimension."""
    with user_errors():
        model, params = build_system(system, param)
        horizon = model.horizon
        steps = (horizon if horizon else 100_000) if steps is None else steps
        burn_in = (0 if horizon else 10_000) if burn_in is None else burn_in
        total = burn_in + steps
        with progress_bar(total, f"{system}: Lyapunov", not as_json) as advance:
            result = lyapunov_spectrum(model, k, steps=steps, burn_in=burn_in,
                                       renorm_every=renorm_every, key=jax.random.key(seed),
                                       progress=advance)
    unit = "per unit time" if result.time_step else "per step"
    payload = {"system": system, "params": {k_: jsonable(v) for k_, v in params.items()},
               "exponents": jsonable(result.exponents), "stderr": jsonable(result.stderr),
               "kaplan_yorke_dimension": result.kaplan_yorke_dimension,
               "steps": result.steps, "seconds": result.seconds, "unit": unit}
    if out is not None:
        write_json(out / "spectrum.json", payload)
        plot_spectrum(out / "spectrum.png", result.exponents, result.stderr,
                      f"{system}: Lyapunov spectrum", unit)
    if as_json:
        print(json.dumps(payload))
        return
    table = Table(title=f"{system} Lyapunov exponents ({unit}, ± standard error)")
    table.add_column("i", justify="right")
    table.add_column("λ_i", justify="right")
    table.add_column("± SE", justify="right")
    for i, (lam, se) in enumerate(zip(result.exponents, result.stderr), start=1):
        table.add_row(str(i), f"{lam:+.5f}", f"{se:.5f}")
    console.print(table)
    console.print(f"Kaplan-Yorke dimension {result.kaplan_yorke_dimension:.4f}; "
                  f"{result.steps} steps in {result.seconds:.2f} s")
    if out is not None:
        console.print(f"wrote {out / 'spectrum.png'} and {out / 'spectrum.json'}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="report directory")] = Path("chaosgrad-report"),
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0,
):
    """Measure the instability: Lorenz-63, a chaotic tanh RNN and deep tanh networks."""
    from .demo import run_demo

    with user_errors():
        run_demo(out, seed, console)


def main():
    app()
