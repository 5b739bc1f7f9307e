"""The chaosgrad command: output formats and one-line errors with exit code 2."""

import json

import pytest
from typer.testing import CliRunner

from chaosgrad.cli import app
from chaosgrad.cli.registry import SYSTEMS, build_system, snake_case

runner = CliRunner()


def test_names_are_snake_case_class_names():
    assert snake_case("NoisyLorenz96") == "noisy_lorenz96"
    assert snake_case("TanhRNN") == "tanh_rnn"
    assert set(SYSTEMS) == {
        "lorenz63",
        "lorenz96",
        "henon",
        "logistic",
        "tent",
        "modified_solenoid",
        "noisy_lorenz96",
        "tanh_rnn",
        "deep_tanh_net",
        "nine_neuron_net",
    }


def test_parameters_set_any_constructor_argument():
    system, params = build_system("lorenz63", ["rho=30", "method=euler", "dt=0.001"])
    assert float(system.rho) == 30.0 and system.method == "euler" and system.dt == 0.001
    assert params["sigma"] == 10.0


def test_systems_lists_every_builtin():
    result = runner.invoke(app, ["systems"])
    assert result.exit_code == 0
    for name in SYSTEMS:
        assert name in result.output


def test_lyapunov_json(tmp_path):
    result = runner.invoke(
        app,
        [
            "lyapunov",
            "henon",
            "--steps",
            "20000",
            "--burn-in",
            "100",
            "--json",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) >= {
        "system",
        "params",
        "exponents",
        "stderr",
        "kaplan_yorke_dimension",
        "steps",
        "seconds",
    }
    assert payload["system"] == "henon" and payload["params"]["a"] == 1.4
    assert payload["exponents"][0] == pytest.approx(0.419, abs=0.01)
    assert (tmp_path / "spectrum.png").stat().st_size > 1000


def test_lyapunov_table_and_parameters():
    result = runner.invoke(
        app,
        [
            "lyapunov",
            "lorenz63",
            "-p",
            "rho=28",
            "--k",
            "1",
            "--steps",
            "20000",
            "--burn-in",
            "1000",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Kaplan-Yorke" in result.output and "λ_i" in result.output


def test_deep_net_defaults_to_its_depth():
    result = runner.invoke(
        app, ["lyapunov", "deep_tanh_net", "-p", "depth=20", "-p", "width=8", "--k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["lyapunov", "lorenz64"], "unknown system 'lorenz64'"),
        (["lyapunov", "lorenz63", "-p", "rhoo=3"], "no parameter 'rhoo'"),
        (["lyapunov", "lorenz63", "-p", "rho"], "name=value"),
        (["lyapunov", "henon", "--k", "3"], "k=3 exceeds the dimension 2"),
        (["lyapunov", "henon", "--steps", "0"], "steps must be positive"),
        (["lyapunov", "henon", "--steps", "-4"], "steps must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.slow  # 16 s; tests/test_experiments.py runs the experiments
def test_experiment_command(tmp_path):
    result = runner.invoke(
        app, ["experiment", "tune-lorenz", "--iterations", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tune_lorenz.json").exists() and (tmp_path / "tune_lorenz.png").exists()
    bad = runner.invoke(app, ["experiment", "bogus"])
    assert bad.exit_code == 2 and "unknown experiment 'bogus'" in bad.output
    bad = runner.invoke(app, ["experiment", "explosion", "--iterations", "3"])
    assert bad.exit_code == 2 and "does not train" in bad.output


def test_progress_lines_away_from_a_terminal_are_rate_limited(capsys):
    from chaosgrad.cli.terminal import progress_lines

    advance = progress_lines(4, "lorenz63", every=3600.0)
    for _ in range(4):
        advance(1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [lines[-1]] and "lorenz63 4/4 (100%)" in lines[-1]  # only the last
    advance = progress_lines(3, "grad", every=0.0)
    for _ in range(3):
        advance(1)
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


@pytest.mark.parametrize(
    "args, option",
    [
        (["lyapunov", "henon", "--steps", "10", "--steps", "20"], "--steps"),
        (["lyapunov", "henon", "--steps=10", "--k", "1", "--steps", "20"], "--steps"),
        (
            ["grad", "lorenz63", "--wrt", "rho", "--method", "fd", "--method", "backprop"],
            "--method",
        ),
        (["compare", "lorenz63", "--wrt", "rho", "--wrt", "sigma", "--methods", "fd"], "--wrt"),
        (["demo", "--seed", "1", "--seed", "2"], "--seed"),
        (["benchmark", "trainability", "--out", "x", "--seeds", "1", "--seeds", "2"], "--seeds"),
        (["learn", "--data", "d.npy", "--dt", "0.1", "--dt", "0.2"], "--dt"),
    ],
)
def test_a_repeated_option_of_one_value_is_refused_in_every_command(args, option):
    """One check in the command group: a second value is an error, never the silent winner."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"error: {option} is given twice: give it once" in lines[0]


def test_options_meant_to_repeat_still_repeat():
    """-p name=value, a repeatable --task or --method, and flags are not single values."""
    result = runner.invoke(
        app,
        ["lyapunov", "henon", "-p", "a=1.3", "-p", "b=0.3", "--steps", "200", "--burn-in", "10"]
        + ["--json", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"] == {"a": 1.3, "b": 0.3}
    result = runner.invoke(
        app, ["benchmark", "trainability", "--out", "x", "--task", "T1", "--task", "T9"]
    )
    assert result.exit_code == 2 and "unknown task 'T9'" in result.output  # not "twice"


def test_more_processes_than_cores_are_refused():
    from chaosgrad.cli.options import usable_cores

    cores = usable_cores()
    for args in (
        ["lyapunov", "henon", "--processes", str(cores + 1)],
        ["benchmark", "trainability", "--out", "x", "--processes", str(cores + 1)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, result.output
        assert f"--processes {cores + 1} is more than the {cores} cores" in lines[0]
        assert f"give at most {cores}" in lines[0]


def test_checkpoint_paths_that_cannot_hold_the_run_are_refused_before_computing(tmp_path):
    """A directory where the run's file goes (exit 1 before), a parent that is a file (a
    raw OSError at the first save before): exit 2, one line, nothing computed."""
    occupied = tmp_path / "occupied"
    (occupied / "run.ckpt").mkdir(parents=True)
    afile = tmp_path / "afile"
    afile.write_text("")
    shadowing = ["grad", "lorenz63", "--wrt", "rho", "--method", "shadowing", "--unstable-dim"]
    for command in (["lyapunov", "henon"], [*shadowing, "2", "--segments", "4"]):
        for path, message in (
            (occupied, "run.ckpt is not a file"),
            (afile / "sub", "cannot be written (not a directory)"),
            (afile / "sub" / "deeper", "cannot be written (not a directory)"),
        ):
            result = runner.invoke(app, [*command, "--checkpoint", str(path)])
            assert result.exit_code == 2, result.output
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert len(lines) == 1 and f"--checkpoint {path}" in lines[0], result.output
            assert message in lines[0], lines[0]
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    result = runner.invoke(app, ["lyapunov", "henon", "--checkpoint", str(link)])
    assert result.exit_code == 2 and "cannot be written" in result.output, result.output


@pytest.mark.parametrize(
    "method, words",
    [
        ("gtf", "--method gtf holds a dimensions x dimensions Jacobian"),
        ("bptt", "a smaller --window"),
    ],
)
def test_learn_out_of_memory_names_its_own_options(method, words, capsys):
    """Wide data (300 x 2000) exhausts memory in learn: the message names learn's options,
    never --samples or --steps, which learn does not have."""
    import jax
    import typer

    from chaosgrad.cli.errors import user_errors
    from chaosgrad.cli.learn import memory_hint

    with pytest.raises(typer.Exit) as stop, user_errors(memory=memory_hint(method)):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory allocating 9 GB")
    message = capsys.readouterr().err
    assert stop.value.exit_code == 1
    assert "out of memory: " in message and words in message and "--samples" not in message
