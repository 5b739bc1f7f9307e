"""Plots (PNG, Matplotlib Agg) and the HTML page that links them."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def plot_spectrum(path: Path, exponents, stderr, title: str, unit: str) -> Path:
    """Exponents with 2-SE error bars, zero line, positive ones highlighted."""
    exponents, stderr = np.asarray(exponents), np.asarray(stderr)
    index = np.arange(1, len(exponents) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = np.where(exponents > 0, "tab:red", "tab:blue")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.errorbar(index, exponents, yerr=2 * stderr, fmt="none", ecolor="0.3", capsize=2)
    ax.scatter(index, exponents, c=colors, s=18, zorder=3)
    ax.set_xlabel("index i")
    ax.set_ylabel(f"Lyapunov exponent λ_i ({unit})")
    ax.set_title(title)
    ax.text(0.98, 0.95, f"{int(np.sum(exponents > 0))} positive (red)", ha="right", va="top",
            transform=ax.transAxes, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ftle_histograms(path: Path, samples: dict[str, np.ndarray], title: str) -> Path:
    """One histogram of finite-time exponents per network variant."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, values in samples.items():
        ax.hist(np.asarray(values), bins=30, alpha=0.55, label=f"{label} (mean {np.mean(values):+.3f})")
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("finite-time exponent λ^(L)(x) per layer")
    ax.set_ylabel("inputs")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(path: Path, rows: list[dict], name: str, title: str,
                 reference: float | None = None) -> Path:
    """One bar per method: the estimate of d(statistic)/d(name) with 2-SE error bars."""
    labels = [row["method"] for row in rows]
    values = np.array([np.ravel(row["grad"][name])[0] for row in rows], dtype=float)
    errors = np.array([np.ravel(row["stderr"][name])[0] for row in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    finite = np.isfinite(values)
    scale = np.nanmax(np.abs(values[finite])) if finite.any() else 1.0
    symlog = finite.any() and scale > 1e3 * max(np.nanmin(np.abs(values[finite])), 1e-12)
    ax.bar(labels, np.where(finite, values, 0.0), yerr=np.nan_to_num(2 * errors),
           color=["tab:gray" if not f else "tab:blue" for f in finite], capsize=4)
    if reference is not None:
        ax.axhline(reference, color="tab:red", lw=1, ls="--", label=f"reference {reference:g}")
        ax.legend(fontsize=8)
    if symlog:
        ax.set_yscale("symlog")
    ax.set_ylabel(f"d statistic / d {name}  (± 2 SE)")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(path: Path, title: str, sections: list[tuple[str, str, list[str]]]) -> Path:
    """A self-contained page: sections of (heading, paragraph, image file names)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
             "img{max-width:100%}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for heading, text, images in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        parts.extend(f"<p><img src='{html.escape(name)}' alt='{html.escape(name)}'></p>"
                     for name in images)
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
