"""lyapunov_spectrum(checkpoint=DIR): a killed run resumes with exactly the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import lyapunov_spectrum

KEY = jax.random.key(0)
HENON = {"steps": 4_000, "burn_in": 100, "blocks": 8}
FIELDS = ("exponents", "stderr", "exponents_per_step", "stderr_per_step", "final_state")


class Interrupted(Exception):
    pass


def stop_after(calls: int):
    """A progress callback that raises at its ``calls``-th call (the burn-in is the first)."""
    seen = []

    def progress(steps):
        seen.append(steps)
        if len(seen) == calls:
            raise Interrupted

    return progress


def assert_same(resumed, uninterrupted):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(uninterrupted, name))
    assert resumed.kaplan_yorke_dimension == uninterrupted.kaplan_yorke_dimension
    if uninterrupted.per_orbit is not None:
        np.testing.assert_array_equal(resumed.per_orbit, uninterrupted.per_orbit)


@pytest.mark.parametrize("orbits", [1, 2])
def test_an_interrupted_run_resumes_with_the_uninterrupted_result(tmp_path, orbits):
    uninterrupted = lyapunov_spectrum(cg.Henon(), key=KEY, orbits=orbits, **HENON)
    with pytest.raises(Interrupted):  # after the burn-in and 3 of 8 blocks
        lyapunov_spectrum(
            cg.Henon(),
            key=KEY,
            orbits=orbits,
            checkpoint=tmp_path,
            progress=stop_after(4),
            **HENON,
        )
    assert (tmp_path / "run.ckpt").exists()
    steps = []
    resumed = lyapunov_spectrum(
        cg.Henon(), key=KEY, orbits=orbits, checkpoint=tmp_path, progress=steps.append, **HENON
    )
    assert steps == [100 + 3 * 500] + [500] * 5  # the saved steps once, then the rest
    assert_same(resumed, uninterrupted)


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    with pytest.raises(Interrupted):
        lyapunov_spectrum(cg.Henon(), key=KEY, checkpoint=tmp_path, progress=stop_after(2), **HENON)
    changed = dict(HENON, steps=5_000)
    with pytest.raises(ValueError, match=r"different steps \(4000 there, 5000 now\); use another"):
        lyapunov_spectrum(cg.Henon(), key=KEY, checkpoint=tmp_path, **changed)
    with pytest.raises(ValueError, match="different key ") as info:
        lyapunov_spectrum(cg.Henon(), key=jax.random.key(1), checkpoint=tmp_path, **HENON)
    assert "\n" not in str(info.value) and str(info.value).endswith("delete it")
    with pytest.raises(ValueError, match="different parameter .*a=1.3"):
        lyapunov_spectrum(cg.Henon(a=1.3), key=KEY, checkpoint=tmp_path, **HENON)


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    with pytest.raises(Interrupted):
        lyapunov_spectrum(cg.Henon(), key=KEY, checkpoint=tmp_path, progress=stop_after(2), **HENON)
    path = tmp_path / "run.ckpt"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupt"):
        lyapunov_spectrum(cg.Henon(), key=KEY, checkpoint=tmp_path, **HENON)


SETTINGS = {"steps": 2_000_000, "burn_in": 1_000, "blocks": 20}
SCRIPT = f"""
import json, sys, jax
import chaosgrad as cg
def progress(steps):
    print("block", steps, flush=True)
result = cg.lyapunov_spectrum(cg.Lorenz63(), **{SETTINGS}, key=jax.random.key(4),
                              checkpoint=sys.argv[1], progress=progress)
print(json.dumps({{name: getattr(result, name).tolist() for name in
                  ("exponents", "stderr", "final_state")}}), flush=True)
"""


def _finish(checkpoint) -> tuple[dict, int]:
    """The script's result and the steps of its first progress report."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(checkpoint)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]), int(lines[0].split()[1])


def test_a_sigkilled_run_resumes_with_the_uninterrupted_result(tmp_path):
    """SIGKILL after the burn-in and 2 blocks (each saved before it is reported), then run
    the same command again: the same numbers as a run never interrupted, bit for bit."""
    worker = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert worker.stdout is not None
        blocks = 0
        while blocks < 3:
            line = worker.stdout.readline()
            assert line, "the run ended before it could be killed"
            blocks += line.startswith("block")
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=60) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert (tmp_path / "run.ckpt").exists()
    resumed, first = _finish(tmp_path)
    assert first >= 1_000 + 2 * 100_000  # it went on from the checkpoint
    uninterrupted = lyapunov_spectrum(cg.Lorenz63(), **SETTINGS, key=jax.random.key(4))
    for name, values in resumed.items():
        np.testing.assert_array_equal(values, getattr(uninterrupted, name), err_msg=name)
