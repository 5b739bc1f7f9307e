"""Checkpoints: one file per run, in one format, written atomically and checksummed.

Every resumable run keeps one file in its checkpoint directory: ``fit`` writes
``DIR/checkpoint.eqx``, ``lyapunov_spectrum``, ``Shadowing`` and ``FastAdjointResponse``
write ``DIR/run.ckpt`` (:mod:`chaosgrad._runstate`). Both are::

    MAGIC     16 bytes, b"chaosgrad-ckpt\\n" and the format version (one byte: 2)
    n         8 bytes, unsigned little-endian: length of the header
    header    n bytes of UTF-8 JSON: {"version": 2, "kind": what wrote it, "fingerprint":
              the settings it was made with (chaosgrad._fingerprint), "meta": the run's own
              JSON (fit: iteration, status, history; a run: its arrays' names, dtypes and
              shapes), "parts": [[name, length in bytes], ...]}
    parts     the parts, one after the other: ``eqx.tree_serialise_leaves`` bytes of a
              pytree each (fit: "values" and "opt_state"; a run: "state", a dict of arrays)
    sha256    32 bytes: the digest of everything before it

It is written to a temporary file in the same directory, flushed and ``fsync``-ed, then
``os.replace``-d over the final name (and the directory is ``fsync``-ed): a reader sees the
old file or the new one, never a mixture. A truncated, modified or foreign file fails the
checks and is refused, never loaded: ``checkpoint DIR is corrupt: ...`` (a ValueError,
:class:`CorruptCheckpoint`).

Older files on disk:

* fit's format version 1 (the same layout; its header holds iteration, status, history,
  fingerprint and the two payload lengths) is read. Its fingerprint has no ``system``,
  ``parameter``, ``observable``, ``loss`` nor ``x0``: those are not compared.
* fit's two-file format (``state.eqx`` and ``history.json`` side by side) is read, with
  nothing to compare.
* the run file of chaosgrad before version 3 (``b"chaosgrad-run\\n\\x00\\x01"``, arrays in
  ``numpy.savez``) is refused with the fix: delete it (the run starts afresh) or finish the
  run with the earlier chaosgrad. Its fingerprint described functions by their bytecode,
  which can never match a fingerprint of what they compute.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import _fingerprint
from ._fingerprint import first_difference, refusal

FILENAME = "checkpoint.eqx"
OLD_STATE, OLD_HISTORY = "state.eqx", "history.json"
VERSION = 2
_PREFIX = b"chaosgrad-ckpt\n"
MAGIC = _PREFIX + bytes([VERSION])
OLD_RUN_MAGIC = b"chaosgrad-run\n\x00\x01"
_LENGTH = struct.Struct("<Q")
_DIGEST = 32  # sha256
_SMALLEST = len(MAGIC) + _LENGTH.size + _DIGEST

__all__ = [  # what fit uses; the comparison rules are chaosgrad._fingerprint's
    "CorruptCheckpoint",
    "Stored",
    "deserialise",
    "fingerprint",
    "first_difference",
    "optimizer_probe",
    "read",
    "refusal",
    "same_probe",
    "serialise",
    "write",
]


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted (truncated, modified or not a checkpoint)."""


class Contents(NamedTuple):
    """A checkpoint file as read: what wrote it, its fingerprint, its JSON and its parts
    (serialised leaves, not yet deserialised). ``version``: the format version."""

    kind: str
    fingerprint: dict
    meta: dict
    parts: dict[str, bytes]
    version: int


# --------------------------------------------------------------------------- serialising


def serialise(tree) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def deserialise(data: bytes, like):
    return eqx.tree_deserialise_leaves(io.BytesIO(data), like)


def pack_arrays(arrays: dict[str, Any]) -> tuple[bytes, list]:
    """(the serialised dict of numpy arrays, its layout [[name, dtype, shape], ...])."""
    host = {name: np.asarray(value) for name, value in arrays.items()}
    layout = [[name, str(array.dtype), list(array.shape)] for name, array in sorted(host.items())]
    return serialise(host), layout


def unpack_arrays(data: bytes, layout: list) -> dict[str, np.ndarray]:
    """The dict of numpy arrays :func:`pack_arrays` serialised with ``layout``."""
    like = {
        str(name): np.broadcast_to(np.zeros((), np.dtype(dtype)), tuple(shape))
        for name, dtype, shape in layout
    }
    return deserialise(data, like)


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


def write_file(path: Path, kind: str, fingerprint: dict, meta: dict, parts: dict[str, bytes]):
    """Write one checkpoint file (module doc) atomically; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "version": VERSION,
        "kind": kind,
        "fingerprint": fingerprint,
        "meta": meta,
        "parts": [[name, len(data)] for name, data in parts.items()],
    }
    header_bytes = json.dumps(header).encode()
    body = b"".join([MAGIC, _LENGTH.pack(len(header_bytes)), header_bytes, *parts.values()])
    return write_atomically(path, body)


def _corrupt(directory: Path, reason: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"checkpoint {directory} is corrupt: {reason}")


def _older_run(directory: Path, name: str) -> ValueError:
    return ValueError(
        f"checkpoint {directory} holds {name} in the format of chaosgrad before version 3, "
        f"which this version cannot continue: delete {Path(directory) / name} to start the "
        "run afresh, or finish it with the earlier chaosgrad"
    )


def read_file(path: Path) -> Contents:
    """The checkpoint file at ``path`` (module doc), checked. Raises
    :class:`CorruptCheckpoint` ("checkpoint DIR is corrupt: ...") when it cannot be
    trusted, a ValueError naming the fix for an older run file or a newer format."""
    directory, name, data = path.parent, path.name, path.read_bytes()
    if data.startswith(OLD_RUN_MAGIC):
        raise _older_run(directory, name)
    if len(data) < _SMALLEST:
        raise _corrupt(directory, f"{name} has {len(data)} bytes, fewer than any checkpoint")
    if data[: len(_PREFIX)] != _PREFIX:
        raise _corrupt(directory, f"{name} is not a chaosgrad checkpoint (wrong leading bytes)")
    version = data[len(_PREFIX)]
    if version > VERSION:
        raise ValueError(
            f"checkpoint {directory}: {name} has format version {version}, newer than this "
            f"chaosgrad reads ({VERSION}): resume it with the chaosgrad that wrote it"
        )
    if version < 1:
        raise _corrupt(directory, f"{name} has format version {version}, which never existed")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise _corrupt(directory, f"{name} fails its sha256 check (truncated or modified)")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(body, len(MAGIC))
    try:
        header = json.loads(body[start : start + length].decode())
        if version == 1:  # fit's first single file: two payloads, fit's fields at the top
            names = ["values", "opt_state"]
            sizes = [int(size) for size in header["payloads"]]
            kind, fingerprint = "fit", dict(header["fingerprint"])
            meta = {key: header[key] for key in ("iteration", "status", "history")}
        else:
            names = [str(part) for part, _ in header["parts"]]
            sizes = [int(size) for _, size in header["parts"]]
            kind, meta = header["kind"], dict(header["meta"])
            fingerprint = dict(header["fingerprint"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(directory, f"{name} has an unreadable header ({exc})") from None
    offset = start + length
    if offset + sum(sizes) != len(body):
        raise _corrupt(directory, f"{name}'s part lengths do not match its size")
    parts = {}
    for part, size in zip(names, sizes, strict=True):
        parts[part] = body[offset : offset + size]
        offset += size
    return Contents(str(kind), fingerprint, meta, parts, version)


# --------------------------------------------------------------------------- fit's file


class Stored(NamedTuple):
    """fit's checkpoint as read: metadata and the serialised leaves (not yet deserialised).

    ``fingerprint`` is None for the two-file format, which had none; ``older``: a file
    from before the system, its parameters, the observable, the loss and x0 were recorded
    (format version 1), which are then not compared.
    """

    iteration: int
    status: str
    history: dict
    fingerprint: dict | None
    values: bytes
    opt_state: bytes | None  # None: the two-file format, values holds (values, opt_state)
    older: bool = False


def write(directory: Path, values, opt_state, *, iteration, status, history, fingerprint):
    """Write fit's ``DIR/checkpoint.eqx`` (module doc) atomically; returns its path."""
    meta = {"iteration": iteration, "status": status, "history": history}
    parts = {"values": serialise(values), "opt_state": serialise(opt_state)}
    return write_file(Path(directory) / FILENAME, "fit", fingerprint, meta, parts)


def read(directory: Path) -> Stored:
    """fit's checkpoint in ``directory``: the single file, else the two-file format.

    Raises FileNotFoundError when there is none and :class:`CorruptCheckpoint` (a
    ValueError "checkpoint DIR is corrupt: ...") when it cannot be trusted.
    """
    directory = Path(directory)
    path = directory / FILENAME
    if path.exists():
        contents = read_file(path)
        if contents.kind != "fit" or set(contents.parts) != {"values", "opt_state"}:
            raise _corrupt(directory, f"{FILENAME} was written by {contents.kind}, not fit")
        meta = contents.meta
        try:
            iteration, status, history = (
                int(meta["iteration"]),
                str(meta["status"]),
                meta["history"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _corrupt(directory, f"{FILENAME} has an unreadable header ({exc})") from None
        return Stored(
            iteration,
            status,
            history,
            contents.fingerprint,
            contents.parts["values"],
            contents.parts["opt_state"],
            older=contents.version < VERSION,
        )
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


def fingerprint(system, values, statistic, estimator, opt_state, key, *, loss, x0) -> dict:
    """fit's fingerprint (:mod:`chaosgrad._fingerprint`): key, wrt, statistic,
    observable, loss, system, parameter (the values of all but the trained parameters,
    which the checkpoint holds), x0, estimator and optimizer (the structure of its state;
    the writer adds its probe at the values it saves, :func:`optimizer_probe`)."""
    structure, outline = describe_optimizer_state(opt_state)
    functions = _fingerprint.system_and_functions(system, statistic, loss, x0, key, values)
    return {
        "key": _fingerprint.describe_key(key),
        "wrt": _fingerprint.describe_wrt(system, values),
        "statistic": _fingerprint.describe_statistic(statistic),
        "observable": functions["observable"],
        "loss": functions["loss"],
        "system": functions["system"],
        "parameter": functions["parameter"],
        "x0": _fingerprint.describe(x0),
        "estimator": _fingerprint.describe(estimator),
        "optimizer": structure,
        "optimizer_outline": outline,
    }


# --------------------------------------------------------------------------- fit's optimizer


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
    text = _fingerprint.without_addresses(str(treedef)) + "|" + ",".join(shapes)
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
