"""`chaosgrad grad` and `chaosgrad compare`."""

import json

import pytest
from typer.testing import CliRunner

from chaosgrad.cli import app

runner = CliRunner()


def test_grad_json_shadowing_lorenz():
    result = runner.invoke(
        app,
        [
            "grad",
            "lorenz63",
            "--wrt",
            "rho,sigma",
            "--method",
            "shadowing",
            "--unstable-dim",
            "2",
            "-p",
            "dt=0.001",
            "-p",
            "method=euler",
            "--segment-steps",
            "200",
            "--segments",
            "300",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"value", "grad", "stderr", "method", "seconds"}
    assert payload["method"] == "shadowing"
    assert abs(payload["grad"]["rho"] - 1.03) < 0.05 + 3 * payload["stderr"]["rho"]
    assert set(payload["stderr"]) == {"rho", "sigma"}


def test_grad_table_default_observable_far(tmp_path):
    result = runner.invoke(
        app,
        [
            "grad",
            "modified_solenoid",
            "--wrt",
            "gamma1",
            "--method",
            "far",
            "--unstable-dim",
            "4",
            "--segments",
            "100",
            "--burn-in",
            "200",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "gamma1" in result.output
    assert json.loads((tmp_path / "grad.json").read_text())["method"] == "far"


def test_compare_writes_table_and_chart(tmp_path):
    result = runner.invoke(
        app,
        [
            "compare",
            "lorenz63",
            "--wrt",
            "rho",
            "--methods",
            "backprop,truncated,fd",
            "--steps",
            "400",
            "--samples",
            "4",
            "--burn-in",
            "200",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    for method in ("backprop", "truncated", "fd"):
        assert method in result.output
    payload = json.loads((tmp_path / "compare.json").read_text())
    assert [row["method"] for row in payload["results"]] == ["backprop", "truncated", "fd"]
    assert (tmp_path / "compare.png").stat().st_size > 5000


@pytest.mark.parametrize(
    "args, message",
    [
        (["grad", "lorenz63", "--wrt", "rhoo", "--method", "fd"], "no parameter 'rhoo'"),
        (["grad", "lorenz63", "--wrt", "rho", "--method", "magic"], "unknown method 'magic'"),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "shadowing"],
            "--unstable-dim is required",
        ),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "fd", "--observable", "open('x')"],
            "unknown function",
        ),
        (["grad", "henon", "--wrt", "a", "--method", "fd"], "no default observable"),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "shadowing", "--unstable-dim", "3"],
            "must be smaller",
        ),
        (["compare", "lorenz63", "--wrt", "rho,sigma", "--methods", "fd"], "one --wrt"),
    ],
)
def test_errors_are_one_line_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


def test_kernel_methods_on_the_command_line():
    result = runner.invoke(
        app,
        [
            "grad",
            "nine_neuron_net",
            "--wrt",
            "gamma",
            "-p",
            "gamma=0.556",
            "--method",
            "path-kernel",
            "--alpha",
            "1",
            "--samples",
            "20000",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert abs(payload["grad"]["gamma"] - 7.47) <= 3 * payload["stderr"]["gamma"] + 0.03
    result = runner.invoke(
        app,
        [
            "grad",
            "nine_neuron_net",
            "--wrt",
            "gamma",
            "--method",
            "kernel",
            "--samples",
            "5000",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["grad", "lorenz63", "--wrt", "rho", "--method", "kernel"])
    assert result.exit_code == 2 and "needs a noisy system" in result.output
