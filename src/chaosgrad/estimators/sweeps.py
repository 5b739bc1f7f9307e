"""How the shadowing family's backward sweep runs: strategy objects.

The recursion is one (``_sweep``: eps_n = f_*^T eps_{n+1}, nu'_n = f_*^T nu'_{n+1} +
grad Phi~(x_n), renormalised at each segment's start); these objects say only how it is
evaluated, as diffrax's solvers and adjoints are objects. All evaluations give the same
terms to rounding (tests/estimators/test_segment_sweep.py), so the choice is one of speed
and memory:

* :class:`StepByStep`: one step at a time, the adjoints of every column pulled back
  together (c vector-Jacobian products, or the dense Jacobian when the system is small).
  Memory O(dim c); fits any size.
* :class:`SegmentJacobians`: the Jacobians of a whole segment's steps first, vectorised
  over its steps, then one matrix product a step. Pays dim + P JVPs a step, so it wins when
  the columns c are many compared with dim + P (a statistic with many components, or the
  unstable contribution's extra columns).
* :class:`SegmentParallel`: each segment's propagator P_0 = J_0^T ... J_{m-1}^T and the
  linear forms of its sums, batches of segments at once, then a short chain over the K
  segments (``_segment_sweep``). O(dim^2 (dim + P)) a step: for small systems, where one
  step of the other two costs a CPU's kernel launches many times over. Shadowing only (the
  unstable contribution of FastAdjointResponse is bilinear in tangents and adjoints).
* :class:`AutoSweep` (the default): the rule below, in this one place.

A user may pass any of them: ``Shadowing(..., sweep=cg.SegmentJacobians())``.
"""

from __future__ import annotations

import abc

import equinox as eqx


class AbstractSweep(eqx.Module):
    """How the backward sweep is evaluated (module doc).

    ``store_bytes``: the largest orbit, in bytes of states, whose states the forward run
    keeps for the sweep; a longer orbit keeps one state per segment and the sweep
    recomputes each segment's states from it (memory O(K + m) per orbit, not O(K m)).
    """

    store_bytes: eqx.AbstractVar[int]

    @abc.abstractmethod
    def choose(self, dim: int, size: int, columns: int, unstable: bool) -> AbstractSweep:
        """The concrete strategy for a system of ``dim`` state components, ``size``
        parameters and ``columns`` adjoints carried (k' + u, plus one with the unstable
        contribution ``unstable``)."""


class StepByStep(AbstractSweep):
    """One step at a time.

    Args:
        dense_limit: up to this many state components and parameters the columns are
            pulled back through the dense Jacobian (dim + P JVPs, contracted by
            broadcast-and-sum, which XLA fuses into a few kernels: 10x faster per step than
            c VJPs under ``vmap`` on Lorenz-63); above it, c VJPs.
        unroll: steps per loop iteration (XLA unrolls them: less loop overhead).
        pack_limit: up to this many summed numbers a step, the running sums are one flat
            vector (one fused add a step instead of one per parameter leaf).
        store_bytes: see :class:`AbstractSweep`.
    """

    dense_limit: int = eqx.field(default=16, static=True)
    unroll: int = eqx.field(default=4, static=True)
    pack_limit: int = eqx.field(default=4096, static=True)
    store_bytes: int = eqx.field(default=256 * 2**20, static=True)

    def choose(self, dim, size, columns, unstable):
        return self


class SegmentJacobians(AbstractSweep):
    """The Jacobians of a segment's steps at once (``jax.jacfwd`` vectorised over the
    steps), then one product a step: on the 21-dimensional solenoid a step's 22 pullbacks
    cost 17 us inside the loop and 1.9 us this way (XLA's CPU fusion re-evaluates the
    sines of a loop body for every product it feeds).

    Args:
        unroll: steps per loop iteration of the products.
        store_bytes: see :class:`AbstractSweep`.
    """

    unroll: int = eqx.field(default=4, static=True)
    store_bytes: int = eqx.field(default=256 * 2**20, static=True)

    def choose(self, dim, size, columns, unstable):
        return self


class SegmentParallel(AbstractSweep):
    """Parallel over segments (``_segment_sweep``): propagators of ``batch`` segments at
    once, summed over the orbits swept together (one batch's arrays stay in a CPU's cache;
    Lorenz-63: 40 ns per segment and step in batches of 50-100, 70 at 200, 125 at 500).
    Without the unstable contribution only.

    Args:
        batch: segments swept together (over all orbits vmapped together).
        store_bytes: see :class:`AbstractSweep`.
    """

    batch: int = eqx.field(default=64, static=True)
    store_bytes: int = eqx.field(default=256 * 2**20, static=True)

    def choose(self, dim, size, columns, unstable):
        if unstable:
            _refuse_parallel()
        return self


class AutoSweep(AbstractSweep):
    """The default rule, measured on a 2-core CPU:

    1. :class:`SegmentParallel` without the unstable contribution, up to
       ``parallel_limit`` state components and parameters (O(dim^2 (dim + P)) a step);
    2. else :class:`SegmentJacobians` up to ``jacobian_limit`` components and parameters
       when the dense Jacobians (dim + P JVPs a step) are not much dearer than the pullbacks
       they replace: dim + P <= 3 columns (the 21-dimensional solenoid with 22 columns
       2.6x faster; Lorenz-96 n = 40 with 15 columns 1.2x; a tanh RNN n = 40 with 7 columns
       2.3x slower, so it stays step by step);
    3. else :class:`StepByStep`.
    """

    parallel_limit: int = eqx.field(default=16, static=True)
    jacobian_limit: int = eqx.field(default=64, static=True)
    store_bytes: int = eqx.field(default=256 * 2**20, static=True)

    def choose(self, dim, size, columns, unstable):
        if not unstable and max(dim, size) <= self.parallel_limit:
            return SegmentParallel(store_bytes=self.store_bytes)
        if max(dim, size) <= self.jacobian_limit and dim + size <= 3 * columns:
            return SegmentJacobians(store_bytes=self.store_bytes)
        return StepByStep(store_bytes=self.store_bytes)


def check_sweep(sweep, unstable: bool = False) -> None:
    """A clear error for a ``sweep=`` that is not a strategy object, or that cannot sweep
    the unstable contribution (``unstable``: FastAdjointResponse)."""
    if not isinstance(sweep, AbstractSweep):
        raise TypeError(
            f"sweep must be a sweep strategy (AutoSweep(), StepByStep(), SegmentJacobians(), "
            f"SegmentParallel()), got {sweep!r}"
        )
    if unstable and isinstance(sweep, SegmentParallel):
        _refuse_parallel()


def _refuse_parallel():
    raise ValueError(
        "SegmentParallel sweeps the shadowing contribution only: FastAdjointResponse "
        "needs StepByStep() or SegmentJacobians() (or AutoSweep())"
    )
