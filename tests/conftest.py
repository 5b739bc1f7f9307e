"""Settings for the whole test suite.

float64 everywhere, as the library needs: turned on here (the library leaves JAX's
configuration alone), and through ``JAX_ENABLE_X64`` for the subprocesses the tests start.

The default suite is dominated by XLA compilation: hundreds of small programs, most run once
or twice. XLA's CPU backend at optimisation level 0 compiles them about 1.5x faster and runs
the tests' short loops about as fast. The flag goes into ``XLA_FLAGS`` here, before JAX
starts its backend, so that the subprocesses the tests start (the command line, several
processes) inherit it and compute with the same compiled code as the test process. Rounding
may differ from a level-2 build in the last bits, which a chaotic orbit amplifies (a Lorenz-63
Lyapunov exponent moves by about 1e-9 relative over 2500 steps); every comparison in the suite
is between runs under the same flags or against a stated tolerance that is far larger.
Set ``XLA_FLAGS`` with an ``--xla_backend_optimization_level`` to test another level:
``make test-slow`` runs the long accuracy runs, which are bound by run time, at level 2.
"""

import os

import jax
import pytest

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
    ).strip()

os.environ["JAX_ENABLE_X64"] = "1"
jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. A pytest worker compiles
    thousands of small programs; each keeps memory mappings of its machine code, and a
    long-lived worker reached the kernel's limit (vm.max_map_count, 65 530), where XLA's
    compiler aborts the process in the middle of a later, unrelated test."""
    yield
    jax.clear_caches()
