"""The options ``grad`` and ``compare`` share, defined once: the fields of
:class:`EstimateOptions`.

A new estimator setting is one field here, named like the estimators' constructor field
(``segment_steps`` is ``--segment-steps``): both commands list it, with its help and
default, and pass it to every estimator that has the field. A command takes the shared
options through :func:`with_estimate_options`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


@dataclasses.dataclass(frozen=True)
class EstimateOptions:
    """The shared options' values, in the order ``--help`` lists them (None: not given)."""

    observable: Annotated[
        str | None,
        typer.Option(
            help="e.g. z, state[0]**3, mean(state**2): 'state' is the state vector (also 'x' "
            "where no component is named x)"
        ),
    ] = None
    param: Annotated[list[str], typer.Option("-p", "--param", help="name=value")] = (
        dataclasses.field(default_factory=list)
    )
    statistic: Annotated[
        str | None,
        typer.Option(
            help="time-average, window or terminal (default: terminal for a network, "
            "time-average otherwise)"
        ),
    ] = None
    steps: Annotated[
        int | None,
        typer.Option(
            help="time-average: each sample's orbit (default 10000); terminal/window: the "
            "horizon (default: the system's)"
        ),
    ] = None
    samples: Annotated[
        int | None,
        typer.Option(help="samples (default 10; kernel, path-kernel at a finite horizon: 10000)"),
    ] = None
    burn_in: Annotated[
        int | None,
        typer.Option(
            "--burn-in",
            help="transient steps before a time-average's orbit (default 1000) or a window",
        ),
    ] = None
    eps: Annotated[float | None, typer.Option(help="finite-difference step (default 0.01)")] = None
    window: Annotated[
        int | None,
        typer.Option(help="decorrelation window W of far, kernel, path-kernel (default 10)"),
    ] = None
    truncation: Annotated[
        int | None, typer.Option(help="truncated: backprop chunk length (default 10)")
    ] = None
    unstable_dim: Annotated[
        str | None,
        typer.Option(
            "--unstable-dim",
            help='u for shadowing, far: a whole number, or "auto" (the default: counted from '
            "a pilot run's Lyapunov exponents, and printed)",
        ),
    ] = None
    segment_steps: Annotated[
        int | None, typer.Option("--segment-steps", help="steps per segment (default 20)")
    ] = None
    segments: Annotated[int | None, typer.Option(help="number of segments (default 200)")] = None
    blocks: Annotated[int | None, typer.Option(help="batch-means blocks (default 20)")] = None
    batch: Annotated[int | None, typer.Option(help="samples under vmap at once (default 4096)")] = (
        None
    )
    alpha: Annotated[float | None, typer.Option(help="path-kernel damping rate (default 1)")] = None
    orbits: Annotated[
        int | None,
        typer.Option(help="shadowing, far: independent orbits averaged (error bar: their spread)"),
    ] = None
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="shadowing, far: save the run in this directory as it goes; the same command "
            "after a kill continues it"
        ),
    ] = None
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False

    def settings(self) -> dict[str, Any]:
        """The estimator settings given (None: not given), by name."""
        return {name: getattr(self, name) for name in SETTINGS}


NOT_SETTINGS = ("observable", "param", "statistic", "seed", "as_json")
"""The shared options that are not an estimator's setting."""

SETTINGS = tuple(
    field.name for field in dataclasses.fields(EstimateOptions) if field.name not in NOT_SETTINGS
)
"""Estimator settings the command line can give, each as ``--name-with-dashes``."""


def _shared_parameters() -> list[inspect.Parameter]:
    """The fields of EstimateOptions as command parameters (Typer reads their annotations)."""
    hints = typing.get_type_hints(EstimateOptions, include_extras=True)
    return [
        inspect.Parameter(
            field.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=hints[field.name],
            default=field.default
            if field.default_factory is dataclasses.MISSING
            else field.default_factory(),
        )
        for field in dataclasses.fields(EstimateOptions)
    ]


def with_estimate_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with the shared options in place of its parameter ``options`` (the
    command line lists them there), which receives them as one EstimateOptions."""
    names = [field.name for field in dataclasses.fields(EstimateOptions)]
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    at = [parameter.name for parameter in own].index("options")

    @functools.wraps(command, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    def run(**arguments):
        shared = {name: arguments.pop(name) for name in names}
        return command(**arguments, options=EstimateOptions(**shared))

    parameters = own[:at] + _shared_parameters() + own[at + 1 :]
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return run
