"""FastAdjointResponse(checkpoint=DIR): killed at any moment, started again, the same answer."""

import json
import os
import signal
import subprocess
import sys
from typing import Any

import jax
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad import _runstate
from chaosgrad.estimators._resumable import pieces

SYSTEM = cg.ModifiedSolenoid(dim=5)
STATISTIC = cg.TimeAverage(cg.ModifiedSolenoid.observable)
SETTINGS: dict[str, Any] = dict(unstable_dim=4, segment_steps=5, segments=40, window=5, burn_in=100)
SAVES = 2 * len(pieces(SETTINGS["segments"]))  # forward and backward


def _estimate(checkpoint=None, statistic=STATISTIC, **changes):
    estimator = cg.FastAdjointResponse(**{**SETTINGS, **changes}, checkpoint=checkpoint)
    return cg.linear_response(SYSTEM, statistic, estimator, key=jax.random.key(3))


def _numbers(result) -> dict[str, np.ndarray]:
    """grad, stderr, value and the two contributions, flat."""

    def flat(tree):
        return np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])

    info = result.info
    return {
        "value": np.ravel(np.asarray(result.value)),
        "grad": flat(result.grad),
        "stderr": flat(result.stderr),
        "shadowing": flat(info.shadowing_contribution),
        "unstable": flat(info.unstable_contribution),
    }


@pytest.mark.parametrize("cut", [5, SAVES // 2 + 4])
def test_an_interrupted_run_resumes_to_the_same_answer(tmp_path, monkeypatch, cut):
    """Interrupted after ``cut`` saves (forward part way; forward done and backward part
    way), resumed: bit for bit the uninterrupted checkpointed run, and the run without
    checkpoint to 1e-10."""
    plain = _numbers(_estimate())
    whole = _numbers(_estimate(tmp_path / "whole"))
    saves = {"n": 0}
    save = _runstate.RunCheckpoint.save

    def interrupted(self, arrays):
        saves["n"] += 1
        if saves["n"] > cut:
            raise KeyboardInterrupt
        save(self, arrays)

    monkeypatch.setattr(_runstate.RunCheckpoint, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _estimate(tmp_path / "cut")
    monkeypatch.setattr(_runstate.RunCheckpoint, "save", save)
    resumed = _numbers(_estimate(tmp_path / "cut"))
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
        np.testing.assert_allclose(whole[name], plain[name], rtol=1e-10, err_msg=name)


def test_other_settings_are_refused_in_one_line(tmp_path):
    _estimate(tmp_path, segments=4)
    with pytest.raises(ValueError, match="different estimator ") as info:
        _estimate(tmp_path, segments=4, window=4)
    assert "\n" not in str(info.value) and str(info.value).endswith("delete it")
    other = cg.TimeAverage(lambda x: x[0] ** 3)
    with pytest.raises(ValueError, match="different observable "):
        _estimate(tmp_path, segments=4, statistic=other)
    shadowing = cg.Shadowing(unstable_dim=4, segment_steps=5, segments=4, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="different run .*FastAdjointResponse.* there"):
        cg.linear_response(SYSTEM, STATISTIC, shadowing, key=jax.random.key(3))


def test_a_changed_loss_is_refused(tmp_path):
    """value_and_grad: the loss weights the sweep, so a checkpoint of one loss does not
    serve another (two lambdas of one name, other targets)."""
    estimator = cg.FastAdjointResponse(**{**SETTINGS, "segments": 4}, checkpoint=tmp_path)

    def run(target):
        return cg.value_and_grad(
            SYSTEM, lambda s: (s - target) ** 2, STATISTIC, estimator, key=jax.random.key(3)
        )

    first = run(0.5)
    np.testing.assert_array_equal(np.asarray(run(0.5)[0]), np.asarray(first[0]))
    with pytest.raises(ValueError, match="different loss "):
        run(0.6)


def test_a_corrupt_or_older_checkpoint_is_refused(tmp_path):
    _estimate(tmp_path, segments=4)
    path = tmp_path / _runstate.FILENAME
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=f"^checkpoint {tmp_path} is corrupt: .*sha256"):
        _estimate(tmp_path, segments=4)
    path.write_bytes(b"chaosgrad-run\n\x00\x01" + data[16:])  # the run file before version 3
    with pytest.raises(ValueError, match="before version 3.*delete .*run.ckpt to start"):
        _estimate(tmp_path, segments=4)


SCRIPT = """
import json, sys, time, jax
jax.config.update("jax_enable_x64", True)
import chaosgrad as cg
from chaosgrad import _runstate

directory, pause = sys.argv[1], int(sys.argv[2])
save, saves = _runstate.RunCheckpoint.save, []

def reported(self, arrays):
    save(self, arrays)
    saves.append(1)  # the pieces done, forward and backward:
    print("saved", int(arrays["forward done"]), int(arrays.get("backward done", 0)), flush=True)
    if len(saves) == pause:
        time.sleep(600)  # killed here, as if the next piece took that long

_runstate.RunCheckpoint.save = reported
estimator = cg.FastAdjointResponse(**SETTINGS, checkpoint=directory)
result = cg.linear_response(
    cg.ModifiedSolenoid(dim=5), cg.TimeAverage(cg.ModifiedSolenoid.observable), estimator,
    key=jax.random.key(3),
)
print(json.dumps({"grad": [float(g) for g in jax.tree_util.tree_leaves(result.grad)],
                  "stderr": [float(s) for s in jax.tree_util.tree_leaves(result.stderr)],
                  "value": float(result.value)}), flush=True)
""".replace("SETTINGS", repr(SETTINGS))


def test_a_sigkilled_run_resumes_with_the_uninterrupted_result(tmp_path):
    """SIGKILL after 10 of its saves (forward done at 14), then the same script again: it
    goes on from the checkpoint and prints, bit for bit, what a run never interrupted
    returns."""
    directory = tmp_path / "run"
    worker = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(directory), "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert worker.stdout is not None
        while True:
            line = worker.stdout.readline()
            assert line, "the run ended before it could be killed"
            if line.strip() == "saved 10 0":
                break
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=60) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    second = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(directory), "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    lines = second.stdout.strip().splitlines()
    assert lines[0] == "saved 11 0"  # it went on from the checkpoint
    resumed = json.loads(lines[-1])
    uninterrupted = _estimate(tmp_path / "whole")
    assert resumed["value"] == float(uninterrupted.value)
    assert resumed["grad"] == [float(g) for g in jax.tree_util.tree_leaves(uninterrupted.grad)]
    assert resumed["stderr"] == [float(s) for s in jax.tree_util.tree_leaves(uninterrupted.stderr)]
