"""Experiment 2: train noisy unstable networks.

(a) The 9-neuron network (depth 50, noise 0.5): learn the shared bias gamma from 0 so that
E[sum x_50] reaches 2. Backprop's per-sample derivative has a standard deviation of ~1e6
here (lambda_1 > 0), so even clipped its direction is noise; Kernel and PathKernel carry a
bounded, informative gradient.
(b) A deep tanh network (depth 50, width 16, chaotic sigma_w = 2, noise 0.3 after every layer):
learn all weights and biases so that E[tanh(x_50,0)] reaches 0.5 over random inputs;
Kernel, PathKernel (alpha = 1 per layer, above lambda_1 ~ 0.16) and Backprop + clipping on
the chaotic initialisation, and the conventional remedies, orthogonal and critical
initialisation, trained by Backprop + clipping. All with Adam, the same iterations and
samples per iteration.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from ..estimators import Backprop, Kernel, PathKernel
from ..statistics import Terminal
from ..systems import DeepTanhNet, NineNeuronNet
from ..train import fit
from ._common import ExperimentResult, fit_summary


def _train(runs: dict, system_for, statistic, wrt, target, iterations, key, progress):
    summaries = {}
    for name, (system_name, estimator, optimizer) in runs.items():
        result = fit(
            system_for[system_name],
            lambda s: (s - target) ** 2,
            statistic,
            estimator,
            optimizer,
            iterations=iterations,
            wrt=wrt,
            key=key,
        )
        summaries[name] = fit_summary(result, name)
        if progress is not None:
            progress(1)
    return summaries


def train_noisy_network(
    *,
    iterations: int = 60,
    samples: int = 20_000,
    deep_iterations: int = 20,
    deep_samples: int = 500,
    learning_rate: float = 0.03,
    clip: float = 1.0,
    seed: int = 0,
    deep: bool = True,
    out: Path | None = None,
    progress=None,
) -> ExperimentResult:
    """Both trainings (``deep=False``: the 9-neuron one only); histories and final losses."""
    key = jax.random.key(seed)
    clipped = lambda lr: optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))

    nine = {"net": NineNeuronNet(gamma=0.0, noise=0.5)}
    nine_runs = _train(
        {
            "Kernel": ("net", Kernel(samples=samples), optax.adam(learning_rate)),
            "PathKernel": (
                "net",
                PathKernel(samples=samples, alpha=1.0),
                optax.adam(learning_rate),
            ),
            "Backprop + clipping": (
                "net",
                Backprop(samples=samples, diagnostics=False),
                clipped(learning_rate),
            ),
        },
        nine,
        Terminal(jnp.sum, 50),
        lambda s: s.gamma,
        2.0,
        iterations,
        key,
        progress,
    )

    summary = {
        "nine_neuron": {
            "target": 2.0,
            "start_gamma": 0.0,
            "iterations": iterations,
            "samples": samples,
            "runs": nine_runs,
        }
    }
    experiment = ExperimentResult("noisy_network", summary)
    if out is not None:
        from ..plot import plot_training

        plot_training(
            out / "noisy_network_nine.png",
            nine_runs,
            "γ",
            None,
            "9-neuron network: learn γ so that E[Σ x₅₀] = 2",
        )
        experiment.files.append("noisy_network_nine.png")
    if not deep:
        if out is not None:
            experiment.write_json(out)
        return experiment

    depth, width, noise = 50, 16, 0.3
    nets = {
        "chaotic": DeepTanhNet(
            depth=depth, width=width, sigma_w=2.0, sigma_b=0.1, noise=noise, seed=seed + 1
        ),
        "orthogonal": DeepTanhNet(
            depth=depth,
            width=width,
            init="orthogonal",
            sigma_w=1.0,
            sigma_b=0.1,
            noise=noise,
            seed=seed + 1,
        ),
        "critical": DeepTanhNet(
            depth=depth, width=width, init="critical", sigma_b=0.1, noise=noise, seed=seed + 1
        ),
    }
    backprop = Backprop(samples=deep_samples, diagnostics=False)
    rate = learning_rate / 3
    deep_runs = _train(
        {
            "Kernel (chaotic init)": (
                "chaotic",
                Kernel(samples=deep_samples),
                optax.adam(rate),
            ),
            "PathKernel (chaotic init)": (
                "chaotic",
                PathKernel(samples=deep_samples, alpha=1.0),
                optax.adam(rate),
            ),
            "Backprop + clipping (chaotic init)": ("chaotic", backprop, clipped(rate)),
            "Backprop + clipping (orthogonal init)": ("orthogonal", backprop, clipped(rate)),
            "Backprop + clipping (critical init)": ("critical", backprop, clipped(rate)),
        },
        nets,
        Terminal(lambda x: jnp.tanh(x[0]), depth),
        lambda s: (s.weights, s.biases),
        0.5,
        deep_iterations,
        key,
        progress,
    )
    summary["deep_net"] = {
        "target": 0.5,
        "depth": depth,
        "width": width,
        "noise": noise,
        "iterations": deep_iterations,
        "samples": deep_samples,
        "runs": deep_runs,
    }
    if out is not None:
        from ..plot import plot_training

        experiment.write_json(out)
        plot_training(
            out / "noisy_network_deep.png",
            deep_runs,
            None,
            None,
            "depth-50 tanh network: E[tanh x₅₀,₀] → 0.5",
        )
        experiment.files.append("noisy_network_deep.png")
    return experiment
