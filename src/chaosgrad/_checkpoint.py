"""fit()'s checkpoint file: one file, written atomically, checksummed, with a fingerprint.

``DIR/checkpoint.eqx`` holds everything a resume needs, so that no crash can leave a
parameter file and a history file that disagree:

    MAGIC                    16 bytes, b"chaosgrad-ckpt\\n\\x01" (the last byte: format version)
    n                        8 bytes, unsigned little-endian: length of the header
    header                   n bytes of UTF-8 JSON: iteration, status, history, fingerprint,
                             and the byte length of each payload
    payloads                 Equinox-serialised leaves (``eqx.tree_serialise_leaves``): the
                             parameter values, then the optimiser state
    sha256                   32 bytes: the digest of everything before it

It is written to a temporary file in the same directory, flushed and ``fsync``-ed, then
``os.replace``-d over the final name (and the directory is ``fsync``-ed): a reader sees the
old checkpoint or the new one, never a mixture. A truncated or modified file fails the
digest and is reported as corrupt, never loaded.

The fingerprint (:func:`fingerprint`) records the settings that decide what a resumed run
computes, as strings that are stable across processes: the key's data, the estimator (type
and fields), the statistic (type and horizon; the observable is a function and is not
compared), the ``wrt`` selection (the system paths, shapes and dtypes of the selected
parameters), and the optimiser (the structure of ``optimizer.init(values)``, plus a probe:
the first two updates it makes for a fixed pseudo-gradient at the saved parameters, which
sees a changed learning rate where the structure cannot; stored for a failed run only).

The older format (``state.eqx`` and ``history.json`` side by side) is still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

FILENAME = "checkpoint.eqx"
OLD_STATE, OLD_HISTORY = "state.eqx", "history.json"
VERSION = 1
MAGIC = b"chaosgrad-ckpt\n" + bytes([VERSION])
_LENGTH = struct.Struct("<Q")
_DIGEST = 32  # sha256
_SMALLEST = len(MAGIC) + _LENGTH.size + _DIGEST


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted (truncated, modified or not a checkpoint)."""


class Stored(NamedTuple):
    """A checkpoint as read: metadata and the serialised leaves (not yet deserialised).

    ``fingerprint`` is None for the older two-file format, which had none.
    """

    iteration: int
    status: str
    history: dict
    fingerprint: dict | None
    values: bytes
    opt_state: bytes | None  # None: the older format, values holds (values, opt_state)


# --------------------------------------------------------------------------- serialising


def serialise(tree) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def deserialise(data: bytes, like):
    return eqx.tree_deserialise_leaves(io.BytesIO(data), like)


# --------------------------------------------------------------------------- the file


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write(directory: Path, meta: dict, values: bytes, opt_state: bytes) -> Path:
    """Write ``DIR/checkpoint.eqx`` atomically (module doc); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    header = dict(meta, version=VERSION, payloads=[len(values), len(opt_state)])
    header_bytes = json.dumps(header).encode()
    body = b"".join([MAGIC, _LENGTH.pack(len(header_bytes)), header_bytes, values, opt_state])
    return write_atomically(directory / FILENAME, body)


def write_atomically(final: Path, body: bytes) -> Path:
    """``body`` and its sha256 to ``final``: a temporary file in the same directory,
    flushed and fsync-ed, renamed over ``final``, the directory fsync-ed (a reader sees
    the old file or the new one, never a mixture)."""
    handle, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(body)
            file.write(hashlib.sha256(body).digest())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(final.parent)
    return final


def _corrupt(directory: Path, reason: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"checkpoint {directory} is corrupt: {reason}")


def _parse(directory: Path, data: bytes) -> Stored:
    if len(data) < _SMALLEST:
        raise _corrupt(directory, f"{FILENAME} has {len(data)} bytes, fewer than any checkpoint")
    if data[: len(MAGIC) - 1] != MAGIC[:-1]:
        raise _corrupt(directory, f"{FILENAME} is not a chaosgrad checkpoint (wrong leading bytes)")
    if data[len(MAGIC) - 1] != VERSION:
        raise _corrupt(
            directory, f"{FILENAME} has format version {data[len(MAGIC) - 1]}, expected {VERSION}"
        )
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise _corrupt(directory, f"{FILENAME} fails its sha256 check (truncated or modified)")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(body, len(MAGIC))
    try:
        header = json.loads(body[start : start + length].decode())
        sizes = [int(size) for size in header["payloads"]]
        iteration, status, history = int(header["iteration"]), header["status"], header["history"]
        fingerprint = header["fingerprint"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(directory, f"{FILENAME} has an unreadable header ({exc})") from None
    offset = start + length
    if len(sizes) != 2 or offset + sum(sizes) != len(body):
        raise _corrupt(directory, f"{FILENAME}'s payload lengths do not match its size")
    values = body[offset : offset + sizes[0]]
    opt_state = body[offset + sizes[0] :]
    return Stored(iteration, str(status), history, fingerprint, values, opt_state)


def read(directory: Path) -> Stored:
    """The checkpoint in ``directory`` (the single file, else the older two-file format).

    Raises FileNotFoundError when there is none and :class:`CorruptCheckpoint` (a
    ValueError "checkpoint DIR is corrupt: ...") when it cannot be trusted.
    """
    path = directory / FILENAME
    if path.exists():
        return _parse(directory, path.read_bytes())
    state, history = directory / OLD_STATE, directory / OLD_HISTORY
    if state.exists() and history.exists():
        try:
            meta = json.loads(history.read_text())
            return Stored(
                int(meta["iteration"]),
                str(meta["status"]),
                meta["history"],
                None,
                state.read_bytes(),
                None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _corrupt(directory, f"{OLD_HISTORY} is unreadable ({exc})") from None
    if state.exists() or history.exists():
        present, missing = (OLD_STATE, OLD_HISTORY) if state.exists() else (OLD_HISTORY, OLD_STATE)
        raise _corrupt(directory, f"{present} without {missing} (an interrupted save)")
    raise FileNotFoundError(
        f"no checkpoint in {directory} (expected {FILENAME}, or the older {OLD_STATE} "
        f"and {OLD_HISTORY})"
    )


# --------------------------------------------------------------------------- fingerprints

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


def _stable(text: str) -> str:
    """``repr`` text without memory addresses (which differ from process to process)."""
    return _ADDRESS.sub("", text)


def describe(value: Any) -> str:
    """A description of a setting that is equal in two processes when the setting is."""
    if isinstance(value, (jax.Array, np.ndarray)):
        array = np.asarray(value)
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
        return f"array{list(array.shape)}:{array.dtype}:{digest}"
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
    function = getattr(value, "function", value)  # a StaticFunction holds one
    if callable(function) and hasattr(function, "__qualname__"):
        return f"{getattr(function, '__module__', '?')}.{function.__qualname__}"
    return _stable(repr(value))


def describe_statistic(statistic) -> str:
    """Type and horizon settings; the observable is a function, not compared."""
    fields = [
        f"{field.name}={describe(getattr(statistic, field.name, None))}"
        for field in dataclasses.fields(statistic)
        if field.name != "observable"
    ]
    return f"{type(statistic).__name__}({', '.join(fields)})"


def describe_key(key) -> str:
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(key))
    else:  # a raw uint32 key (jax.random.PRNGKey)
        data = np.asarray(key)
    return f"{data.dtype}:{np.ascontiguousarray(data).tobytes().hex()}"


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


def _outline(state) -> str:
    """Optax state node names, e.g. ``(EmptyState(), ScaleByAdamState(count, mu, nu))``."""
    fields = getattr(state, "_fields", None)
    if isinstance(state, tuple) and fields is not None:
        return f"{type(state).__name__}({', '.join(fields)})"
    if isinstance(state, (tuple, list)):
        return "(" + ", ".join(_outline(item) for item in state) + ")"
    if isinstance(state, dict):
        return "{" + ", ".join(f"{k}: {_outline(v)}" for k, v in state.items()) + "}"
    return type(state).__name__


def describe_optimizer_state(opt_state) -> tuple[str, str]:
    """(a digest of the state's structure, shapes and dtypes; a short outline for messages)."""
    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    shapes = [f"{jnp.asarray(leaf).dtype}{list(np.shape(leaf))}" for leaf in leaves]
    text = _stable(str(treedef)) + "|" + ",".join(shapes)
    return hashlib.sha256(text.encode()).hexdigest(), _outline(opt_state)


def optimizer_probe(optimizer, values) -> list[float] | None:
    """Projections of the optimiser's first two updates for a fixed pseudo-gradient.

    Equal optimisers give equal numbers; a changed learning rate, clipping threshold or
    momentum changes them. Changes that act only later (a schedule's later values) are not
    seen. None when the probe cannot run.
    """
    try:
        flat, unravel = ravel_pytree(values)
        index = jnp.arange(flat.size, dtype=flat.dtype)
        weights = jnp.cos(index)
        state = optimizer.init(values)
        numbers = []
        for scale in (1.0, -0.3):
            gradient = unravel(scale * (1.0 + 0.5 * jnp.sin(index + 1.0)))
            updates, state = optimizer.update(gradient, state, values)
            step = ravel_pytree(updates)[0]
            numbers += [float(jnp.sum(step)), float(jnp.sum(step * weights))]
            numbers.append(float(jnp.sqrt(jnp.sum(step**2))))
        return numbers
    except Exception:  # noqa: BLE001 - an unusual optimiser: no probe, not an error
        return None


def same_probe(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and bool(np.allclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True))


def fingerprint(system, values, statistic, estimator, opt_state, key) -> dict:
    """The settings a resumed run must share with the run that wrote the checkpoint.

    The optimiser probe is added by the writer, computed at the values the checkpoint
    holds (see ``optimizer_probe``).
    """
    structure, outline = describe_optimizer_state(opt_state)
    return {
        "key": describe_key(key),
        "estimator": describe(estimator),
        "statistic": describe_statistic(statistic),
        "wrt": describe_wrt(system, values),
        "optimizer": structure,
        "optimizer_outline": outline,
    }
