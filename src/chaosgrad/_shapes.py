"""Abstract shapes traced once per structure, for repeated calls.

A warm call of a small estimate takes milliseconds; tracing a function to learn the shape
of its output (``jax.eval_shape``: the initial state's, the observable's) costs about 1 ms
each time. :func:`traced_shapes` keeps the result for owners of the same structure, shapes
and dtypes. The functions they hold compare as the compilation cache compares them
(:mod:`chaosgrad._functions`: code, globals, closure, defaults), so a kept result is never
one of other code.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax

_SHAPES: dict = {}
"""Shapes traced by :func:`traced_shapes` (at most ``_SHAPES_KEPT``, oldest dropped first)."""
_SHAPES_KEPT = 64


def _abstract(tree):
    """A hashable description of a pytree's structure and its leaves' shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (tuple(leaf.shape), leaf.dtype) if eqx.is_array(leaf) else leaf for leaf in leaves
    )


def traced_shapes(name: str, trace: Callable, *owners):
    """``trace()`` (an ``eval_shape`` of functions of ``owners``), kept under ``name`` for
    the next call with owners of the same structure, shapes and dtypes; traced every time
    when an owner holds an unhashable leaf."""
    try:
        key = (name,) + tuple(_abstract(owner) for owner in owners)
        hash(key)
    except TypeError:
        return trace()
    if key not in _SHAPES:
        if len(_SHAPES) >= _SHAPES_KEPT:
            _SHAPES.pop(next(iter(_SHAPES)))
        _SHAPES[key] = trace()
    return _SHAPES[key]


def initial_state_shape(system, key) -> jax.ShapeDtypeStruct:
    """The shape and dtype of ``system.initial_state(key)``, traced once per structure."""
    return traced_shapes(
        "initial_state", lambda: jax.eval_shape(system.initial_state, key), system, key
    )
