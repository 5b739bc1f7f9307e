"""Timing and bookkeeping helpers of benchmarks/speed.py (no chaosgrad import: the harness
arithmetic is tested on its own in tests/test_bench_harness.py).

* :func:`warm_seconds`: best of ``repeats`` warm calls after one compiling call.
* :func:`speedup`, :func:`cost_ratio`, :func:`efficiency`, :func:`meets_at_least`,
  :func:`meets_at_most`: the arithmetic of the targets.
* :func:`components`, :func:`estimate_record`: an estimate's numbers with their standard
  errors, flattened to JSON.
* :func:`run_child`: a fresh Python process that prints one JSON line (cold starts,
  device layouts, peak memory).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

RESULT_PREFIX = "SPEED-RESULT "
"""A child process prints its result as one line: this prefix, then JSON."""


@dataclass
class Timing:
    """``seconds``: the best warm call; ``first``: the first (compiling) call; ``warm``: every
    warm call; ``result``: the last call's result."""

    seconds: float
    first: float
    warm: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def compile_seconds(self) -> float:
        """The first call's extra time over a warm one (compilation and tracing)."""
        return max(self.first - self.seconds, 0.0)


def warm_seconds(
    run: Callable[[], Any],
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
    budget: float = 0.0,
    most: int = 200,
) -> Timing:
    """Call ``run`` once (it compiles), then ``repeats`` times, and more (up to ``most``
    warm calls) while the warm calls together took less than ``budget`` seconds; every
    call is waited for (``jax.block_until_ready``). Returns the fastest warm call. The
    budget gives a call of milliseconds, whose fastest of 3 still carries the scheduler's
    noise (about +-0.3 ms on this 2-core machine), the same chance as the reference codes'
    best of repeated runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    began = clock()
    result = jax.block_until_ready(run())
    first = clock() - began
    warm: list[float] = []
    while len(warm) < repeats or (sum(warm) < budget and len(warm) < most):
        began = clock()
        result = jax.block_until_ready(run())
        warm.append(clock() - began)
    return Timing(seconds=min(warm), first=first, warm=warm, result=result)


def first_call_seconds(
    run: Callable[[], Any], clock: Callable[[], float] = time.perf_counter
) -> tuple[float, Any]:
    """(seconds, result) of one call, waited for: a cold start."""
    began = clock()
    result = jax.block_until_ready(run())
    return clock() - began, result


def speedup(reference_seconds: float, seconds: float) -> float:
    """How many times faster than the reference (reference / measured)."""
    return reference_seconds / seconds


def cost_ratio(seconds: float, unit_seconds: float) -> float:
    """The cost in units of another run (measured / unit)."""
    return seconds / unit_seconds


def efficiency(one_worker_seconds: float, seconds: float, workers: int = 2) -> float:
    """Parallel efficiency t1 / (workers * t_workers): 1 is a perfect split."""
    return one_worker_seconds / (workers * seconds)


def meets_at_least(value: float, target: float) -> bool:
    return bool(value >= target)


def meets_at_most(value: float, target: float) -> bool:
    return bool(value <= target)


def per_step_microseconds(seconds: float, steps: int) -> float:
    return seconds / steps * 1e6


def max_relative_difference(values: Sequence[Sequence[float]]) -> float:
    """The largest |a_i - b_i| / max(|b_i|, tiny) over every row a against the first row b."""
    rows = [np.asarray(row, dtype=float) for row in values]
    base = rows[0]
    scale = np.maximum(np.abs(base), np.finfo(float).tiny)
    return float(max((np.max(np.abs(row - base) / scale) for row in rows[1:]), default=0.0))


def max_se_distance(a, stderr_a, b, stderr_b) -> float:
    """max_i |a_i - b_i| / sqrt(se_a_i^2 + se_b_i^2): the largest difference in units of
    the combined standard error (inf when a difference has no error bar)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    combined = np.hypot(np.asarray(stderr_a, dtype=float), np.asarray(stderr_b, dtype=float))
    difference = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        units = np.where(difference == 0, 0.0, difference / combined)
    return float(np.max(units))


def components(tree) -> tuple[list[str], list[float]]:
    """Names and values of every number in a pytree (arrays flattened, row-major)."""
    names, values = [], []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ravel(np.asarray(leaf, dtype=float))
        name = jax.tree_util.keystr(path) or "value"
        if array.size == 1 and np.ndim(leaf) == 0:
            names.append(name)
        else:
            names.extend(f"{name}[{i}]" for i in range(array.size))
        values.extend(float(v) for v in array)
    return names, values


def estimate_record(grad, stderr, limit: int = 16) -> dict:
    """The gradient and its standard error as JSON lists (the first ``limit`` components,
    with the total count and the largest |grad| / stderr over all of them)."""
    names, values = components(grad)
    _, errors = components(stderr)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(np.asarray(values)) / np.asarray(errors)
    record = {
        "components": len(values),
        "names": names[:limit],
        "grad": values[:limit],
        "stderr": errors[:limit],
        "max_abs_grad_over_stderr": float(np.nanmax(z)) if len(values) else None,
    }
    if len(values) > limit:
        record["note"] = f"first {limit} of {len(values)} components"
    return record


def format_estimate(record: dict, shown: int = 2) -> str:
    """'1.02 +- 0.01' for the first ``shown`` components."""
    pairs = zip(record["grad"][:shown], record["stderr"][:shown], strict=True)
    text = ", ".join(
        "nan" if g is None else f"{g:.4g} +- {'nan' if s is None else format(s, '.2g')}"
        for g, s in pairs
    )
    return text + (" ..." if record["components"] > shown else "")


def peak_rss_mb(status: Path = Path("/proc/self/status")) -> float:
    """This process's peak resident memory in MB.

    On Linux the high-water mark of this process's own memory (``VmHWM``). Not
    ``ru_maxrss``: Linux carries it over from the parent through fork and exec, so a child
    started by a large parent reports at least the parent's size. Elsewhere ru_maxrss
    (bytes on macOS).
    """
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the multi-process and device-count settings, plus
    ``extra``: what a child of one layout sees."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CHAOSGRAD_") or name == "CHAOSGRAD_CACHE_DIR"
    }
    flags = [flag for flag in env.pop("XLA_FLAGS", "").split() if "device_count" not in flag]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    env.update(extra)
    return env


def child_command(script: Path, spec: dict) -> list[str]:
    """``python -c`` timing ``import chaosgrad``, then ``script``'s ``child_main(spec, t)``."""
    code = (
        "import sys, time\n"
        "began = time.perf_counter()\n"
        "import chaosgrad\n"
        "imported = time.perf_counter() - began\n"
        f"sys.path.insert(0, {str(script.parent)!r})\n"
        f"import {script.stem} as bench\n"
        f"bench.child_main({json.dumps(spec)!r}, imported)\n"
    )
    return [sys.executable, "-c", code]


def parse_child(stdout: str) -> dict:
    """The JSON a child printed after :data:`RESULT_PREFIX`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"the child printed no result line; its output ended:\n{stdout[-2000:]}")


def run_child(script: Path, spec: dict, env: dict[str, str] | None = None, timeout=3600) -> dict:
    """Run one child to the end; its result dict plus ``process_seconds`` (wall time of the
    whole process, interpreter start included)."""
    began = time.perf_counter()
    done = subprocess.run(
        child_command(script, spec),
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.perf_counter() - began
    if done.returncode:
        raise RuntimeError(f"child {spec} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = parse_child(done.stdout)
    result["process_seconds"] = seconds
    return result


def start_child(script: Path, spec: dict, env: dict[str, str]) -> subprocess.Popen:
    """Start a child without waiting (the processes of one multi-process layout)."""
    return subprocess.Popen(
        child_command(script, spec),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_children(children: list[subprocess.Popen], timeout=3600) -> list[dict]:
    """Wait for every child of a layout; on a failure or timeout stop the rest."""
    outputs = []
    try:
        for child in children:
            stdout, stderr = child.communicate(timeout=timeout)
            if child.returncode:
                raise RuntimeError(f"child failed (exit {child.returncode}):\n{stderr[-4000:]}")
            outputs.append(parse_child(stdout))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return outputs


def finite_or_none(value: float | None):
    """JSON has no inf or NaN: those become None."""
    if value is None or not math.isfinite(value):
        return None
    return value


def jsonable(value):
    """``value`` with numpy numbers and arrays as Python ones and inf/NaN as None (JSON has
    neither)."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite_or_none(float(value))
    return value


def write_json(path: Path, payload: dict) -> None:
    """Write atomically (a crash mid-write keeps the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")
    temporary.replace(path)
