"""``chaosgrad grad`` and ``chaosgrad compare``: estimators found by name in the registry.

The method names and classes come from :data:`chaosgrad.estimators.ESTIMATORS` only: a new
estimator is its file plus one registry line, and the command line picks it up. A setting
given on the command line (``--segment-steps 20``) goes to the constructor field of the same
name (``segment_steps``) of every estimator that has one; the statistic (``--statistic``)
is built from the system's defaults:

* ``terminal`` (systems with a horizon, or ``default_statistic = "terminal"``):
  ``Terminal(phi, steps)``, ``steps`` from ``--steps``, the system's horizon or its
  ``default_steps``;
* ``window``: ``WindowAverage(phi, steps, burn_in)`` with ``--steps`` and ``--burn-in``;
* ``time-average`` (every other system): ``TimeAverage(phi)``; ``--steps``, ``--burn-in``,
  ``--segments`` and ``--window`` are then the estimator's orbit settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators import ESTIMATORS, linear_response
from ..statistics import AbstractStatistic, Terminal, TimeAverage, WindowAverage
from .estimate_options import SETTINGS
from .expressions import parse_observable
from .options import flag

STATISTICS = ("time-average", "window", "terminal")
OLD_STATISTICS = {"average": "time-average"}  # version 1's name, still accepted

TIME_AVERAGE_ONLY = ("segments", "window")
"""Settings of a TimeAverage's orbit; for a finite horizon, ``--steps`` and ``--burn-in``
set the statistic instead."""

DEFAULTS: dict[str, Any] = {
    "samples": 10,
    "steps": 10_000,
    "unstable_dim": "auto",
    "segment_steps": 20,
    "segments": 200,
    "truncation": 10,
    "alpha": 1.0,
}
"""A setting not given on the command line takes this value where the estimator has the
field (``steps`` and ``segments`` for a TimeAverage only); every other field keeps the
estimator's own default. ``unstable_dim="auto"``: a pilot run counts u, and the command
prints the count and the pilot's exponents (``info.auto``)."""

MANY_SAMPLES = {"kernel": 10_000, "path-kernel": 10_000}
"""Likelihood-ratio methods average cheap forward rollouts: their default sample count for
a finite-horizon statistic."""


def method_names() -> str:
    return ", ".join(ESTIMATORS)


def estimator_class(method: str):
    cls = ESTIMATORS.get(method)
    if cls is None:
        raise ValueError(f"unknown method {method!r}; choose one of: {method_names()}")
    return cls


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def default_statistic(system) -> str:
    """``terminal`` for a system with a horizon (a network) or one that asks for it, else
    ``time-average``."""
    if system.horizon is not None or system.default_statistic == "terminal":
        return "terminal"
    return "time-average"


def build_statistic(
    system, observable, kind: str | None, settings: dict[str, Any]
) -> AbstractStatistic:
    """The statistic ``kind`` (default: the system's) of ``observable``; a finite horizon
    takes ``steps`` (and a window ``burn_in``) from ``settings``."""
    kind = default_statistic(system) if kind is None else OLD_STATISTICS.get(kind, kind)
    if kind not in STATISTICS:
        raise ValueError(f"unknown --statistic {kind!r}; choose one of: {', '.join(STATISTICS)}")
    if kind == "time-average":
        return TimeAverage(observable)
    for name in TIME_AVERAGE_ONLY:
        if settings.get(name) is not None:
            raise ValueError(
                f"{flag(name)} applies to --statistic time-average only; a {kind} statistic "
                "has its own horizon (--steps)"
            )
    steps = settings.get("steps")
    if steps is None:
        steps = system.horizon or system.default_steps
    if steps is None:
        raise ValueError(f"--statistic {kind} needs --steps N: the horizon")
    if kind == "terminal":
        if settings.get("burn_in") is not None:
            raise ValueError(
                "--burn-in applies to --statistic time-average or window; a terminal "
                "statistic starts at the initial state"
            )
        return Terminal(observable, steps)
    burn_in = settings.get("burn_in")
    return WindowAverage(observable, steps, 0 if burn_in is None else burn_in)


def applicable(method: str, statistic: AbstractStatistic) -> set[str]:
    """The command-line settings ``method`` uses for ``statistic``."""
    names = set(_fields(estimator_class(method))) & set(SETTINGS)
    if not isinstance(statistic, TimeAverage):
        names -= {"steps", "burn_in", *TIME_AVERAGE_ONLY}  # the statistic's own horizon
        names |= {"steps"} | ({"burn_in"} if isinstance(statistic, WindowAverage) else set())
    return names


def check_settings(methods: list[str], statistic: AbstractStatistic, settings: dict) -> None:
    """Refuse a setting that none of ``methods`` uses (one line naming what they take)."""
    given = {name for name, value in settings.items() if value is not None}
    used = set().union(*(applicable(m, statistic) for m in methods))
    for name in sorted(given - used, key=SETTINGS.index):
        parts = [f"{flag(name)} does not apply to {', '.join(methods)}"]
        takers = [m for m, cls in ESTIMATORS.items() if name in _fields(cls)]
        if takers:
            parts.append(f"it is a setting of {', '.join(takers)}")
        if len(methods) == 1:
            own = sorted(applicable(methods[0], statistic), key=SETTINGS.index)
            parts.append(f"{methods[0]} takes {', '.join(flag(n) for n in own) or 'none'}")
        raise ValueError("; ".join(parts))


def build_estimator(method: str, statistic: AbstractStatistic, settings: dict[str, Any]):
    """The registry's estimator ``method``: each given setting to the field of its name,
    command-line defaults (``DEFAULTS``) where a field is required or too small a default."""
    cls = estimator_class(method)
    fields = _fields(cls)
    stationary = isinstance(statistic, TimeAverage)
    kwargs: dict[str, Any] = {}
    for name in applicable(method, statistic) & set(fields):
        if not stationary and name in ("steps", "burn_in"):
            continue  # the finite-horizon statistic's own, not the estimator's
        value = settings.get(name)
        if value is None and name == "samples" and not stationary and method in MANY_SAMPLES:
            value = MANY_SAMPLES[method]
        elif value is None and not cls.own_defaults:
            value = DEFAULTS.get(name)
        if value is not None:
            kwargs[name] = value
    for name, field in fields.items():
        if _required(field) and name not in kwargs:
            raise ValueError(f"{flag(name)} is required for {method}")
    return cls(**kwargs)


def resolve_observable(system, text: str | None):
    """The observable function for ``text`` (or the system's default), checked on a state."""
    if text is None:
        text = system.default_observable
        if text is None:
            raise ValueError(
                f"{type(system).__name__} has no default observable: pass "
                "--observable, e.g. 'mean(x**2)'"
            )
    observable = parse_observable(text, system.component_names)
    observable(jnp.zeros(system.dim))
    return observable, text


def resolve_wrt(system, names: str):
    """``"rho,sigma"`` -> (selector, names); each name must be an array field."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    if not chosen:
        raise ValueError("--wrt needs at least one parameter name")
    fields = [
        f.name
        for f in dataclasses.fields(system)
        if isinstance(getattr(system, f.name), jax.Array)
        and jnp.issubdtype(getattr(system, f.name).dtype, jnp.floating)
    ]
    repeated = sorted({name for name in chosen if chosen.count(name) > 1})
    if repeated:
        raise ValueError(f"--wrt names {repeated[0]!r} twice: name each parameter once")
    for name in chosen:
        if name not in fields:
            raise ValueError(
                f"{type(system).__name__} has no parameter {name!r} to "
                f"differentiate; its parameters are: {', '.join(fields)}"
            )
    return (lambda s: tuple(getattr(s, name) for name in chosen)), chosen


def to_json(value):
    """Arrays and numbers as lists and floats, recursively; anything else as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return np.asarray(value).tolist()
    return str(value)


def run_gradient(system, statistic, method: str, settings: dict, wrt, names: list[str], seed):
    """One estimate as a JSON-ready dict."""
    estimator = build_estimator(method, statistic, settings)
    result = linear_response(system, statistic, estimator, wrt=wrt, key=jax.random.key(seed))
    return {
        "value": float(np.asarray(result.value)),
        "method": method,
        "estimator": repr(estimator),
        "grad": {name: to_json(g) for name, g in zip(names, result.grad, strict=True)},
        "stderr": {name: to_json(s) for name, s in zip(names, result.stderr, strict=True)},
        "seconds": result.info.seconds,
        "info": info_summary(result.info, names),
    }


def info_summary(info, names: list[str]) -> dict:
    """Every field of a typed info object; per-parameter fields by parameter name."""
    out = {}
    for field in dataclasses.fields(info):
        value = getattr(info, field.name)
        if value is None or field.name in ("method", "seconds"):
            continue
        if field.name == "auto":
            out["auto"] = value.as_dict()
        elif field.name in info.per_parameter:
            out[field.name] = {n: to_json(v) for n, v in zip(names, value, strict=True)}
        else:
            out[field.name] = to_json(value)
    return out
