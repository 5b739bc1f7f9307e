"""The same answer however the work is split: 1 process x 1 device, 1 x 2 devices, 2 x 1.

Each layout runs in fresh subprocesses (the device count and the process group are fixed
when JAX starts). The two processes of the 2 x 1 layout find each other through the
environment variables of ``chaosgrad.parallel``, as two hosts would.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest

from chaosgrad import parallel
from chaosgrad.cli import processes
from chaosgrad.cli.processes import free_port, without_processes

SCRIPT = """
import json, sys, jax
import chaosgrad as cg
joined = cg.parallel.initialize()
result = {"layout": [jax.process_count(), jax.local_device_count()], "joined": joined}
if sys.argv[1] == "fast":
    net = cg.NineNeuronNet(gamma=0.556, noise=0.5)
    kernel = cg.linear_response(net, cg.Terminal(lambda x: x.sum(), 20), cg.Kernel(samples=64),
                                wrt=lambda s: s.gamma, key=jax.random.key(1))
    result["kernel"] = [float(kernel.grad), float(kernel.stderr), float(kernel.value)]
    spectrum = cg.lyapunov_spectrum(cg.Lorenz63(), steps=2000, burn_in=500, orbits=4,
                                    key=jax.random.key(2))
    result["lyapunov"] = spectrum.exponents.tolist() + spectrum.stderr.tolist()
else:
    shadowing = cg.linear_response(
        cg.Henon(), cg.TimeAverage(lambda x: x[0]),
        cg.Shadowing(unstable_dim=1, segment_steps=10, segments=50, burn_in=100, orbits=4),
        wrt=lambda s: (s.a, s.b), key=jax.random.key(3))
    result["shadowing"] = [float(g) for g in shadowing.grad] + [float(s) for s in shadowing.stderr]
if cg.parallel.is_main_process():
    print(json.dumps(result))
"""


def _environment(devices: int = 1, **extra) -> dict:
    """This environment without the multi-process settings, on ``devices`` CPU devices
    (the test suite's other XLA flags kept: every layout compiles the same code)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOSGRAD_")}
    flags = [f for f in env.pop("XLA_FLAGS", "").split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    return dict(env, XLA_FLAGS=" ".join(flags), **extra)


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _one_process(devices: int, case: str = "", script: str = SCRIPT) -> dict:
    env = _environment(devices)
    command = [sys.executable, "-c", script, *([case] if case else [])]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return _last_json(out.stdout)


def _two_hosts(case: str = "", script: str = SCRIPT) -> dict:
    """Two processes joined by the environment variables (as on two hosts)."""
    coordinator = f"localhost:{free_port()}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, *([case] if case else [])],
            env=_environment(
                CHAOSGRAD_COORDINATOR=coordinator,
                CHAOSGRAD_PROCESSES="2",
                CHAOSGRAD_PROCESS_ID=str(rank),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
    assert "{" not in outputs[1][0]  # only process 0 reports
    return _last_json(outputs[0][0])


def _in_this_process(case: str) -> dict:
    """The 1 x 1 layout: this test process (one process, one CPU device)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), mock.patch.object(sys, "argv", ["-c", case]):
        exec(SCRIPT, {})
    return _last_json(printed.getvalue())


def _agree(case: str, names: tuple[str, ...], devices: bool = True) -> dict:
    """The 1 x 1 layout against 2 processes x 1 device (and 1 x 2 devices)."""
    single, processes = _in_this_process(case), _two_hosts(case)
    assert single["layout"] == [1, 1] and not single["joined"]
    assert processes["layout"] == [2, 1] and processes["joined"]
    others = [processes]
    if devices:
        others.append(_one_process(2, case))
        assert others[-1]["layout"] == [1, 2]
    for other in others:
        for name in names:
            np.testing.assert_allclose(other[name], single[name], rtol=1e-12, atol=1e-15)
    return single


def test_kernel_and_a_lyapunov_ensemble_agree_over_processes():
    """Kernel (64 samples, 9-neuron net) and 4 Lorenz-63 Lyapunov orbits in one process and
    split over two: equal to 1e-12 relative (only the order of the final sums differs)."""
    _agree("fast", ("kernel", "lyapunov"), devices=False)


@pytest.mark.slow  # 50 s: the default suite runs the 1 x 1 and 2 x 1 layouts
def test_kernel_and_a_lyapunov_ensemble_agree_in_three_layouts():
    """The same in the three layouts: 1 x 1, 1 x 2 devices, 2 processes x 1 device."""
    _agree("fast", ("kernel", "lyapunov"))


@pytest.mark.slow  # 15 s; the launcher is also tested by the failing-worker test below
def test_the_lyapunov_command_splits_over_processes():
    """``chaosgrad lyapunov --processes 2`` (the launcher) prints one JSON object with the
    spectrum of one process."""
    single = _one_process(1, "fast")
    command = [sys.executable, "-m", "chaosgrad", "lyapunov", "lorenz63", "--steps", "2000"]
    options = ["--burn-in", "500", "--orbits", "4", "--seed", "2", "--json", "--processes", "2"]
    run = subprocess.run(
        command + options,
        env=_environment(CHAOSGRAD_CACHE_DIR=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    printed = json.loads(run.stdout)  # one JSON object: nothing else on stdout
    assert printed["orbits"] == 4
    np.testing.assert_allclose(
        printed["exponents"] + printed["stderr"], single["lyapunov"], rtol=1e-12
    )


@pytest.mark.slow
def test_shadowing_orbits_agree_in_three_layouts():
    """4 Henon shadowing orbits sharded over 2 devices or 2 processes: 1e-12 relative."""
    _agree("shadowing", ("shadowing",))


def test_a_failing_worker_fails_the_command():
    """A bad input stops every process with process 0's one-line error (exit code 2)."""
    command = [sys.executable, "-m", "chaosgrad", "grad", "lorenz63", "--wrt", "rho"]
    run = subprocess.run(
        [*command, "--method", "nope", "--processes", "2"],
        env=_environment(CHAOSGRAD_CACHE_DIR=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "unknown method 'nope'" in run.stderr


def test_samples_split_only_in_multiples_of_the_devices():
    devices = parallel.device_count()
    assert parallel.sample_sharding(1) is None
    if devices == 1:
        assert parallel.sample_sharding(8) is None


def test_each_device_computes_its_share_of_the_samples(monkeypatch):
    """per_device: what one device computes (the orbit ensembles size their segment
    batches by it): all samples on one device or when they do not split, else a share."""
    devices = parallel.device_count()
    assert parallel.per_device(16) == (16 // devices if 16 % devices == 0 else 16)
    monkeypatch.setattr(parallel, "device_count", lambda: 2)
    monkeypatch.setattr(parallel, "sample_sharding", lambda count: None if count % 2 else "split")
    assert parallel.per_device(16) == 8
    assert parallel.per_device(15) == 15


def test_processes_option_is_removed_for_the_workers():
    argv = ["grad", "x", "--processes", "2", "--json", "--processes=3", "--seed", "1"]
    assert without_processes(argv) == ["grad", "x", "--json", "--seed", "1"]


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"CHAOSGRAD_PROCESSES": "two"}, "CHAOSGRAD_PROCESSES must be an integer"),
        ({"CHAOSGRAD_PROCESSES": "2"}, "CHAOSGRAD_COORDINATOR must be"),
        (
            {"CHAOSGRAD_PROCESSES": "2", "CHAOSGRAD_COORDINATOR": "localhost:1"},
            "CHAOSGRAD_PROCESS_ID must be an integer in 0..1",
        ),
        (
            {
                "CHAOSGRAD_PROCESSES": "2",
                "CHAOSGRAD_COORDINATOR": "localhost:1",
                "CHAOSGRAD_PROCESS_ID": "2",
            },
            "CHAOSGRAD_PROCESS_ID must be an integer in 0..1",
        ),
        ({"CHAOSGRAD_PROCESSES": "0"}, "CHAOSGRAD_PROCESSES must be a positive integer"),
    ],
)
def test_bad_process_settings_are_refused(monkeypatch, env, match):
    for name in (parallel.COORDINATOR, parallel.PROCESSES, parallel.PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        parallel.initialize()


def test_one_process_needs_no_coordinator(monkeypatch):
    monkeypatch.setenv(parallel.PROCESSES, "1")
    assert parallel.initialize() is False


def test_gather_json_round_trips_one_process_value_with_nan_and_infinities():
    (only,) = parallel.gather_json({"runs": [1.5, float("nan"), float("inf")], "ok": True})
    assert only["ok"] is True and only["runs"][0] == 1.5
    assert np.isnan(only["runs"][1]) and only["runs"][2] == float("inf")


GATHER_SCRIPT = """
import json, time, jax
import chaosgrad as cg
cg.parallel.initialize()
rank = jax.process_index()
if rank == 1:
    time.sleep(35)  # longer than a device collective's 30 s context timeout
first = cg.parallel.gather_json({"rank": rank, "values": [1.5, float("nan")]})
second = cg.parallel.gather_json(10 * rank)
if cg.parallel.is_main_process():
    print(json.dumps({"first": first, "second": second}))
"""


def test_gather_json_waits_for_a_process_that_arrives_late():
    """A benchmark's processes finish their runs minutes apart: the gather waits for the
    late one (a device all-gather's context timed out after 30 s), and two gathers in a
    row keep their order."""
    result = _two_hosts(script=GATHER_SCRIPT)
    assert [entry["rank"] for entry in result["first"]] == [0, 1]
    assert result["second"] == [0, 10]


def test_alone_the_mesh_is_this_process_devices():
    with parallel.each_process_alone():
        assert parallel.device_count() == len(jax.local_devices())
    assert parallel.device_count() == len(jax.devices())


def test_cores_are_shared_out_in_contiguous_near_equal_parts():
    assert parallel.cpu_shares(2, [0, 1, 2, 3]) == ["0,1", "2,3"]
    assert parallel.cpu_shares(3, [0, 1, 2, 3, 4]) == ["0,1", "2", "3,4"]
    assert parallel.cpu_shares(2, [4, 7]) == ["4", "7"]
    assert parallel.cpu_shares(3, [0, 1]) is None  # fewer cores: the processes share them


def test_the_launcher_gives_each_process_its_own_cores(monkeypatch):
    """``--processes 2`` on a machine with 2 cores: process i gets core i through
    CHAOSGRAD_CPUS, next to the coordinator, count and id (the workers are not started)."""
    started = []

    class Worker:
        returncode = 0

        def poll(self):
            return 0

    def popen(command, env, stdout):
        started.append(env)
        return Worker()

    monkeypatch.setattr(processes.subprocess, "Popen", popen)
    monkeypatch.setattr(processes, "cpu_shares", lambda n: parallel.cpu_shares(n, [0, 1]))
    assert processes.launch(2, ["lyapunov", "lorenz63", "--processes", "2"]) == 0
    assert [env[parallel.CPUS] for env in started] == ["0", "1"]
    assert [env[parallel.PROCESS_ID] for env in started] == ["0", "1"]
    assert {env[parallel.COORDINATOR] for env in started} == {started[0][parallel.COORDINATOR]}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU binding is Linux's")
def test_a_process_is_held_to_the_cores_it_is_given():
    code = "import os; from chaosgrad import parallel; parallel.initialize(); "
    code += "print(sorted(os.sched_getaffinity(0)))"
    first = min(os.sched_getaffinity(0))
    run = subprocess.run(
        [sys.executable, "-c", code],
        env=_environment(CHAOSGRAD_CPUS=str(first)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == f"[{first}]"
    for bad in ("a,b", "100000"):
        with pytest.raises(ValueError, match="CHAOSGRAD_CPUS must be a comma list"):
            parallel.bind_cpus(bad)


COLLECT_SCRIPT = """
import json, jax, jax.numpy as jnp, numpy as np
import chaosgrad as cg
from chaosgrad import parallel
cg.parallel.initialize()
tree = {
    "a": jnp.arange(24.0).reshape(4, 3, 2), "b": jnp.arange(4.0) ** 2,
    "flags": jnp.arange(4) % 2 == 0, "counts": jnp.arange(8).reshape(4, 2),
    "empty": jnp.zeros((4, 0)), "other_rows": jnp.ones((6, 2)), "total": jnp.asarray(3.5),
    "keys": jax.random.split(jax.random.key(0), 4),
    "widths": [jnp.ones((4, width)) * width for width in range(1, 7)],
}
@jax.jit
def gather(tree):
    rows = {k: v for k, v in tree.items() if k not in ("other_rows", "total")}
    return parallel.collect(dict(tree, **parallel.spread(rows)))
out = parallel.local(gather(tree))
def raw(k, v):
    return np.asarray(jax.random.key_data(v) if k == "keys" else v)
same = {k: bool(np.array_equal(raw(k, out[k]), raw(k, tree[k]))) for k in out if k != "widths"}
same["widths"] = all(np.array_equal(o, t) for o, t in zip(out["widths"], tree["widths"]))
text = gather.lower(tree).compile().as_text()
gathers = sum(line.split("=", 1)[1].lstrip().split(" ", 1)[1].startswith("all-gather")
              for line in text.splitlines() if "=" in line and "all-gather" in line)
shapes = {k: list(np.shape(v)) for k, v in out.items() if k not in ("keys", "widths")}
if parallel.is_main_process():
    print(json.dumps({"same": same, "shapes": shapes, "devices": jax.device_count(),
                      "gathers": gathers}))
"""


@pytest.mark.parametrize("layout", ["1x2", "2x1"])
def test_collect_packs_a_mixed_tree_and_returns_it_unchanged(layout):
    """Leaves of several dtypes and leading lengths (bool, int, empty, a scalar, keys) come
    back equal and in their shapes, gathered in one collective per dtype and length (a
    collective between processes costs ~3 ms whatever its size)."""
    if layout == "1x2":
        result = _one_process(2, script=COLLECT_SCRIPT)
    else:
        result = _two_hosts(script=COLLECT_SCRIPT)
    assert result["devices"] == 2
    assert all(result["same"].values()), result
    assert result["shapes"]["a"] == [4, 3, 2] and result["shapes"]["empty"] == [4, 0]
    # one all-gather per dtype of the sharded leaves (f64, int, bool, key data), not 12
    assert result["gathers"] == 4, result


LOCAL_LOOP_SCRIPT = """
import json, jax, jax.numpy as jnp
import chaosgrad as cg
from chaosgrad import _linalg, parallel
a = jnp.eye(6) + 0.01 * jax.random.normal(jax.random.key(0), (8, 6, 6))
@jax.jit
def run(a):
    def one(m):
        step = lambda c, k: (c + _linalg.inv(m + k * c), None)
        return jax.lax.scan(step, jnp.zeros((6, 6)), jnp.arange(5.0))[0]
    return parallel.collect(parallel.map_samples(one, a))
text = run.lower(a).compile().as_text()
gathers = sum(" all-gather(" in line for line in text.splitlines())
print(json.dumps({"gathers": gathers, "devices": jax.device_count()}))
"""


def test_each_device_loops_over_its_own_samples_matrices():
    """Samples mapped over 2 devices run device-local (``shard_map``): the one-at-a-time
    library calls of ``_linalg`` loop over each device's own samples, with no all-gather of
    the batch inside the loop (one in each iteration cost 5x on FAR in 2 processes); the
    single gather is ``collect``'s."""
    result = _one_process(2, script=LOCAL_LOOP_SCRIPT)
    assert result == {"gathers": 1, "devices": 2}, result
