"""chaosgrad benchmark trainability: a tiny run writes JSON, PNGs and report.html; bad
options are refused in one line."""

import json

from typer.testing import CliRunner

from chaosgrad.cli.main import app

runner = CliRunner()


def test_a_short_run_writes_json_plots_and_report(tmp_path):
    arguments = ["benchmark", "trainability", "--task", "T3", "--method", "path-kernel(alpha=2)"]
    result = runner.invoke(
        app, [*arguments, "--quick", "--budget", "1", "--seeds", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "trainability.json").read_text())
    assert set(summary["tasks"]) == {"T3-deep"}  # T3-rnn has no path-kernel(alpha=2)
    runs = summary["tasks"]["T3-deep"]["runs"]
    assert [run["method"] for run in runs] == ["path-kernel(alpha=2)"]
    assert (tmp_path / "trainability_T3-deep_test_loss.png").stat().st_size > 0
    assert "Trainability" in (tmp_path / "report.html").read_text()


def test_bad_options_are_refused(tmp_path):
    for options, message in (
        (["--budget", "0"], "--budget must be a positive"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--task", "T9"], "unknown task"),
    ):
        result = runner.invoke(app, ["benchmark", "trainability", "--out", str(tmp_path), *options])
        assert result.exit_code == 2, result.output
        assert message in result.output
