"""`chaosgrad demo`: the quick run (every figure, the report, a sane table), the full run,
and the outcomes it exists to show, all in the slow suite: the quick run alone takes 90 s
of the default suite's 10-minute budget, and each of its parts (spectra, comparisons,
explosion panel, tuning, noisy network) has its own fast test elsewhere."""

import json
import math

import pytest
from typer.testing import CliRunner

from chaosgrad.cli import app

FIGURES = {
    "lorenz63_spectrum.png",
    "tanh_rnn_spectrum.png",
    "deep_net_ftle.png",
    "explosion.png",
    "compare_lorenz.png",
    "compare_solenoid.png",
    "compare_nine_neuron.png",
    "tune_lorenz.png",
    "noisy_network_nine.png",
}


def _check_report(directory, output):
    html = (directory / "report.html").read_text()
    pngs = {p.name for p in directory.glob("*.png")}
    assert pngs == FIGURES
    for name in pngs:
        assert name in html and (directory / name).stat().st_size > 5000, name
    for quantity in ("Lorenz-63 λ₁", "tanh RNN λ₁", "Lorenz d⟨z⟩/dρ", "9-neuron dE/dγ"):
        assert quantity in output
    for method in ("Shadowing", "FAR", "FD", "Kernel", "PathKernel", "Backprop+clip"):
        assert method in output
    assert "9 PNGs" in output
    return json.loads((directory / "results.json").read_text())


@pytest.mark.slow
def test_quick_demo_writes_every_figure_and_a_sane_table(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = _check_report(tmp_path, result.output)
    assert results["sizes"] == "quick" and "quick sizes" in result.output

    assert 0.7 < results["instability"]["lorenz63"]["exponents"][0] < 1.1
    assert 0.05 < results["instability"]["tanh_rnn"]["exponents"][0] < 0.3
    for case in results["estimates"].values():
        for estimate in case["estimates"]:
            assert math.isfinite(estimate["grad"]["d"]), (case["title"], estimate)
    lorenz = {e["method"]: e for e in results["estimates"]["lorenz"]["estimates"]}
    assert abs(lorenz["Shadowing"]["grad"]["d"] - 1.017) < 0.5
    nine = {e["method"]: e for e in results["estimates"]["nine_neuron"]["estimates"]}
    assert nine["Backprop"]["stderr"]["d"] > 10 * nine["Kernel"]["stderr"]["d"]  # explodes
    # the explosion panel (the library test of explosion_panel is in the slow suite)
    rows = results["explosion"]["lorenz63"]["rows"]
    backprop = rows["Backprop (per sample, window sum)"]["magnitude"]
    assert backprop[-1] > 1e3 * backprop[len(backprop) // 4]
    for name in ("Shadowing", "FiniteDifference"):
        assert max(rows[name]["magnitude"]) < 10
    deep = results["explosion"]["deep_net"]["per_sample_std"]
    assert deep["Backprop"][-1] > 10 * deep["Backprop"][0]
    assert deep["PathKernel (alpha=1)"][-1] < 3 * deep["PathKernel (alpha=1)"][0]

    runs = results["training"]["lorenz"]["runs"]
    assert set(runs) == {
        "Shadowing",
        "Backprop",
        "Backprop + clipping",
        "TruncatedBackprop",
        "FiniteDifference",
    }
    assert runs["Shadowing"]["status"] == "ok"


@pytest.mark.slow
def test_demo_writes_report_and_shows_the_outcomes(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = _check_report(tmp_path, result.output)
    assert results["sizes"] == "full"

    lorenz = results["training"]["lorenz"]["runs"]
    assert lorenz["Shadowing"]["status"] == "ok"
    assert abs(lorenz["Shadowing"]["final_rho"] - 28.0) < 1.0
    assert lorenz["Backprop"]["status"] != "ok"  # fails, and says so
    assert (
        lorenz["Backprop + clipping"]["distance_to_target_rho"]
        > lorenz["Shadowing"]["distance_to_target_rho"]
    )
    nine = results["training"]["nine_neuron"]["nine_neuron"]["runs"]
    clipped = nine["Backprop + clipping"]["final_loss_mean_last5"]
    assert nine["Kernel"]["final_loss_mean_last5"] < clipped
    assert nine["PathKernel"]["final_loss_mean_last5"] < clipped

    estimates = results["estimates"]
    shadowing = next(e for e in estimates["lorenz"]["estimates"] if e["method"] == "Shadowing")
    assert abs(shadowing["grad"]["d"] - 1.017) < 0.05
    far = next(e for e in estimates["solenoid"]["estimates"] if e["method"] == "FAR")
    fd = next(e for e in estimates["solenoid"]["estimates"] if e["method"] == "FD")
    assert abs(far["grad"]["d"] - fd["grad"]["d"]) <= 3 * (far["stderr"]["d"] + fd["stderr"]["d"])
