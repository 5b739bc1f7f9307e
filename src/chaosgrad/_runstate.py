"""Resumable long runs: a run's progress in one atomic, checksummed file.

``lyapunov_spectrum(..., checkpoint=DIR)`` and ``Shadowing(..., checkpoint=DIR)`` (and
``chaosgrad lyapunov|grad ... --checkpoint DIR``) save, after every block of work, the
whole state of the run: the step reached, the orbit state(s), the tangent bases and the
sums so far. A run killed at any moment (SIGKILL included) and started again with the same
settings continues from the last saved block and returns exactly what an uninterrupted run
returns, because each block is a deterministic function of the saved state.

``DIR/run.ckpt``:

    MAGIC       16 bytes, b"chaosgrad-run\\n\\x00\\x01" (the last byte: format version)
    n           8 bytes, unsigned little-endian: length of the header
    header      n bytes of UTF-8 JSON: the run's kind, its fingerprint and the array names
    arrays      ``numpy.savez`` bytes of the named arrays
    sha256      32 bytes: the digest of everything before it

written to a temporary file, fsync-ed and renamed over the old one (a reader sees the old
file or the new one). The fingerprint lists the settings that decide the result (system
values and structure, key, steps, ...); a checkpoint made with other settings is refused
with the first differing setting named, never silently reused. A corrupt file is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ._checkpoint import _stable, describe, describe_key, write_atomically

FILENAME = "run.ckpt"
VERSION = 1
MAGIC = b"chaosgrad-run\n\x00" + bytes([VERSION])
_LENGTH = struct.Struct("<Q")
_DIGEST = 32


def describe_system(system) -> str:
    """The system's type, field structure and every array's values (as a digest); a
    function inside (a ``Map`` of a lambda) by its name, not its address in memory."""
    leaves, treedef = jax.tree_util.tree_flatten(system)
    return f"{type(system).__name__}:{_stable(str(treedef))}:{describe(leaves)}"


def describe_function(function, depth: int = 0) -> str:
    """A function by its name and a digest of its code, constants and closure, so that two
    lambdas of one name (or two command-line expressions) with other bodies differ."""
    code = function.__code__
    pieces = [getattr(function, "__name__", ""), code.co_code.hex(), repr(code.co_names)]
    for constant in code.co_consts:
        nested = getattr(constant, "co_code", None)
        pieces.append(nested.hex() if nested is not None else _stable(repr(constant)))
    if depth < 3:
        for cell in function.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            pieces.append(describe_setting(contents, depth + 1))
    digest = hashlib.sha256("\x00".join(pieces).encode()).hexdigest()[:16]
    return f"{getattr(function, '__module__', '?')}.{function.__qualname__}:{digest}"


def describe_setting(value, depth: int = 0) -> str:
    """``describe`` that looks inside functions (:func:`describe_function`), also where
    they sit in a dataclass (a statistic's observable) or a ``StaticFunction``."""
    inner = getattr(value, "function", None)
    if inner is not None and hasattr(inner, "__code__"):
        value = inner
    if hasattr(value, "__code__"):
        return describe_function(value, depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(
            f"{field.name}={describe_setting(getattr(value, field.name, None), depth)}"
            for field in dataclasses.fields(value)
        )
        return f"{type(value).__name__}({fields})"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(describe_setting(item, depth) for item in value) + ")"
    return describe(value)


def fingerprint(kind: str, system, key, **settings) -> dict[str, str]:
    """Settings that decide a run's result, as strings equal across processes."""
    described = {"kind": kind, "system": describe_system(system), "key": describe_key(key)}
    described.update({name: describe_setting(value) for name, value in settings.items()})
    return described


def check_checkpoint(directory) -> None:
    """A checkpoint setting is None or a directory path (str or os.PathLike)."""
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a directory path or None, got {directory!r}")
    if isinstance(directory, str) and not directory.strip():
        raise ValueError("checkpoint must be a directory path, got an empty string")


class RunCheckpoint:
    """``DIR/run.ckpt`` of one run: :meth:`load` what a killed run saved, :meth:`save` progress.

    Only process 0 writes when several processes run one computation (they hold the same
    replicated state); every process reads.
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: dict[str, str]):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"checkpoint {self.directory} exists and is not a directory")

    @property
    def path(self) -> Path:
        return self.directory / FILENAME

    def load(self) -> dict[str, np.ndarray] | None:
        """The saved arrays, or None when there is no checkpoint yet.

        Raises ValueError when the file is corrupt or was made with other settings.
        """
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        if len(data) < len(MAGIC) + _LENGTH.size + _DIGEST or data[: len(MAGIC)] != MAGIC:
            raise ValueError(
                f"checkpoint {self.directory} is corrupt: {FILENAME} is not a run file"
            )
        body, digest = data[:-_DIGEST], data[-_DIGEST:]
        if hashlib.sha256(body).digest() != digest:
            raise ValueError(
                f"checkpoint {self.directory} is corrupt: {FILENAME} fails its sha256 check"
            )
        (length,) = _LENGTH.unpack_from(body, len(MAGIC))
        start = len(MAGIC) + _LENGTH.size
        header = json.loads(body[start : start + length].decode())
        saved = header["fingerprint"]
        for name in sorted(set(saved) | set(self.fingerprint)):
            if saved.get(name) != self.fingerprint.get(name):
                raise ValueError(
                    f"checkpoint {self.directory} was made by another run: its {name} "
                    f"differs ({saved.get(name)!r} there, {self.fingerprint.get(name)!r} "
                    "now); use another directory or delete it"
                )
        with np.load(io.BytesIO(body[start + length :])) as arrays:
            return {name: arrays[name] for name in header["arrays"]}

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the checkpoint by ``arrays`` atomically (process 0 only)."""
        if jax.process_index() != 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        contents: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}
        np.savez(buffer, **contents)
        header = json.dumps({"fingerprint": self.fingerprint, "arrays": sorted(arrays)}).encode()
        body = b"".join([MAGIC, _LENGTH.pack(len(header)), header, buffer.getvalue()])
        write_atomically(self.path, body)
