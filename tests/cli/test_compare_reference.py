"""`chaosgrad compare --reference`: the other methods' repeated runs measured against one run
of the reference (chaosgrad.diagnostics.gradient_quality), in the table and the JSON."""

import json

import pytest
from typer.testing import CliRunner

from chaosgrad.cli import app, terminal

runner = CliRunner()

# the 9-neuron network at depth 4, d/dJ: 81 components, so the cosine means something
CHEAP = ["nine_neuron_net", "-p", "gamma=0.556", "--wrt", "J", "--steps", "4", "--samples", "64"]


def test_compare_reference_json_and_file(tmp_path):
    result = runner.invoke(
        app,
        ["compare", *CHEAP, "--methods", "kernel", "--reference", "backprop", "--repeats", "3"]
        + ["--json", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["reference"], payload["repeats"]) == ("backprop", 3)
    kernel, backprop = payload["results"]
    assert (kernel["method"], backprop["method"]) == ("kernel", "backprop")  # reference added
    assert backprop["quality"] is None
    quality = kernel["quality"]
    assert (quality["n"], quality["dimension"]) == (3, 81)
    assert -1 <= quality["cosine"] <= 1 and quality["cosine_stderr"] > 0
    assert 0 <= quality["sign_agreement"] <= 1 and quality["snr"] > 0
    assert quality["tail_index"] is None  # 3 runs: too few for a tail
    assert quality["reference_noise"] > 0  # from backprop's own standard error
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["results"][0]["quality"]["cosine"] == quality["cosine"]


def test_compare_reference_table(monkeypatch):
    # the table is wide: the console's width is fixed at import, so set it here
    monkeypatch.setattr(terminal.console, "_width", 200)
    result = runner.invoke(
        app,
        ["compare", *CHEAP, "--methods", "backprop,kernel", "--reference", "backprop"]
        + ["--repeats", "2"],
    )
    assert result.exit_code == 0, result.output
    for column in ("cosine ± SE", "rel. error ± SE", "sign agr.", "SNR", "Hill α"):
        assert column in result.output
    assert "reference" in result.output
    text = " ".join(result.output.split())
    assert "the mean of 2 more runs of each method against the one run of backprop" in text
    # d/dJ has 81 components: the first 4 in the table (a component column), a note
    assert "component" in result.output
    assert "components 0-3 of the 81 of J shown" in text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--repeats", "4"], "--repeats applies with --reference only"),
        (["--reference", "backprop", "--repeats", "1"], "--repeats must be at least 2"),
        (["--reference", "oracle"], "unknown method 'oracle'"),
        (["--reference", "backprop", "--checkpoint", "run"], "--checkpoint holds one run"),
    ],
)
def test_compare_reference_refusals(extra, message):
    result = runner.invoke(app, ["compare", *CHEAP, "--methods", "kernel", *extra])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
