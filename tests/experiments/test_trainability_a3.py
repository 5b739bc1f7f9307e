"""Task A3, the scale sweep: rows for every (width, method) with the cost and the quality
of A1's gradients, the figure, and the command line's refusal of a bad option."""

import numpy as np
from typer.testing import CliRunner

from chaosgrad.cli.main import app
from chaosgrad.experiments.trainability.a3_scale import parameters, scale_sweep
from chaosgrad.plot import plot_scale


def test_a_small_sweep_measures_cost_and_quality(tmp_path):
    """Widths 3 and 4 (p = 36 and 51) of the quick A1 closure, Shadowing and ES: every row
    has a positive compiled time (the first call's, with compilation, at least as long), a
    finite descent ratio with its SE and a draw cosine in [-1, 1]."""
    assert parameters(24) == 771
    result = scale_sweep((3, 4), ("shadowing", "es"), repeats=1, quick=True)
    rows = result["rows"]
    assert [(r["parameters"], r["method"]) for r in rows] == [
        (36, "shadowing"),
        (36, "es"),
        (51, "shadowing"),
        (51, "es"),
    ]
    for row in rows:
        assert 0 < row["seconds"] and np.isfinite(row["first_seconds"])
        assert np.isfinite(row["ratio"]) and row["ratio_stderr"] > 0
        assert -1 <= row["draw_cosine"] <= 1
    assert plot_scale(tmp_path / "scale.png", rows).stat().st_size > 0


def test_bad_repeats_are_refused(tmp_path):
    result = CliRunner().invoke(
        app, ["benchmark", "scale", "--out", str(tmp_path), "--repeats", "0"]
    )
    assert result.exit_code == 2, result.output
    assert "--repeats must be >= 1" in result.output
