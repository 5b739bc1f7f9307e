"""Small dense linear algebra one matrix at a time (``chaosgrad._linalg``): the same numbers
as the batched library calls, each library call on one matrix, and no hang of the CPU thread
pool where the batched calls hung (jax 0.10.2, 2 cores)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosgrad import _linalg

KEY = jax.random.key(0)
A = jnp.eye(5) + 0.1 * jax.random.normal(KEY, (3, 4, 5, 5))
B = jax.random.normal(jax.random.key(1), (3, 4, 5, 2))


@pytest.mark.parametrize(
    "ours, library, arguments",
    [
        (_linalg.inv, jnp.linalg.inv, (A,)),
        (_linalg.solve, jnp.linalg.solve, (A, B)),
        (_linalg.qr, jnp.linalg.qr, (A,)),
        (
            _linalg.solve_upper,
            lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=False),
            (jnp.triu(A), B),
        ),
    ],
    ids=["inv", "solve", "qr", "solve_upper"],
)
def test_the_serial_calls_equal_the_batched_library_calls(ours, library, arguments):
    expected = library(*arguments)
    for got in (ours(*arguments), jax.vmap(jax.vmap(ours))(*arguments), jax.vmap(ours)(*arguments)):
        for g, e in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected), strict=True
        ):
            np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-14)


def test_a_broadcast_right_hand_side_empty_matrices_and_a_loop_body():
    assert _linalg.inv(jnp.zeros((3, 0, 0))).shape == (3, 0, 0)  # no unstable direction
    np.testing.assert_allclose(
        _linalg.solve(A[0], B[0, 0]), jnp.linalg.solve(A[0], B[0, 0]), rtol=1e-13, atol=1e-14
    )
    body = jax.jit(
        jax.vmap(
            lambda a: jax.lax.scan(
                lambda c, k: (c + _linalg.inv(a + k), None), jnp.zeros((5, 5)), jnp.arange(3.0)
            )[0]
        )
    )
    expected = sum(jnp.linalg.inv(A[0] + k) for k in range(3))
    np.testing.assert_allclose(body(A[0]), expected, rtol=1e-13, atol=1e-13)


def test_each_library_call_sees_one_matrix():
    """The compiled program of a vmapped inverse calls LU on a 5 x 5 matrix, in a loop,
    never on the batch of 4 (the batched call is what can hang)."""
    text = jax.jit(jax.vmap(_linalg.inv)).lower(A[0]).as_text()
    assert "while" in text
    calls = [line for line in text.splitlines() if "getrf" in line and "call" in line]
    assert calls, "no LU call found"
    assert all("4x5x5" not in line for line in calls), calls
    assert any("5x5xf64" in line for line in calls), calls


def test_many_orbits_of_a_wide_fast_adjoint_response_finish():
    """33 orbits of FAR on the 21-dimensional solenoid: with batched inverses (before
    ``_linalg``) this never finished on a 2-core CPU (both pool threads waited in the LU and
    triangular-solve kernels); it now takes a few seconds. A subprocess, so that a hang
    fails the test instead of stopping the suite."""
    script = (
        "import jax, chaosgrad as cg\n"
        "r = cg.linear_response(cg.ModifiedSolenoid(dim=21),"
        " cg.TimeAverage(cg.ModifiedSolenoid.observable),"
        " cg.FastAdjointResponse(unstable_dim=20, segment_steps=20, segments=10, window=10,"
        " burn_in=100, orbits=33), key=jax.random.key(0))\n"
        "print(float(r.grad.gamma1), float(r.stderr.gamma1))\n"
    )
    try:
        run = subprocess.run(
            [sys.executable, "-c", script],
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("33 orbits of FastAdjointResponse did not finish in 180 s (a pool hang)")
    assert run.returncode == 0, run.stderr[-2000:]
    grad, stderr = map(float, run.stdout.split())
    assert np.isfinite(grad) and 0 < stderr < 0.1
