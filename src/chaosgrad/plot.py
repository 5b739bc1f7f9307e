"""Every figure chaosgrad draws: PNG files rendered by Matplotlib's Agg backend.

Each ``plot_*`` function takes the output path first and returns it once the file is written.
Figures are plain ``matplotlib.figure.Figure`` objects, never pyplot's global ones: they
render with Agg whatever backend the caller has chosen, need no display, and importing this
module changes no Matplotlib state. Used by ``chaosgrad.experiments`` and the ``chaosgrad``
command (``chaosgrad.cli``); this module imports neither.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._system import simulate


def _subplots(*args, figsize: tuple[float, float], **kwargs):
    """Like ``pyplot.subplots``, on a Figure of its own drawn by Agg (no pyplot state)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig: Figure, path: Path) -> Path:
    """The one way every figure is written: tight layout, 110 dpi PNG, parent made."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_spectrum(path: Path, exponents, stderr, title: str, unit: str) -> Path:
    """Exponents with 2-SE error bars, zero line, positive ones highlighted."""
    exponents, stderr = np.asarray(exponents), np.asarray(stderr)
    index = np.arange(1, len(exponents) + 1)
    fig, ax = _subplots(figsize=(6.4, 4.0))
    colors = np.where(exponents > 0, "tab:red", "tab:blue")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.errorbar(index, exponents, yerr=2 * stderr, fmt="none", ecolor="0.3", capsize=2)
    ax.scatter(index, exponents, c=colors, s=18, zorder=3)
    ax.set_xlabel("index i")
    ax.set_ylabel(f"Lyapunov exponent λ_i ({unit})")
    ax.set_title(title)
    ax.text(
        0.98,
        0.95,
        f"{int(np.sum(exponents > 0))} positive (red)",
        ha="right",
        va="top",
        transform=ax.transAxes,
        fontsize=9,
    )
    return _save(fig, path)


def plot_ftle_histograms(path: Path, samples: dict[str, np.ndarray], title: str) -> Path:
    """One histogram of finite-time exponents per network variant."""
    fig, ax = _subplots(figsize=(6.4, 4.0))
    for label, values in samples.items():
        ax.hist(
            np.asarray(values), bins=30, alpha=0.55, label=f"{label} (mean {np.mean(values):+.3f})"
        )
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("finite-time exponent λ^(L)(x) per layer")
    ax.set_ylabel("inputs")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_compare(
    path: Path, rows: list[dict], name: str, title: str, reference: float | None = None
) -> Path:
    """One bar per method: the estimate of d(statistic)/d(name) with 2-SE error bars."""
    labels = [row["method"] for row in rows]
    values = np.array([np.ravel(row["grad"][name])[0] for row in rows], dtype=float)
    errors = np.array([np.ravel(row["stderr"][name])[0] for row in rows], dtype=float)
    fig, ax = _subplots(figsize=(6.4, 4.0))
    finite = np.isfinite(values)
    scale = np.nanmax(np.abs(values[finite])) if finite.any() else 1.0
    symlog = finite.any() and scale > 1e3 * max(np.nanmin(np.abs(values[finite])), 1e-12)
    ax.bar(
        labels,
        np.where(finite, values, 0.0),
        yerr=np.nan_to_num(2 * errors),
        color=["tab:gray" if not f else "tab:blue" for f in finite],
        capsize=4,
    )
    if reference is not None:
        ax.axhline(reference, color="tab:red", lw=1, ls="--", label=f"reference {reference:g}")
        ax.legend(fontsize=8)
    if symlog:
        ax.set_yscale("symlog")
    ax.set_ylabel("estimate (± 2 SE)" if name == "d" else f"d statistic / d {name}  (± 2 SE)")
    ax.set_title(title)
    return _save(fig, path)


def plot_training(
    path: Path, runs: dict, parameter: str | None, target: float | None, title: str
) -> Path:
    """Loss against iteration for every run (and the parameter, when it is one number).

    A run that failed ends with a cross and its status in the legend."""
    scalar = parameter is not None and all(
        run["parameters"] and run["parameters"][0] is not None and len(run["parameters"][0]) == 1
        for run in runs.values()
    )
    fig, axes = _subplots(
        1, 2 if scalar else 1, figsize=(11 if scalar else 6.4, 4.0), squeeze=False
    )
    loss_ax = axes[0, -1]
    for name, run in runs.items():
        loss = np.asarray(run["loss"], dtype=float)
        failed = run["status"] != "ok"
        label = (
            f"{name} ({'failed' if failed else 'final ' + format(loss[-1], '.3g')})"
            if len(loss)
            else name
        )
        (line,) = loss_ax.plot(
            np.arange(len(loss)), np.where(np.isfinite(loss), loss, np.nan), label=label
        )
        if failed and len(loss):
            loss_ax.plot(
                len(loss) - 1,
                np.nanmax(loss[np.isfinite(loss)]) if np.isfinite(loss).any() else 1.0,
                "x",
                color=line.get_color(),
                ms=10,
                mew=2,
            )
        if scalar:
            values = np.asarray([p[0] for p in run["parameters"]], dtype=float)
            axes[0, 0].plot(np.arange(len(values)), values, color=line.get_color(), label=name)
            if failed:
                axes[0, 0].plot(
                    len(values) - 1, values[-1], "x", color=line.get_color(), ms=10, mew=2
                )
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=7)
    if scalar:
        if target is not None:
            axes[0, 0].axhline(target, color="0.3", ls="--", lw=1, label="target")
        axes[0, 0].set_xlabel("iteration")
        axes[0, 0].set_ylabel(parameter)
        finite = [
            v for run in runs.values() for p in run["parameters"] for v in p if np.isfinite(v)
        ]
        if finite:
            spread = np.percentile(finite, [2, 98])
            axes[0, 0].set_ylim(spread[0] - 1, spread[1] + 1)
        axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_explosion(
    path: Path,
    lorenz_rows: dict,
    lorenz_lambda: float,
    depths: list,
    deep_rows: dict,
    deep_lambda: float,
) -> Path:
    """Gradient magnitude against horizon (Lorenz-63) and depth (deep net), log scale,
    with the Lyapunov prediction e^{lambda_1 T} drawn through Backprop's first point."""
    fig, (left, right) = _subplots(1, 2, figsize=(11, 4.2))
    for name, row in lorenz_rows.items():
        left.plot(row["T"], row["magnitude"], "o-" if len(row["T"]) < 10 else "-", label=name, ms=4)
    first = next(iter(lorenz_rows.values()))
    t = np.asarray(first["T"], dtype=float)
    anchor = np.asarray(first["magnitude"], dtype=float)
    valid = np.isfinite(anchor) & (anchor > 0) & (t >= 1)
    if valid.any():
        t0, m0 = t[valid][0], anchor[valid][0]
        left.plot(
            t,
            m0 * np.exp(lorenz_lambda * (t - t0)),
            "k--",
            lw=1,
            label=f"e^(λ₁T), λ₁ = {lorenz_lambda:.3f}",
        )
    left.set_yscale("log")
    left.set_xlabel("horizon T (time units)")
    left.set_ylabel("|d⟨z⟩/dρ| estimate (per sample)")
    left.set_title("Lorenz-63")
    left.legend(fontsize=7)
    layers = np.asarray(depths, dtype=float)
    for name, values in deep_rows.items():
        right.plot(layers, values, "o-", label=name, ms=4)
    back = np.asarray(deep_rows["Backprop"], dtype=float)
    right.plot(
        layers,
        back[0] * np.exp(deep_lambda * (layers - layers[0])),
        "k--",
        lw=1,
        label=f"e^(λ₁L), λ₁ = {deep_lambda:.3f}/layer",
    )
    right.set_yscale("log")
    right.set_xlabel("depth L (layers)")
    right.set_ylabel("per-sample std of the gradient estimate")
    right.set_title("noisy deep tanh network (σ_w = 2)")
    right.legend(fontsize=7)
    return _save(fig, path)


def plot_trainability(path: Path, summary: dict, metric: str, title: str) -> Path:
    """Each method's ``metric`` against training time: mean over seeds with a 1-SE band
    (``summary`` from the trainability harness); log scale when the metric is positive."""
    grid = np.asarray(summary["grid"])
    fig, ax = _subplots(figsize=(7.0, 4.4))
    positive = True
    for name, entry in summary["methods"].items():
        curve = entry["curves"][metric]
        mean = np.array([np.nan if v is None else v for v in curve["mean"]], dtype=float)
        stderr = np.array([0.0 if v is None else v for v in curve["stderr"]], dtype=float)
        failed = f" ({len(entry['failed'])} failed)" if entry["failed"] else ""
        (line,) = ax.plot(grid, mean, lw=1.6, label=f"{name}{failed}")
        ax.fill_between(grid, mean - stderr, mean + stderr, color=line.get_color(), alpha=0.2)
        finite = mean[np.isfinite(mean)]
        positive = positive and bool(np.all(finite > 0))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reconstruction(path: Path, fit, data) -> Path:
    """A learned model against its data: attractor projections (first two coordinates, in
    standardised units) and the metrics against training time."""
    array = (np.asarray(data, dtype=float) - fit.mean) / fit.std
    fig, axes = _subplots(1, 2, figsize=(10.0, 4.2))
    axes[0].plot(array[:5000, 0], array[:5000, 1 % array.shape[1]], lw=0.4, label="data")
    try:
        path_model = np.asarray(
            simulate(fit.system, x0=array[0], steps=5000, burn_in=500, key=jax.random.key(0))
        )
        axes[0].plot(path_model[:, 0], path_model[:, 1 % array.shape[1]], lw=0.4, label="model")
    except FloatingPointError:
        axes[0].set_title("model run diverged")
    axes[0].legend(fontsize=8)
    axes[0].set_xlabel("x_1 (standardised)")
    axes[0].set_ylabel("x_2 (standardised)")
    for name in ("d_stsp", "d_h", "mse_10"):
        times = [e["seconds"] for e in fit.evaluations]
        values = [e.get(name, np.nan) for e in fit.evaluations]
        axes[1].plot(times, values, marker="o", label=name)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("training time (s)")
    axes[1].legend(fontsize=8)
    axes[1].set_title(f"{fit.method}: metrics against training time")
    return _save(fig, path)


def plot_scale(path: Path, rows: list[dict]) -> Path:
    """Task A3: each method's seconds per gradient (log-log) and its descent ratio (with
    1-SE bars) and draw cosine against the parameter count p."""
    fig, (cost, quality) = _subplots(1, 2, figsize=(11.0, 4.2))
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = sorted(
            (row for row in rows if row["method"] == method), key=lambda r: r["parameters"]
        )
        p = np.array([row["parameters"] for row in mine], dtype=float)
        (line,) = cost.plot(p, [row["seconds"] for row in mine], "o-", label=method)
        ratio = np.array([np.nan if row["ratio"] is None else row["ratio"] for row in mine])
        error = np.array(
            [0.0 if row["ratio_stderr"] is None else row["ratio_stderr"] for row in mine]
        )
        quality.errorbar(p, ratio, yerr=error, fmt="o-", color=line.get_color(), label=method)
        cosine = [np.nan if row["draw_cosine"] is None else row["draw_cosine"] for row in mine]
        quality.plot(p, cosine, "x:", color=line.get_color())
    cost.set_xscale("log")
    cost.set_yscale("log")
    cost.set_xlabel("parameters p")
    cost.set_ylabel("seconds per gradient")
    cost.set_title("cost")
    cost.legend(fontsize=8)
    quality.set_xscale("log")
    quality.axhline(1.0, color="0.6", lw=0.8)
    quality.axhline(0.0, color="0.6", lw=0.8)
    quality.set_xlabel("parameters p")
    quality.set_ylabel("descent ratio (o, ±1 SE) and draw cosine (x)")
    quality.set_title("gradient quality (1: exact)")
    return _save(fig, path)
