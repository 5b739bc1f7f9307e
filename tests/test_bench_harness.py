"""The arithmetic of benchmarks/speed.py's harness (benchmarks/_measure.py), not timings."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_measure.py"
spec = importlib.util.spec_from_file_location("bench_measure", PATH)
assert spec is not None and spec.loader is not None
measure = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = measure  # dataclasses look their module up there
spec.loader.exec_module(measure)


class FakeClock:
    """Each call to ``run`` advances the clock by the next duration."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self) -> float:
        return self.now

    def run(self):
        self.now += self.durations[self.calls]
        self.calls += 1
        return jnp.asarray(self.calls)


def test_warm_seconds_is_the_fastest_warm_call_after_the_compiling_one():
    clock = FakeClock([5.0, 0.3, 0.1, 0.2])
    timing = measure.warm_seconds(clock.run, clock=clock)
    assert clock.calls == 4
    assert timing.first == 5.0
    assert timing.warm == pytest.approx([0.3, 0.1, 0.2])
    assert timing.seconds == pytest.approx(0.1)
    assert timing.compile_seconds == pytest.approx(4.9)
    assert int(timing.result) == 4  # the last call's result, waited for


def test_warm_seconds_repeats_and_a_real_function():
    clock = FakeClock([1.0, 2.0])
    timing = measure.warm_seconds(clock.run, repeats=1, clock=clock)
    assert (timing.seconds, timing.first, timing.compile_seconds) == (2.0, 1.0, 0.0)
    real = measure.warm_seconds(lambda: jnp.arange(3.0) * 2)
    assert real.seconds <= max(real.warm) and len(real.warm) == 3
    np.testing.assert_array_equal(real.result, [0.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="repeats"):
        measure.warm_seconds(clock.run, repeats=0)


def test_warm_seconds_repeats_short_calls_up_to_the_budget():
    clock = FakeClock([1.0] + [0.1] * 10)
    timing = measure.warm_seconds(clock.run, repeats=2, clock=clock, budget=0.35)
    assert len(timing.warm) == 4  # 2 calls, then more until 0.4 >= 0.35
    clock = FakeClock([1.0] + [0.1] * 10)
    timing = measure.warm_seconds(clock.run, repeats=2, clock=clock, budget=5.0, most=6)
    assert len(timing.warm) == 6 and clock.calls == 7


def test_first_call_seconds():
    clock = FakeClock([3.5])
    seconds, result = measure.first_call_seconds(clock.run, clock=clock)
    assert seconds == 3.5 and int(result) == 1


def test_ratios_efficiency_and_targets():
    assert measure.speedup(47.0, 0.47) == pytest.approx(100.0)
    assert measure.cost_ratio(3.0, 1.5) == pytest.approx(2.0)
    assert measure.efficiency(2.0, 1.0) == pytest.approx(1.0)
    assert measure.efficiency(2.0, 1.25) == pytest.approx(0.8)
    assert measure.efficiency(3.0, 1.0, workers=3) == pytest.approx(1.0)
    assert measure.meets_at_least(100.0, 100) and not measure.meets_at_least(99.9, 100)
    assert measure.meets_at_most(4.0, 4) and not measure.meets_at_most(4.01, 4)
    assert measure.per_step_microseconds(2.0, 1_000_000) == pytest.approx(2.0)


def test_differences_between_runs():
    assert measure.max_relative_difference([[1.0, -2.0], [1.0, -2.0]]) == 0.0
    assert measure.max_relative_difference([[1.0, -2.0], [1.1, -2.0], [1.0, -2.5]]) == (
        pytest.approx(0.25)
    )
    assert measure.max_relative_difference([[1.0]]) == 0.0
    # |1 - 1.3| / hypot(0.3, 0.4) = 0.6; |2 - 2| = 0 counts 0 whatever its error bar
    distance = measure.max_se_distance([1.0, 2.0], [0.3, 0.0], [1.3, 2.0], [0.4, 0.0])
    assert distance == pytest.approx(0.6)
    assert math.isinf(measure.max_se_distance([1.0], [0.0], [2.0], [0.0]))


def test_estimate_record_flattens_names_values_and_errors():
    grad = {"a": jnp.asarray(2.0), "b": jnp.asarray([1.0, -3.0])}
    stderr = {"a": jnp.asarray(0.5), "b": jnp.asarray([0.1, 1.0])}
    record = measure.estimate_record(grad, stderr)
    assert record["names"] == ["['a']", "['b'][0]", "['b'][1]"]
    assert record["grad"] == [2.0, 1.0, -3.0]
    assert record["stderr"] == [0.5, 0.1, 1.0]
    assert record["components"] == 3
    assert record["max_abs_grad_over_stderr"] == pytest.approx(10.0)
    short = measure.estimate_record(jnp.arange(20.0), jnp.ones(20), limit=4)
    assert short["grad"] == [0.0, 1.0, 2.0, 3.0] and short["components"] == 20
    assert "note" in short
    assert measure.format_estimate(record, 1) == "2 +- 0.5 ..."


def test_json_has_no_nonfinite_numbers(tmp_path):
    payload = {"x": float("inf"), "y": np.float64(1.5), "z": [np.nan, np.int64(3)]}
    path = tmp_path / "out.json"
    measure.write_json(path, payload)
    assert json.loads(path.read_text()) == {"x": None, "y": 1.5, "z": [None, 3]}


def test_child_result_line_and_environment(monkeypatch):
    line = measure.RESULT_PREFIX + json.dumps({"seconds": 1.0})
    assert measure.parse_child(f"noise\n{line}\nmore noise\n") == {"seconds": 1.0}
    with pytest.raises(RuntimeError, match="no result line"):
        measure.parse_child("nothing")
    monkeypatch.setenv("CHAOSGRAD_PROCESSES", "2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --other")
    env = measure.clean_env(EXTRA="1")
    assert "CHAOSGRAD_PROCESSES" not in env
    assert env["XLA_FLAGS"] == "--other" and env["EXTRA"] == "1"


def test_peak_memory_is_the_process_own_high_water_mark(tmp_path):
    """VmHWM of /proc/self/status (kB), not ru_maxrss, which a child inherits from its
    parent through fork and exec on Linux."""
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 9999999 kB\nVmHWM:\t  524288 kB\nVmRSS:\t 1 kB\n")
    assert measure.peak_rss_mb(status) == 512.0
