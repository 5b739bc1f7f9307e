"""float64: the library leaves JAX's configuration alone, refuses in one line when float64
is off, and the command line turns it on itself."""

import os
import subprocess
import sys

SCRIPT = """
import jax
import chaosgrad as cg

print("x64 after import:", jax.config.read("jax_enable_x64"))
key = jax.random.key(0)
calls = {
    "simulate": lambda: cg.simulate(cg.Lorenz63(), steps=5, key=key),
    "lyapunov_spectrum": lambda: cg.lyapunov_spectrum(
        cg.Lorenz63(), steps=10, burn_in=0, key=key
    ),
    "linear_response": lambda: cg.linear_response(
        cg.Lorenz63(), cg.TimeAverage(lambda x: x[2]), cg.Shadowing(2, 10, 4), key=key
    ),
    "average": lambda: cg.average(
        cg.Lorenz63(), cg.TimeAverage(lambda x: x[2]), adjoint=cg.Shadowing(2, 10, 4), key=key
    ),
}
for name, call in calls.items():
    try:
        call()
        print(name, "ran")
    except TypeError as error:
        print(name, "refused:", error)
"""


def _without_x64() -> dict:
    return {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}


def test_importing_chaosgrad_leaves_float64_off_and_every_entry_point_refuses():
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", SCRIPT],
        env=_without_x64(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "x64 after import: False"
    assert len(lines) == 5
    for line in lines[1:]:
        assert "refused: float64 is off (jax_enable_x64)" in line, line
        assert 'jax.config.update("jax_enable_x64", True)' in line, line


def test_the_command_line_turns_float64_on():
    run = subprocess.run(
        [sys.executable, "-m", "chaosgrad", "lyapunov", "henon", "--steps", "200", "--json"],
        env=_without_x64(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "exponents" in run.stdout
