"""The differentiable statistic: a statistic's value whose derivative is an estimator.

    value = chaosgrad.average(system, TimeAverage(phi), adjoint=Shadowing(...), key=key)
    grads = jax.grad(lambda s: loss(chaosgrad.average(s, stat, adjoint=est, key=key)))(system)

As ``diffrax.diffeqsolve(..., adjoint=...)`` makes the way a solution is differentiated an
option of the forward computation, ``average`` makes the estimator an option of the
statistic. The forward pass is the estimator's own estimate of the statistic S (its orbit or
samples); reverse mode gives, for a cotangent w = d loss / d S,

    w . dS/dtheta,   dS/dtheta = the estimator's Jacobian (``linear_response(...).grad``)

for every parameter being differentiated, through ``jax.custom_vjp``: the shadowing sweep,
FAR, the kernel score sums, the damped path-kernel pass, BPTT or central differences,
instead of reverse mode through the orbit (which explodes like e^{lambda_1 T}).

The estimator's pure computation (``AbstractEstimator.terms``) is one compiled program, so
``average`` composes with ``jax.jit``, ``jax.vmap`` (over keys or parameters),
``jax.grad``/``eqx.filter_grad`` and any optax chain. What it does not give is what needs
the host: standard errors and diagnostics (use :func:`linear_response` for those), and
``"auto"`` settings or ``Auto``, which a pilot run resolves before tracing
(:func:`configure`).

Cost. The forward pass computes the Jacobian of the statistic's k components with respect
to the parameters being differentiated (k cotangents in one sweep for the adjoint methods)
and keeps it for the backward pass, which only contracts it with w; the forward pass alone
(no derivative taken) computes the estimator's terms for the system's smallest parameter.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._system import System
from ..statistics import AbstractStatistic, Components
from ._base import AbstractEstimator, _jacobian_tree, compiled_terms
from ._parameters import Parameters
from ._response import _prepare
from .auto import Auto

NOT_FINITE = (
    "the statistic's run stopped being finite (NaN/inf states): the system diverges with "
    "these parameters; linear_response with the same arguments names the step"
)


def configure(
    system: System,
    statistic: AbstractStatistic,
    estimator: AbstractEstimator,
    *,
    wrt: Callable | None = None,
    x0=None,
    key,
) -> AbstractEstimator:
    """The estimator with its ``"auto"`` settings resolved (``Auto``: the estimator it
    chooses), from a pilot run on the host, so that it can run inside a compiled
    computation (:func:`average`). An estimator without ``"auto"`` settings is returned
    as it is.

    The pilot uses the keys ``linear_response`` would: ``linear_response(system,
    statistic, configure(..., key=key), key=key)`` equals ``linear_response(system,
    statistic, estimator, key=key)`` for ``"auto"`` settings of Shadowing,
    FastAdjointResponse, Kernel and PathKernel (``Auto`` runs its choice with a key of its
    own: the second half of ``jax.random.split(key)``).
    """
    system, params, x0, _, _, components = _prepare(system, statistic, estimator, wrt, x0, key)
    resolved, _ = estimator.resolve(system, components, params, x0, key)
    return resolved


def check_compilable(estimator, argument: str, inside: str, instead: str) -> None:
    """Refuse, naming the fix, an estimator that needs the host while it runs: a chaosgrad
    estimator whose ``"auto"`` settings (or ``Auto``) are not yet resolved by a pilot run,
    or one that saves a run in pieces (``checkpoint=``). ``argument`` names the estimator
    in the message, ``inside`` the computation it would run in, ``instead`` the way on for
    a resumable run."""
    if not isinstance(estimator, AbstractEstimator):
        raise TypeError(
            f"{argument} must be a chaosgrad estimator (e.g. Shadowing(...), Kernel(...)), got "
            f"{estimator!r:.60}"
        )
    name = type(estimator).__name__
    if isinstance(estimator, Auto) or estimator.auto_settings():
        which = "Auto" if isinstance(estimator, Auto) else ", ".join(estimator.auto_settings())
        raise ValueError(
            f"{name}'s {which} is chosen by a pilot run on the host, which cannot run inside "
            f"{inside}: resolve it first, {argument} = chaosgrad.configure(system, statistic, "
            f"{argument}, key=key), and pass the result"
        )
    if estimator.checkpointed:
        raise ValueError(
            f"{name}(checkpoint=...) saves a run in pieces from the host; {inside} runs it "
            f"as one compiled program: {instead}"
        )


def average(
    system: System,
    statistic: AbstractStatistic,
    *,
    adjoint: AbstractEstimator,
    x0=None,
    key,
):
    """The statistic's value, differentiable: its derivative is ``adjoint``'s estimate.

    Args:
        system: any chaosgrad System; every floating-point array of it may be
            differentiated (``jax.grad`` of a function of the system, or of a value put in
            with ``eqx.tree_at``).
        statistic: ``TimeAverage(phi)``, ``WindowAverage(phi, steps)`` or
            ``Terminal(phi, steps)``.
        adjoint: the estimator whose Jacobian is the derivative: ``Shadowing``,
            ``FastAdjointResponse``, ``Kernel``, ``PathKernel``, ``Backprop``,
            ``TruncatedBackprop`` or ``FiniteDifference``, with concrete settings
            (``"auto"`` settings and ``Auto``: resolve them with :func:`configure`).
        x0: the starting state(s), as for ``linear_response``.
        key: PRNG key; the value and the derivative are those of ``linear_response`` with
            the same key (``jax.grad`` of ``average(...)[i]`` is row i of its ``grad``).

    Returns:
        The estimator's estimate of the statistic, with the structure of the observable's
        output. Under ``jax.jit`` a run that stops being finite raises (``eqx.error_if``).
    """
    check_compilable(
        adjoint,
        "adjoint",
        "a differentiated or compiled computation",
        "use linear_response for a resumable run",
    )
    system, _, x0, count, out, components = _prepare(system, statistic, adjoint, None, x0, key)
    flat = _statistic(system, adjoint, components, x0, key)
    return _jacobian_tree(flat, out, count)


def _parameters(system: System, chosen) -> Parameters:
    """The parameters at the leaf positions ``chosen`` (inexact arrays of ``system``)."""
    leaves, treedef = jax.tree_util.tree_flatten(system)
    kept = set(chosen)
    values = treedef.unflatten([leaf if i in kept else None for i, leaf in enumerate(leaves)])
    return Parameters(values, tuple(chosen))


def _smallest(system: System) -> Parameters:
    """The system's smallest inexact array alone: what the forward pass needs for its value."""
    leaves = jax.tree_util.tree_leaves(system)
    inexact = [i for i, leaf in enumerate(leaves) if eqx.is_inexact_array(leaf)]
    return _parameters(system, [min(inexact, key=lambda i: leaves[i].size)])


def _perturbed_positions(system: System, perturbed) -> list[int]:
    leaves = jax.tree_util.tree_leaves(system)
    flags = jax.tree_util.tree_leaves(perturbed)
    return [
        i
        for i, (leaf, flag) in enumerate(zip(leaves, flags, strict=True))
        if flag and eqx.is_inexact_array(leaf)
    ]


def _checked_value(terms):
    return eqx.error_if(terms.value, jnp.logical_not(terms.finite), NOT_FINITE)


@eqx.filter_custom_vjp
def _statistic(system, adjoint, components: Components, x0, key):
    terms = compiled_terms(adjoint, system, components, _smallest(system), x0, key, None)
    return _checked_value(terms)


@_statistic.def_fwd
def _statistic_fwd(perturbed, system, adjoint, components, x0, key):
    chosen = _perturbed_positions(system, perturbed)
    params = _parameters(system, chosen) if chosen else _smallest(system)
    terms = compiled_terms(adjoint, system, components, params, x0, key, None)
    return _checked_value(terms), terms.grad


@_statistic.def_bwd
def _statistic_bwd(jacobian, cotangent, perturbed, system, adjoint, components, x0, key):
    """w . dS/dtheta for every perturbed leaf (the Jacobian's leaves are (k, *shape))."""
    if not _perturbed_positions(system, perturbed):
        return jax.tree_util.tree_map(lambda _: None, system)
    if cotangent is None:
        cotangent = jnp.zeros(components.count)
    return jax.tree_util.tree_map(lambda leaf: jnp.tensordot(cotangent, leaf, axes=1), jacobian)
