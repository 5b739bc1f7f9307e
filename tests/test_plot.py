"""chaosgrad.plot: every figure writes a PNG, with no pyplot state and no import of the CLI."""

import subprocess
import sys

import numpy as np
import pytest

from chaosgrad import plot

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 2000


def test_spectrum_and_histograms(tmp_path):
    spectrum = plot.plot_spectrum(
        tmp_path / "a" / "spectrum.png",
        [0.9, 0.0, -14.5],
        [0.01, 0.01, 0.02],
        "Lorenz-63",
        "per unit time",
    )
    hist = plot.plot_ftle_histograms(
        tmp_path / "ftle.png",
        {
            "chaotic": np.random.default_rng(0).normal(0.3, 0.1, 200),
            "ordered": np.random.default_rng(1).normal(-0.2, 0.1, 200),
        },
        "finite-time exponents",
    )
    assert _is_png(spectrum) and _is_png(hist)


@pytest.mark.parametrize("reference", [None, 1.0])
def test_compare_with_a_non_finite_estimate(tmp_path, reference):
    rows = [
        {
            "method": "Backprop",
            "grad": {"rho": np.array([np.inf])},
            "stderr": {"rho": np.array([np.nan])},
        },
        {
            "method": "Shadowing",
            "grad": {"rho": np.array([1.01])},
            "stderr": {"rho": np.array([0.02])},
        },
    ]
    assert _is_png(
        plot.plot_compare(tmp_path / "compare.png", rows, "rho", "d<z>/d rho", reference=reference)
    )


def test_training_with_a_failed_run(tmp_path):
    runs = {
        "Shadowing": {
            "loss": [4.0, 1.0, 0.1],
            "parameters": [[35.0], [30.0], [28.1]],
            "status": "ok",
        },
        "Backprop": {
            "loss": [4.0, np.nan],
            "parameters": [[35.0], [np.nan]],
            "status": "diverged at step 1",
        },
    }
    assert _is_png(plot.plot_training(tmp_path / "train.png", runs, "rho", 28.0, "tune rho"))
    assert _is_png(plot.plot_training(tmp_path / "loss.png", runs, None, None, "loss only"))


def test_explosion(tmp_path):
    lorenz = {
        "Backprop": {"T": [1.0, 5.0, 10.0], "magnitude": [1.0, 50.0, 3000.0]},
        "Shadowing": {"T": [1.0, 5.0, 10.0], "magnitude": [1.0, 1.0, 1.0]},
    }
    deep = {"Backprop": [1.0, 10.0, 100.0], "PathKernel": [1.0, 1.1, 1.2]}
    assert _is_png(
        plot.plot_explosion(tmp_path / "explosion.png", lorenz, 0.9, [5, 20, 40], deep, 0.35)
    )


def test_import_changes_no_matplotlib_state_and_skips_the_cli():
    # The raw rcParams entry, read without resolving it (get_backend() would import pyplot).
    code = (
        "import sys, matplotlib; raw = lambda: dict.__getitem__(matplotlib.rcParams, 'backend'); "
        "before = raw(); import chaosgrad.plot; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
        "assert 'chaosgrad.cli' not in sys.modules, 'cli imported'; "
        "assert raw() is before, 'backend changed'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
