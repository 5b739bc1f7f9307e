"""Core benchmarks (version-2 machinery): `make bench` writes benchmarks/results/core.json.

* deep_net: DeepTanhNet depth 50, width 128 (819k stacked weights), Backprop and Kernel on
  E[sum x_50]; warm wall time (best of 3, after one compiling call).
* loss_cost: value_and_grad of a loss of 5 statistics against one scalar Shadowing sweep
  (Lorenz-63, Euler dt = 1e-3); the ratio must stay <= 1.3.
* startup: `chaosgrad grad` cold (empty compilation cache), warm (second call in one
  process) and in a second process (persistent compilation cache populated).
* fit_scan: iterations per second of `fit` with online NRES on task C (Lorenz-63, 2000
  steps, truncations of 100: one truncation per iteration) for scan = 1, 8 and 32
  iterations per compiled call; 400 iterations after a compiling run, best of 3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)  # chaosgrad computes in float64

import chaosgrad as cg  # noqa: E402

RESULTS = Path(__file__).parent / "results"

DEEP_NET_BEFORE = {
    "backprop_64_samples": 11.456,
    "kernel_1024_samples": 105.344,
    "measured": "commit 77e6b6e (every step's VJP wrote a full-size stacked gradient), this "
    "machine, same settings",
}
KEY = jax.random.key(0)


def best_of(run, repeats=3):
    run()  # compiles
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - began)
    return min(times)


def deep_net() -> dict:
    net = cg.DeepTanhNet(depth=50, width=128, sigma_w=1.5, noise=0.5, seed=0)
    statistic = cg.Terminal(lambda x: jnp.sum(x), 50)
    wrt = lambda s: (s.weights, s.biases)  # noqa: E731
    rows = {}
    for name, estimator in (
        ("backprop_64_samples", cg.Backprop(samples=64, diagnostics=False)),
        ("kernel_1024_samples", cg.Kernel(samples=1024, batch=256)),
    ):
        seconds = best_of(
            lambda e=estimator: cg.linear_response(net, statistic, e, wrt=wrt, key=KEY).grad
        )
        rows[name] = seconds
        print(f"deep net depth 50 width 128 {name:22s} {seconds:8.3f} s")
    return {"after": rows, "before": DEEP_NET_BEFORE}


def loss_cost() -> dict:
    system = cg.Lorenz63(dt=1e-3, method="euler")
    estimator = cg.Shadowing(unstable_dim=2, segment_steps=200, segments=200, burn_in=1000)
    five = lambda x: jnp.stack([x[2], x[0] ** 2, x[1] ** 2, x[2] ** 2, x[0] * x[1]])  # noqa: E731
    target = jnp.array([23.0, 60.0, 80.0, 600.0, 60.0])
    weights = jnp.array([1.0, 0.1, 0.1, 0.01, 0.1])
    scalar = best_of(
        lambda: (
            cg.linear_response(
                system, cg.TimeAverage(lambda x: five(x) @ weights), estimator, key=KEY
            ).grad
        )
    )
    z_only = best_of(
        lambda: cg.linear_response(system, cg.TimeAverage(lambda x: x[2]), estimator, key=KEY).grad
    )
    loss = best_of(
        lambda: cg.value_and_grad(
            system,
            lambda s: jnp.sum((s / target - 1) ** 2),
            cg.TimeAverage(five),
            estimator,
            key=KEY,
        )[1]
    )
    jacobian = best_of(
        lambda: cg.linear_response(system, cg.TimeAverage(five), estimator, key=KEY).grad
    )
    print(
        f"shadowing T=40: scalar sweep of w.Phi {scalar:.3f} s, loss of 5 statistics "
        f"{loss:.3f} s (ratio {loss / scalar:.2f}), full 5-row Jacobian {jacobian:.3f} s, "
        f"scalar <z> {z_only:.3f} s"
    )
    return {
        "note": "scalar = one Shadowing sweep of the scalar w.Phi (the same observable "
        "work); z_only = the sweep of <z> alone (a cheaper observable)",
        "scalar_sweep_seconds": scalar,
        "loss_of_5_seconds": loss,
        "ratio": loss / scalar,
        "jacobian_of_5_seconds": jacobian,
        "z_only_sweep_seconds": z_only,
        "ratio_to_z_only": loss / z_only,
    }


GRAD = [
    "grad",
    "lorenz63",
    "--wrt",
    "rho",
    "--observable",
    "z",
    "--method",
    "shadowing",
    "--unstable-dim",
    "2",
    "-p",
    "method=euler",
    "-p",
    "dt=0.001",
    "--json",
]


def startup() -> dict:
    """Wall times of the CLI, from a fresh cache folder."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, CHAOSGRAD_CACHE_DIR=cache)
        command = [sys.executable, "-m", "chaosgrad.cli", *GRAD]

        def run():
            began = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            return time.perf_counter() - began

        cold, second = run(), run()
        code = (
            "import time, jax; from typer.testing import CliRunner; "
            "from chaosgrad.cli import app; r = CliRunner(); "
            f"r.invoke(app, {GRAD!r}); t = time.perf_counter(); "
            f"r.invoke(app, {GRAD!r}); print(time.perf_counter() - t)"
        )
        warm = float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            ).stdout.split()[-1]
        )
    print(
        f"chaosgrad grad lorenz63 (shadowing): cold {cold:.2f} s, second process "
        f"{second:.2f} s, warm in-process {warm:.2f} s"
    )
    return {
        "cold_process_seconds": cold,
        "second_process_seconds": second,
        "warm_call_seconds": warm,
    }


def fit_scan() -> dict:
    """fit's iterations per second against its iterations per compiled call (module doc)."""
    import optax

    from chaosgrad.experiments.trainability.c_lorenz import CTask
    from chaosgrad.experiments.trainability.control_short import weights

    task = CTask()
    model = task.start_model("nres-online")
    estimator = task.estimator("nres-online")
    iterations = 400
    rows = {}
    for scan in (1, 8, 32):

        def run(count=iterations, scan=scan):
            return cg.fit(
                model,
                lambda s: s,
                task.statistic,
                estimator,
                optax.adam(0.01),
                iterations=count,
                wrt=weights,
                x0=task.x0,
                key=KEY,
                scan=scan,
            )

        run(2 * scan)  # compiles the full calls
        seconds = []
        for _ in range(3):
            began = time.perf_counter()
            result = run()
            seconds.append(time.perf_counter() - began)
        rows[f"scan_{scan}"] = {
            "iterations_per_second": iterations / min(seconds),
            "final_loss": result.history["loss"][-1],
        }
    return {"iterations": iterations, **rows}


def main(parts=("deep_net", "loss_cost", "startup", "fit_scan")) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "core.json"
    out = json.loads(path.read_text()) if path.exists() else {}  # keep parts not rerun
    out.update({"machine": os.uname().machine, "cpus": os.cpu_count(), "jax": jax.__version__})
    for part in parts:
        out[part] = globals()[part]()
    path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("deep_net", "loss_cost", "startup", "fit_scan"))
