"""``chaosgrad grad`` and ``chaosgrad compare``: a derivative with its standard error, by
one estimator or by several side by side.

Both take the shared options (:mod:`chaosgrad.cli.estimate_options`) and check them the
same way, in the same order, before computing (:func:`prepare`). ``compare --reference M``
also runs every other method ``--repeats`` times and measures those draws against M's
estimate (:func:`chaosgrad.diagnostics.gradient_quality`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import jax
import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from .._errors import check_at_least
from ..diagnostics import GradientQuality, gradient_draws, gradient_quality
from ..estimators import ESTIMATORS
from ..plot import plot_compare
from ..statistics import AbstractStatistic, Terminal, TimeAverage
from .errors import UserError, user_errors
from .estimate_options import EstimateOptions, with_estimate_options
from .gradients import (
    build_estimator,
    build_statistic,
    check_settings,
    estimator_class,
    resolve_observable,
    resolve_wrt,
    run_gradient,
)
from .options import auto_or_count, check_numbers
from .processes import Processes, run_as_processes, writer
from .registry import build_system
from .report import dumps, json_ready, jsonable, prepare_checkpoint, prepare_out, write_json
from .terminal import console, progress_bar

Method = Annotated[
    str,
    typer.Option("--method", help="an estimator: " + ", ".join(ESTIMATORS)),
]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A checked command line: the system, its statistic and what to differentiate."""

    model: Any
    params: dict[str, Any]
    expression: str
    statistic: AbstractStatistic
    wrt: Callable
    names: list[str]
    settings: dict[str, Any]
    seed: int

    def estimate(self, method: str) -> dict:
        """One estimate by ``method`` as a JSON-ready dict."""
        return run_gradient(
            self.model, self.statistic, method, self.settings, self.wrt, self.names, self.seed
        )

    def quality(self, method: str, reference: dict, repeats: int) -> GradientQuality:
        """``repeats`` estimates by ``method`` (keys fold_in(key(seed), i)) against the
        ``reference`` row's estimate and standard error (of the one parameter)."""
        name = self.names[0]
        estimator = build_estimator(method, self.statistic, self.settings)
        key = jax.random.key(self.seed)
        draws = gradient_draws(
            self.model, self.statistic, estimator, wrt=self.wrt, key=key, repeats=repeats
        )
        errors = np.asarray(reference["stderr"][name], dtype=float)
        try:
            return gradient_quality(
                draws[0],
                np.asarray(reference["grad"][name], dtype=float),
                reference_stderr=errors if np.all(np.isfinite(errors)) else None,
            )
        except ValueError as exc:
            raise UserError(f"{method} against --reference {reference['method']}: {exc}") from None


def check_methods(methods: list[str], given: str) -> None:
    """Refuse no method at all, one not in the registry, or one named twice (``given``: the
    ``--methods`` text); grad's one ``--method`` is a list of one."""
    if not methods:
        raise UserError("--methods needs at least one method")
    for method in methods:
        estimator_class(method)
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods {given}: name each method once")


def prepare(
    system: str,
    wrt: str,
    methods: list[str],
    given: str,
    options: EstimateOptions,
    out: Path | None,
    one_parameter: bool = False,
) -> Problem:
    """Every check of grad (one method) and compare (``one_parameter``), before computing:
    the numbers, the methods, the system, the observable, ``wrt``, the statistic, the
    settings, then ``out`` and ``--checkpoint`` (a bad path must not cost the result)."""
    settings = options.settings()
    settings["unstable_dim"] = auto_or_count(options.unstable_dim, "unstable_dim", "non-negative")
    check_numbers({**settings, "seed": options.seed})
    check_methods(methods, given)
    model, params = build_system(system, options.param)
    phi, expression = resolve_observable(model, options.observable)
    selector, names = resolve_wrt(model, wrt)
    if one_parameter and len(names) != 1:
        raise UserError("compare takes one --wrt parameter")
    statistic = build_statistic(model, phi, options.statistic, settings)
    check_settings(methods, statistic, settings)
    prepare_out(out)
    prepare_checkpoint(options.checkpoint)
    return Problem(model, params, expression, statistic, selector, names, settings, options.seed)


def statistic_label(statistic, expression: str) -> str:
    """``<z>``, ``E[z]_50`` (terminal at step 50) or ``<z>_100`` (a window of 100 steps)."""
    if isinstance(statistic, TimeAverage):
        return f"<{expression}>"
    if isinstance(statistic, Terminal):
        return f"E[{expression}]_{statistic.steps}"
    return f"<{expression}>_{statistic.horizon}"


def print_choices(report: dict | None) -> None:
    """What ``--method auto`` (or an "auto" setting) chose, and why, one line each."""
    if not report:
        return
    console.print(f"auto: ran {escape(report['estimator'])}")
    for reason in report["reasons"]:
        console.print(f"auto: {escape(reason)}")


def check_repeats(reference: str | None, repeats: int | None, checkpoint: Path | None) -> int:
    """The runs of each method for the quality columns: 0 without --reference (where
    --repeats is refused), else --repeats (default 8, at least 2); a --checkpoint holds
    one run, so it is refused with --reference."""
    if reference is None:
        if repeats is not None:
            raise UserError("--repeats applies with --reference only: the runs it compares")
        return 0
    if checkpoint is not None:
        raise UserError(
            "--checkpoint holds one run, and --reference runs each method --repeats times: "
            "drop one of them"
        )
    if repeats is None:
        return DEFAULT_REPEATS
    return check_at_least(repeats, "--repeats", 2, "the runs are compared by their spread")


def add_quality(problem: Problem, rows: list[dict], reference: str, repeats: int, advance):
    """Each row gains ``quality``: its method's draws against the ``reference`` row (None
    for the reference itself)."""
    target = next(row for row in rows if row["method"] == reference)
    for row in rows:
        if row is target:
            row["quality"] = None
            continue
        row["quality"] = problem.quality(row["method"], target, repeats).as_dict()
        if advance:
            advance(repeats)


QUALITY_COLUMNS = ("cosine ± SE", "rel. error ± SE", "sign agr.", "SNR", "Hill α")
DEFAULT_REPEATS = 8
SHOWN_COMPONENTS = 4
"""compare's table shows the first components of a vector parameter (the JSON has all)."""


def quality_cells(quality: dict | None) -> list[str]:
    """The quality columns of one row ("reference" for the reference's own row)."""
    if quality is None:
        return ["reference", "–", "–", "–", "–"]
    tail = quality["tail_index"]
    return [
        f"{quality['cosine']:+.3f} ± {quality['cosine_stderr']:.2g}",
        f"{quality['relative_error']:.3g} ± {quality['relative_error_stderr']:.2g}",
        f"{quality['sign_agreement']:.2f}",
        f"{quality['snr']:.3g}",
        "–" if tail is None else f"{tail:.2g}",
    ]


@with_estimate_options
def grad_command(
    system: Annotated[str, typer.Argument(help="built-in system")],
    wrt: Annotated[str, typer.Option(help="parameter names, comma-separated")],
    method: Method,
    options: EstimateOptions,
    out: Annotated[Path | None, typer.Option(help="write grad.json here")] = None,
    processes: Processes = 1,
):
    """Derivative of a statistic with respect to parameters, with its standard error."""
    run_as_processes(processes)
    out = writer(out)
    with user_errors():
        problem = prepare(system, wrt, [method], method, options, out)
        with progress_bar(1, f"{system}: {method}", not options.as_json):
            row = problem.estimate(method)
    names = problem.names
    row.update(
        system=system,
        observable=problem.expression,
        statistic=statistic_label(problem.statistic, problem.expression),
        params={k: jsonable(v) for k, v in problem.params.items()},
    )
    warnings = [row["info"]["warning"]] if row["info"].get("warning") else []
    if out is not None:
        with user_errors():
            write_json(out / "grad.json", json_ready(row, warnings))
    if options.as_json:
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


@with_estimate_options
def compare_command(
    system: Annotated[str, typer.Argument(help="built-in system")],
    wrt: Annotated[str, typer.Option(help="one parameter name")],
    methods: Annotated[str, typer.Option(help="comma-separated, e.g. backprop,fd,shadowing")],
    options: EstimateOptions,
    reference: Annotated[
        str | None,
        typer.Option(
            help="a method run once as the reference (added to --methods if absent): the "
            "others gain cosine, relative error, sign agreement, SNR and tail index"
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(help="with --reference: runs of each other method (default 8)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write compare.json and compare.png")] = None,
    processes: Processes = 1,
):
    """Several estimators side by side: estimate ± SE and seconds (and a bar chart).

    A setting goes to every method that has it, and is refused only if none does. With
    --reference, every other method also runs --repeats times (keys fold_in(key(seed), i)),
    and those draws are measured against the reference's estimate."""
    run_as_processes(processes)
    out = writer(out)
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    reference = None if reference is None else reference.strip()
    if reference is not None and reference not in chosen:
        chosen.append(reference)
    with user_errors():
        repeats = check_repeats(reference, repeats, options.checkpoint)
        problem = prepare(system, wrt, chosen, methods, options, out, one_parameter=True)
        runs = len(chosen) + repeats * (len(chosen) - 1)
        rows = []
        with progress_bar(runs, f"{system}: compare", not options.as_json) as advance:
            for method in chosen:
                rows.append(problem.estimate(method))
                if advance:
                    advance(1)
            if reference is not None:
                add_quality(problem, rows, reference, repeats, advance)
    target = next((row for row in rows if row["method"] == reference), None)
    wrt_name = problem.names[0]
    label = statistic_label(problem.statistic, problem.expression)
    warnings = [f"{r['method']}: {r['info']['warning']}" for r in rows if r["info"].get("warning")]
    payload = {
        "system": system,
        "observable": problem.expression,
        "statistic": label,
        "wrt": wrt_name,
        "params": {k: jsonable(v) for k, v in problem.params.items()},
        "results": rows,
    }
    if target is not None:
        payload.update(reference=reference, repeats=repeats)
    if out is not None:
        line = None if target is None else float(np.ravel(target["grad"][wrt_name])[0])
        with user_errors():
            write_json(out / "compare.json", json_ready(payload, warnings))
            plot_compare(
                out / "compare.png", rows, wrt_name, f"{system}: d{label}/d{wrt_name}", line
            )
    if options.as_json:
        print(dumps(json_ready(payload, warnings)))
        return
    table = Table(title=escape(f"{system}: d{label}/d{wrt_name}"))
    quality = QUALITY_COLUMNS if target is not None else ()
    size = int(np.size(rows[0]["grad"][wrt_name]))
    shown = min(size, SHOWN_COMPONENTS)
    index = ("component",) if size > 1 else ()
    for column in ("method", *index, "estimate", "± SE", *quality, "seconds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        grad, stderr = np.ravel(row["grad"][wrt_name]), np.ravel(row["stderr"][wrt_name])
        for i in range(shown):
            first = i == 0  # the method's name, quality and time once, on its first line
            cells = quality_cells(row.get("quality")) if quality and first else [""] * len(quality)
            table.add_row(
                row["method"] if first else "",
                *([str(i)] if index else []),
                f"{grad[i]:+.6g}",
                f"{stderr[i]:.3g}",
                *cells,
                f"{row['seconds']:.2f}" if first else "",
            )
    console.print(table)
    if size > shown:
        console.print(
            f"components 0-{shown - 1} of the {size} of {wrt_name} shown; --json and "
            "--out DIR (compare.json) hold them all"
        )
    if target is not None:
        console.print(
            f"quality: the mean of {repeats} more runs of each method against the one run "
            f"of {reference}, over the {size} components of {wrt_name}"
        )
    for row in rows:
        print_choices(row["info"].get("auto"))
    for warning in warnings:
        console.print(f"[yellow]{escape(warning)}[/]")
    for row in rows:
        if row.get("quality") and row["quality"]["note"]:
            console.print(f"[yellow]{escape(row['method'])}: {escape(row['quality']['note'])}[/]")
    if out is not None:
        console.print(f"wrote {out / 'compare.png'} and {out / 'compare.json'}")
