"""Functions as static (compile-time) arguments, compared by their code.

``jax.jit`` and ``eqx.filter_jit`` key their compilation cache on static arguments by
equality. A Python function compares by identity, so a freshly written lambda of the same
code (``wrt=lambda s: s.rho`` inside a loop) would compile again on every call. The
:class:`StaticFunction` wrapper compares two functions equal when their code, globals,
defaults and closed-over values are equal, which is exactly when they compute the same
thing. Closed-over arrays up to 65536 elements compare by content (a loss's target
array); other closed-over values that cannot be hashed fall back to identity: correct,
only slower. Decision as in equinox's ``Partial``: a wrapper module, not a global cache.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

_LARGEST_HASHED_ARRAY = 1 << 16


def _value_key(value):
    """Closed-over arrays (a loss's target) compare by content when small and concrete."""
    if isinstance(value, (np.ndarray, jax.Array)) and value.size <= _LARGEST_HASHED_ARRAY:
        try:
            array = np.asarray(value)
        except jax.errors.TracerArrayConversionError:  # a traced value: compare by identity
            return ("identity", id(value), value)
        digest = hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()
        return ("array", array.shape, str(array.dtype), digest)
    if callable(value) and hasattr(value, "__code__"):
        return function_key(value)
    return value


def _closure_values(fn) -> tuple:
    cells = getattr(fn, "__closure__", None) or ()
    return tuple(_value_key(cell.cell_contents) for cell in cells)


def function_key(fn: Any) -> Any:
    """A hashable value equal for functions that compute the same thing (see module doc)."""
    if isinstance(fn, StaticFunction):
        return fn.key
    if isinstance(fn, functools.partial):
        key = (function_key(fn.func), fn.args, tuple(sorted(fn.keywords.items())))
    else:
        code = getattr(fn, "__code__", None)
        if code is None:
            return ("identity", id(fn), fn)
        key = (
            code,
            id(getattr(fn, "__globals__", None)),
            _closure_values(fn),
            getattr(fn, "__defaults__", None),
            tuple(sorted((getattr(fn, "__kwdefaults__", None) or {}).items())),
        )
    try:
        hash(key)
    except TypeError:
        return ("identity", id(fn), fn)
    return key


class StaticFunction:
    """A function held as a static field, equal to another of the same code (module doc).

    A plain class (a pytree leaf), so that as a static field or a non-array argument of
    ``eqx.filter_jit`` it is compared by :func:`function_key`, never by identity.
    """

    __slots__ = ("function", "key")

    def __init__(self, function: Callable):
        if isinstance(function, StaticFunction):
            function = function.function
        self.function = function
        self.key = function_key(function)

    def __repr__(self) -> str:
        return f"StaticFunction({self.function!r})"

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __eq__(self, other) -> bool:  # type: ignore[override]
        return isinstance(other, StaticFunction) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def static(function: Callable | None) -> StaticFunction | None:
    """``function`` wrapped as a :class:`StaticFunction` (None stays None)."""
    return None if function is None else StaticFunction(function)
