"""User functions in compiled programs: never a stale value, and a warm program for the same code.

A compiled program holds what a user's function read when it was traced: a global
``target``, a closed-over numpy array, a config object's attribute. Keying the compilation
cache on the function object or its code alone serves the old values after such a value
changes (a wrong answer, no error). So every public entry point traces each user function
it is given at the shapes it will be called with:

* an observable, a loss, an optimizer's update and a regulariser become a
  :class:`TracedFunction` (:func:`trace`): the traced program is static and compared by
  what it computes (the jaxpr's text, every Python scalar the code read, which becomes a
  literal ``100.0:f64[]``, and the input and output structures), and every array it closes
  over or reads from a global is a dynamic leaf. A fresh lambda of the same code is warm; a
  changed array reaches the same compiled program as a new input; a changed Python scalar
  compiles afresh.
* the system's step is keyed by its *reads* (:func:`reads`, set by
  ``chaosgrad._system.bind``): the jaxpr's text and every literal and constant by content.
  Its closed-over arrays are not made leaves of the system, where ``wrt=None`` would take
  them for parameters; a changed one compiles afresh.

What a trace cannot see (documented once, as JAX documents impure functions): Python side
effects and host state that does not reach the computation (a counter, a print, a random
draw from ``numpy.random`` made at trace time is read as a constant, but not redrawn per
step), and a custom derivative rule that reads a changed global without the primal
computation changing. A function must compute its result from its arguments and the
values it reads.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
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
    _add_literals(digest, closed)


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


def _add_literals(digest, closed) -> None:
    """Every literal of ``closed`` and every constant of the jaxprs nested in it (a Python
    scalar the code read, an array a loop body holds), by content; not ``closed``'s own
    constants, which a :class:`TracedFunction` holds as its arrays."""
    for equation in closed.jaxpr.eqns:
        for var in equation.invars:
            if isinstance(var, jax_core.Literal):
                _add_value(digest, var.val)
        for parameter in equation.params.values():
            for inner in _jaxprs_in(parameter):
                _add_values(digest, inner)


class _Program:
    """What a :class:`TracedFunction` computes: its jaxpr with the closed-over arrays taken
    out as inputs, and how its outputs are rebuilt. Compared by ``key``: the jaxpr's text
    (addresses left out), its literals by content and its input and output structures, so
    two traces of the same code at the same shapes are equal whatever the function objects
    and whatever the values of the arrays they close over."""

    __slots__ = ("jaxpr", "out_treedef", "out_static", "name", "key")

    def __init__(self, closed, in_treedef, out_dynamic, out_static, name: str):
        self.jaxpr = closed.jaxpr
        out_leaves, self.out_treedef = jax.tree_util.tree_flatten(out_dynamic)
        self.out_static = out_static
        self.name = name
        digest = hashlib.sha1(_ADDRESS.sub("", str(closed.jaxpr)).encode())
        _add_literals(digest, closed)
        digest.update(_ADDRESS.sub("", f"{in_treedef}|{self.out_treedef}|{out_static}").encode())
        self.key = digest.hexdigest()

    def __eq__(self, other) -> bool:
        return isinstance(other, _Program) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"<traced {self.name} {self.key[:16]}>"


class TracedFunction(eqx.Module):
    """A user function as a compiled program sees it: its traced program static (compared
    by what it computes, :class:`_Program`), the arrays it closes over or reads from
    globals dynamic leaves (``consts``).

    A compiled program is therefore looked up by the function's code and the shapes it was
    traced at, and receives the current values of what it reads as inputs: a fresh lambda
    of the same code is warm, a closed-over array changed in place or rebound gives new
    values without compiling again, and a Python scalar it reads (a literal of the
    program) compiles afresh. It is called with arguments of the shapes it was traced at
    (the same array leaves in the same order; other leaves are the trace's).
    """

    program: _Program = eqx.field(static=True)
    consts: list

    def __call__(self, *args):
        dynamic = jax.tree_util.tree_leaves(eqx.filter(args, eqx.is_array))
        expected = self.program.jaxpr.invars
        if len(dynamic) != len(expected) or any(
            tuple(jax.numpy.shape(leaf)) != tuple(var.aval.shape)
            for leaf, var in zip(dynamic, expected, strict=False)
        ):
            got = [tuple(jax.numpy.shape(leaf)) for leaf in dynamic]
            want = [tuple(var.aval.shape) for var in expected]
            raise ValueError(
                f"{self.program.name} was traced for arrays of shapes {want} and is called "
                f"with {got}"
            )
        out = jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(self.program.jaxpr, self.consts))(*dynamic)
        out_dynamic = jax.tree_util.tree_unflatten(self.program.out_treedef, out)
        return eqx.combine(out_dynamic, self.program.out_static)


def trace(function: Callable, *args, name: str | None = None) -> tuple[TracedFunction, Any]:
    """(``function`` as a :class:`TracedFunction` at the shapes of ``args``, its output's
    abstract value). Non-array leaves of ``args`` are static (as in ``eqx.filter_jit``);
    arrays and ``jax.ShapeDtypeStruct`` leaves are traced."""
    if isinstance(function, TracedFunction):
        function = _call_traced(function)
    closed, out_dynamic, out_static = eqx.filter_make_jaxpr(function)(*args)
    in_treedef = jax.tree_util.tree_structure(eqx.filter(args, _is_traced_leaf))
    label = name or getattr(function, "__name__", type(function).__name__)
    program = _Program(closed, in_treedef, out_dynamic, out_static, label)
    return TracedFunction(program, list(closed.consts)), eqx.combine(out_dynamic, out_static)


def _is_traced_leaf(leaf) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def _call_traced(function: TracedFunction):
    return lambda *args: function(*args)


class StepFunction:
    """A system's own function (a ``Map``'s, ``Flow``'s or ``InputDriven``'s, or a noise
    function) compared by the digest of the step it computes, not by identity.

    ``chaosgrad._system.bind`` wraps every such function with the digest of the step's
    trace (:func:`reads`), so a system built afresh with a new lambda of the same code
    reaches the compiled programs of the previous one (no compile), while a function that
    computes or reads something else differs in the digest and compiles afresh.
    """

    __slots__ = ("function", "digest")

    def __init__(self, function: Callable, digest: str):
        self.function = function.function if isinstance(function, StepFunction) else function
        self.digest = digest

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, StepFunction) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return repr(self.function)


def is_user_function(value) -> bool:
    """A plain function (``def``, lambda, ``functools.partial``), possibly already keyed."""
    return isinstance(value, (StepFunction, functools.partial)) or inspect.isfunction(value)


def with_static(module: eqx.Module, **fields) -> Any:
    """A copy of ``module`` with the given static fields replaced, its ``__init__`` not
    rerun (a system's or a statistic's own checks already passed on these values)."""
    leaves, treedef = jax.tree_util.tree_flatten(module)
    copy = treedef.unflatten(leaves)
    for name, value in fields.items():
        object.__setattr__(copy, name, value)
    return copy
