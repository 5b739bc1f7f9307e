"""Numeric command-line options, checked before anything runs: one rule per option name.

Typer turns ``--samples abc`` into a usage error; what it cannot know is the range. A
count of zero or below, a sample count that leaves no standard error, more local
processes than cores, and NaN or inf in a real-valued option are refused here, in one line
naming the option (``--samples``), for every command that has it. Nothing is ever replaced
by a default once it was given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from .._errors import SAMPLES_REASON

COUNTS: dict[str, tuple[int, str]] = {
    "steps": (1, ""),
    "samples": (2, SAMPLES_REASON),
    "segments": (2, "the standard error comes from independent blocks of segments"),
    "segment_steps": (1, ""),
    "blocks": (2, "the standard error comes from the spread of blocks"),
    "batch": (1, ""),
    "truncation": (1, ""),
    "k": (1, ""),
    "renorm_every": (1, ""),
    "iterations": (1, ""),
    "seeds": (1, ""),
    "processes": (1, ""),
    "orbits": (1, ""),
    "burn_in": (0, ""),
    "window": (0, ""),
    "unstable_dim": (0, ""),
}
"""Integer options and their smallest value (with the reason, where it is not obvious)."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


MAXIMA: dict[str, tuple[Callable[[], int], str]] = {
    "processes": (
        usable_cores,
        "cores this command may use (one process per core: more would only compete for them)",
    ),
}
"""Integer options with a largest value (read when checked) and what that value counts."""

REALS: dict[str, str] = {
    "eps": "> 0",
    "alpha": ">= 0",
    "budget": "> 0",
    "dt": "> 0",
    "learning_rate": "> 0",
}
"""Real-valued options: finite, and > 0 or >= 0."""


def flag(name: str) -> str:
    """``segment_steps`` -> ``--segment-steps``."""
    return "--" + name.replace("_", "-")


LARGEST = 2**63 - 1
"""Integer options are 64-bit integers (array sizes, step counters, PRNG seeds)."""


def auto_or_count(value: str | None, name: str, kind: str = "positive") -> int | str | None:
    """An option that is "auto" or a whole number (its range checked by check_numbers)."""
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f'{flag(name)} must be a {kind} whole number or "auto", got {value!r}'
        ) from None


def renorm_cadence(value: str) -> int | str:
    """``--renorm-every``: "auto" or a whole number of steps (checked by check_numbers)."""
    cadence = auto_or_count(value, "renorm_every")
    assert cadence is not None
    return cadence


def check_numbers(values: dict[str, Any]) -> None:
    """Refuse the first out-of-range option in ``values`` (None: not given, and "auto":
    chosen later, skipped)."""
    for name, value in values.items():
        if value is None or value == "auto":
            continue
        if isinstance(value, int) and not -LARGEST <= value <= LARGEST:
            raise ValueError(f"{flag(name)} is too large: at most 2**63 - 1, got {value}")
        if name in COUNTS:
            minimum, why = COUNTS[name]
            if value < minimum:
                bound = {0: ">= 0", 1: "positive"}.get(minimum, f"at least {minimum}")
                detail = f": {why}; got {value}" if why else f", got {value}"
                raise ValueError(f"{flag(name)} must be {bound}{detail}")
            if name in MAXIMA:
                largest, counted = MAXIMA[name]
                limit = largest()
                if value > limit:
                    raise ValueError(
                        f"{flag(name)} {value} is more than the {limit} {counted}: give at "
                        f"most {limit}"
                    )
        elif name in REALS:
            sign = REALS[name]
            if not math.isfinite(value):
                raise ValueError(f"{flag(name)} must be a finite number, got {value}")
            if (sign == "> 0" and not value > 0) or (sign == ">= 0" and not value >= 0):
                raise ValueError(f"{flag(name)} must be a number {sign}, got {value}")
