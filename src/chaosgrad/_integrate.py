"""One integrator step of a flow: the map x_{n+1} = phi_dt(x_n) a continuous-time model becomes.

``method`` is ``"rk4"`` (classical fourth-order Runge-Kutta), ``"euler"`` (forward Euler;
Euler-Maruyama when the flow has noise), or a diffrax fixed-step solver object, as in
``diffrax.diffeqsolve(..., solver=diffrax.Heun())``: ``diffrax.Euler()`` or any explicit
Runge-Kutta solver (``Heun``, ``Midpoint``, ``Ralston``, ``Bosh3``, ``Tsit5``, ``Dopri5``,
``Dopri8``, ...). One step of such a solver depends on (t, x) alone, so it is a map of the
state like the built-in ones; chaosgrad takes it with one fixed step ``dt`` (no step-size
control). Solvers that carry state from step to step (reversible, leapfrog, multistep) or
solve implicit equations are refused. diffrax is an optional dependency
(``pip install chaosgrad[diffrax]``); the built-in methods do not use it.

Differentiating a step gives the exact tangent of the discrete map (not a frozen-Jacobian
approximation, which would only be first order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ._errors import check_real

METHODS = ("rk4", "euler")


def check_time_step(dt) -> float:
    """``dt`` as a float: a positive, finite time step."""
    return float(check_real(dt, "dt", positive=True))


def _is_diffrax_solver(method) -> bool:
    return type(method).__module__.split(".")[0] == "diffrax"


def check_method(method: Any, stochastic: bool) -> None:
    """Refuse, naming the fix, a method that is neither built in nor a usable diffrax solver,
    and anything but Euler-Maruyama (``"euler"``) for a flow with noise."""
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"method must be 'rk4', 'euler' or a diffrax solver, got {method!r}")
    elif _is_diffrax_solver(method):
        import diffrax

        if not isinstance(method, (diffrax.Euler, diffrax.AbstractERK)):
            raise ValueError(
                f"method={type(method).__name__}() is not a one-step explicit solver: a flow "
                "takes diffrax.Euler() or an explicit Runge-Kutta solver (Heun, Midpoint, "
                "Ralston, Bosh3, Tsit5, Dopri5, ...), each step a function of (t, x) alone"
            )
    else:
        raise ValueError(f"method must be 'rk4', 'euler' or a diffrax solver, got {method!r}")
    if stochastic and method != "euler":
        raise ValueError("a flow with noise is integrated by Euler-Maruyama: pass method='euler'")


def integrate_step(field: Callable, t, x, dt: float, method):
    """One step of size ``dt`` of dx/dt = field(time, x) from time ``t`` (a physical time),
    by ``method`` (module doc)."""
    if isinstance(method, str):
        if method == "euler":
            return x + dt * field(t, x)
        if method == "rk4":
            k1 = field(t, x)
            k2 = field(t + dt / 2, x + (dt / 2) * k1)
            k3 = field(t + dt / 2, x + (dt / 2) * k2)
            k4 = field(t + dt, x + dt * k3)
            return x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        raise ValueError(f"method must be 'rk4', 'euler' or a diffrax solver, got {method!r}")
    return _diffrax_step(method, field, t, x, dt)


def _diffrax_step(solver, field: Callable, t, x, dt: float):
    """x after one step of ``solver`` from (t, x) to t + dt (its error estimate unused)."""
    import diffrax

    if getattr(solver, "scan_kind", "lax") is None:  # a Runge-Kutta solver's default
        # a plain loop over the stages: its checkpointed loop has a custom reverse rule,
        # through which the tangents of forward mode (Lyapunov vectors, JVPs) cannot pass
        solver = dataclasses.replace(solver, scan_kind="lax")
    term = diffrax.ODETerm(lambda time, y, args: field(time, y))
    state = solver.init(term, t, t + dt, x, None)
    x_next, _, _, _, _ = solver.step(term, t, t + dt, x, None, state, made_jump=False)
    return x_next
