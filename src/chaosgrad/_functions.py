"""User functions in compiled programs: keyed on what they compute, values read included.

A compiled program holds the values a user's function read when it was traced: a global
``target``, a closed-over numpy array, a config object's attribute. Keying the compilation
cache on the function's code alone serves the old values after such a value changes (a
wrong answer, no error). So every public entry point traces each user function it is given
(observable, loss, the system's step) at the shapes it will be called with, and keys the
compiled programs on the trace's *reads*: a digest of

* the jaxpr's text: the operations, and every Python scalar the code read (a scalar
  becomes a literal ``100.0:f64[]``);
* every literal and every constant the jaxpr holds, by content (a closed-over or global
  array, whatever its size, mutated in place or rebound).

Two functions with the same reads compute the same thing at those shapes, so a fresh lambda
of the same code is warm, and any change to what a function reads compiles afresh.

What a trace cannot see (documented once, as JAX documents impure functions): Python side
effects and host state that does not reach the computation (a counter, a print, a random
draw from ``numpy.random`` made at trace time is read as a constant, hence keyed, but not
redrawn per step), and a custom derivative rule that reads a changed global without the
primal computation changing. A function must compute its result from its arguments and the
values it reads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.extend import core as jax_core

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _jaxprs_in(value):
    """The jaxprs inside an equation's parameter (a scan's body, a cond's branches)."""
    if isinstance(value, jax_core.ClosedJaxpr):
        yield value
    elif isinstance(value, jax_core.Jaxpr):
        yield jax_core.ClosedJaxpr(value, ())
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _jaxprs_in(item)


def _add_value(digest, value) -> None:
    try:
        array = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        digest.update(f"traced {id(value)}".encode())  # a value of an enclosing trace
        return
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())


def _add_values(digest, closed) -> None:
    """Every constant and literal of ``closed`` and of the jaxprs nested in it, by content."""
    for const in closed.consts:
        _add_value(digest, const)
    for equation in closed.jaxpr.eqns:
        for var in equation.invars:
            if isinstance(var, jax_core.Literal):
                _add_value(digest, var.val)
        for parameter in equation.params.values():
            for inner in _jaxprs_in(parameter):
                _add_values(digest, inner)


def reads(function: Callable, *args) -> tuple[str, Any]:
    """(digest of what ``function(*args)`` computes and reads, its output's abstract value).

    Non-array leaves of ``args`` are static (as in ``eqx.filter_jit``); arrays and
    ``jax.ShapeDtypeStruct`` leaves are traced. The digest is the module doc's: the jaxpr's
    text (memory addresses left out) and every literal and constant by content.
    """
    closed, out_dynamic, out_static = eqx.filter_make_jaxpr(function)(*args)
    digest = hashlib.sha1(_ADDRESS.sub("", str(closed.jaxpr)).encode())
    _add_values(digest, closed)
    return digest.hexdigest(), eqx.combine(out_dynamic, out_static)


class StaticFunction:
    """A user function held as a static field or argument, compared by its reads.

    ``StaticFunction(f, reads)`` equals another with the same ``reads`` digest (module
    doc), whatever the function objects; with ``reads=None`` (not yet traced) it compares by
    identity. A plain class (a pytree leaf), so that ``eqx.filter_jit`` compares it by
    ``__eq__``.
    """

    __slots__ = ("function", "reads")

    def __init__(self, function: Callable, reads: str | None = None):
        if isinstance(function, StaticFunction):
            function, reads = function.function, function.reads if reads is None else reads
        self.function = function
        self.reads = reads

    def __repr__(self) -> str:
        return f"StaticFunction({self.function!r})"

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def _key(self):
        return ("function", id(self.function)) if self.reads is None else self.reads

    def __eq__(self, other) -> bool:  # type: ignore[override]
        if not isinstance(other, StaticFunction):
            return False
        if self.reads is None or other.reads is None:
            return self.function is other.function and self.reads == other.reads
        return self.reads == other.reads

    def __hash__(self) -> int:
        return hash(self._key())


def bound(function: Callable, *args) -> tuple[StaticFunction, Any]:
    """(``function`` as a :class:`StaticFunction` keyed on its reads at ``args``, its output)."""
    digest, out = reads(function, *args)
    return StaticFunction(function, digest), out


def with_static(module: eqx.Module, **fields) -> Any:
    """A copy of ``module`` with the given static fields replaced, its ``__init__`` not
    rerun (a system's or a statistic's own checks already passed on these values)."""
    leaves, treedef = jax.tree_util.tree_flatten(module)
    copy = treedef.unflatten(leaves)
    for name, value in fields.items():
        object.__setattr__(copy, name, value)
    return copy
