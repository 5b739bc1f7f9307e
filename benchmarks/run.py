"""Speed benchmarks: `make bench` writes JSON to benchmarks/results/.

Each timing is the second of two identical runs (the first compiles), on one process of
this machine; exponents found are stored beside the timings so speed is never bought with
a wrong answer.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import chaosgrad as cg  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def time_spectrum(name, system, k, steps, burn_in):
    run = lambda: cg.lyapunov_spectrum(
        system, k, steps=steps, burn_in=burn_in, key=jax.random.key(0)
    )
    began = time.perf_counter()
    run()
    first = time.perf_counter() - began
    result = run()
    per_step = result.seconds / (steps + burn_in) * 1e6
    print(
        f"{name:28s} k={k:3d}  {per_step:10.2f} us/step  (first run incl. compile "
        f"{first:.1f} s)  lambda_1 = {result.exponents[0]:.4f} +- {result.stderr[0]:.4f}"
    )
    return {
        "system": name,
        "k": k,
        "steps": steps,
        "burn_in": burn_in,
        "microseconds_per_step": per_step,
        "first_run_seconds": first,
        "exponents": result.exponents.tolist(),
        "stderr": result.stderr.tolist(),
        "kaplan_yorke_dimension": result.kaplan_yorke_dimension,
    }


def lyapunov_benchmarks():
    rows = [
        time_spectrum("lorenz63 (rk4, dt=0.005)", cg.Lorenz63(), 3, 1_000_000, 10_000),
        time_spectrum("lorenz96 n=40 (rk4, dt=0.01)", cg.Lorenz96(), 40, 50_000, 5_000),
        time_spectrum("tanh_rnn n=1000 g=2 (discrete)", cg.TanhRNN(n=1000, g=2.0), 50, 2_000, 500),
    ]
    payload = {
        "benchmark": "lyapunov_spectrum",
        "target": "lorenz63 under 1 us/step",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "jax": jax.__version__,
        },
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lyapunov.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS / 'lyapunov.json'}")


def _seconds_of_second_run(run, repeats: int = 3):
    """Best of ``repeats`` timed runs after one warm-up (compilation) run."""
    result = run()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - began)
    return best, result


def shadowing_benchmarks():
    """Lorenz-63 Shadowing at T = 200 (forward Euler, dt = 1e-3, u = 2) against one plain
    Backprop pass over an orbit of the same length (target ratio <= u + 2 = 4)."""
    from chaosgrad import Backprop, FastAdjointResponse, Shadowing, TimeAverage, linear_response

    system = cg.Lorenz63(dt=1e-3, method="euler")
    z = TimeAverage(lambda x: x[2])
    wrt = lambda s: (s.rho, s.sigma)
    shadowing = Shadowing(unstable_dim=2, segment_steps=200, segments=1000, burn_in=20_000)
    # Backprop needs two samples for an error bar: two of half the length, the same steps
    backprop = Backprop(samples=2, steps=100_000, burn_in=20_000, diagnostics=False)
    key = jax.random.key(0)
    t_shadow, result = _seconds_of_second_run(
        lambda: linear_response(system, z, shadowing, wrt=wrt, key=key)
    )
    t_back, _ = _seconds_of_second_run(
        lambda: linear_response(system, z, backprop, wrt=wrt, key=key)
    )
    grad = [float(g) for g in result.grad]
    stderr = [float(s) for s in result.stderr]
    solenoid = cg.ModifiedSolenoid(dim=21)
    far = FastAdjointResponse(
        unstable_dim=20, segment_steps=20, segments=5000, window=10, burn_in=1000
    )
    t_far, far_result = _seconds_of_second_run(
        lambda: linear_response(solenoid, TimeAverage(cg.ModifiedSolenoid.observable), far, key=key)
    )
    far_grad = [float(far_result.grad.gamma1), float(far_result.grad.gamma2)]
    print(
        f"FastAdjointResponse solenoid M=21, 1e5 steps: {t_far:.2f} s; "
        f"d<Phi>/d(gamma1, gamma2) = {far_grad}"
    )
    print(
        f"Shadowing lorenz63 T=200: {t_shadow:.2f} s (plain Backprop pass {t_back:.2f} s, "
        f"ratio {t_shadow / t_back:.2f}); d<z>/d(rho, sigma) = {grad} +- {stderr}"
    )
    payload = {
        "benchmark": "shadowing",
        "lorenz63_shadowing_T200": {
            "seconds": t_shadow,
            "grad_rho_sigma": grad,
            "stderr": stderr,
            "reference_numpy_nilsas_seconds": 21.0,
        },
        "backprop_same_orbit_seconds": t_back,
        "ratio_shadowing_to_backprop": t_shadow / t_back,
        "target_ratio": 4,
        "fast_adjoint_response_solenoid21_1e5_steps": {
            "seconds": t_far,
            "grad_gamma1_gamma2": far_grad,
            "stderr": [float(far_result.stderr.gamma1), float(far_result.stderr.gamma2)],
            "reference_numpy_far_seconds": 110.0,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shadowing.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS / 'shadowing.json'}")


if __name__ == "__main__":
    lyapunov_benchmarks()
    shadowing_benchmarks()
