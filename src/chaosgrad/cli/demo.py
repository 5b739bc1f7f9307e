"""``chaosgrad demo``: why ordinary gradients fail on unstable systems, and what works.

1. Instability measured: Lyapunov spectra of Lorenz-63 and of a chaotic tanh RNN, and the
   finite-time exponents of a 50-layer network under four initialisations.
2. The explosion panel: gradient magnitude against horizon / depth for every estimator.
3. Estimates with error bars against finite-difference references: Lorenz-63 d<z>/drho,
   the modified solenoid d<Phi>/dgamma, the noisy 9-neuron network d E[sum x_50]/dgamma.
4. Training curves: Lorenz rho 35 -> 28, and the 9-neuron network's bias.

Prints a table (method, estimate +- SE, reference, seconds) and writes report.html with its
PNGs and results.json into ``out``. About two minutes on two cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from .. import (
    DeepTanhNet,
    Lorenz63,
    ModifiedSolenoid,
    NineNeuronNet,
    TanhRNN,
    ftle,
    lyapunov_spectrum,
    mean_field,
)
from ..estimators import (
    Backprop,
    FastAdjointResponse,
    FiniteDifference,
    Kernel,
    PathKernel,
    Shadowing,
    TruncatedBackprop,
    linear_response,
)
from ..experiments import explosion_panel, train_noisy_network, tune_lorenz
from ..plot import plot_compare, plot_ftle_histograms, plot_spectrum
from .report import write_html, write_json


def _instability(out: Path, key, seed: int, rows: list) -> dict:
    lorenz = lyapunov_spectrum(Lorenz63(), steps=200_000, burn_in=10_000, key=key)
    plot_spectrum(
        out / "lorenz63_spectrum.png",
        lorenz.exponents,
        lorenz.stderr,
        "Lorenz-63 (ρ=28, RK4 dt=0.005)",
        "per unit time",
    )
    rows.append(
        ("Lorenz-63 λ₁", "QR", lorenz.exponents[0], lorenz.stderr[0], 0.9057, lorenz.seconds)
    )
    rnn = lyapunov_spectrum(
        TanhRNN(n=200, g=2.0, seed=seed), 30, steps=5_000, burn_in=1_000, key=key
    )
    theory = mean_field(4.0).lyapunov_exponent
    plot_spectrum(
        out / "tanh_rnn_spectrum.png",
        rnn.exponents,
        rnn.stderr,
        "tanh RNN h' = J tanh h, n=200, g=2 (top 30)",
        "per step",
    )
    rows.append(("tanh RNN λ₁", "QR", rnn.exponents[0], rnn.stderr[0], theory, rnn.seconds))
    inputs = jax.random.normal(jax.random.fold_in(key, 1), (512, 32))
    variants = {
        "chaotic σ_w=2": dict(sigma_w=2.0),
        "critical (σ_b²=0.05)": dict(init="critical", sigma_b=0.05**0.5),
        "orthogonal gain 1": dict(init="orthogonal", sigma_w=1.0),
        "He": dict(init="he"),
    }
    exponents = {
        label: np.asarray(ftle(DeepTanhNet(depth=50, width=32, seed=seed, **options), inputs))
        for label, options in variants.items()
    }
    plot_ftle_histograms(
        out / "deep_net_ftle.png", exponents, "finite-time exponents, 50-layer tanh net, width 32"
    )
    return {
        "lorenz63": {
            "exponents": lorenz.exponents.tolist(),
            "stderr": lorenz.stderr.tolist(),
            "kaplan_yorke_dimension": lorenz.kaplan_yorke_dimension,
        },
        "tanh_rnn": {"exponents": rnn.exponents.tolist(), "mean_field_lambda1": theory},
        "deep_net_ftle": {k: float(v.mean()) for k, v in exponents.items()},
    }


def _compare(out: Path, key, rows: list) -> dict:
    """Estimates of three derivatives, each against its finite-difference reference."""
    cases = {
        "lorenz": (
            "Lorenz d⟨z⟩/dρ",
            Lorenz63(dt=1e-3, method="euler"),
            lambda x: x[2],
            lambda s: s.rho,
            1.017,
            {
                "Backprop T=20": Backprop(steps=20_000, samples=8, burn_in=2000, diagnostics=False),
                "Truncated": TruncatedBackprop(steps=200_000, window=500, burn_in=2000),
                "Shadowing": Shadowing(
                    unstable_dim=2, segment_steps=200, segments=1000, burn_in=20_000
                ),
                "FD": FiniteDifference(steps=500_000, eps=1.0, samples=16, burn_in=5000),
            },
        ),
        "solenoid": (
            "solenoid d⟨Φ⟩/dγ₂",
            ModifiedSolenoid(),
            ModifiedSolenoid.observable,
            lambda s: s.gamma2,
            None,
            {
                "Shadowing": Shadowing(
                    unstable_dim=4, segment_steps=20, segments=2000, burn_in=1000
                ),
                "FAR": FastAdjointResponse(
                    unstable_dim=4, segment_steps=20, segments=2000, burn_in=1000
                ),
                "FD": FiniteDifference(steps=100_000, eps=0.01, samples=16, burn_in=1000),
            },
        ),
        "nine_neuron": (
            "9-neuron dE/dγ",
            NineNeuronNet(gamma=0.556),
            jnp.sum,
            lambda s: s.gamma,
            7.47,
            {
                "Backprop": Backprop(
                    steps=50, samples=100_000, statistic="terminal", diagnostics=False
                ),
                "Kernel": Kernel(steps=50, samples=100_000),
                "PathKernel α=1": PathKernel(steps=50, samples=100_000, alpha=1.0),
            },
        ),
    }
    results = {}
    for case, (title, system, phi, wrt, reference, methods) in cases.items():
        found = []
        for name, estimator in methods.items():
            estimate = linear_response(system, phi, estimator, wrt=wrt, key=key)
            found.append(
                {
                    "method": name,
                    "grad": {"d": float(estimate.grad)},
                    "stderr": {"d": float(estimate.stderr)},
                    "seconds": estimate.info["seconds"],
                }
            )
            rows.append(
                (
                    title,
                    name,
                    float(estimate.grad),
                    float(estimate.stderr),
                    np.nan if reference is None else reference,
                    estimate.info["seconds"],
                )
            )
        if reference is None:  # the solenoid's reference is our own finite difference
            reference = found[-1]["grad"]["d"]
        plot_compare(out / f"compare_{case}.png", found, "d", title, reference)
        results[case] = {"title": title, "reference": reference, "estimates": found}
    return results


def _short(name: str) -> str:
    return {
        "Backprop + clipping": "Backprop+clip",
        "TruncatedBackprop": "Truncated",
        "FiniteDifference": "FD",
    }.get(name, name)


def _table(rows: list, console: Console) -> None:
    table = Table(title="chaosgrad demo", pad_edge=False)
    for column in ("quantity", "method", "estimate", "± SE", "ref.", "s"):
        table.add_column(
            column, no_wrap=True, justify="left" if column in ("quantity", "method") else "right"
        )
    fmt = lambda v: "" if v is None or not np.isfinite(v) else f"{v:.3g}"
    for quantity, method, value, se, reference, seconds in rows:
        table.add_row(quantity, method, f"{value:+.4g}", fmt(se), fmt(reference), f"{seconds:.1f}")
    console.print(table)


def run_demo(out: Path, seed: int, console: Console) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(seed)
    began = time.perf_counter()
    rows: list = []
    results = {"instability": _instability(out, key, seed, rows)}
    console.print("measured the instability; drawing the explosion panel ...")
    explosion = explosion_panel(samples=1000, seed=seed, out=out)
    results["explosion"] = explosion.summary
    console.print("comparing estimators against finite differences ...")
    results["estimates"] = _compare(out, key, rows)
    console.print("training ...")
    lorenz = tune_lorenz(seed=seed, out=out)
    for name, run in lorenz.summary["runs"].items():
        rows.append(
            ("train Lorenz: ρ", _short(name), run["final_rho"], np.nan, 28.0, run["seconds"])
        )
    network = train_noisy_network(iterations=60, samples=10_000, deep=False, seed=seed, out=out)
    for name, run in network.summary["nine_neuron"]["runs"].items():
        rows.append(
            (
                "train 9-neuron: loss",
                _short(name),
                run["final_loss_mean_last5"],
                np.nan,
                0.0,
                run["seconds"],
            )
        )
    results["training"] = {"lorenz": lorenz.summary, "nine_neuron": network.summary}
    _table(rows, console)
    console.print(
        "Backprop's per-sample gradient grows like e^{λ₁T}; Shadowing/FAR (chaos) "
        "and Kernel/PathKernel (noise) stay bounded and match finite differences."
    )
    write_json(out / "results.json", results)
    _report(out, results)
    pngs = sorted(p.name for p in out.glob("*.png"))
    console.print(
        f"wrote {out}/report.html and {len(pngs)} PNGs in {time.perf_counter() - began:.0f} s"
    )
    return results


def _report(out: Path, results: dict) -> None:
    lorenz = results["instability"]["lorenz63"]
    training = results["training"]["lorenz"]["runs"]
    write_html(
        out / "report.html",
        "chaosgrad: gradients that do not explode",
        [
            (
                "1. How unstable?",
                f"Lyapunov spectrum of Lorenz-63 (λ₁ = {lorenz['exponents'][0]:.4f} per unit "
                f"time, published 0.9057; D_KY = {lorenz['kaplan_yorke_dimension']:.3f}), "
                "of a chaotic tanh RNN, and the finite-time exponents of 50-layer tanh networks "
                "under four initialisations.",
                ["lorenz63_spectrum.png", "tanh_rnn_spectrum.png", "deep_net_ftle.png"],
            ),
            (
                "2. The explosion",
                "Per-sample gradient magnitude against horizon (Lorenz-63) and "
                "depth (noisy deep network). Backprop follows e^{λ₁T}; the other estimators stay "
                "bounded.",
                ["explosion.png"],
            ),
            (
                "3. Estimates against finite differences",
                "Estimate ± 2 SE; the dashed line is the finite-difference reference "
                "(Lorenz 1.017, 9-neuron 7.47 at γ = 0.556; for the solenoid our own central "
                "differences). On the solenoid, shadowing alone misses the unstable contribution "
                "(here even its sign); FastAdjointResponse recovers it.",
                ["compare_lorenz.png", "compare_solenoid.png", "compare_nine_neuron.png"],
            ),
            (
                "4. Training",
                "Lorenz-63: learn ρ from 35 so that ⟨z⟩ matches ρ = 28 — final ρ: "
                + ", ".join(
                    f"{k} {v['final_rho']:.2f}" + ("" if v["status"] == "ok" else " (failed)")
                    for k, v in training.items()
                )
                + ". The 9-neuron network: learn its bias so that E[Σx₅₀] = 2.",
                ["tune_lorenz.png", "noisy_network_nine.png"],
            ),
        ],
    )
