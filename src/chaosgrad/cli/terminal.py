"""Where the command writes: results on stdout, errors and progress on stderr.

A Rich progress bar on a terminal; away from one (a batch job's log), a line at most every
:data:`PROGRESS_EVERY` seconds, so that a long run does not look hung.
"""

from __future__ import annotations

import contextlib
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

console = Console()
error_console = Console(stderr=True, soft_wrap=True)

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
