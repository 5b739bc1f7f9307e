"""chaosgrad benchmark trainability: a tiny run writes JSON, PNGs and report.html; bad
options are refused in one line."""

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from chaosgrad.cli.main import app
from chaosgrad.experiments.trainability import run_trainability

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


def test_runs_split_over_two_processes_are_gathered_by_process_zero(tmp_path):
    """``--processes 2``: run i goes to process i mod 2, each computing alone; process 0
    gathers every run (plan order) and alone writes the JSON, the PNGs and the report."""
    command = [sys.executable, "-m", "chaosgrad", "benchmark", "trainability", "--task", "T3"]
    options = ["--method", "path-kernel(alpha=2)", "--quick", "--budget", "1", "--seeds", "2"]
    env = dict(os.environ, CHAOSGRAD_CACHE_DIR="")
    run = subprocess.run(
        [*command, *options, "--out", str(tmp_path), "--processes", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "trainability.json").read_text())
    assert summary["processes"] == 2
    runs = summary["tasks"]["T3-deep"]["runs"]
    assert [(r["seed"], r["extra"]["process"]) for r in runs] == [(0, 0), (1, 1)]
    assert all(r["iterations"] >= 1 and r["metrics"] for r in runs)
    assert (tmp_path / "trainability_T3-deep_test_loss.png").stat().st_size > 0


def test_a_process_share_runs_every_nth_run_of_the_plan():
    """The plan of 2 methods (in the task's order) x 2 seeds is pk/0, pk/1, bptt/0, bptt/1;
    share=(0, 3) runs entries 0 and 3. In one process the summary holds those runs."""
    result = run_trainability(
        ["T3-deep"],
        budget=0.5,
        seeds=2,
        methods=["bptt+clip", "path-kernel(alpha=2)"],
        quick=True,
        share=(0, 3),
    )
    runs = result.summary["tasks"]["T3-deep"]["runs"]
    assert [(r["method"], r["seed"], r["extra"]["process"]) for r in runs] == [
        ("path-kernel(alpha=2)", 0, 0),
        ("bptt+clip", 1, 0),
    ]
