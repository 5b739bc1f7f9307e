"""Speed benchmarks against the reference codes, the cost targets, scaling, parallel
efficiency and memory.

    python benchmarks/speed.py            # full sizes: benchmarks/results/speed.json
    python benchmarks/speed.py --quick    # toy sizes (smoke test): speed_quick.json
    python benchmarks/speed.py --only rnn_scaling

Every timing is the best of 3 warm calls after one compiling call (:func:`warm_seconds`,
each call waited for with ``jax.block_until_ready``), on this machine; the reference rows
repeat a call of milliseconds until its warm calls fill ``WARM_BUDGET`` seconds, as the
reference codes' times are the best of repeated runs; every estimate is
stored with its standard error, so that speed is never bought with a wrong answer. The
JSON is rewritten after each section (a crash keeps the sections already done; a section
that fails is stored as its error and the run goes on). Cold starts, device layouts and
peak memory are measured in fresh child processes (:func:`child_main`).

Sections (one function each, returning a dict):

1. reference_rows: chaosgrad against the published reference codes (NILSAS, FAR,
   lyapynov) at their settings, with cold starts (empty and filled compilation cache).
2. shadowing_vs_backprop: Shadowing against plain Backprop over the same steps (target
   u + 2).
3. kernel_vs_forward: Kernel and PathKernel against one forward pass (targets 2 and 2).
4. lorenz96_renorm: lyapunov_spectrum's cost and exponents against renorm_every;
   far_floor: the FAR row's nonlinear work per step at its cheapest, a floor on that row.
5. rnn_scaling: tanh RNN n = 64 .. 1024, spectrum and Shadowing, warm cost and compile
   time (rnn_scaling.png).
6. parallel_efficiency: 1 process x 1 device, 1 x 2 devices, 2 processes x 1 device.
7. memory: peak resident memory of long Shadowing runs (target 2048 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # chaosgrad computes in float64

import chaosgrad as cg  # noqa: E402
from chaosgrad import parallel  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _measure import (  # noqa: E402
    RESULT_PREFIX,
    clean_env,
    cost_ratio,
    efficiency,
    estimate_record,
    first_call_seconds,
    format_estimate,
    jsonable,
    max_relative_difference,
    max_se_distance,
    meets_at_least,
    meets_at_most,
    peak_rss_mb,
    per_step_microseconds,
    run_child,
    speedup,
    start_child,
    wait_children,
    warm_seconds,
    write_json,
)

SCRIPT = Path(__file__).resolve()
RESULTS = SCRIPT.parent / "results"

REFERENCE_SECONDS = {
    "nilsas_T40": 0.436,
    "nilsas_T200": 2.16,
    "far_solenoid": 47.0,
    "lyapunov_lorenz_rk4": 28.0,
}
"""Wall seconds of the reference codes at the same settings (published / measured once)."""
REFERENCE_CODES = {
    "nilsas_T40": "NILSAS (numpy), Lorenz-63 Euler dt=1e-3, T=40",
    "nilsas_T200": "NILSAS (numpy), Lorenz-63 Euler dt=1e-3, T=200",
    "far_solenoid": "FAR (numpy), modified solenoid M=21, 1e5 steps",
    "lyapunov_lorenz_rk4": "lyapynov, Lorenz-63 RK4 dt=0.005, 1e6 steps",
}
SPEEDUP_TARGET = 100
WARM_BUDGET = 0.5
"""Seconds of warm calls a reference row repeats for (at least 3 calls, at most 200)."""
COLD_MARGIN_SECONDS = 1.0
"""Target: a first call in a new process with a filled cache within this of a warm call."""
PARALLEL_TARGET = 0.8
MEMORY_TARGET_MB = 2048
KERNEL_TARGETS = {"Kernel": 2, "PathKernel": 2}
LORENZ96_LAMBDA1 = 1.68
"""Lorenz-96 n=40, F=8: the largest exponent (per unit time), from its module docstring."""
RNN_GAIN = 1.5

rho = lambda s: s.rho
bias = lambda s: s.b
z_coordinate = lambda x: x[2]
mean_square = lambda x: jnp.mean(x**2)
rnn_activity = lambda h: jnp.mean(jnp.tanh(h) ** 2)


def sizes(quick: bool) -> dict[str, Any]:
    """Every size of every section: the full benchmark, or toys for a smoke test."""
    if not quick:
        return {
            "nilsas_T40_segments": 200,
            "nilsas_T200_segments": 1000,
            "far_segments": 5000,
            "lyapunov_steps": 1_000_000,
            "lyapunov_burn_in": 10_000,
            "lyapunov_orbit_steps": 62_500,
            "lyapunov_orbit_burn_in": 2_000,
            "cold_rows": None,  # every row
            "lorenz96_segments": 500,
            "lorenz96_burn_in": 2_000,
            "rnn_spectrum_steps": 5_000,
            "rnn_spectrum_burn_in": 1_000,
            "rnn_orbit_steps": 20_000,
            "rnn_burn_in": 1_000,
            "kernel_samples": 100_000,
            "renorm_steps": 50_000,
            "renorm_burn_in": 5_000,
            "scaling_n": [64, 128, 256, 512, 1024],
            "scaling_steps": 2_000,
            "scaling_burn_in": 200,
            "scaling_segments": 40,
            "parallel_samples": 2**16,
            "parallel_segments": 250,
            "parallel_long_segments": 1000,
            "memory_lorenz_segments": 50_000,
            "memory_rnn_segments": 10_000,
            "memory_burn_in": 1_000,
            "memory_spectrum_k": 40,  # 2000 steps counted 15 positive, 5000-10000 count 16
            "memory_spectrum_steps": 10_000,
            "memory_repeats": 3,
        }
    return {
        "nilsas_T40_segments": 20,
        "nilsas_T200_segments": 40,
        "far_segments": 200,
        "lyapunov_steps": 20_000,
        "lyapunov_burn_in": 1_000,
        "lyapunov_orbit_steps": 1_250,
        "lyapunov_orbit_burn_in": 200,
        "cold_rows": ["nilsas_T40"],
        "lorenz96_segments": 10,
        "lorenz96_burn_in": 200,
        "rnn_spectrum_steps": 500,
        "rnn_spectrum_burn_in": 100,
        "rnn_orbit_steps": 500,
        "rnn_burn_in": 100,
        "kernel_samples": 2_000,
        "renorm_steps": 2_000,
        "renorm_burn_in": 200,
        "scaling_n": [64, 128],
        "scaling_steps": 200,
        "scaling_burn_in": 50,
        "scaling_segments": 4,
        "parallel_samples": 2**10,
        "parallel_segments": 10,
        "parallel_long_segments": 20,
        "memory_lorenz_segments": 50,
        "memory_rnn_segments": 100,
        "memory_burn_in": 100,
        "memory_spectrum_k": 40,
        "memory_spectrum_steps": 300,
        "memory_repeats": 1,
    }


# --- workloads: one call of what is timed, buildable in this process or in a child ------


@dataclass
class Workload:
    """``run()``: the timed call; ``record(result)``: its numbers (estimate and standard
    error, or exponents and standard errors) for the JSON; ``steps``: steps per call."""

    run: Callable[[], Any]
    record: Callable[[Any], dict]
    steps: int
    settings: dict = field(default_factory=dict)


def gradient_record(result) -> dict:
    record = estimate_record(result.grad, result.stderr)
    warning = getattr(result.info, "warning", None)
    if warning:
        record["warning"] = warning
    return record


def spectrum_record(result) -> dict:
    return {
        "exponents": np.asarray(result.exponents).tolist(),
        "stderr": np.asarray(result.stderr).tolist(),
        "renorm_every_used": int(result.renorm_every),
    }


def lorenz63_shadowing(segments: int, burn_in: int = 1000, orbits: int = 1) -> Workload:
    """NILSAS's setting: Lorenz-63, Euler dt=1e-3, d<z>/d rho, u=2, 200-step segments."""
    system = cg.Lorenz63(dt=1e-3, method="euler")
    statistic = cg.TimeAverage(z_coordinate)
    estimator = cg.Shadowing(
        unstable_dim=2, segment_steps=200, segments=segments, burn_in=burn_in, orbits=orbits
    )
    key = jax.random.key(0)
    return Workload(
        run=lambda: cg.linear_response(system, statistic, estimator, wrt=rho, key=key),
        record=gradient_record,
        steps=orbits * (segments * 200 + burn_in),
        settings={"segments": segments, "segment_steps": 200, "burn_in": burn_in},
    )


def far_solenoid(segments: int) -> Workload:
    system = cg.ModifiedSolenoid(dim=21)
    statistic = cg.TimeAverage(cg.ModifiedSolenoid.observable)
    estimator = cg.FastAdjointResponse(
        unstable_dim=20, segment_steps=20, segments=segments, window=10, burn_in=1000
    )
    key = jax.random.key(0)
    return Workload(
        run=lambda: cg.linear_response(system, statistic, estimator, key=key),
        record=gradient_record,
        steps=segments * 20 + 1000,
        settings={"segments": segments, "segment_steps": 20, "window": 10, "burn_in": 1000},
    )


def lorenz63_spectrum(
    steps: int, burn_in: int, orbits: int = 1, renorm_every: int | str = "auto"
) -> Workload:
    system = cg.Lorenz63()
    key = jax.random.key(0)
    return Workload(
        run=lambda: cg.lyapunov_spectrum(
            system,
            3,
            steps=steps,
            burn_in=burn_in,
            key=key,
            orbits=orbits,
            renorm_every=renorm_every,
        ),
        record=spectrum_record,
        steps=orbits * (steps + burn_in),
        settings={
            "steps": steps,
            "burn_in": burn_in,
            "orbits": orbits,
            "renorm_every": renorm_every,
        },
    )


def nine_neuron_kernel(samples: int) -> Workload:
    net = cg.NineNeuronNet(gamma=0.556, noise=0.5)
    statistic = cg.Terminal(jnp.sum, 50)
    estimator = cg.Kernel(samples=samples)
    key = jax.random.key(0)
    return Workload(
        run=lambda: cg.linear_response(net, statistic, estimator, wrt=lambda s: s.gamma, key=key),
        record=gradient_record,
        steps=samples * 50,
        settings={"samples": samples, "depth": 50},
    )


def rnn_shadowing(n: int, u: int, segment_steps: int, segments: int, burn_in: int) -> Workload:
    system = cg.TanhRNN(n=n, g=RNN_GAIN)
    statistic = cg.TimeAverage(rnn_activity)
    estimator = cg.Shadowing(
        unstable_dim=u, segment_steps=segment_steps, segments=segments, burn_in=burn_in
    )
    key = jax.random.key(0)
    return Workload(
        run=lambda: cg.linear_response(system, statistic, estimator, wrt=bias, key=key),
        record=gradient_record,
        steps=segments * segment_steps + burn_in,
        settings={
            "n": n,
            "g": RNN_GAIN,
            "unstable_dim": u,
            "segment_steps": segment_steps,
            "segments": segments,
            "burn_in": burn_in,
        },
    )


def build(name: str, quick: bool, params: dict | None = None) -> Workload:
    """The workload ``name`` at the sizes of ``quick`` (``params``: what the parent found,
    e.g. an unstable dimension)."""
    s, params = sizes(quick), params or {}
    if name == "nilsas_T40":
        return lorenz63_shadowing(s["nilsas_T40_segments"])
    if name == "nilsas_T200":
        return lorenz63_shadowing(s["nilsas_T200_segments"])
    if name in ("nilsas_T40_16_orbits", "nilsas_T200_16_orbits"):  # the steps split 16 ways
        segments = s["nilsas_T40_segments" if "T40" in name else "nilsas_T200_segments"]
        return lorenz63_shadowing(max(2, segments // 16), orbits=16)
    if name == "far_solenoid":
        return far_solenoid(s["far_segments"])
    if name == "lyapunov_lorenz_rk4":
        return lorenz63_spectrum(s["lyapunov_steps"], s["lyapunov_burn_in"])
    if name == "lyapunov_lorenz_rk4_qr_every_step":  # as the reference code factorises
        return lorenz63_spectrum(s["lyapunov_steps"], s["lyapunov_burn_in"], renorm_every=1)
    if name == "lyapunov_lorenz_rk4_16_orbits":
        return lorenz63_spectrum(s["lyapunov_orbit_steps"], s["lyapunov_orbit_burn_in"], 16)
    if name == "parallel_kernel":
        return nine_neuron_kernel(s["parallel_samples"])
    if name == "parallel_shadowing":
        return lorenz63_shadowing(s["parallel_segments"], orbits=16)
    if name == "parallel_shadowing_long":  # T = 200 an orbit, as the NILSAS T = 200 row
        return lorenz63_shadowing(s["parallel_long_segments"], orbits=16)
    if name == "memory_lorenz":
        return lorenz63_shadowing(s["memory_lorenz_segments"], burn_in=s["memory_burn_in"])
    if name == "memory_rnn":
        return rnn_shadowing(
            200, params["unstable_dim"], 100, s["memory_rnn_segments"], s["memory_burn_in"]
        )
    raise ValueError(f"unknown workload {name!r}")


# --- child processes ----------------------------------------------------------------------


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache in ``directory``, every compiled program kept."""
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def child_main(spec_json: str, import_seconds: float) -> None:
    """Run in a fresh process (``_measure.child_command``): join the processes of a layout,
    maybe enable a compilation cache, then run ``spec["workloads"]`` in turn in one of the
    modes, and print the result line.

    * cold: build the workload and make its first call (``cold_seconds`` includes building
      the system, which may compile too);
    * warm: :func:`warm_seconds` with ``repeats``;
    * memory: warm as well, then this process's peak resident memory (one workload per
      process, so that the peak is that workload's).
    """
    spec = json.loads(spec_json)
    if spec.get("cpus") is not None:  # before XLA starts its threads (at the first computation)
        os.sched_setaffinity(0, spec["cpus"])
    parallel.initialize()  # no-op unless CHAOSGRAD_PROCESSES > 1
    if spec.get("cache"):
        enable_compilation_cache(spec["cache"])
    out: dict[str, Any] = {
        "import_seconds": import_seconds,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "workloads": {},
    }
    for name in spec["workloads"]:
        began = time.perf_counter()
        workload = build(name, spec["quick"], spec.get("params"))
        entry: dict[str, Any] = {"build_seconds": time.perf_counter() - began}
        if spec["mode"] == "cold":
            seconds, result = first_call_seconds(workload.run)
            entry["first_call_seconds"] = seconds
            entry["cold_seconds"] = entry["build_seconds"] + seconds
        else:
            timing = warm_seconds(workload.run, repeats=spec.get("repeats", 3))
            result = timing.result
            entry.update(seconds=timing.seconds, first_seconds=timing.first, warm=timing.warm)
        entry["record"] = workload.record(result)
        entry["steps"] = workload.steps
        out["workloads"][name] = entry
    if spec["mode"] == "memory":
        out["peak_rss_mb"] = peak_rss_mb()
    print(RESULT_PREFIX + json.dumps(jsonable(out)), flush=True)


def cold_start(name: str, quick: bool) -> dict:
    """A first call in a new process: with an empty persistent compilation cache, then in
    a second new process with the cache the first one filled."""
    with tempfile.TemporaryDirectory(prefix="chaosgrad-speed-cache-") as cache:
        spec = {"workloads": [name], "quick": quick, "mode": "cold", "cache": cache}
        empty = run_child(SCRIPT, spec)
        cached = run_child(SCRIPT, spec)
        cache_mb = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file()) / 2**20
    return {
        "cold_empty_cache_seconds": empty["workloads"][name]["cold_seconds"],
        "cold_cached_seconds": cached["workloads"][name]["cold_seconds"],
        "import_seconds": cached["import_seconds"],
        "import_seconds_first_process": empty["import_seconds"],
        "process_seconds_empty_cache": empty["process_seconds"],
        "process_seconds_cached": cached["process_seconds"],
        "cache_megabytes": cache_mb,
    }


# --- 1. reference rows -------------------------------------------------------------------


def reference_rows(quick: bool) -> dict:
    """chaosgrad at the reference codes' settings: warm seconds, the speed-up over the
    reference (target 100) and the cold start of each row."""
    s = sizes(quick)
    rows: dict[str, dict] = {}
    names = [
        *REFERENCE_SECONDS,
        "nilsas_T40_16_orbits",
        "nilsas_T200_16_orbits",
        "lyapunov_lorenz_rk4_16_orbits",
        "lyapunov_lorenz_rk4_qr_every_step",
    ]
    for name in names:
        workload = build(name, quick)
        timing = warm_seconds(workload.run, budget=WARM_BUDGET)
        reference_name = next(r for r in REFERENCE_SECONDS if name.startswith(r))
        reference = REFERENCE_SECONDS[reference_name]
        ratio = speedup(reference, timing.seconds)
        row = {
            "settings": workload.settings,
            "reference_code": REFERENCE_CODES[reference_name],
            "reference_seconds": reference,
            "warm_seconds": timing.seconds,
            "first_call_seconds": timing.first,
            "ratio": ratio,
            "target": SPEEDUP_TARGET,
            "meets_target": meets_at_least(ratio, SPEEDUP_TARGET),
            **workload.record(timing.result),
        }
        rows[name] = row
        shown = (
            f"lambda = {np.round(row['exponents'], 4).tolist()} +- "
            f"{np.round(row['stderr'], 4).tolist()}"
            if "exponents" in row
            else f"grad = {format_estimate(row)}"
        )
        print(
            f"reference  {name:30s} warm {timing.seconds:8.3f} s  reference "
            f"{reference:6.2f} s  x{ratio:7.1f} (target {SPEEDUP_TARGET})  {shown}",
            flush=True,
        )
    single, ensemble = rows["lyapunov_lorenz_rk4"], rows["lyapunov_lorenz_rk4_16_orbits"]
    ensemble["single_orbit_exponents"] = single["exponents"]
    ensemble["single_orbit_stderr"] = single["stderr"]
    ensemble["max_difference_in_combined_se"] = max_se_distance(
        ensemble["exponents"], ensemble["stderr"], single["exponents"], single["stderr"]
    )
    ensemble["note"] = (
        "16 independent orbits of steps/16 each (the same 1e6 averaged steps); stderr is "
        "the spread of the orbits, the single orbit's is batch means; the reference time "
        "is lyapynov's single orbit"
    )
    every_step = rows["lyapunov_lorenz_rk4_qr_every_step"]
    single["max_abs_exponent_difference_to_a_qr_every_step"] = float(
        np.max(np.abs(np.subtract(single["exponents"], every_step["exponents"])))
    )
    single["note"] = (
        "the library's default renorm_every='auto': the burn-in factorises every step and "
        "measures the exponents, the run then every renorm_every_used steps (the sums of "
        "log R_ii are the same quantity: the exponents differ from a QR every step by "
        "max_abs_exponent_difference_to_a_qr_every_step); lyapynov factorises every step"
    )
    every_step["note"] = "the single orbit with a QR every step, as the reference code does"
    for name in ("nilsas_T40_16_orbits", "nilsas_T200_16_orbits"):
        rows[name]["equal_accuracy"] = False
        rows[name]["note"] = (
            "16 independent orbits of segments/16 each (each with its own 1000-step burn-in); "
            "stderr is the spread of the orbits (calibrated), the single orbit's is batch "
            "means. NOT at equal accuracy: in the calibration experiment (Lorenz-63, the same "
            "setting) one orbit of T = 200 has a true spread over keys of 0.0021 against its "
            "batch-means error of 0.014, and 16 orbits of T = 50 (4x the steps) a spread of "
            "0.0030: each orbit's estimate carries boundary terms that fall like 1/T, not "
            "1/sqrt(T), so one long orbit is about 8x more precise per step, and this "
            "row's speed-up is not one at equal accuracy"
        )
    for name in names:
        if s["cold_rows"] is not None and name not in s["cold_rows"]:
            continue
        cold = cold_start(name, quick)
        cold["target"] = f"cold_cached_seconds <= warm_seconds + {COLD_MARGIN_SECONDS}"
        cold["meets_target"] = meets_at_most(
            cold["cold_cached_seconds"], rows[name]["warm_seconds"] + COLD_MARGIN_SECONDS
        )
        rows[name]["cold_start"] = cold
        print(
            f"cold       {name:30s} empty cache {cold['cold_empty_cache_seconds']:6.2f} s  "
            f"cached {cold['cold_cached_seconds']:6.2f} s  import "
            f"{cold['import_seconds']:5.2f} s  (warm {rows[name]['warm_seconds']:.3f} s; "
            f"cached <= warm + {COLD_MARGIN_SECONDS:g} s: "
            f"{'met' if cold['meets_target'] else 'missed'})",
            flush=True,
        )
    return {
        "reference_seconds": REFERENCE_SECONDS,
        "note": "ratio = reference seconds / chaosgrad warm seconds"
        + (
            "; quick sizes: ratios are not comparable to the references, cold start of "
            f"{', '.join(s['cold_rows'] or [])} only"
            if quick
            else ""
        ),
        "rows": rows,
    }


# --- 2. shadowing against backprop -------------------------------------------------------


def count_positive(system, k: int, steps: int, burn_in: int) -> tuple[int, dict]:
    """The number of positive exponents among the k largest, and the spectrum."""
    result = cg.lyapunov_spectrum(system, k, steps=steps, burn_in=burn_in, key=jax.random.key(0))
    exponents = np.asarray(result.exponents)
    count = int(np.sum(exponents > 0))
    record = {"k": k, "steps": steps, "burn_in": burn_in, **spectrum_record(result)}
    record["positive"] = count
    if count == k:
        record["warning"] = f"all {k} exponents positive: the count is a lower bound"
    return count, record


def compare_to_backprop(name, system, statistic, wrt, u, segment_steps, segments, burn_in):
    """Shadowing over N = segments * segment_steps steps against Backprop with 2 samples of
    N / 2 steps (the same total steps); target ratio u + 2."""
    steps = segments * segment_steps
    key = jax.random.key(0)
    shadowing = cg.Shadowing(
        unstable_dim=u, segment_steps=segment_steps, segments=segments, burn_in=burn_in
    )
    backprop = cg.Backprop(samples=2, steps=steps // 2, burn_in=burn_in, diagnostics=False)
    shadow = warm_seconds(
        lambda: cg.linear_response(system, statistic, shadowing, wrt=wrt, key=key)
    )
    back = warm_seconds(lambda: cg.linear_response(system, statistic, backprop, wrt=wrt, key=key))
    ratio = cost_ratio(shadow.seconds, back.seconds)
    row = {
        "steps": steps,
        "unstable_dim": u,
        "segment_steps": segment_steps,
        "segments": segments,
        "burn_in": burn_in,
        "shadowing_seconds": shadow.seconds,
        "backprop_seconds": back.seconds,
        "ratio": ratio,
        "target": u + 2,
        "meets_target": meets_at_most(ratio, u + 2),
        "shadowing_estimate": gradient_record(shadow.result),
        "backprop_estimate": gradient_record(back.result),
    }
    print(
        f"shadowing  {name:30s} N={steps:7d} u={u:3d}  Shadowing {shadow.seconds:8.3f} s  "
        f"Backprop {back.seconds:8.3f} s  ratio {ratio:6.2f} (target {u + 2})  grad = "
        f"{format_estimate(row['shadowing_estimate'])}",
        flush=True,
    )
    return row


def shadowing_vs_backprop(quick: bool) -> dict:
    s = sizes(quick)
    rows = {}
    lorenz96 = cg.Lorenz96()
    m96 = max(1, round(1 / (LORENZ96_LAMBDA1 * lorenz96.dt)))
    rows["lorenz96_n40"] = compare_to_backprop(
        "lorenz96 n=40 F=8 (rk4)",
        lorenz96,
        cg.TimeAverage(mean_square),
        lambda s: s.forcing,
        14,
        m96,
        s["lorenz96_segments"],
        s["lorenz96_burn_in"],
    )
    rows["lorenz96_n40"]["segment_steps_rule"] = (
        f"lambda_1 m dt = 1 with lambda_1 = {LORENZ96_LAMBDA1}"
    )

    rnn = cg.TanhRNN(n=128, g=RNN_GAIN)
    u, spectrum = count_positive(rnn, 40, s["rnn_spectrum_steps"], s["rnn_spectrum_burn_in"])
    lambda1 = max(spectrum["exponents"])  # a short run may leave them unsorted
    m = int(np.clip(round(1 / lambda1), 5, 200)) if lambda1 > 0 else 50
    u = min(u, rnn.dim - 1)
    print(
        f"spectrum   tanh rnn n=128 g={RNN_GAIN}: {spectrum['positive']} of 40 exponents "
        f"positive, lambda_1 = {lambda1:.4f} per step",
        flush=True,
    )
    rows["tanh_rnn_n128"] = compare_to_backprop(
        f"tanh rnn n=128 g={RNN_GAIN}",
        rnn,
        cg.TimeAverage(rnn_activity),
        bias,
        u,
        m,
        max(2, s["rnn_orbit_steps"] // m),
        s["rnn_burn_in"],
    )
    rows["tanh_rnn_n128"]["spectrum"] = spectrum
    rows["tanh_rnn_n128"]["segment_steps_rule"] = "lambda_1 m = 1 (per step), within [5, 200]"

    rows["lorenz63"] = compare_to_backprop(
        "lorenz63 (euler, dt=1e-3)",
        cg.Lorenz63(dt=1e-3, method="euler"),
        cg.TimeAverage(z_coordinate),
        rho,
        2,
        200,
        s["nilsas_T200_segments"],
        1000,
    )
    return {
        "note": "ratio = Shadowing seconds / seconds of Backprop(samples=2, steps=N/2) (the "
        "same total steps); target u + 2",
        "rows": rows,
    }


# --- 3. kernel estimators against a forward pass ----------------------------------------


def kernel_vs_forward(quick: bool) -> dict:
    """9-neuron network, depth 50: Kernel and PathKernel(alpha=1) against one forward pass
    over the same samples."""
    samples, depth = sizes(quick)["kernel_samples"], 50
    net = cg.NineNeuronNet(gamma=0.556, noise=0.5)
    statistic = cg.Terminal(jnp.sum, depth)
    key = jax.random.key(0)
    starts = jax.vmap(net.initial_state)(jax.random.split(jax.random.key(1), samples))
    noise_keys = jax.random.split(jax.random.key(2), samples)

    @jax.jit
    def forward(starts, noise_keys):
        """E[sum x_50] over the samples: one forward pass, the cost unit of the targets."""

        def one(x0, key):
            step = lambda x, t: (net.step(t, x, net.noise(key, t, x.shape[0])), None)
            return jnp.sum(jax.lax.scan(step, x0, jnp.arange(depth))[0])

        return jnp.mean(jax.vmap(one)(starts, noise_keys))

    t_forward = warm_seconds(lambda: forward(starts, noise_keys)).seconds
    print(f"kernel     forward pass {samples} samples depth {depth}: {t_forward:.4f} s", flush=True)
    rows = {}
    for name, estimator in (
        ("Kernel", cg.Kernel(samples=samples)),
        ("PathKernel", cg.PathKernel(samples=samples, alpha=1.0)),
    ):
        timing = warm_seconds(
            lambda e=estimator: cg.linear_response(
                net, statistic, e, wrt=lambda s: s.gamma, key=key
            )
        )
        ratio = cost_ratio(timing.seconds, t_forward)
        rows[name] = {
            "seconds": timing.seconds,
            "ratio_to_forward": ratio,
            "target": KERNEL_TARGETS[name],
            "meets_target": meets_at_most(ratio, KERNEL_TARGETS[name]),
            **gradient_record(timing.result),
        }
        print(
            f"kernel     {name:30s} {timing.seconds:8.4f} s  x{ratio:5.2f} a forward pass "
            f"(target {KERNEL_TARGETS[name]})  d E[sum x_50]/d gamma = "
            f"{format_estimate(rows[name], 1)}",
            flush=True,
        )
    return {
        "system": "nine_neuron_net gamma=0.556 noise=0.5",
        "depth": depth,
        "samples": samples,
        "forward_pass_seconds": t_forward,
        "rows": rows,
    }


# --- 4. Lorenz-96 spectrum against renorm_every -----------------------------------------


def lorenz96_renorm(quick: bool) -> dict:
    s = sizes(quick)
    steps, burn_in = s["renorm_steps"], s["renorm_burn_in"]
    system = cg.Lorenz96()
    key = jax.random.key(0)
    rows = {}
    for every in (1, 5, 10):
        timing = warm_seconds(
            lambda r=every: cg.lyapunov_spectrum(
                system, 40, steps=steps, burn_in=burn_in, renorm_every=r, key=key
            )
        )
        rows[str(every)] = {
            "renorm_every": every,
            "seconds": timing.seconds,
            "microseconds_per_step": per_step_microseconds(timing.seconds, steps + burn_in),
            "compile_seconds": timing.compile_seconds,
            "kaplan_yorke_dimension": timing.result.kaplan_yorke_dimension,
            **spectrum_record(timing.result),
        }
    base = rows["1"]
    for row in rows.values():
        row["max_difference_to_renorm_1_in_combined_se"] = max_se_distance(
            row["exponents"], row["stderr"], base["exponents"], base["stderr"]
        )
        print(
            f"renorm     lorenz96 n=40 renorm_every={row['renorm_every']:2d}  "
            f"{row['microseconds_per_step']:8.2f} us/step  lambda_1 = "
            f"{row['exponents'][0]:.4f} +- {row['stderr'][0]:.4f}  max |dlambda| = "
            f"{row['max_difference_to_renorm_1_in_combined_se']:.2f} SE",
            flush=True,
        )
    return {"k": 40, "steps": steps, "burn_in": burn_in, "rows": rows}


# --- 4b. what the FAR row's arithmetic costs at best ----------------------------------


def far_floor(quick: bool) -> dict:
    """The FAR row's nonlinear work per step, each piece vectorised over a batch of states in
    one compiled call (outside any loop: the cheapest XLA does it on this machine), against
    the warm FAR row: the solenoid's step; its dense Jacobians in x and theta (dim + P = 23
    JVPs); the second-order trace term (a VJP of u = 20 JVPs); the products with the 21 x 21
    Jacobian that one step of the sweep needs (21 forward tangents, 22 adjoints). Each piece
    is timed at several batch sizes (large batches leave the CPU's caches) and its cheapest
    is kept. Their sum per step, times the row's steps, is a floor no schedule of this
    algorithm beats here; ``best_ratio`` is the reference time over that floor."""
    from chaosgrad.estimators._parameters import Parameters
    from chaosgrad.estimators._segment_steps import segment_jacobians
    from chaosgrad.estimators._unstable import second_order_terms

    batches = (320, 1280) if quick else (320, 1280, 5120, 20480)
    system, u = cg.ModifiedSolenoid(dim=21), 20
    key = jax.random.key(0)
    params = Parameters.of(system, None)
    rng = np.random.default_rng(0)
    table: dict[str, dict[str, float]] = {}
    for size in batches:
        states = cg.simulate(system, steps=size - 1, key=key, burn_in=1000)
        tangents, adjoints = (jnp.asarray(rng.normal(size=(size, 21, u))) for _ in range(2))
        columns = jnp.asarray(rng.normal(size=(size, 21, 2 * u + 3)))
        ts = jnp.arange(size)
        pieces = {
            "step": jax.jit(lambda x, ts=ts: jax.vmap(lambda y, t: system.step(t, y, None))(x, ts)),
            "jacobians": jax.jit(lambda x: segment_jacobians(system, key, params, x, 0)),
            "second_order": jax.jit(
                lambda x, ts=ts, e=tangents, a=adjoints: second_order_terms(
                    system, params, key, x, ts, e, a
                )
            ),
            "products": jax.jit(lambda j, c=columns: jnp.einsum("nij,nic->njc", j, c)),
        }
        jacobians = pieces["jacobians"](states)[0]
        for name, function in pieces.items():
            argument = jacobians if name == "products" else states
            timing = warm_seconds(lambda f=function, a=argument: f(a), budget=0.5)
            table.setdefault(name, {})[str(size)] = per_step_microseconds(timing.seconds, size)
    cheapest = {name: min(by_size.values()) for name, by_size in table.items()}
    floor = sum(cheapest.values())
    row_steps = 100_000
    floor_seconds = floor * row_steps * 1e-6
    reference = REFERENCE_SECONDS["far_solenoid"]
    for name, by_size in table.items():
        shown = "  ".join(f"{size}: {value:5.2f}" for size, value in by_size.items())
        print(f"far floor  {name:13s} us/step by batch  {shown}", flush=True)
    print(
        f"far floor  total {floor:.2f} us/step: {floor_seconds:.3f} s for {row_steps} steps, "
        f"at best {reference / floor_seconds:.0f}x the reference",
        flush=True,
    )
    return {
        "microseconds_per_step_by_batch": table,
        "cheapest_microseconds_per_step": cheapest,
        "floor_microseconds_per_step": floor,
        "floor_seconds_for_the_row": floor_seconds,
        "best_ratio": reference / floor_seconds,
    }


# --- 5. tanh RNN scaling -----------------------------------------------------------------


def rnn_scaling(quick: bool) -> dict:
    """Cost per step and compile time against n: lyapunov_spectrum(k = min(32, n)) and
    Shadowing (u = the positive exponents found, at most 16; 50-step segments)."""
    s = sizes(quick)
    steps, burn_in, segments = s["scaling_steps"], s["scaling_burn_in"], s["scaling_segments"]
    key = jax.random.key(0)
    rows = []
    for n in s["scaling_n"]:
        system = cg.TanhRNN(n=n, g=RNN_GAIN)
        k = min(32, n)
        spectrum = warm_seconds(
            lambda system=system, k=k: cg.lyapunov_spectrum(
                system, k, steps=steps, burn_in=burn_in, key=key
            )
        )
        exponents = np.asarray(spectrum.result.exponents)
        positive = int(np.sum(exponents > 0))
        u = min(16, positive)
        workload = rnn_shadowing(n, u, 50, segments, burn_in)
        shadow = warm_seconds(workload.run)
        row = {
            "n": n,
            "spectrum": {
                "k": k,
                "steps": steps + burn_in,
                "microseconds_per_step": per_step_microseconds(spectrum.seconds, steps + burn_in),
                "warm_seconds": spectrum.seconds,
                "compile_seconds": spectrum.compile_seconds,
                "positive_exponents": positive,
                **spectrum_record(spectrum.result),
            },
            "shadowing": {
                **workload.settings,
                "steps": workload.steps,
                "microseconds_per_step": per_step_microseconds(shadow.seconds, workload.steps),
                "warm_seconds": shadow.seconds,
                "compile_seconds": shadow.compile_seconds,
                **gradient_record(shadow.result),
            },
        }
        rows.append(row)
        print(
            f"scaling    tanh rnn n={n:5d}  spectrum k={k:2d} "
            f"{row['spectrum']['microseconds_per_step']:9.1f} us/step (compile "
            f"{spectrum.compile_seconds:5.2f} s)  Shadowing u={u:2d} "
            f"{row['shadowing']['microseconds_per_step']:9.1f} us/step (compile "
            f"{shadow.compile_seconds:5.2f} s)",
            flush=True,
        )
    return {
        "g": RNN_GAIN,
        "note": "us/step = warm seconds / (steps + burn_in); compile = first call - warm call",
        "rows": rows,
    }


def plot_rnn_scaling(path: Path, rows: list[dict]) -> Path:
    """Log-log cost per step against n (spectrum and Shadowing), compile time beside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    n = [row["n"] for row in rows]
    fig = Figure(figsize=(10.0, 4.0))
    FigureCanvasAgg(fig)
    cost, compile_ = fig.subplots(1, 2)
    for method, label in (
        ("spectrum", "lyapunov_spectrum, k = min(32, n)"),
        ("shadowing", "Shadowing, u <= 16, m = 50"),
    ):
        cost.loglog(n, [row[method]["microseconds_per_step"] for row in rows], "o-", label=label)
        compile_.semilogx(n, [row[method]["compile_seconds"] for row in rows], "o-", label=label)
    reference = np.array(n, dtype=float)
    first = rows[0]["spectrum"]["microseconds_per_step"]
    cost.loglog(reference, first * (reference / reference[0]) ** 2, ":", color="0.5", label="~ n²")
    for ax in (cost, compile_):
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(n, [str(v) for v in n])
    cost.set_xlabel("units n")
    cost.set_ylabel("warm cost per step (µs)")
    cost.set_title(f"tanh RNN, g = {RNN_GAIN}: cost per step")
    cost.legend(fontsize=8)
    compile_.set_xlabel("units n")
    compile_.set_ylabel("compile time (s): first call − warm call")
    compile_.set_title("compile time")
    compile_.set_ylim(bottom=0)
    compile_.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# --- 6. parallel efficiency -------------------------------------------------------------


# The 16-orbit shadowing ensemble at two sizes: T = 50 an orbit (~90 ms in all, where the
# few collectives between processes, each ~3-4 ms through gloo on cores held by XLA's
# threads, weigh) and T = 200 (~4x the work, the same collectives).
PARALLEL_WORKLOADS = {
    "parallel_kernel": "Kernel nine-neuron depth 50",
    "parallel_shadowing": "Shadowing lorenz63 orbits=16",
    "parallel_shadowing_long": "Shadowing lorenz63 16 x T=200",
}
LAYOUTS = ("1x1", "1x2", "2x1")
ONE_CORE = "1x1 one core"
"""The strong-scaling baseline: one process, one device, held to one core (Linux)."""


def run_layout(layout: str, names: list[str], quick: bool) -> dict:
    """Warm timings of ``names`` in fresh processes of one layout: "1x1" (1 process, 1
    device), "1x2" (1 process, 2 CPU devices), "2x1" (2 processes of 1 device, each held
    to its own core as ``--processes`` holds them; a workload's seconds are those of the
    slower process), "1x1 one core"."""
    spec = {"workloads": names, "quick": quick, "mode": "warm"}
    if layout == "1x1":
        return run_child(SCRIPT, spec)
    if layout == ONE_CORE:
        return run_child(SCRIPT, dict(spec, cpus=[0]))
    if layout == "1x2":
        return run_child(
            SCRIPT, spec, clean_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
        )
    from chaosgrad.cli.processes import free_port

    coordinator = f"localhost:{free_port()}"
    shares = parallel.cpu_shares(2)  # each process on its own core, as --processes does
    children = [
        start_child(
            SCRIPT,
            spec,
            clean_env(
                CHAOSGRAD_COORDINATOR=coordinator,
                CHAOSGRAD_PROCESSES="2",
                CHAOSGRAD_PROCESS_ID=str(rank),
                **({"CHAOSGRAD_CPUS": shares[rank]} if shares else {}),
            ),
        )
        for rank in range(2)
    ]
    results = wait_children(children)
    main = dict(results[0])
    for name in names:
        each = [result["workloads"][name]["seconds"] for result in results]
        main["workloads"][name] = dict(
            main["workloads"][name], seconds=max(each), seconds_per_process=each
        )
    return main


def layout_row(name: str, quick: bool, layouts: dict[str, dict]) -> dict:
    """One workload across the layouts: seconds, efficiency against 1x1, estimates."""
    runs = {layout: result["workloads"][name] for layout, result in layouts.items()}
    t1 = runs["1x1"]["seconds"]
    row: dict[str, Any] = {
        "settings": build(name, quick).settings,
        "target": PARALLEL_TARGET,
        "max_relative_difference_between_layouts": max_relative_difference(
            [run["record"]["grad"] for run in runs.values()]
        ),
        "layouts": {},
    }
    for layout, run in runs.items():
        entry = {
            "seconds": run["seconds"],
            "device_count": layouts[layout]["device_count"],
            "process_count": layouts[layout]["process_count"],
            "estimate": run["record"],
        }
        if "seconds_per_process" in run:
            entry["seconds_per_process"] = run["seconds_per_process"]
        if layout in ("1x2", "2x1"):
            entry["efficiency"] = efficiency(t1, run["seconds"])
            entry["meets_target"] = meets_at_least(entry["efficiency"], PARALLEL_TARGET)
            if ONE_CORE in runs:
                entry["efficiency_against_one_core"] = efficiency(
                    runs[ONE_CORE]["seconds"], run["seconds"]
                )
        row["layouts"][layout] = entry
    if ONE_CORE in runs:  # what XLA's own threads already get from the second core
        row["layouts"]["1x1"]["efficiency_against_one_core"] = efficiency(
            runs[ONE_CORE]["seconds"], t1
        )
    return row


def parallel_efficiency(quick: bool) -> dict:
    """Both workloads in one fresh process (or process pair) per layout."""
    names = list(PARALLEL_WORKLOADS)
    chosen = (*LAYOUTS, ONE_CORE) if hasattr(os, "sched_setaffinity") else LAYOUTS
    layouts = {layout: run_layout(layout, names, quick) for layout in chosen}
    rows = {}
    for name, label in PARALLEL_WORKLOADS.items():
        row = rows[name] = layout_row(name, quick, layouts)
        shown = "  ".join(
            f"{layout} {entry['seconds']:7.3f} s"
            + (f" (eff {entry['efficiency']:.2f})" if "efficiency" in entry else "")
            + (
                f" (vs one core {entry['efficiency_against_one_core']:.2f})"
                if "efficiency_against_one_core" in entry
                else ""
            )
            for layout, entry in row["layouts"].items()
        )
        print(
            f"parallel   {label:30s} {shown}  max rel diff "
            f"{row['max_relative_difference_between_layouts']:.1e} (target eff "
            f"{PARALLEL_TARGET})",
            flush=True,
        )
    return {
        "note": "efficiency = t(1 process x 1 device) / (2 t(layout)); "
        "efficiency_against_one_core = t(1 x 1 held to one core) / (2 t(layout)), the "
        "strong-scaling efficiency over the 2 cores (for 1x1: what XLA's own threads get "
        "from the second core); 2x1 takes the slower process; every layout in fresh "
        "processes",
        "rows": rows,
    }


# --- 7. memory ---------------------------------------------------------------------------


def memory(quick: bool) -> dict:
    s = sizes(quick)
    repeats = s["memory_repeats"]
    rnn = cg.TanhRNN(n=200, g=RNN_GAIN)
    u, spectrum = count_positive(
        rnn, s["memory_spectrum_k"], s["memory_spectrum_steps"], s["memory_burn_in"]
    )
    u = min(u, rnn.dim - 1)
    print(f"memory     tanh rnn n=200: {u} positive exponents (short spectrum)", flush=True)
    rows = {}
    for name, label, params in (
        ("memory_lorenz", "lorenz63 Shadowing", {}),
        ("memory_rnn", "tanh rnn n=200 Shadowing", {"unstable_dim": u}),
    ):
        spec = {
            "workloads": [name],
            "quick": quick,
            "mode": "memory",
            "repeats": repeats,
            "params": params,
        }
        child = run_child(SCRIPT, spec)
        result = dict(child["workloads"][name], peak_rss_mb=child["peak_rss_mb"])
        row = {
            "settings": build(name, quick, params).settings,
            "steps": result["steps"],
            "seconds": result["seconds"],
            "first_call_seconds": result["first_seconds"],
            "peak_rss_mb": result["peak_rss_mb"],
            "target_mb": MEMORY_TARGET_MB,
            "meets_target": meets_at_most(result["peak_rss_mb"], MEMORY_TARGET_MB),
            **result["record"],
        }
        if name == "memory_rnn":
            row["spectrum"] = spectrum
        rows[name] = row
        print(
            f"memory     {label:30s} {result['steps']:9d} steps  {result['seconds']:8.2f} s  "
            f"peak {result['peak_rss_mb']:7.0f} MB (target {MEMORY_TARGET_MB})  grad = "
            f"{format_estimate(row)}",
            flush=True,
        )
    return {
        "note": "peak resident memory of a fresh process (its own VmHWM on Linux); seconds: "
        f"best of {repeats} warm call(s) after the compiling call",
        "rows": rows,
    }


# --- main --------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[bool], dict]] = {
    "reference_rows": reference_rows,
    "shadowing_vs_backprop": shadowing_vs_backprop,
    "kernel_vs_forward": kernel_vs_forward,
    "lorenz96_renorm": lorenz96_renorm,
    "far_floor": far_floor,
    "rnn_scaling": rnn_scaling,
    "parallel_efficiency": parallel_efficiency,
    "memory": memory,
}


def commit() -> str | None:
    """The checked-out commit (with "-dirty" when the work tree has changes), or None."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=SCRIPT.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=SCRIPT.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test)")
    parser.add_argument("--only", choices=list(SECTIONS), help="run this section only")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    args = parser.parse_args(argv)
    path = args.results / ("speed_quick.json" if args.quick else "speed.json")
    # keep the sections not rerun
    out: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    out.update(
        benchmark="speed",
        quick=args.quick,
        machine={
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "chaosgrad": cg.__version__,
        },
    )
    failed = []
    for name in [args.only] if args.only else list(SECTIONS):
        began = time.perf_counter()
        section: dict[str, Any]
        try:
            section = SECTIONS[name](args.quick)
        except Exception as error:  # keep going: the other sections are still worth having
            traceback.print_exc()
            section = {"error": f"{type(error).__name__}: {error}"}
            failed.append(name)
        if name == "rnn_scaling" and "rows" in section:
            plot = args.results / ("rnn_scaling_quick.png" if args.quick else "rnn_scaling.png")
            section["plot"] = str(plot_rnn_scaling(plot, section["rows"]).name)
            print(f"wrote {plot}", flush=True)
        section["section_seconds"] = time.perf_counter() - began
        section["measured"] = {"commit": commit(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        out[name] = section
        write_json(path, out)
    print(f"wrote {path}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
