"""``chaosgrad lyapunov``: a system's Lyapunov spectrum, its standard errors and the
Kaplan-Yorke dimension."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import jax
import typer
from rich.markup import escape
from rich.table import Table

from .. import lyapunov_spectrum
from ..plot import plot_spectrum
from .errors import user_errors
from .options import check_numbers, renorm_cadence
from .processes import Processes, run_as_processes, writer
from .registry import build_system
from .report import dumps, json_ready, jsonable, prepare_checkpoint, prepare_out, write_json
from .terminal import console, progress_bar


def lyapunov_command(
    system: Annotated[str, typer.Argument(help="built-in system, e.g. lorenz63")],
    param: Annotated[list[str], typer.Option("-p", "--param", help="name=value")] = [],
    k: Annotated[int | None, typer.Option("--k", help="number of exponents (default: all)")] = None,
    steps: Annotated[
        int | None, typer.Option(help="steps averaged (default 100000; a network: its depth)")
    ] = None,
    burn_in: Annotated[
        int | None,
        typer.Option("--burn-in", help="transient steps (default 10000; a network: 0)"),
    ] = None,
    renorm_every: Annotated[
        str,
        typer.Option(
            "--renorm-every",
            help='steps between QR renormalisations, or "auto" (chosen from the burn-in)',
        ),
    ] = "auto",
    orbits: Annotated[
        int,
        typer.Option(help="independent orbits averaged (standard error: their spread)"),
    ] = 1,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="save the run in this directory after every block; the same command after "
            "a kill continues it"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out: Annotated[
        Path | None, typer.Option(help="write spectrum.json and spectrum.png here")
    ] = None,
    processes: Processes = 1,
):
    """Lyapunov spectrum with standard errors and the Kaplan-Yorke dimension."""
    run_as_processes(processes)
    out = writer(out)
    with user_errors(memory="reduce --k (the exponents computed) or --orbits"):
        every = renorm_cadence(renorm_every)
        check_numbers(
            {
                "k": k,
                "steps": steps,
                "burn_in": burn_in,
                "renorm_every": None if every == "auto" else every,
                "orbits": orbits,
                "seed": seed,
            }
        )
        model, params = build_system(system, param)
        prepare_out(out)  # before computing: a bad path must not cost the result
        prepare_checkpoint(checkpoint)
        horizon = model.horizon
        steps = (horizon if horizon else 100_000) if steps is None else steps
        burn_in = (0 if horizon else 10_000) if burn_in is None else burn_in
        total = burn_in + steps
        with progress_bar(total, f"{system}: Lyapunov", not as_json) as advance:
            result = lyapunov_spectrum(
                model,
                k,
                steps=steps,
                burn_in=burn_in,
                renorm_every=every,
                key=jax.random.key(seed),
                progress=advance,
                orbits=orbits,
                checkpoint=checkpoint,
            )
    unit = "per unit time" if result.time_step else "per step"
    payload = json_ready(
        {
            "system": system,
            "params": {k_: jsonable(v) for k_, v in params.items()},
            "exponents": jsonable(result.exponents),
            "stderr": jsonable(result.stderr),
            "kaplan_yorke_dimension": result.kaplan_yorke_dimension,
            "steps": result.steps,
            "renorm_every": result.renorm_every,
            "orbits": result.orbits,
            "seconds": result.seconds,
            "unit": unit,
            "warning": result.warning,
        }
    )
    if out is not None:
        with user_errors():
            write_json(out / "spectrum.json", payload)
            plot_spectrum(
                out / "spectrum.png",
                result.exponents,
                result.stderr,
                f"{system}: Lyapunov spectrum",
                unit,
            )
    if as_json:
        print(dumps(payload))
        return
    table = Table(title=f"{system} Lyapunov exponents ({unit}, ± standard error)")
    table.add_column("i", justify="right")
    table.add_column("λ_i", justify="right")
    table.add_column("± SE", justify="right")
    for i, (lam, se) in enumerate(zip(result.exponents, result.stderr, strict=True), start=1):
        table.add_row(str(i), f"{lam:+.5f}", f"{se:.5f}")
    console.print(table)
    console.print(
        f"Kaplan-Yorke dimension {result.kaplan_yorke_dimension:.4f}; "
        f"{result.steps} steps in {result.seconds:.2f} s, a QR every {result.renorm_every}"
    )
    if result.warning:
        console.print(f"[yellow]{escape(result.warning)}[/]")
    if out is not None:
        console.print(f"wrote {out / 'spectrum.png'} and {out / 'spectrum.json'}")
