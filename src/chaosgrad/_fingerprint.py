"""What a checkpoint must share with the run that resumes it: one set of rules for every run.

A fingerprint is an ordered mapping from a setting's name to a description of it, a string
equal in two processes exactly when the setting is (for what it decides). Every resumable
run (``fit``, ``lyapunov_spectrum``, ``Shadowing``, ``FastAdjointResponse``) writes one into
its checkpoint (:mod:`chaosgrad._checkpoint`) and refuses to continue from a file whose
fingerprint differs, naming the first differing setting and the fix, in one line
(:func:`refusal`). The rules:

* ``run``: what wrote the file (``fit``, ``lyapunov_spectrum``, an estimator's name);
* ``system``: its type, its structure (tree layout and static fields, as a digest) and what
  its step computes and reads (the digest :func:`chaosgrad._system.bind` sets);
* ``parameter``: the values of the system's leaves (arrays by content; for ``fit``, the
  trained ones are left out: they come from the checkpoint);
* ``key``: the PRNG key's data;
* ``estimator``: its type and every field (but where it saves, ``checkpoint``);
* ``statistic``: its type and horizon settings; ``observable``: what the observable
  computes and reads (:func:`chaosgrad._functions.reads` of ``statistic.evaluate`` at the
  state's shape: its code, and every value it reads, by content);
* ``loss``: the same digest of the loss (``fit``), or of the cotangent a loss gives the
  estimator (``value_and_grad`` with a checkpointed estimator); ``None`` without one;
* ``wrt``: where the differentiated parameters live, with their shapes and dtypes;
* ``x0``: the start (None, or its values);
* per run, its own settings (``steps``, ``burn_in``, ... of a spectrum), and for ``fit`` the
  optimizer (:func:`chaosgrad._checkpoint.fingerprint`).

What a trace cannot see (a Python side effect, a value that never reaches the computation)
is not compared: use a new directory when such a thing changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._functions import StepFunction, reads
from ._system import bind

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")
SHOWN = 100
"""Characters of each description (or of its item that differs) a refusal shows."""


def without_addresses(text: str) -> str:
    """``repr`` text without memory addresses (which differ from process to process)."""
    return _ADDRESS.sub("", text)


def _digest(data: bytes | str, size: int = 16) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:size]


def describe(value: Any) -> str:
    """A description of a setting that is equal in two processes when the setting is:
    arrays by dtype, shape and a digest of their content, numbers and strings by ``repr``,
    containers and dataclasses (``eqx.Module``) item by item (a traced function,
    :class:`~chaosgrad._functions.TracedFunction`, by its program's digest and the arrays
    it reads), any other function by its module and name."""
    if isinstance(value, (jax.Array, np.ndarray)):
        array = np.asarray(value)
        content = _digest(np.ascontiguousarray(array).tobytes())
        return f"array{list(array.shape)}:{array.dtype}:{content}"
    if isinstance(value, (bool, int, float, str, type(None))):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(item) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(
            f"{field.name}={describe(getattr(value, field.name, None))}"
            for field in dataclasses.fields(value)
        )
        return f"{type(value).__name__}({fields})"
    if isinstance(value, StepFunction):  # a system's function, named as given
        value = value.function
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return without_addresses(repr(value))


def describe_settings(**settings) -> dict[str, str]:
    """``describe`` of each setting, by name, in the order given."""
    return {name: describe(value) for name, value in settings.items()}


def describe_key(key) -> str:
    """The key's data (a typed key or a raw uint32 ``jax.random.PRNGKey``)."""
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(key))
    else:
        data = np.asarray(key)
    return f"{data.dtype}:{np.ascontiguousarray(data).tobytes().hex()}"


def _leaf(path, leaf) -> str:
    """``.name=value`` for a float64 scalar (shown as it is), else the leaf described."""
    name = jax.tree_util.keystr(path) or "<system>"
    if isinstance(leaf, (jax.Array, np.ndarray)) and np.shape(leaf) == ():
        array = np.asarray(leaf)
        if array.dtype == np.float64:
            return f"{name}={array.item()!r}"
    return f"{name}={describe(leaf)}"


def describe_system(system, trained=None) -> dict[str, str]:
    """``system`` and ``parameter`` of a system bound by :func:`chaosgrad._system.bind`
    (module doc). ``trained``: the leaves a checkpoint restores (``fit``'s selected
    parameters), left out of ``parameter``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(system)
    skip = {id(leaf) for leaf in jax.tree_util.tree_leaves(trained)}
    step = system.reads[:16] if system.reads is not None else "unbound"
    structure = _digest(without_addresses(str(treedef)))
    values = [_leaf(path, leaf) for path, leaf in leaves if id(leaf) not in skip]
    return {
        "system": f"{type(system).__name__}, structure {structure}, step {step}",
        "parameter": ", ".join(values) or "none",
    }


def describe_wrt(system, values) -> str:
    """Where in the system each selected parameter lives, with its shape and dtype."""
    where = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(system)[0]:
        where.setdefault(id(leaf), jax.tree_util.keystr(path) or "<system>")
    entries = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(values)[0]:
        name = where.get(id(leaf), "selected" + jax.tree_util.keystr(path))
        entries.append(f"{name}:{jnp.asarray(leaf).dtype}{list(np.shape(leaf))}")
    size = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(values))
    return f"{', '.join(entries)} ({size} values)"


def describe_statistic(statistic) -> str:
    """The statistic's type and horizon settings (its observable is ``observable``)."""
    fields = [
        f"{field.name}={describe(getattr(statistic, field.name, None))}"
        for field in dataclasses.fields(statistic)
        if field.name != "observable"
    ]
    return f"{type(statistic).__name__}({', '.join(fields)})"


def describe_function(function: Callable, *args) -> tuple[str, Any]:
    """(``function <digest>``: what ``function(*args)`` computes and reads, its abstract
    output). ``args``: arrays or ``jax.ShapeDtypeStruct`` (traced), anything else static."""
    digest, out = reads(function, *args)
    return f"function {digest[:16]}", out


def describe_observable(statistic, system, dim: int) -> tuple[str, Any]:
    """(``observable``'s description, the statistic's abstract value): the observable
    traced at a float64 state of ``dim`` components, through ``statistic.evaluate`` (a
    parametric observable reads the system too; the system's arrays are traced, their
    values being ``parameter``)."""
    state = jax.ShapeDtypeStruct((dim,), jnp.float64)
    return describe_function(lambda x, s: statistic.evaluate(x, s), state, system.for_sample(0))


def system_and_functions(system, statistic, loss, x0, key, trained) -> dict[str, str]:
    """``system``, ``parameter``, ``observable`` and ``loss`` of a run not yet bound
    (``fit``): the system is bound at its state's shape first. A function that cannot be
    traced here is described as such; the run's first step refuses it with its own message."""
    dim = int(np.shape(x0)[-1]) if x0 is not None else None
    try:
        if dim is None:
            dim = int(jax.eval_shape(system.initial_state, key).shape[0])
        system = bind(system, jax.ShapeDtypeStruct((dim,), jnp.float64))
        observable, out = describe_observable(statistic, system, dim)
        loss_description = describe_function(loss, out)[0]
    except Exception as exc:  # noqa: BLE001 - refused with its own message by the first step
        untraced = f"not traceable ({type(exc).__name__})"
        return dict.fromkeys(("system", "parameter", "observable", "loss"), untraced)
    return {
        **describe_system(system, trained),
        "observable": observable,
        "loss": loss_description,
    }


# --------------------------------------------------------------------------- comparing


def first_difference(
    saved: Mapping[str, Any], current: Mapping[str, Any], names=None, older: bool = False
) -> str | None:
    """The first setting (of ``names``, default: ``current``'s, then those only ``saved``
    has) whose descriptions differ, or None. ``older``: a file written before a setting
    was recorded; settings it lacks are not compared."""
    order = (
        list(names) if names is not None else [*current, *(n for n in saved if n not in current)]
    )
    for name in order:
        if older and name not in saved:
            continue
        if saved.get(name) != current.get(name):
            return name
    return None


def _excerpts(there: str, now: str) -> tuple[str, str]:
    """What a refusal shows of two descriptions: of two lists of as many items (", "
    between them: parameters, an estimator's fields) the first item that differs, else
    both; each cut to ``SHOWN`` characters."""
    there, now = " ".join(str(there).split()), " ".join(str(now).split())
    items_there, items_now = there.split(", "), now.split(", ")
    if len(items_there) == len(items_now) > 1:
        pairs = zip(items_there, items_now, strict=True)
        there, now = next(((a, b) for a, b in pairs if a != b), (there, now))

    def cut(text: str) -> str:
        return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."

    return cut(there), cut(now)


def refusal(directory, setting: str, there, now, fix: str) -> ValueError:
    """The one-line refusal of a checkpoint written with another ``setting``."""
    shown_there, shown_now = _excerpts(there, now)
    return ValueError(
        f"cannot resume from checkpoint {directory}: it was written with a different "
        f"{setting} ({shown_there} there, {shown_now} now); {fix}"
    )
