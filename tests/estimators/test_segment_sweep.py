"""Every sweep strategy gives the same terms (to rounding): step by step, a segment's
Jacobians at once, parallel over segments."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgrad as cg
from chaosgrad.estimators import _orbits, _sweep
from chaosgrad.estimators._parameters import Parameters
from chaosgrad.estimators._segment_sweep import all_propagators
from chaosgrad.estimators.shadowing import shadowing_contributions
from chaosgrad.statistics import Components, TimeAverage

KEY = jax.random.key(3)

CASES = {
    # a flow (least-squares terms), two statistic components, two parameters
    "lorenz63": (
        cg.Lorenz63(dt=1e-3, method="euler"),
        lambda x: jnp.stack([x[2], x[0] ** 2]),
        lambda s: (s.rho, s.sigma),
        2,
        100,
        12,
    ),
    # a map, every parameter; 70 segments: two batches of 35 (SegmentParallel's batch 64)
    "henon": (cg.Henon(), lambda x: x[0], None, 1, 10, 70),
    # a stable map: no unstable direction (u = 0), the plain adjoint
    "stable_map": (
        cg.Map(lambda t, x, a: 0.5 * jnp.tanh(x) + a, args=jnp.asarray([0.3, -0.2]), dim=2),
        lambda x: x[0] * x[1],
        None,
        0,
        10,
        6,
    ),
    # noise with a state-dependent amplitude: each step's noise enters J and X
    "noisy_lorenz96": (
        cg.NoisyLorenz96(n=10),
        lambda x: jnp.mean(x**2),
        lambda s: (s.gamma0, s.gamma1),
        3,
        20,
        8,
    ),
}


STORE = 2**28  # bytes of states kept (every state of these short orbits)


def run_orbits(*args, **kwargs):
    """The forward run's orbits (their finiteness checked)."""
    orbits, finite = _orbits.forward_orbits(*args, **kwargs)
    assert np.all(np.asarray(finite))
    return orbits


def both_sweeps(case, init=None, recompute=False, strategies=None):
    """The terms of ``strategies`` (default: a segment's Jacobians at once, then parallel
    over segments)."""
    system, phi, wrt, u, m, segments = CASES[case]
    if strategies is None:
        strategies = (cg.SegmentJacobians(), cg.SegmentParallel())
    orbits = run_orbits(
        system, _orbits.orbit_starts(system, None, KEY, 1), u, 200, segments, m, store_bytes=STORE
    )
    params = Parameters.of(system, wrt)
    count = np.size(phi(orbits.x_end[0]))
    components = Components(TimeAverage(phi), jnp.eye(count))
    states = orbits.states[0][:, 0] if recompute else orbits.states[0]
    return [
        _sweep.adjoint_sweep_from(
            system,
            components,
            params,
            states,
            orbits.qs[0][..., :u],
            orbits.keys[0],
            jnp.asarray(orbits.start),
            system.time_step is not None,
            strategy,
            segment_steps=m,
            init=init,
        )
        for strategy in strategies
    ]


def assert_same(sequential, parallel, rtol=1e-10):
    leaves = jax.tree_util.tree_leaves(sequential)
    assert len(leaves) == len(jax.tree_util.tree_leaves(parallel))
    for a, b in zip(leaves, jax.tree_util.tree_leaves(parallel), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        scale = np.max(np.abs(a), initial=0.0)
        np.testing.assert_allclose(b, a, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("case", sorted(CASES))
def test_parallel_terms_equal_the_sequential_ones(case):
    sequential, parallel = both_sweeps(case)
    terms = sequential[1]
    flow = CASES[case][0].time_step is not None
    assert (terms.sums.least_squares is not None) == flow
    assert_same(sequential, parallel)


def test_recomputed_segments_and_a_given_start_of_the_sweep():
    """States recomputed from each segment's first (batch by batch), and the adjoints of a
    later piece passed in (a resumable run), give the sequential terms too."""
    dim, u = 3, 2
    rng = np.random.default_rng(0)
    init = (jnp.asarray(rng.normal(size=(dim, u))), jnp.asarray(rng.normal(size=(dim, 2))))
    stored = both_sweeps("lorenz63", init=init)
    recomputed = both_sweeps("lorenz63", init=init, recompute=True)
    assert_same(stored[0], stored[1])
    assert_same(stored[0], recomputed[1])


@pytest.mark.parametrize("case", ["lorenz63", "noisy_lorenz96"])
def test_forward_bases_from_the_propagators_equal_the_carried_tangents(case):
    """A forward run without tangents, its bases made from the segment propagators
    (Q_{k+1} R_{k+1} = P_0^T Q_k), gives the tangent-carrying run's bases, factors and
    shadowing contributions."""
    system, phi, wrt, u, m, segments = CASES[case]
    starts = _orbits.orbit_starts(system, None, KEY, 1)
    carried, left = (
        run_orbits(system, starts, u, 200, segments, m, tangents=tangents, store_bytes=STORE)
        for tangents in (True, False)
    )
    assert left.qs.shape[1] == 1 and left.rs.shape[1] == 0
    np.testing.assert_array_equal(np.asarray(left.states), np.asarray(carried.states))
    params = Parameters.of(system, wrt)
    count = np.size(phi(carried.x_end[0]))
    components = Components(TimeAverage(phi), jnp.eye(count))
    flow = system.time_step is not None
    expected = shadowing_contributions(
        system, components, params, carried, u, flow, cg.SegmentJacobians()
    )
    made = shadowing_contributions(system, components, params, left, u, flow, cg.SegmentParallel())
    assert expected[2] is None  # the carried bases are the orbits' own
    assert_same((carried.qs, carried.rs), made[2])  # bases and factors
    assert_same(expected[:2], made[:2])  # contributions and coefficients


@pytest.mark.parametrize("unstable", [False, True])
def test_segment_jacobians_computed_at_once_give_the_per_step_terms(unstable):
    """The step-by-step sweep with each segment's Jacobians computed before it is swept
    (vectorised over its steps) gives the terms of per-step vector-Jacobian products, with
    and without the unstable contribution (FastAdjointResponse's psi-weighted sums)."""
    system, u, m, segments = cg.ModifiedSolenoid(dim=5), 4, 10, 6
    starts = _orbits.orbit_starts(system, None, KEY, 1)
    orbits = run_orbits(system, starts, u, 100, segments, m, store_bytes=STORE)
    params = Parameters.of(system, None)
    components = Components(TimeAverage(cg.ModifiedSolenoid.observable), jnp.eye(1))
    rng = np.random.default_rng(1)
    extra: dict[str, Any] = {}
    if unstable:
        extra = dict(psi=jnp.asarray(rng.normal(size=(segments, m, 1))), rs=orbits.rs[0][:, :u, :u])

    def sweep(strategy):
        return _sweep.adjoint_sweep_from(
            system,
            components,
            params,
            orbits.states[0],
            orbits.qs[0][..., :u],
            orbits.keys[0],
            jnp.asarray(orbits.start),
            False,
            strategy,
            **extra,
        )

    if unstable:  # FastAdjointResponse's default here
        assert isinstance(cg.AutoSweep().choose(5, params.size, u + 2, True), cg.SegmentJacobians)
    at_once = sweep(cg.SegmentJacobians())
    per_step = sweep(cg.StepByStep(dense_limit=0))
    assert_same(per_step, at_once)


@pytest.mark.parametrize("case", ["lorenz63", "noisy_lorenz96", "henon"])
def test_the_step_by_step_sweep_at_once_equals_the_per_step_loop(case):
    """With a segment's Jacobians at hand the step-by-step sweep runs only the adjoint
    recursion step by step and takes every sum at once (a flow's least-squares sums, a
    noisy system's, a map's): the terms of the per-step loop."""
    system, phi, wrt, u, m, segments = CASES[case]
    params = Parameters.of(system, wrt)
    count = np.size(phi(system.initial_state(KEY)))
    assert isinstance(
        cg.AutoSweep().choose(system.dim, params.size, count + u, False), cg.SegmentParallel
    )
    at_once, per_step, dense, parallel = both_sweeps(
        case,
        strategies=(
            cg.SegmentJacobians(),
            cg.StepByStep(dense_limit=0),  # c vector-Jacobian products a step
            cg.StepByStep(),  # the dense Jacobian of each step
            cg.SegmentParallel(),
        ),
    )
    assert_same(per_step, at_once)
    assert_same(per_step, dense)
    assert_same(per_step, parallel)


@pytest.mark.parametrize("batch", [3, 4, 10])
def test_segment_batches_that_share_segments_give_the_one_batch_propagators(batch):
    """Ten segments in batches of at most 3 (4 batches of 3: the last shares two segments
    with the one before), 4 (3 batches of 4, two shared) or 10 (one): the propagators of
    every segment, in order, are those of one batch of all ten."""
    system, phi, wrt, u, m, _ = CASES["lorenz63"]
    starts = _orbits.orbit_starts(system, None, KEY, 1)
    orbits = run_orbits(system, starts, u, 50, 10, m, store_bytes=STORE)
    params = Parameters.of(system, wrt)
    components = Components(TimeAverage(phi), jnp.eye(2))

    def propagators(size):
        return all_propagators(
            system,
            components,
            params,
            orbits.states[0],
            orbits.keys[0],
            jnp.asarray(orbits.start),
            True,
            m,
            size,
        )

    whole, batched = propagators(10), propagators(batch)
    assert batched.P.shape[0] == 10
    assert_same(whole, batched, rtol=1e-12)


def test_the_forward_run_takes_the_mean_the_stored_states_give():
    """forward_orbits(components=...) takes each orbit's mean of the raw components in the
    forward program; orbit_mean then equals the mean over the stored states."""
    system, phi, wrt, u, m, segments = CASES["lorenz63"]
    starts = _orbits.orbit_starts(system, None, KEY, 1)
    components = Components(TimeAverage(phi), jnp.eye(2))
    plain = run_orbits(system, starts, u, 50, segments, m, store_bytes=STORE)
    with_means = run_orbits(
        system, starts, u, 50, segments, m, components=components, store_bytes=STORE
    )
    assert plain.means is None and with_means.means.shape == (1, 2)
    expected = np.mean(np.asarray(jax.vmap(phi)(plain.states.reshape(-1, 3))), axis=0)
    for orbits in (plain, with_means):
        mean = _orbits.orbit_mean(system, components, orbits)
        np.testing.assert_allclose(mean, expected, rtol=1e-13)
