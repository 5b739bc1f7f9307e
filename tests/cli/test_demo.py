"""`chaosgrad demo --out DIR`: the report, and the outcomes the demo exists to show."""

import json

from typer.testing import CliRunner

from chaosgrad.cli import app


def test_demo_writes_report_and_shows_the_outcomes(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) >= 4
    for name in pngs:
        assert name in html and (tmp_path / name).stat().st_size > 5000
    assert "Shadowing" in result.output and "Kernel" in result.output

    results = json.loads((tmp_path / "results.json").read_text())
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
