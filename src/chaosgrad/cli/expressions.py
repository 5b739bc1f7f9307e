"""Observables from the command line: a small, safe expression language over the state.

    z                      a named component (systems with component names, e.g. Lorenz-63)
    x[0]**3, x[1:]         the state vector ``x`` (or ``state``), indexing and slicing
    mean(x**2), sum(x)     reductions and elementwise functions (sin, cos, exp, log, ...)

Names: a system's component names come first. On Lorenz-63 (components x, y, z) ``x`` is
the first component, a number, and the whole state is ``state``; on systems without
component names ``x`` and ``state`` both mean the state vector. Indexing a number or
reducing one (``mean(x**2)`` on Lorenz-63) is refused with that rule in the message, so
the two readings of ``x`` can never be confused silently.

The text is parsed with ``ast`` and only the node types below are accepted; nothing is
ever passed to ``eval``. Its size is bounded (:data:`MAX_LENGTH` characters,
:data:`MAX_NODES` syntax nodes, :data:`MAX_DEPTH` levels) and so are literal exponents
(:data:`MAX_EXPONENT`); arithmetic on constants alone is done once, when parsing, and must
stay finite. Indices are checked against the state's dimension. The result is a JAX
function ``phi(x) -> scalar``; every mistake is an :class:`ExpressionError` of one line.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings

import jax.numpy as jnp
import numpy as np

from .._errors import first_line

MAX_LENGTH = 500
"""Longest observable text, in characters."""
MAX_NODES = 200
"""Most syntax nodes in one observable."""
MAX_DEPTH = 40
"""Deepest nesting of operations (parentheses alone do not count)."""
MAX_EXPONENT = 1000
"""Largest |exponent| written as a number (``x**1000``); larger powers only overflow."""

ELEMENTWISE = {
    "sin": jnp.sin,
    "cos": jnp.cos,
    "tan": jnp.tan,
    "exp": jnp.exp,
    "log": jnp.log,
    "sqrt": jnp.sqrt,
    "abs": jnp.abs,
    "tanh": jnp.tanh,
}
REDUCTIONS = {
    "mean": jnp.mean,
    "sum": jnp.sum,
    "max": jnp.max,
    "min": jnp.min,
    "norm": jnp.linalg.norm,
}
FUNCTIONS = {**REDUCTIONS, **ELEMENTWISE}
CONSTANTS = {"pi": math.pi, "e": math.e}
STATE_NAMES = ("x", "state")
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
    """An observable expression that is not in the language (a one-line message)."""


class Constant:
    """A number known when parsing: arithmetic on constants alone is folded at once."""

    def __init__(self, value: float):
        self.value = value

    def __call__(self, x):
        return self.value


class _Compiler:
    """Syntax nodes -> functions of the state vector, with the system's names; messages
    quote the user's own text (``source``)."""

    def __init__(self, names: dict[str, int], source: str):
        self.names = names
        self.source = source

    def text(self, node) -> str:
        """``node`` as the user wrote it."""
        return ast.get_source_segment(self.source, node) or ast.unparse(node)

    def number(self, value, node) -> Constant:
        """A literal or folded constant, refused when it is not a finite number."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExpressionError(f"not allowed in an observable: {self.text(node)!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ExpressionError(
                f"{self.text(node)!r} is not a finite number (it overflows float64, about 1.8e308)"
            )
        small_int = isinstance(value, int) and abs(value) <= 2**31
        return Constant(int(value) if small_int else number)

    def known(self) -> str:
        state = [name for name in STATE_NAMES if name not in self.names]
        return ", ".join([*self.names, *state])

    def compile(self, node):
        if isinstance(node, ast.Expression):
            return self.compile(node.body)
        if isinstance(node, ast.Constant):
            return self.number(node.value, node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            return self.binary(node)
        if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            op, operand = UNARY[type(node.op)], self.compile(node.operand)
            if isinstance(operand, Constant):
                return self.number(op(operand.value), node)
            return lambda x: op(operand(x))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        raise ExpressionError(f"not allowed in an observable: {self.text(node)!r}")

    def name(self, node: ast.Name):
        if node.id in self.names:
            index = self.names[node.id]
            return lambda x: x[index]
        if node.id in STATE_NAMES:
            return lambda x: x
        if node.id in CONSTANTS:
            return Constant(CONSTANTS[node.id])
        raise ExpressionError(
            f"unknown name {node.id!r}; use {self.known()} or a function ({', '.join(FUNCTIONS)})"
        )

    def binary(self, node: ast.BinOp):
        op = BINARY[type(node.op)]
        left, right = self.compile(node.left), self.compile(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, Constant):
            exponent = right.value
            if abs(exponent) > MAX_EXPONENT:
                raise ExpressionError(
                    f"the exponent in {self.text(node)!r} is too large: |exponent| <= "
                    f"{MAX_EXPONENT} (a larger power only overflows to inf or 0)"
                )
            if float(exponent).is_integer():
                right = Constant(int(exponent))  # an integer power: exact, any sign of base
        if isinstance(left, Constant) and isinstance(right, Constant):
            try:
                value = op(float(left.value), right.value)
            except (OverflowError, ZeroDivisionError, ValueError) as exc:
                reason = {
                    OverflowError: "it overflows float64",
                    ZeroDivisionError: "a division by zero",
                }
                raise ExpressionError(
                    f"{self.text(node)!r} is not a finite number "
                    f"({reason.get(type(exc), first_line(exc))})"
                ) from None
            if isinstance(value, complex):
                raise ExpressionError(f"{self.text(node)!r} is not a real number")
            return self.number(value, node)
        text = self.text(node)

        def apply(x):
            a, b = left(x), right(x)
            shapes = (np.shape(a), np.shape(b))
            try:
                np.broadcast_shapes(*shapes)
            except ValueError:
                raise ExpressionError(
                    f"{text!r} combines arrays of lengths {shapes[0]} and {shapes[1]}: "
                    "slice them to the same length"
                ) from None
            return op(a, b)

        return apply

    def call(self, node: ast.Call):
        name = node.func.id  # type: ignore[attr-defined]
        if name not in FUNCTIONS:
            raise ExpressionError(
                f"unknown function {name!r} in {self.text(node)!r}; use one of "
                + ", ".join(FUNCTIONS)
            )
        if len(node.args) != 1 or node.keywords:
            raise ExpressionError(f"{name}() takes one argument: {self.text(node)!r}")
        function, argument = FUNCTIONS[name], self.compile(node.args[0])
        if name not in REDUCTIONS:
            return lambda x: function(argument(x))
        text, names = self.text(node), self.shadowed(node.args[0])

        def reduce(x):
            value = argument(x)
            if np.ndim(value) == 0:
                raise ExpressionError(
                    f"{text!r} reduces a single number, which does nothing"
                    + _state_hint(names, np.shape(x)[0])
                )
            if np.size(value) == 0:
                raise ExpressionError(f"{text!r} reduces an empty slice")
            return function(value)

        return reduce

    def integer(self, node) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self.integer(node.operand)
        raise ExpressionError(f"indices must be integers, got {self.text(node)!r}")

    def index(self, node):
        if isinstance(node, ast.Slice):
            step = None if node.step is None else self.integer(node.step)
            if step == 0:
                raise ExpressionError(f"slice step cannot be zero: {self.text(node)!r}")
            return slice(self.bound(node.lower), self.bound(node.upper), step)
        return self.integer(node)

    def bound(self, node):
        return None if node is None else self.integer(node)

    def shadowed(self, node) -> list[str]:
        """The state's names used in ``node`` that this system gives to a component."""
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        return sorted(used & set(self.names) & set(STATE_NAMES))

    def subscript(self, node: ast.Subscript):
        target = self.compile(node.value)
        index = self.index(node.slice)
        text, names = self.text(node), self.shadowed(node.value)

        def take(x):
            value = target(x)
            if np.ndim(value) == 0:
                raise ExpressionError(
                    f"{text!r} indexes a single number" + _state_hint(names, np.shape(x)[0])
                )
            length = np.shape(value)[0]
            if isinstance(index, int) and not -length <= index < length:
                raise ExpressionError(
                    f"{text!r}: index {index} is out of range for length {length} "
                    f"(the state has dimension {np.shape(x)[0]}); use 0..{length - 1} "
                    f"or -{length}..-1"
                )
            if isinstance(index, slice) and len(range(length)[index]) == 0:
                raise ExpressionError(f"{text!r} is empty (length {length})")
            return value[index]

        return take


def _state_hint(shadowed: list[str], dim: int) -> str:
    """The naming rule, where a component name shadows the state vector's."""
    if not shadowed:
        return ""
    return (
        f": on this system {shadowed[0]!r} is a component (a number); the whole state, of "
        f"dimension {dim}, is 'state' (e.g. mean(state**2), state[0])"
    )


def _check_size(tree: ast.AST) -> None:
    """Bound the number of nodes and the nesting depth (without recursion)."""
    nodes, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ExpressionError(
                f"observable too large: more than {MAX_NODES} terms; write a shorter one"
            )
        if depth > MAX_DEPTH:
            raise ExpressionError(
                f"observable nested too deeply: more than {MAX_DEPTH} levels; simplify it"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def parse_observable(text: str, component_names=()):
    """``phi(x) -> scalar`` for ``text``; ``component_names`` name the state's entries.

    Raises :class:`ExpressionError` (one line) when parsing, or when ``phi`` is first
    evaluated on a state (shape mistakes, indices past the dimension)."""
    if not isinstance(text, str):
        raise ExpressionError(f"an observable is text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ExpressionError("the observable is empty: e.g. 'mean(x**2)'")
    if len(stripped) > MAX_LENGTH:
        raise ExpressionError(
            f"observable too long: {len(stripped)} characters, at most {MAX_LENGTH}"
        )
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal": the error says it
            warnings.simplefilter("ignore")
            tree = ast.parse(stripped, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse observable {stripped!r}: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError):
        raise ExpressionError(f"cannot parse observable {stripped!r}") from None
    _check_size(tree)
    names = {name: i for i, name in enumerate(component_names)}
    function = _Compiler(names, stripped).compile(tree)

    def observable(x):
        try:
            value = jnp.asarray(function(x), dtype=jnp.float64)
        except ExpressionError:
            raise
        except (TypeError, ValueError, IndexError, ArithmeticError) as exc:
            raise ExpressionError(
                f"observable {stripped!r} cannot be evaluated: {first_line(exc)}"
            ) from None
        if value.shape != ():
            raise ExpressionError(
                f"observable {stripped!r} must be a scalar, got shape "
                f"{value.shape}: reduce it, e.g. mean(...)"
            )
        return value

    observable.__name__ = stripped  # how error messages name the statistic
    return observable
