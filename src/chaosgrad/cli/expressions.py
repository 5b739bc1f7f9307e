"""Observables from the command line: a small, safe expression language over the state.

    z                      a named component (systems with component names, e.g. Lorenz-63)
    x[0]**3, x[1:]         the state vector ``x`` (or ``state``), indexing and slicing
    mean(x**2), sum(x)     reductions and elementwise functions (sin, cos, exp, log, ...)

The text is parsed with ``ast`` and only the node types below are accepted; nothing is
ever passed to ``eval``. The result is a JAX function ``phi(x) -> scalar``.
"""

from __future__ import annotations

import ast
import operator

import jax.numpy as jnp

FUNCTIONS = {
    "mean": jnp.mean,
    "sum": jnp.sum,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "tan": jnp.tan,
    "exp": jnp.exp,
    "log": jnp.log,
    "sqrt": jnp.sqrt,
    "abs": jnp.abs,
    "tanh": jnp.tanh,
    "max": jnp.max,
    "min": jnp.min,
    "norm": jnp.linalg.norm,
}
CONSTANTS = {"pi": jnp.pi, "e": jnp.e}
BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class ExpressionError(ValueError):
    """An observable expression that is not in the language."""


def _compile(node, names: dict[str, int]):
    """A function of the state vector for one syntax node."""
    if isinstance(node, ast.Expression):
        return _compile(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        value = node.value
        return lambda x: value
    if isinstance(node, ast.Name):
        if node.id in names:
            index = names[node.id]
            return lambda x: x[index]
        if node.id in ("x", "state"):
            return lambda x: x
        if node.id in CONSTANTS:
            value = CONSTANTS[node.id]
            return lambda x: value
        known = sorted(set(names) | {"state"} | ({"x"} if "x" not in names else set()))
        raise ExpressionError(
            f"unknown name {node.id!r}; use {', '.join(known)} or "
            f"a function ({', '.join(FUNCTIONS)})"
        )
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        op = BINARY[type(node.op)]
        left, right = _compile(node.left, names), _compile(node.right, names)
        return lambda x: op(left(x), right(x))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        op, operand = UNARY[type(node.op)], _compile(node.operand, names)
        return lambda x: op(operand(x))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id not in FUNCTIONS or len(node.args) != 1:
            raise ExpressionError(
                f"unknown function {node.func.id!r} (one argument); use {', '.join(FUNCTIONS)}"
            )
        function, argument = FUNCTIONS[node.func.id], _compile(node.args[0], names)
        return lambda x: function(argument(x))
    if isinstance(node, ast.Subscript):
        target, index = _compile(node.value, names), _index(node.slice)
        return lambda x: target(x)[index]
    raise ExpressionError(f"not allowed in an observable: {ast.unparse(node)!r}")


def _integer(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_integer(node.operand)
    raise ExpressionError(f"indices must be integers, got {ast.unparse(node)!r}")


def _index(node):
    if isinstance(node, ast.Slice):
        if node.step is not None:
            return slice(_bound(node.lower), _bound(node.upper), _integer(node.step))
        return slice(_bound(node.lower), _bound(node.upper))
    return _integer(node)


def _bound(node):
    return None if node is None else _integer(node)


def parse_observable(text: str, component_names=()):
    """``phi(x) -> scalar`` for ``text``; ``component_names`` name the state's entries."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse observable {text!r}: {exc.msg}") from None
    function = _compile(tree, {name: i for i, name in enumerate(component_names)})

    def observable(x):
        value = jnp.asarray(function(x))
        if value.shape != ():
            raise ExpressionError(
                f"observable {text!r} must be a scalar, got shape "
                f"{value.shape}: reduce it, e.g. mean(...)"
            )
        return value

    return observable
