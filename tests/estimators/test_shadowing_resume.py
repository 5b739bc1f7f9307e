"""Shadowing(checkpoint=DIR): killed at any moment, started again, the same answer."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import _runstate
from chaosgrad.estimators._resumable import pieces

SYSTEM = cg.Lorenz63(dt=1e-3, method="euler")
STATISTIC = cg.TimeAverage(lambda x: x[2])
SETTINGS = dict(unstable_dim=2, segment_steps=50, segments=32, burn_in=500, orbits=2)
WRT = lambda s: (s.rho, s.sigma)  # noqa: E731


def _grad(checkpoint=None, **changes):
    estimator = cg.Shadowing(**{**SETTINGS, **changes}, checkpoint=checkpoint)
    result = cg.linear_response(SYSTEM, STATISTIC, estimator, wrt=WRT, key=jax.random.key(4))
    return np.array([float(g) for g in result.grad]), np.array([float(s) for s in result.stderr])


def test_pieces_cover_every_segment_once():
    for segments in (2, 15, 16, 17, 1000):
        covered = [first + i for first, size in pieces(segments) for i in range(size)]
        assert covered == list(range(segments))
        assert len(pieces(segments)) <= 16


def test_an_interrupted_run_resumes_to_the_same_answer(tmp_path, monkeypatch):
    """Interrupted after 20 of its 32 saves (forward done, backward part way), resumed:
    bit for bit the uninterrupted checkpointed run, and the plain run to 1e-12."""
    plain = _grad()
    whole = _grad(tmp_path / "whole")
    saves = {"n": 0}
    save = _runstate.RunCheckpoint.save

    def interrupted(self, arrays):
        saves["n"] += 1
        if saves["n"] > 20:
            raise KeyboardInterrupt
        save(self, arrays)

    monkeypatch.setattr(_runstate.RunCheckpoint, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _grad(tmp_path / "cut")
    monkeypatch.setattr(_runstate.RunCheckpoint, "save", save)
    resumed = _grad(tmp_path / "cut")
    for a, b in zip(resumed, whole, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(whole[0], plain[0], rtol=1e-12)
    np.testing.assert_allclose(whole[1], plain[1], rtol=1e-10)


def test_other_settings_are_refused(tmp_path):
    _grad(tmp_path, segments=4)
    with pytest.raises(ValueError, match=r"different estimator \(segments=4 there, segments=6 now"):
        _grad(tmp_path, segments=6)


def test_another_observable_is_refused_and_a_moved_directory_is_not(tmp_path):
    """Two observables of one name (two lambdas) differ by their code; the directory's
    path is not a setting (a moved checkpoint still resumes)."""
    _grad(tmp_path / "a", segments=4)
    other = cg.Shadowing(**{**SETTINGS, "segments": 4}, checkpoint=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="different observable "):
        cg.linear_response(
            SYSTEM, cg.TimeAverage(lambda x: x[0]), other, wrt=WRT, key=jax.random.key(4)
        )
    (tmp_path / "a").rename(tmp_path / "b")
    resumed = _grad(tmp_path / "b", segments=4)[0]
    np.testing.assert_allclose(resumed, _grad(segments=4)[0], rtol=1e-12)


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    _grad(tmp_path, segments=4)
    path = tmp_path / _runstate.FILENAME
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt"):
        _grad(tmp_path, segments=4)


@pytest.mark.slow
def test_the_command_resumes_after_sigkill(tmp_path):
    """``chaosgrad grad --checkpoint DIR`` killed (SIGKILL) once it has saved a piece, then
    run again (slow suite: 25 s; the default suite kills a Lyapunov run, and interrupts a
    shadowing run in-process): its JSON equals the run without checkpoint (to 1e-12; bit
    for bit against a checkpointed run is the test above)."""
    directory = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "chaosgrad",
        "grad",
        "lorenz63",
        "--wrt",
        "rho",
        "-p",
        "dt=0.001",
        "-p",
        "method=euler",
        "--method",
        "shadowing",
        "--unstable-dim",
        "2",
        "--segment-steps",
        "100",
        "--segments",
        "320",
        "--orbits",
        "2",
        "--checkpoint",
        str(directory),
        "--json",
    ]
    env = dict(os.environ, CHAOSGRAD_CACHE_DIR=str(tmp_path / "cache"))  # shared: compiles once
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (directory / _runstate.FILENAME).exists() and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[1].decode()[-2000:]
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL  # killed mid-run, not finished
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = json.loads(second.stdout.strip().splitlines()[-1])
    plain = subprocess.run(
        [c for c in command if c not in ("--checkpoint", str(directory))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    uninterrupted = json.loads(plain.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(resumed["value"], uninterrupted["value"], rtol=1e-12)
    np.testing.assert_allclose(resumed["grad"]["rho"], uninterrupted["grad"]["rho"], rtol=1e-12)
