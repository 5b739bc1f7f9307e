import pytest

from chaosgrad import critical_sigma_w, mean_field


def test_poole_critical_line():
    """references.md section 1: sigma_b^2 = 0.05 -> critical sigma_w^2 = 1.761 +- 0.02."""
    assert critical_sigma_w(0.05) ** 2 == pytest.approx(1.761, abs=0.02)
    assert mean_field(critical_sigma_w(0.05) ** 2, 0.05).chi1 == pytest.approx(1.0, abs=1e-9)


def test_no_bias_critical_point_is_one():
    assert critical_sigma_w(0.0) == 1.0


def test_tanh_rnn_mean_field_exponent_g2():
    """(1/2) ln chi_1 = 0.1547 for g = 2 (references.md section 1)."""
    assert mean_field(4.0).lyapunov_exponent == pytest.approx(0.1547, abs=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError):
        mean_field(-1.0)
    with pytest.raises(ValueError):
        critical_sigma_w(-0.1)
