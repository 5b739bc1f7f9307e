"""Built-in systems by command-line name (class name in snake case) and ``-p name=value``."""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

from ..systems import BUILTINS


def snake_case(name: str) -> str:
    """``NoisyLorenz96`` -> ``noisy_lorenz96``, ``TanhRNN`` -> ``tanh_rnn``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


SYSTEMS = {snake_case(cls.__name__): cls for cls in BUILTINS}


def settable_parameters(cls) -> dict[str, Any]:
    """Constructor keyword arguments of a built-in and their defaults.

    Arguments defaulting to None (explicit arrays such as J, or a PRNG key) take values no
    command line can spell and are left out; ``seed`` stands in for the key.
    """
    signature = inspect.signature(cls.__init__)
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if name != "self" and p.default is not None
    }


TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def shown(text: str) -> str:
    """``text`` as typed, or quoted when it holds line breaks or other unprintables."""
    return text if text.isprintable() else repr(text)


def parse_value(name: str, text: str, default: Any):
    """``text`` as a value of ``default``'s type, or a one-line error naming ``-p name``.

    An integer parameter takes integers only (``-p n=3.7`` is refused, never truncated); a
    real one takes finite numbers only (NaN and inf are refused); a flag takes true/false.
    """
    given = text.strip()
    spelled = f"-p {shown(f'{name}={text}')}"
    if isinstance(default, bool):
        if given.lower() in TRUE + FALSE:
            return given.lower() in TRUE
        raise ValueError(f"{spelled}: {name} is true or false")
    if isinstance(default, int):
        try:
            return int(given)
        except ValueError:
            raise ValueError(
                f"{spelled}: {name} must be an integer, e.g. -p {name}={default}"
            ) from None
    if isinstance(default, float):
        try:
            value = float(given)
        except ValueError:
            raise ValueError(
                f"{spelled}: {name} must be a number, e.g. -p {name}={default}"
            ) from None
        if not math.isfinite(value):
            raise ValueError(f"{spelled}: {name} must be a finite number, e.g. -p {name}={default}")
        return value
    if not given:
        raise ValueError(f"{spelled}: {name} needs a value, e.g. -p {name}={default}")
    return given


def parse_assignments(assignments: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``["rho=30", "method=euler"]`` -> ``{"rho": 30.0, "method": "euler"}``, each value of
    its default's type (:func:`parse_value`); unknown or repeated names are refused."""
    values: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"-p expects name=value, got {item!r}")
        if name not in defaults:
            raise ValueError(
                f"-p {shown(item)}: no parameter {name!r}; its parameters are: "
                + ", ".join(defaults)
            )
        if name in values:
            raise ValueError(f"-p {name} is given twice: give each parameter once")
        values[name] = parse_value(name, text, defaults[name])
    return values


def build_system(name: str, assignments: list[str]):
    """(system, parameters used): the built-in ``name`` with ``-p`` overrides applied."""
    cls = SYSTEMS.get(name)
    if cls is None:
        raise ValueError(f"unknown system {name!r}; choose one of: {', '.join(SYSTEMS)}")
    defaults = settable_parameters(cls)
    try:
        overrides = parse_assignments(assignments, defaults)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    params = {**defaults, **overrides}
    try:
        return cls(**params), params
    except (TypeError, ValueError) as exc:  # the constructor's check names the parameter
        raise ValueError(f"{name}: {exc}") from None
