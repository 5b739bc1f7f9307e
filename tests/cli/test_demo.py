"""`chaosgrad demo --out DIR` writes a report a person can open."""

from typer.testing import CliRunner

from chaosgrad.cli import app


def test_demo_writes_report_and_pngs(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) >= 3
    for name in pngs:
        assert name in html and (tmp_path / name).stat().st_size > 5000
    assert "Lorenz-63" in result.output and (tmp_path / "results.json").exists()
