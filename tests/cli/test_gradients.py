"""`chaosgrad grad` and `chaosgrad compare`: estimators from the registry, settings to
their fields, statistics from the system's defaults."""

import dataclasses
import json

import pytest
import typer.main
from typer.testing import CliRunner

import chaosgrad.estimators
from chaosgrad import Backprop
from chaosgrad.cli import app
from chaosgrad.cli.estimate_options import SETTINGS, EstimateOptions
from chaosgrad.cli.gradients import build_estimator, build_statistic
from chaosgrad.cli.registry import build_system

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
    assert set(payload) == {"value", "grad", "stderr", "method", "seconds", "warnings"}
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
            "--truncation",
            "50",
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
            ["grad", "lorenz63", "--wrt", "rho", "--method", "shadowing", "--unstable-dim", "two"],
            "--unstable-dim must be a non-negative whole number or \"auto\", got 'two'",
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
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "truncated", "--window", "5"],
            "--window does not apply to truncated; it is a setting of far, kernel, "
            "path-kernel; truncated takes --steps, --samples, --burn-in, --truncation",
        ),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "fd", "--unstable-dim", "2"],
            "--unstable-dim does not apply to fd",
        ),
        (
            ["compare", "lorenz63", "--wrt", "rho", "--methods", "fd,backprop", "--alpha", "1"],
            "--alpha does not apply to fd, backprop",
        ),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "fd", "--statistic", "mean"],
            "unknown --statistic 'mean'; choose one of: time-average, window, terminal",
        ),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "fd", "--statistic", "terminal"],
            "--statistic terminal needs --steps N",
        ),
        (
            [
                "grad",
                "lorenz63",
                "--wrt",
                "rho",
                "--method",
                "fd",
                "--statistic",
                "terminal",
                "--steps",
                "10",
                "--burn-in",
                "5",
            ],
            "--burn-in applies to --statistic time-average or window",
        ),
        (
            ["grad", "nine_neuron_net", "--wrt", "gamma", "--method", "kernel", "--window", "5"],
            "--window applies to --statistic time-average only",
        ),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "far", "--unstable-dim", "-1"],
            "--unstable-dim",
        ),
    ],
)
def test_errors_are_one_line_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.parametrize("given", [[], ["--unstable-dim", "auto"]])
def test_shadowing_counts_unstable_dim_by_default_and_says_what_it_chose(given):
    """No --unstable-dim (or --unstable-dim auto): a pilot run counts u (Lorenz-63: its
    positive exponent and the flow's neutral one), and the command prints the choice."""
    arguments = ["grad", "lorenz63", "--wrt", "rho", "--method", "shadowing", *given]
    orbit = ["--segments", "10", "--segment-steps", "20", "--burn-in", "100"]
    result = runner.invoke(app, [*arguments, *orbit])
    assert result.exit_code == 0, result.output
    assert "auto: ran Shadowing(unstable_dim=2" in result.output
    assert "auto: unstable_dim = 2: the exponents clearly above 0" in result.output
    if given:
        return
    result = runner.invoke(app, [*arguments, *orbit, "--json"])
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)["auto"]
    assert "unstable_dim=2" in choice["estimator"] and choice["pilot"]["unstable_dim"] == 2


def test_far_counts_unstable_dim_by_default():
    result = runner.invoke(
        app,
        ["grad", "henon", "--wrt", "a", "--observable", "x[0]", "--method", "far"]
        + ["--segments", "10", "--burn-in", "100", "--json"],
    )
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)["auto"]
    assert "FastAdjointResponse(unstable_dim=1" in choice["estimator"]
    assert "unstable_dim = 1: the exponents clearly above 0" in choice["reasons"]


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
            "8192",
            "--batch",
            "8192",
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
            "4096",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["grad", "lorenz63", "--wrt", "rho", "--method", "kernel"])
    assert result.exit_code == 2 and "needs a noisy system" in result.output


def test_statistic_defaults_follow_the_system():
    """A network (a horizon, or default_statistic = "terminal") gets Terminal at its depth;
    any other system a TimeAverage; --statistic window a WindowAverage."""
    phi = lambda x: x[0]  # noqa: E731
    net, _ = build_system("deep_tanh_net", ["depth=7", "width=3"])
    assert type(build_statistic(net, phi, None, {})).__name__ == "Terminal"
    assert build_statistic(net, phi, None, {}).horizon == 7
    nine, _ = build_system("nine_neuron_net", [])
    assert build_statistic(nine, phi, None, {}).horizon == 50
    lorenz, _ = build_system("lorenz63", [])
    assert type(build_statistic(lorenz, phi, None, {})).__name__ == "TimeAverage"
    assert type(build_statistic(lorenz, phi, "average", {})).__name__ == "TimeAverage"  # v1
    window = build_statistic(lorenz, phi, "window", {"steps": 300, "burn_in": 20})
    assert (type(window).__name__, window.steps, window.burn_in) == ("WindowAverage", 300, 20)


def test_settings_go_to_the_fields_of_the_same_name():
    time_average = build_statistic(build_system("lorenz63", [])[0], lambda x: x[2], None, {})
    settings = {"segment_steps": 50, "segments": 7, "burn_in": 300, "blocks": 4}
    shadowing = build_estimator("shadowing", time_average, {**settings, "unstable_dim": 2})
    assert (shadowing.segment_steps, shadowing.segments, shadowing.burn_in) == (50, 7, 300)
    assert shadowing.blocks == 4
    truncated = build_estimator("truncated", time_average, {"truncation": 30})
    assert (truncated.truncation, truncated.samples, truncated.steps) == (30, 10, 10_000)
    assert truncated.burn_in is None  # the library's one default (1000)
    terminal = build_statistic(build_system("nine_neuron_net", [])[0], lambda x: x[0], None, {})
    kernel = build_estimator("kernel", terminal, {"steps": 50})
    assert (kernel.samples, kernel.steps, kernel.window) == (10_000, None, None)


def test_a_registered_estimator_is_on_the_command_line(monkeypatch):
    """The command reads chaosgrad.estimators.ESTIMATORS: one line adds a method."""
    monkeypatch.setitem(chaosgrad.estimators.ESTIMATORS, "my-backprop", Backprop)
    result = runner.invoke(
        app,
        [
            "grad",
            "henon",
            "--wrt",
            "a",
            "--observable",
            "x[0]",
            "--method",
            "my-backprop",
            "--statistic",
            "window",
            "--steps",
            "5",
            "--samples",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "my-backprop"


def test_window_and_terminal_statistics_on_the_command_line(tmp_path):
    result = runner.invoke(
        app,
        [
            "grad",
            "lorenz63",
            "--wrt",
            "rho",
            "--method",
            "backprop",
            "--statistic",
            "window",
            "--steps",
            "200",
            "--burn-in",
            "100",
            "--samples",
            "4",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "grad.json").read_text())
    assert saved["statistic"] == "<z>_300" and saved["info"]["steps"] == 300
    assert set(saved["info"]["per_sample_std"]) == {"rho"}  # per parameter, by name
    result = runner.invoke(
        app,
        [
            "grad",
            "deep_tanh_net",
            "-p",
            "depth=6",
            "-p",
            "width=3",
            "-p",
            "noise=0.3",
            "--wrt",
            "biases",
            "--observable",
            "x[0]",
            "--method",
            "backprop",
            "--samples",
            "50",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["grad"]["biases"]) == 6  # (depth, width)


def test_grad_and_compare_take_the_shared_options_alike():
    """Every field of EstimateOptions is an option of both commands, in the same place
    (after the command's own arguments, before --out), with the same flags, help and
    default; the estimator settings are the fields that name none of the others."""
    commands = typer.main.get_command(app).commands
    shared = [field.name for field in dataclasses.fields(EstimateOptions)]

    def listed(name):
        params = commands[name].params
        return [(p.name, p.opts, getattr(p, "help", None), p.default) for p in params][
            3 : 3 + len(shared)
        ]

    assert [option[0] for option in listed("grad")] == shared
    assert listed("grad") == listed("compare")
    assert set(SETTINGS) == set(shared) - {"observable", "param", "statistic", "seed", "as_json"}
