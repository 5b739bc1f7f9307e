"""Up-front refusals of runs that cannot fit in memory, and warnings for batch-means errors
from a run shorter than its blocks."""

import jax
import jax.numpy as jnp
import pytest

import chaosgrad as cg
from chaosgrad import _memory
from chaosgrad.estimators import Backprop, Shadowing, linear_response
from chaosgrad.statistics import TimeAverage

KEY = jax.random.key(0)


@pytest.fixture
def sixteen_gib(monkeypatch):
    """The memory available, fixed (the refusals must not depend on the test machine)."""
    monkeypatch.setattr(_memory, "available_bytes", lambda: 16 * 2**30)


def test_backprop_with_a_billion_samples_is_refused_before_it_runs(sixteen_gib):
    """1e9 samples x 1001 states x 3 numbers x 8 bytes = 22 TiB for the backward pass."""
    with pytest.raises(ValueError) as refused:
        linear_response(
            cg.Lorenz63(),
            TimeAverage(lambda x: x[2]),
            Backprop(samples=10**9, steps=1000),
            wrt=lambda s: s.rho,
            key=KEY,
        )
    message = str(refused.value)
    assert message.startswith("Backprop's 1000000000 samples, each keeping 1001 states")
    assert "more than the 16 GiB of memory available: use fewer samples" in message


def test_a_full_lorenz96_spectrum_of_dimension_20000_is_refused_before_it_runs(sixteen_gib):
    """8 copies of a 20000 x 20000 basis: 24 GiB at least (measured: 23 copies at n = 2000)."""
    with pytest.raises(ValueError, match="1 orbit.s. of 20000 tangent vectors of dimension 20000"):
        cg.lyapunov_spectrum(cg.Lorenz96(n=20_000), steps=10, key=KEY)
    cg.lyapunov_spectrum(cg.Lorenz96(n=20_000), 2, steps=10, burn_in=0, key=KEY)  # k = 2 fits


def test_without_a_readable_memory_size_nothing_is_refused(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)
    _memory.check_memory(1e30, "anything", "nothing")


def test_a_spectrum_shorter_than_its_blocks_warns():
    short = cg.lyapunov_spectrum(cg.Henon(), steps=3, burn_in=10, renorm_every=1, key=KEY)
    assert "batch means over only 3 blocks of one renormalisation period each (32 asked)" in (
        short.warning
    )
    assert "give steps >= 32" in short.warning
    long = cg.lyapunov_spectrum(cg.Henon(), steps=320, burn_in=10, renorm_every=1, key=KEY)
    assert long.warning is None


def test_shadowing_with_fewer_segments_than_blocks_warns():
    result = linear_response(
        cg.Lorenz63(),
        TimeAverage(lambda x: x[2]),
        Shadowing(unstable_dim=2, segment_steps=20, segments=5, blocks=20, burn_in=100),
        wrt=lambda s: s.rho,
        key=KEY,
    )
    assert "batch means over only 5 blocks of one segment each (20 asked)" in result.info.warning
    assert "give segments >= 20" in result.info.warning


def test_the_state_dimension_of_a_model_without_dim_comes_from_x0():
    """A model without ``dim`` takes its dimension from x0 (nothing allocated)."""
    system = cg.Map(lambda t, x, a: a * x, args=jnp.asarray(0.5))
    assert _memory.state_dim(system, jnp.ones(7), KEY) == 7
