"""The ``chaosgrad`` command: systems, lyapunov, grad, compare, experiment, demo.

The command (``main``, the console-script entry point) turns on JAX's persistent
compilation cache in ``$CHAOSGRAD_CACHE_DIR`` (empty: off), else
``$XDG_CACHE_HOME/chaosgrad/jax`` or ``~/.cache/chaosgrad/jax``, so that a second run of
the same command reads its compiled programs instead of compiling them again;
``chaosgrad --no-cache ...`` turns it off. Importing chaosgrad (or calling ``app`` in-process)
leaves JAX's configuration alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import jax
import numpy as np
import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import lyapunov_spectrum, parallel
from .._errors import first_line
from ..estimators import ESTIMATORS
from ..plot import plot_spectrum
from .benchmark import benchmark_app
from .expressions import ExpressionError
from .learn import learn_command
from .options import auto_or_count, check_numbers, renorm_cadence
from .processes import in_worker, launch
from .registry import SYSTEMS, build_system, settable_parameters
from .report import dumps, json_ready, prepare_checkpoint, prepare_out, write_json

jax.config.update("jax_enable_x64", True)

console = Console()
error_console = Console(stderr=True, soft_wrap=True)


# Typer carries its own copy of click: its usage errors derive from this class
ClickException: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


UsageError: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def refuse_repeated_options(command, parent, name: str, args: list[str]) -> None:
    """Refuse an option of one value given twice (``--steps 10 --steps 20``), where click
    would keep the last one silently: in ``command`` (called ``name``, under the context
    ``parent``) and, for a group, in the subcommand its arguments name. Options that
    repeat on purpose (``-p``, a repeatable ``--task``) and flags are left alone. Arguments
    the parser cannot read are left to the command's own parse, which reports them."""
    context = command.context_class(command, info_name=name, parent=parent, resilient_parsing=True)
    try:
        _, rest, order = command.make_parser(context).parse_args(args=list(args))
    except ClickException:
        return
    seen = set()
    for param in order:
        if not isinstance(param, typer.core.TyperOption):
            continue
        if param.multiple or param.count or param.is_flag:
            continue
        if param.name in seen:
            option = max(param.opts, key=len)
            raise UsageError(f"{option} is given twice: give it once", ctx=context)
        seen.add(param.name)
    if isinstance(command, typer.core.TyperGroup) and rest:
        subcommand = command.get_command(context, rest[0])
        if subcommand is not None:
            refuse_repeated_options(subcommand, context, rest[0], rest[1:])


class OneLineErrors(typer.core.TyperGroup):
    """The command group: usage errors (an unknown option, ``--samples abc``, a missing
    ``--wrt``, a repeated ``--steps``) in one line with exit code 2, like every other bad
    input."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and name is not None:
            refuse_repeated_options(command, ctx, name, rest)
        return name, command, rest

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # the help is already printed
                context = getattr(exc, "ctx", None)
                where = f" (see {context.command_path} --help)" if context is not None else ""
                message = " ".join(str(exc.format_message()).split())
                error_console.print(
                    f"[bold red]error:[/] {escape(message + where)}", highlight=False
                )
            code = exc.exit_code
        except typer.Abort:
            error_console.print("aborted", highlight=False)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Non-exploding gradients and Lyapunov analysis for chaotic systems.",
)


_ENTRY_POINT = {"active": False}  # set by main(): the cache is the command's, not a library's


def cache_directory() -> Path | None:
    """Where the command keeps compiled programs; None when ``CHAOSGRAD_CACHE_DIR=""``."""
    chosen = os.environ.get("CHAOSGRAD_CACHE_DIR")
    if chosen is not None:
        return Path(chosen).expanduser() if chosen.strip() else None
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "chaosgrad" / "jax"


def enable_compilation_cache(directory: Path | None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` (every program, however
    small or quick to compile). Returns the folder, or None when off or not writable."""
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


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


def join_processes() -> None:
    """A process of a multi-process run (``--processes N`` or the environment variables of
    ``chaosgrad.parallel``): join the others; all but process 0 compute silently.

    The collectives library prints to the C-level stdout; that goes to stderr (process 0)
    or nowhere (the others), so that ``--json`` still prints one JSON object.
    """
    main = os.environ.get(parallel.PROCESS_ID, "").strip() in ("", "0")  # before joining
    sys.stdout.flush()
    python_stdout = os.dup(sys.stdout.fileno())
    target = os.open(os.devnull, os.O_WRONLY) if not main else os.dup(sys.stderr.fileno())
    os.dup2(target, sys.stdout.fileno())
    os.close(target)
    if main:
        sys.stdout = os.fdopen(python_stdout, "w", buffering=1)
    else:
        os.close(python_stdout)
        console.quiet = True
    with user_errors():
        parallel.initialize()


Processes = Annotated[
    int,
    typer.Option(
        help="split the samples or orbits over N local processes (see chaosgrad.parallel; "
        "on several hosts set CHAOSGRAD_COORDINATOR, CHAOSGRAD_PROCESSES and "
        "CHAOSGRAD_PROCESS_ID instead)"
    ),
]


def run_as_processes(processes: int) -> None:
    """At the top of a command: with ``--processes N`` > 1 (outside a worker) run the
    command as N processes and exit with their exit code. Process 0 alone writes --out."""
    with user_errors():
        check_numbers({"processes": processes})
    if processes > 1 and not in_worker():
        raise typer.Exit(launch(processes))


def writer(out: Path | None) -> Path | None:
    """``--out`` for process 0; None for the others (they hold the same result)."""
    return out if parallel.is_main_process() else None


class UserError(Exception):
    """A mistake in the command line: one line on stderr, exit code 2."""


def fail(message: str, code: int = 2):
    """One line on stderr (the first line of ``message``) and the exit code."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    error_console.print(
        f"[bold red]error:[/] {escape(lines[0] if lines else message)}", highlight=False
    )
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors(memory: str = "reduce --samples or --steps"):
    """Turn the library's input errors into one-line messages with exit code 2.

    NaN or inf (a FloatingPointError: a statistic or trajectory that is not finite) comes
    from the parameters or the observable given, so it is a bad input too (exit code 2).
    Failing to write a result (OSError) and running out of memory are exit code 1; out of
    memory, the message says ``memory``: what to reduce, in the command's own options.
    """
    try:
        yield
    except (
        ValueError,
        TypeError,
        OverflowError,
        UserError,
        ExpressionError,
        FloatingPointError,
    ) as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. a disk that filled up while writing the results
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or first_line(exc)}", code=1)
    except jax.errors.JaxRuntimeError as exc:
        if "RESOURCE_EXHAUSTED" in str(exc):
            fail(f"out of memory: {memory}", code=1)
        raise


PROGRESS_EVERY = 10.0
"""Seconds between progress lines when stderr is not a terminal (a batch job's log)."""


def progress_lines(total: int, description: str, every: float = PROGRESS_EVERY):
    """A progress callback that writes a line on stderr at most every ``every`` seconds:
    "chaosgrad: DESCRIPTION 1200/5000 (24%), 31 s elapsed, about 98 s left"."""
    began = time.perf_counter()
    state = {"done": 0, "last": began}

    def advance(n: int) -> None:
        state["done"] += n
        now = time.perf_counter()
        if now - state["last"] < every and state["done"] < total:
            return
        state["last"] = now
        elapsed = now - began
        fraction = state["done"] / max(total, 1)
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        print(
            f"chaosgrad: {description} {state['done']}/{total} ({100 * fraction:.0f}%), "
            f"{elapsed:.0f} s elapsed, about {left:.0f} s left",
            file=sys.stderr,
            flush=True,
        )

    return advance


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool):
    """A Rich progress bar on a terminal; rate-limited lines on stderr away from one (so a
    batch job does not look hung); nothing when disabled (``--json``)."""
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():
        yield progress_lines(total, description)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=error_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def print_choices(report: dict | None) -> None:
    """What ``--method auto`` (or an "auto" setting) chose, and why, one line each."""
    if not report:
        return
    console.print(f"auto: ran {escape(report['estimator'])}")
    for reason in report["reasons"]:
        console.print(f"auto: {escape(reason)}")


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


Method = Annotated[
    str,
    typer.Option("--method", help="an estimator: " + ", ".join(ESTIMATORS)),
]
Steps = Annotated[
    int | None,
    typer.Option(
        help="time-average: each sample's orbit (default 10000); terminal/window: the "
        "horizon (default: the system's)"
    ),
]
Samples = Annotated[
    int | None,
    typer.Option(help="samples (default 10; kernel, path-kernel at a finite horizon: 10000)"),
]
BurnIn = Annotated[
    int | None,
    typer.Option(
        "--burn-in",
        help="transient steps before a time-average's orbit (default 1000) or a window",
    ),
]
Eps = Annotated[float | None, typer.Option(help="finite-difference step (default 0.01)")]
Window = Annotated[
    int | None,
    typer.Option(help="decorrelation window W of far, kernel, path-kernel (default 10)"),
]
Truncation = Annotated[
    int | None, typer.Option(help="truncated: backprop chunk length (default 10)")
]
UnstableDim = Annotated[
    str | None,
    typer.Option(
        "--unstable-dim",
        help='u for shadowing, far: a whole number, or "auto" (the default: counted from a '
        "pilot run's Lyapunov exponents, and printed)",
    ),
]
SegmentSteps = Annotated[
    int | None, typer.Option("--segment-steps", help="steps per segment (default 20)")
]
Segments = Annotated[int | None, typer.Option(help="number of segments (default 200)")]
Blocks = Annotated[int | None, typer.Option(help="batch-means blocks (default 20)")]
Batch = Annotated[int | None, typer.Option(help="samples under vmap at once (default 4096)")]
Alpha = Annotated[float | None, typer.Option(help="path-kernel damping rate (default 1)")]
Orbits = Annotated[
    int | None,
    typer.Option(help="shadowing, far: independent orbits averaged (error bar: their spread)"),
]
Checkpoint = Annotated[
    Path | None,
    typer.Option(
        help="shadowing: save the run in this directory as it goes; the same command "
        "after a kill continues it"
    ),
]
Statistic = Annotated[
    str | None,
    typer.Option(
        help="time-average, window or terminal (default: terminal for a network, "
        "time-average otherwise)"
    ),
]
Observable = Annotated[
    str | None,
    typer.Option(
        help="e.g. z, state[0]**3, mean(state**2): 'state' is the state vector (also 'x' "
        "where no component is named x)"
    ),
]
Param = Annotated[list[str], typer.Option("-p", "--param", help="name=value")]
Seed = Annotated[int, typer.Option(help="PRNG seed")]
Json = Annotated[bool, typer.Option("--json", help="print one JSON object")]


@app.command()
def grad(
    system: Annotated[str, typer.Argument(help="built-in system")],
    wrt: Annotated[str, typer.Option(help="parameter names, comma-separated")],
    method: Method,
    observable: Observable = None,
    param: Param = [],
    statistic: Statistic = None,
    steps: Steps = None,
    samples: Samples = None,
    burn_in: BurnIn = None,
    eps: Eps = None,
    window: Window = None,
    truncation: Truncation = None,
    unstable_dim: UnstableDim = None,
    segment_steps: SegmentSteps = None,
    segments: Segments = None,
    blocks: Blocks = None,
    batch: Batch = None,
    alpha: Alpha = None,
    orbits: Orbits = None,
    checkpoint: Checkpoint = None,
    seed: Seed = 0,
    as_json: Json = False,
    out: Annotated[Path | None, typer.Option(help="write grad.json here")] = None,
    processes: Processes = 1,
):
    """Derivative of a statistic with respect to parameters, with its standard error."""
    run_as_processes(processes)
    out = writer(out)
    from .gradients import (
        SETTINGS,
        build_statistic,
        check_settings,
        estimator_class,
        resolve_observable,
        resolve_wrt,
        run_gradient,
    )

    arguments = locals()
    settings = {name: arguments[name] for name in SETTINGS}  # the options named like fields
    with user_errors():
        settings["unstable_dim"] = auto_or_count(unstable_dim, "unstable_dim", "non-negative")
        check_numbers({**settings, "seed": seed})
        estimator_class(method)
        model, params = build_system(system, param)
        phi, expression = resolve_observable(model, observable)
        selector, names = resolve_wrt(model, wrt)
        chosen = build_statistic(model, phi, statistic, settings)
        check_settings([method], chosen, settings)
        prepare_out(out)  # before computing: a bad path must not cost the result
        prepare_checkpoint(checkpoint)
        with progress_bar(1, f"{system}: {method}", not as_json):
            row = run_gradient(model, chosen, method, settings, selector, names, seed)
    row.update(
        system=system,
        observable=expression,
        statistic=_statistic_label(chosen, expression),
        params={k: jsonable(v) for k, v in params.items()},
    )
    warnings = [row["info"]["warning"]] if row["info"].get("warning") else []
    if out is not None:
        with user_errors():
            write_json(out / "grad.json", json_ready(row, warnings))
    if as_json:
        brief = {k: row[k] for k in ("value", "grad", "stderr", "method", "seconds")}
        if "auto" in row["info"]:
            brief["auto"] = row["info"]["auto"]
        print(dumps(json_ready(brief, warnings)))
        return
    table = Table(title=escape(f"{system}: d{row['statistic']}/d({wrt}) by {method}"))
    for column in ("parameter", "estimate", "± SE"):
        table.add_column(column, justify="left" if column == "parameter" else "right")
    for name in names:
        for g, se in zip(np.ravel(row["grad"][name]), np.ravel(row["stderr"][name]), strict=True):
            table.add_row(name, f"{g:+.6g}", f"{se:.3g}")
    console.print(table)
    console.print(f"statistic {row['value']:.6g}; {row['seconds']:.2f} s")
    print_choices(row["info"].get("auto"))
    if row["info"].get("warning"):
        console.print(f"[yellow]{escape(row['info']['warning'])}[/]")
    if out is not None:
        console.print(f"wrote {out / 'grad.json'}")


def _statistic_label(statistic, expression: str) -> str:
    """``<z>``, ``E[z]_50`` (terminal at step 50) or ``<z>_100`` (a window of 100 steps)."""
    from ..statistics import Terminal, TimeAverage

    if isinstance(statistic, TimeAverage):
        return f"<{expression}>"
    if isinstance(statistic, Terminal):
        return f"E[{expression}]_{statistic.steps}"
    return f"<{expression}>_{statistic.horizon}"


@app.command()
def compare(
    system: Annotated[str, typer.Argument(help="built-in system")],
    wrt: Annotated[str, typer.Option(help="one parameter name")],
    methods: Annotated[str, typer.Option(help="comma-separated, e.g. backprop,fd,shadowing")],
    observable: Observable = None,
    param: Param = [],
    statistic: Statistic = None,
    steps: Steps = None,
    samples: Samples = None,
    burn_in: BurnIn = None,
    eps: Eps = None,
    window: Window = None,
    truncation: Truncation = None,
    unstable_dim: UnstableDim = None,
    segment_steps: SegmentSteps = None,
    segments: Segments = None,
    blocks: Blocks = None,
    batch: Batch = None,
    alpha: Alpha = None,
    orbits: Orbits = None,
    checkpoint: Checkpoint = None,
    seed: Seed = 0,
    as_json: Json = False,
    out: Annotated[Path | None, typer.Option(help="write compare.json and compare.png")] = None,
    processes: Processes = 1,
):
    """Several estimators side by side: estimate ± SE and seconds (and a bar chart).

    A setting goes to every method that has it, and is refused only if none does."""
    run_as_processes(processes)
    out = writer(out)
    from ..plot import plot_compare
    from .gradients import (
        SETTINGS,
        build_statistic,
        check_settings,
        estimator_class,
        resolve_observable,
        resolve_wrt,
        run_gradient,
    )

    arguments = locals()
    settings = {name: arguments[name] for name in SETTINGS}  # the options named like fields
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    with user_errors():
        settings["unstable_dim"] = auto_or_count(unstable_dim, "unstable_dim", "non-negative")
        check_numbers({**settings, "seed": seed})
        if not chosen:
            raise UserError("--methods needs at least one method")
        for method in chosen:
            estimator_class(method)
        if len(set(chosen)) != len(chosen):
            raise UserError(f"--methods {methods}: name each method once")
        model, params = build_system(system, param)
        phi, expression = resolve_observable(model, observable)
        selector, names = resolve_wrt(model, wrt)
        if len(names) != 1:
            raise UserError("compare takes one --wrt parameter")
        statistic_ = build_statistic(model, phi, statistic, settings)
        check_settings(chosen, statistic_, settings)
        prepare_out(out)  # before computing: a bad path must not cost the result
        prepare_checkpoint(checkpoint)
        rows = []
        with progress_bar(len(chosen), f"{system}: compare", not as_json) as advance:
            for method in chosen:
                rows.append(
                    run_gradient(model, statistic_, method, settings, selector, names, seed)
                )
                if advance:
                    advance(1)
    label = _statistic_label(statistic_, expression)
    warnings = [f"{r['method']}: {r['info']['warning']}" for r in rows if r["info"].get("warning")]
    payload = {
        "system": system,
        "observable": expression,
        "statistic": label,
        "wrt": names[0],
        "params": {k: jsonable(v) for k, v in params.items()},
        "results": rows,
    }
    if out is not None:
        with user_errors():
            write_json(out / "compare.json", json_ready(payload, warnings))
            plot_compare(out / "compare.png", rows, names[0], f"{system}: d{label}/d{names[0]}")
    if as_json:
        print(dumps(json_ready(payload, warnings)))
        return
    table = Table(title=escape(f"{system}: d{label}/d{names[0]}"))
    for column in ("method", "estimate", "± SE", "seconds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        g, se = np.ravel(row["grad"][names[0]])[0], np.ravel(row["stderr"][names[0]])[0]
        table.add_row(row["method"], f"{g:+.6g}", f"{se:.3g}", f"{row['seconds']:.2f}")
    console.print(table)
    for row in rows:
        print_choices(row["info"].get("auto"))
    for warning in warnings:
        console.print(f"[yellow]{escape(warning)}[/]")
    if out is not None:
        console.print(f"wrote {out / 'compare.png'} and {out / 'compare.json'}")


@app.command()
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


@app.command()
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


app.add_typer(benchmark_app, name="benchmark")
app.command("learn")(learn_command)


def main():
    """The ``chaosgrad`` console script: the command with its compilation cache."""
    _ENTRY_POINT["active"] = True
    app()
