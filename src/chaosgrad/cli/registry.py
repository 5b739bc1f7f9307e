"""Built-in systems by command-line name (class name in snake case) and ``-p name=value``."""

from __future__ import annotations

import inspect
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


def _parse_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["rho=30", "method=euler"]`` -> ``{"rho": 30, "method": "euler"}``."""
    values = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"-p expects name=value, got {item!r}")
        values[name.strip()] = _parse_value(text)
    return values


def build_system(name: str, assignments: list[str]):
    """(system, parameters used): the built-in ``name`` with ``-p`` overrides applied."""
    cls = SYSTEMS.get(name)
    if cls is None:
        raise ValueError(f"unknown system {name!r}; choose one of: {', '.join(SYSTEMS)}")
    defaults = settable_parameters(cls)
    overrides = parse_assignments(assignments)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"{name} has no parameter {unknown[0]!r}; its parameters are: {', '.join(defaults)}"
        )
    params = {**defaults, **overrides}
    return cls(**params), params
