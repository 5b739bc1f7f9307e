"""Experiment 1: tune a chaotic system to a target statistic.

Lorenz-63 (RK4, dt = 0.005) starts at rho = 35 and learns rho so that the long-time average
<z> reaches its value at rho = 28 (measured here by a long run). Loss (<z> - target)^2,
plain SGD; every method sees an orbit of the same length per iteration (equal simulated
steps), and its wall time is reported. Shadowing's derivative is bounded; backprop's grows
like e^{0.9 T} (here T = 20: ~1e8), so without clipping SGD diverges, and with clipping it
takes steps of fixed length in a random direction.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._error_bars import mean_and_stderr
from .._system import simulate
from ..estimators import Backprop, FiniteDifference, Shadowing, TruncatedBackprop
from ..statistics import TimeAverage
from ..systems import Lorenz63
from ..train import fit
from ._common import ExperimentResult, fit_summary


def tune_lorenz(
    *,
    iterations: int = 30,
    time_horizon: float = 20.0,
    learning_rate: float = 0.1,
    clip: float = 1.0,
    start_rho: float = 35.0,
    target_rho: float = 28.0,
    reference_steps: int = 200_000,
    seed: int = 0,
    out: Path | None = None,
    progress=None,
) -> ExperimentResult:
    """Learn rho from ``start_rho`` so that <z> matches its value at ``target_rho``."""
    key = jax.random.key(seed)
    base = Lorenz63(rho=target_rho)
    z = TimeAverage(lambda x: x[2])
    # the target: <z> at target_rho from 4 long orbits (forward runs only)
    orbit_means = [
        float(jnp.mean(simulate(base, steps=reference_steps, burn_in=2000, key=k)[1:, 2]))
        for k in jax.random.split(jax.random.fold_in(key, 999), 4)
    ]
    target, target_stderr = (float(v) for v in mean_and_stderr(orbit_means))
    start = eqx.tree_at(lambda s: s.rho, base, jnp.asarray(start_rho))
    steps = int(round(time_horizon / base.dt))
    segment = 40
    methods = {
        "Shadowing": (
            Shadowing(
                unstable_dim=2, segment_steps=segment, segments=steps // segment, burn_in=1000
            ),
            optax.sgd(learning_rate),
        ),
        "Backprop": (
            Backprop(steps=steps, burn_in=1000, diagnostics=False),
            optax.sgd(learning_rate),
        ),
        "Backprop + clipping": (
            Backprop(steps=steps, burn_in=1000, diagnostics=False),
            optax.chain(optax.clip_by_global_norm(clip), optax.sgd(learning_rate)),
        ),
        "TruncatedBackprop": (
            TruncatedBackprop(truncation=100, steps=steps, burn_in=1000),
            optax.sgd(learning_rate),
        ),
        "FiniteDifference": (
            FiniteDifference(eps=1.0, steps=steps // 2, burn_in=1000),
            optax.sgd(learning_rate),
        ),
    }
    runs = {}
    for name, (estimator, optimizer) in methods.items():
        result = fit(
            start,
            lambda s: (s - target) ** 2,
            z,
            estimator,
            optimizer,
            iterations=iterations,
            wrt=lambda s: s.rho,
            key=key,
        )
        summary = fit_summary(result, name)
        final_rho = float(cast(Lorenz63, result.system).rho)
        summary["final_rho"] = final_rho
        summary["distance_to_target_rho"] = abs(final_rho - target_rho)
        runs[name] = summary
        if progress is not None:
            progress(1)
    experiment = ExperimentResult(
        "tune_lorenz",
        {
            "target_rho": target_rho,
            "start_rho": start_rho,
            "target_mean_z": target,
            "target_mean_z_stderr": target_stderr,
            "iterations": iterations,
            "time_horizon": time_horizon,
            "learning_rate": learning_rate,
            "clip": clip,
            "runs": runs,
        },
    )
    if out is not None:
        from ..plot import plot_training

        experiment.write_json(out)
        plot_training(
            out / "tune_lorenz.png",
            runs,
            "rho",
            target_rho,
            "Lorenz-63: learn ρ so that ⟨z⟩ hits its value at ρ = 28",
        )
        experiment.files.append("tune_lorenz.png")
    return experiment
