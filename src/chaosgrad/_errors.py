"""Input validation with messages that name the argument and the fix (design.md, Errors).

One helper per kind of bad input, used everywhere that kind can arrive: counts
(:func:`check_positive_int`, :func:`check_samples`), real numbers (:func:`check_real`),
PRNG keys (:func:`check_key`), states (:func:`as_state`), dtypes (:func:`check_float64`) and
functions JAX must trace (:func:`traceable`).
"""

from __future__ import annotations

import contextlib
import math
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

_X64_HINT = "chaos computations need float64: build arrays with dtype=jnp.float64"

X64_OFF = (
    "float64 is off (jax_enable_x64) and chaos computations need it: call "
    'jax.config.update("jax_enable_x64", True) at the start of the program, before '
    "building systems (or set JAX_ENABLE_X64=1)"
)
"""The refusal when JAX computes in float32 (chaosgrad leaves JAX's configuration alone)."""


def check_x64() -> None:
    """Raise TypeError, in one line with the fix, when float64 is off."""
    if not jax.config.read("jax_enable_x64"):
        raise TypeError(X64_OFF)


TRACING_ERRORS = (
    jax.errors.ConcretizationTypeError,  # includes TracerBoolConversionError (`if x > 0`)
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)
"""What JAX raises when a function asks for a concrete value while being traced."""

TRACEABLE_HINT = "use jnp operations, not float()/int()/if on values"


def is_traced(value) -> bool:
    """Whether ``value`` is abstract (inside ``jit``, ``vmap`` or ``grad``): not checkable."""
    return isinstance(value, Tracer)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (JAX's run to many lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


@contextlib.contextmanager
def traceable(what: str):
    """Turn JAX's concretization errors inside ``what`` into one TypeError with the fix."""
    try:
        yield
    except TRACING_ERRORS as exc:
        raise TypeError(
            f"{what} must be traceable by JAX: {TRACEABLE_HINT} ({first_line(exc)})"
        ) from None


def check_float64(tree, name: str) -> None:
    """Raise TypeError when float64 is off, or when any floating-point array in ``tree`` is
    not float64."""
    check_x64()
    for leaf in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array)):
        if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != jnp.float64:
            raise TypeError(f"{name} has dtype {leaf.dtype}; {_X64_HINT}")


def check_positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    """Raise ValueError unless ``value`` is an integer > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_at_least(value, name: str, minimum: int, why: str = "") -> int:
    """An integer >= ``minimum``; ``why`` (a clause) says what the bound is for."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        reason = f": {why}" if why else ""
        raise ValueError(f"{name} must be at least {minimum}{reason}; got {value}")
    return int(value)


SAMPLES_REASON = "the standard error comes from the spread of samples"


def check_samples(value, name: str = "samples") -> int:
    """At least two samples: every sampled estimator reports a standard error from them."""
    return check_at_least(value, name, 2, SAMPLES_REASON)


def check_real(value, name: str, *, positive: bool = False, nonnegative: bool = False):
    """A real number that is finite (and > 0 or >= 0 when asked); returns it as a float.

    Traced values (inside ``jax.jit`` or ``vmap``) cannot be inspected and pass unchecked.
    """
    if is_traced(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, jax.Array)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    shape = getattr(value, "shape", ())
    if shape != ():
        raise TypeError(f"{name} must be a single number, got shape {shape}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    if positive and not number > 0:
        raise ValueError(f"{name} must be positive, got {number}")
    if nonnegative and not number >= 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def check_finite_array(array, name: str) -> None:
    """Refuse NaN or inf in a concrete array (a parameter); traced arrays pass unchecked."""
    if is_traced(array):
        return
    values = np.asarray(array)
    if np.issubdtype(values.dtype, np.inexact) and not np.all(np.isfinite(values)):
        shown = (
            values.item()
            if values.size == 1
            else f"{int(np.sum(~np.isfinite(values)))} NaN/inf entries"
        )
        raise ValueError(f"{name} must be finite, got {shown}")


def check_key(key, name: str = "key") -> None:
    """Refuse anything but one JAX PRNG key (``jax.random.key(0)``, or a legacy
    ``jax.random.PRNGKey(0)``): an integer seed would fail deep inside ``jax.random``."""
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return
        raise ValueError(
            f"{name} must be one PRNG key, got an array of keys of shape {shape}: pass "
            "one key, e.g. jax.random.key(0)"
        )
    if dtype == jnp.uint32 and shape == (2,):  # jax.random.PRNGKey(seed)
        return
    given = f"{key!r}" if isinstance(key, (int, float, str)) else f"{type(key).__name__}"
    if dtype is not None:
        given += f" of dtype {dtype} and shape {shape}"
    raise TypeError(f"{name} must be a JAX PRNG key such as jax.random.key(0), got {given}")


def as_state(x0, name: str = "x0"):
    """A state as a float64 array: integers are converted (exactly), other dtypes refused."""
    if is_traced(x0):
        array = x0
    else:
        try:
            array = jnp.asarray(x0)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array of numbers, got {x0!r:.80} ({exc})") from None
    if jnp.issubdtype(array.dtype, jnp.integer):
        return array.astype(jnp.float64)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(
            f"{name} has dtype {array.dtype}: a state holds real numbers; pass e.g. "
            f"jnp.asarray({name}, dtype=jnp.float64)"
        )
    check_float64(array, name)
    return array


def first_nonfinite_step(path) -> int | None:
    """Index of the first row of ``path`` that holds NaN or inf, or None."""
    finite = np.asarray(jnp.all(jnp.isfinite(jnp.reshape(path, (path.shape[0], -1))), axis=1))
    if finite.all():
        return None
    return int(np.argmin(finite))
