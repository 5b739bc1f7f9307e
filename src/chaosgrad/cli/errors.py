"""One-line errors: a bad command line or a bad input is one line on stderr, exit code 2.

Usage errors (an unknown option, ``--samples abc``, a missing ``--wrt``, a repeated
``--steps``) are caught by the command group (:class:`OneLineErrors`); the library's input
errors by :func:`user_errors` around a command's work.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import jax
import typer
import typer.core
from rich.markup import escape

from .._errors import first_line
from .expressions import ExpressionError
from .terminal import error_console

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
