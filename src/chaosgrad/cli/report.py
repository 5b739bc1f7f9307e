"""The HTML page that links a run's figures, and its JSON results (figures: ``chaosgrad.plot``)."""

from __future__ import annotations

import html
import json
import math
import tempfile
from pathlib import Path

import jax
import numpy as np

from .._runstate import FILENAME as RUN_FILE


def prepare_out(out: Path | None, option: str = "--out") -> Path | None:
    """Make sure ``out`` is a directory we can write, before any computation (so that a
    bad path never costs the result): created if missing; a one-line ValueError otherwise."""
    if out is None:
        return None
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out} is a file, not a directory: choose a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"{option} {out} cannot be written ({reason.lower()}): choose a writable directory"
        ) from None
    return out


def prepare_checkpoint(directory: Path | None) -> Path | None:
    """``--checkpoint DIR`` checked as ``--out`` is (a directory we can write, created if
    missing), and where the run's file goes (``DIR/run.ckpt``) nothing else but that file:
    a bad path is refused before computing, not at the first save."""
    if directory is None:
        return None
    prepare_out(directory, "--checkpoint")
    run_file = directory / RUN_FILE
    if run_file.exists() and not run_file.is_file():
        raise ValueError(
            f"--checkpoint {directory}: {run_file} is not a file (the run's checkpoint goes "
            "there): remove it or choose another directory"
        )
    return directory


def json_ready(payload: dict, warnings: list[str] | None = None) -> dict:
    """``payload`` for strict JSON: NaN and inf become null, each noted in a ``warnings``
    list (with ``warnings`` given, e.g. an estimate's ``info.warning``)."""
    notes = list(warnings or [])

    def clean(value, where: str):
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{where} is {value} (written as null)")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = {k: clean(v, k) for k, v in payload.items() if k != "warnings"}
    return {**cleaned, "warnings": list(payload.get("warnings", [])) + notes}


def jsonable(value):
    """An array as a (nested) list, a NumPy scalar as a Python number; anything else as is."""
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def dumps(payload: dict, **options) -> str:
    """Strict JSON (never a bare NaN or Infinity): the payload went through json_ready."""
    return json.dumps(payload, allow_nan=False, **options)


def write_json(path: Path, payload: dict) -> Path:
    """``payload`` as strict JSON (:func:`json_ready`) in ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(json_ready(payload), indent=2) + "\n")
    return path


def write_html(path: Path, title: str, sections: list[tuple[str, str, list[str]]]) -> Path:
    """A self-contained page: sections of (heading, paragraph, image file names)."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        "</title><style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, text, images in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        parts.extend(
            f"<p><img src='{html.escape(name)}' alt='{html.escape(name)}'></p>" for name in images
        )
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
