"""The ``chaosgrad`` command: systems, lyapunov, grad, compare, experiment, demo, benchmark,
learn.

The command (``main``, the console-script entry point) turns on JAX's persistent
compilation cache (:mod:`chaosgrad.cli.cache`), so that a second run of the same command
reads its compiled programs instead of compiling them again; ``chaosgrad --no-cache ...``
turns it off. Importing chaosgrad (or calling ``app`` in-process) leaves JAX's
configuration alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import jax
import typer
from rich.table import Table

from .benchmark import benchmark_app
from .cache import cache_directory, enable_compilation_cache
from .errors import OneLineErrors, UserError, user_errors
from .estimate import compare_command, grad_command
from .learn import learn_command
from .lyapunov import lyapunov_command
from .options import check_numbers
from .processes import in_worker, join_processes
from .registry import SYSTEMS, settable_parameters
from .report import prepare_out
from .terminal import console, progress_bar

jax.config.update("jax_enable_x64", True)

app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Non-exploding gradients and Lyapunov analysis for chaotic systems.",
)


_ENTRY_POINT = {"active": False}  # set by main(): the cache is the command's, not a library's


@app.callback()
def root(
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="do not keep compiled programs between runs (the cache folder is "
            "$CHAOSGRAD_CACHE_DIR, else ~/.cache/chaosgrad/jax; CHAOSGRAD_CACHE_DIR='' "
            "also turns it off)",
        ),
    ] = False,
):
    """Non-exploding gradients and Lyapunov analysis for chaotic systems."""
    if _ENTRY_POINT["active"] and not no_cache:
        enable_compilation_cache(cache_directory())
    if in_worker():
        join_processes()


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


def experiment(
    name: Annotated[str, typer.Argument(help="tune-lorenz, noisy-network or explosion")],
    out: Annotated[Path, typer.Option(help="directory for JSON and PNG")] = Path(
        "chaosgrad-experiments"
    ),
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0,
    iterations: Annotated[int | None, typer.Option(help="training iterations")] = None,
):
    """Run one comparison experiment (fixed keys; JSON + PNG in --out)."""
    from ..experiments import EXPERIMENTS

    with user_errors(memory="the experiments' sizes are fixed: run it with more free memory"):
        if name not in EXPERIMENTS:
            raise UserError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
        check_numbers({"iterations": iterations, "seed": seed})
        prepare_out(out)
        options = {"seed": seed, "out": out}
        if iterations is not None:
            if name == "explosion":
                raise UserError("the explosion experiment does not train: no --iterations")
            options["iterations"] = iterations
        runs = {"tune-lorenz": 5, "noisy-network": 8, "explosion": 8}[name]
        with progress_bar(runs, f"experiment {name}", True) as advance:
            result = EXPERIMENTS[name](**options, progress=advance)
    console.print_json(data=_brief(result.summary))
    console.print(f"wrote {', '.join(str(out / f) for f in result.files)}")


def _brief(summary):
    """The summary without per-iteration histories (those are in the JSON file)."""
    if isinstance(summary, dict):
        return {
            k: _brief(v)
            for k, v in summary.items()
            if k not in ("loss", "statistic", "parameters", "grad_norm")
        }
    return summary


def demo(
    out: Annotated[Path, typer.Option(help="report directory")] = Path("chaosgrad-report"),
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="small sizes everywhere: the same figures and report in about 90 s"
        ),
    ] = False,
):
    """The flagship comparison: instability, explosion, estimates, training."""
    from .demo import FULL, QUICK, run_demo

    with user_errors(memory="add --quick (small sizes everywhere)"):
        check_numbers({"seed": seed})
        prepare_out(out)
        run_demo(out, seed, console, QUICK if quick else FULL)


app.command("systems")(systems)
app.command("lyapunov")(lyapunov_command)
app.command("grad")(grad_command)
app.command("compare")(compare_command)
app.command("experiment")(experiment)
app.command("demo")(demo)
app.add_typer(benchmark_app, name="benchmark")
app.command("learn")(learn_command)


def main():
    """The ``chaosgrad`` console script: the command with its compilation cache."""
    _ENTRY_POINT["active"] = True
    app()
