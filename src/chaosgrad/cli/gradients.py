"""``chaosgrad grad`` and ``chaosgrad compare``: estimators chosen by name on the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators import (Backprop, FastAdjointResponse, FiniteDifference, Kernel, PathKernel,
                          Shadowing, TruncatedBackprop, linear_response)
from .expressions import parse_observable

METHODS = ("backprop", "truncated", "fd", "shadowing", "far", "kernel", "path-kernel")


@dataclass
class MethodOptions:
    """Every estimator setting the command line can give (None: the method's default)."""

    steps: int | None = None
    samples: int | None = None
    burn_in: int = 1000
    eps: float = 1e-2
    window: int | None = None
    unstable_dim: int | None = None
    segment_steps: int = 20
    segments: int = 200
    statistic: str | None = None
    alpha: float = 1.0


def build_estimator(method: str, system, options: MethodOptions):
    """The estimator named ``method`` with ``options`` (defaults suited to ``system``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    horizon = system.horizon
    statistic = options.statistic or getattr(system, "default_statistic", None) or (
        "terminal" if horizon else "average")
    steps = options.steps or horizon or getattr(system, "default_steps", 10_000)
    burn_in = options.burn_in if statistic == "average" else 0
    if method in ("kernel", "path-kernel"):
        stationary = options.window is not None
        samples = options.samples or (10 if stationary else 10_000)
        noisy = dict(steps=steps, samples=samples, window=options.window,
                     burn_in=options.burn_in)
        if method == "kernel":
            return Kernel(**noisy)
        return PathKernel(**noisy, alpha=options.alpha)
    common = dict(steps=steps, samples=options.samples or 10, burn_in=burn_in,
                  statistic=statistic)
    if method == "backprop":
        return Backprop(**common)
    if method == "truncated":
        return TruncatedBackprop(**common, window=options.window or 10)
    if method == "fd":
        return FiniteDifference(**common, eps=options.eps)
    if options.unstable_dim is None:
        raise ValueError(f"--unstable-dim is required for {method}: the number of positive "
                         "Lyapunov exponents (plus one for a flow); `chaosgrad lyapunov` tells")
    segmented = dict(unstable_dim=options.unstable_dim, segment_steps=options.segment_steps,
                     segments=options.segments, burn_in=options.burn_in)
    if method == "shadowing":
        return Shadowing(**segmented)
    return FastAdjointResponse(**segmented, window=10 if options.window is None else options.window)


def resolve_observable(system, text: str | None):
    """The observable function for ``text`` (or the system's default), checked on a state."""
    if text is None:
        text = getattr(type(system), "default_observable", None)
        if text is None:
            raise ValueError(f"{type(system).__name__} has no default observable: pass "
                             "--observable, e.g. 'mean(x**2)'")
    observable = parse_observable(text, getattr(type(system), "component_names", ()))
    observable(jnp.zeros(system.dim))
    return observable, text


def resolve_wrt(system, names: str):
    """``"rho,sigma"`` -> (selector, names); each name must be an array field."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    if not chosen:
        raise ValueError("--wrt needs at least one parameter name")
    fields = [f.name for f in dataclasses.fields(system)
              if isinstance(getattr(system, f.name), jax.Array)
              and jnp.issubdtype(getattr(system, f.name).dtype, jnp.floating)]
    for name in chosen:
        if name not in fields:
            raise ValueError(f"{type(system).__name__} has no parameter {name!r} to "
                             f"differentiate; its parameters are: {', '.join(fields)}")
    return (lambda s: tuple(getattr(s, name) for name in chosen)), chosen


def run_gradient(system, observable, method, options, wrt, names, seed):
    """One estimate as a JSON-ready dict."""
    estimator = build_estimator(method, system, options)
    result = linear_response(system, observable, estimator, wrt=wrt, key=jax.random.key(seed))
    as_list = lambda v: np.asarray(v).tolist()  # noqa: E731
    return {"value": result.value, "method": method,
            "grad": {name: as_list(g) for name, g in zip(names, result.grad)},
            "stderr": {name: as_list(s) for name, s in zip(names, result.stderr)},
            "seconds": result.info["seconds"], "info": _summary(result.info)}


def _summary(info: dict) -> dict:
    keep = ("steps", "samples", "segments", "window", "growth_rate", "lyapunov_exponents",
            "warning", "eps", "runs", "alpha", "exploding", "orbits")
    out = {k: info[k] for k in keep if k in info}
    for key in ("shadowing_contribution", "unstable_contribution"):
        if key in info:
            out[key] = [np.asarray(v).tolist() for v in info[key]]
    return out
