"""Input validation with messages that name the argument and the fix (design.md, Errors)."""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

_X64_HINT = (
    "chaos computations need float64: build arrays with dtype=jnp.float64 "
    "(importing chaosgrad enables jax_enable_x64; do not disable it)"
)


def check_float64(tree, name: str) -> None:
    """Raise TypeError when any floating-point array in ``tree`` is not float64."""
    for leaf in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array)):
        if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != jnp.float64:
            raise TypeError(f"{name} has dtype {leaf.dtype}; {_X64_HINT}")
    if not jax.config.read("jax_enable_x64"):
        raise TypeError(f"jax_enable_x64 is off; {_X64_HINT}")


def check_positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    """Raise ValueError unless ``value`` is an integer > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def first_nonfinite_step(path) -> int | None:
    """Index of the first row of ``path`` that holds NaN or inf, or None."""
    finite = np.asarray(jnp.all(jnp.isfinite(jnp.reshape(path, (path.shape[0], -1))), axis=1))
    if finite.all():
        return None
    return int(np.argmin(finite))
