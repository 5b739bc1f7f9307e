"""Experiment 3: gradient magnitude against horizon / depth, for every estimator.

Left, Lorenz-63 (RK4, dt = 0.005), d<z>/drho over horizons T: Backprop's per-sample
derivative of the window sum grows like e^{lambda_1 T} (drawn from the measured lambda_1);
Shadowing, TruncatedBackprop and FiniteDifference stay bounded.
Right, a noisy deep tanh network (width 16, sigma_w = 2, noise 0.3): the per-sample standard
deviation of each estimator of dE[tanh x_L,0]/d(first-layer biases) against depth L:
Backprop grows like e^{lambda_1 L} (lambda_1 from the finite-time exponents), Kernel like
sqrt(L), PathKernel (alpha = 1) stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators import (
    Backprop,
    FiniteDifference,
    Kernel,
    PathKernel,
    Shadowing,
    TruncatedBackprop,
    linear_response,
)
from ..lyapunov import ftle, lyapunov_spectrum
from ..statistics import Terminal, TimeAverage
from ..systems import DeepTanhNet, Lorenz63
from ._common import ExperimentResult


def _first_layer(per_sample_std) -> float:
    """|per-sample std| of the first layer's biases (``per_sample_std`` is shaped like them)."""
    return float(jnp.linalg.norm(jnp.asarray(per_sample_std)[0]))


def explosion_panel(
    *,
    horizons=(1.0, 2.0, 5.0, 10.0, 20.0, 40.0),
    depths=(5, 10, 20, 30, 50),
    samples: int = 2000,
    lyapunov_steps: int = 100_000,
    seed: int = 0,
    out: Path | None = None,
    progress=None,
) -> ExperimentResult:
    """Gradient magnitude against horizon (Lorenz-63) and depth (a noisy deep network)."""
    key = jax.random.key(seed)
    lorenz = Lorenz63()
    z = TimeAverage(lambda x: x[2])
    rho = lambda s: s.rho
    lam = float(
        lyapunov_spectrum(lorenz, 1, steps=lyapunov_steps, burn_in=5000, key=key).exponents[0]
    )
    longest = int(round(max(horizons) / lorenz.dt))
    back = linear_response(
        lorenz, z, Backprop(samples=8, steps=longest, burn_in=1000), wrt=rho, key=key
    )
    assert back.info.horizon_times is not None  # Backprop's diagnostics are on by default
    lorenz_rows = {
        "Backprop (per sample, window sum)": {
            "T": np.asarray(back.info.horizon_times).tolist(),
            "magnitude": back.info.grad_magnitude_by_horizon,
        }
    }
    for name, make in (
        (
            "Shadowing",
            lambda n: Shadowing(
                unstable_dim=2, segment_steps=40, segments=max(2, n // 40), burn_in=1000
            ),
        ),
        (
            "TruncatedBackprop (window 0.5)",
            lambda n: TruncatedBackprop(truncation=min(100, n), steps=n, burn_in=1000),
        ),
        ("FiniteDifference", lambda n: FiniteDifference(eps=1.0, steps=n, burn_in=1000)),
    ):
        values = []
        for horizon in horizons:
            n = int(round(horizon / lorenz.dt))
            values.append(abs(float(linear_response(lorenz, z, make(n), wrt=rho, key=key).grad)))
        lorenz_rows[name] = {"T": list(horizons), "magnitude": values}
        if progress is not None:
            progress(1)

    net = DeepTanhNet(
        depth=max(depths), width=16, sigma_w=2.0, sigma_b=0.1, noise=0.3, seed=seed + 1
    )
    inputs = jax.random.normal(jax.random.fold_in(key, 1), (256, 16))
    net_lambda = float(jnp.mean(ftle(net, inputs, key=key)))
    phi = lambda x: jnp.tanh(x[0])
    biases = lambda s: s.biases
    estimators = {
        "Backprop": Backprop(samples=samples, diagnostics=False),
        "Kernel": Kernel(samples=samples),
        "PathKernel (alpha=1)": PathKernel(samples=samples, alpha=1.0),
    }
    deep_rows = {name: [] for name in estimators}
    for depth in depths:
        for name, estimator in estimators.items():
            result = linear_response(net, Terminal(phi, depth), estimator, wrt=biases, key=key)
            deep_rows[name].append(_first_layer(result.info.per_sample_std))
        if progress is not None:
            progress(1)

    experiment = ExperimentResult(
        "explosion",
        {
            "lorenz63": {"lambda_1": lam, "rows": lorenz_rows},
            "deep_net": {
                "lambda_1_per_layer": net_lambda,
                "depths": list(depths),
                "per_sample_std": deep_rows,
                "samples": samples,
            },
        },
    )
    if out is not None:
        from ..plot import plot_explosion

        experiment.write_json(out)
        plot_explosion(out / "explosion.png", lorenz_rows, lam, list(depths), deep_rows, net_lambda)
        experiment.files.append("explosion.png")
    return experiment
