"""The HTML page that links a run's figures, and its JSON results (figures: ``chaosgrad.plot``)."""

from __future__ import annotations

import html
import json
from pathlib import Path


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
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
