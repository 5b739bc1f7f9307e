"""Step rules that read the loss: Optax transformations whose ``update`` takes the loss at
the current parameters as ``value=`` (``optax.GradientTransformationExtraArgs``), which
``fit`` and ``TrainStep`` pass.

* :func:`capped_step`: the adjoint path-kernel paper's rule (Ni, arXiv:2507.21497 v2),
  theta <- theta - min(eta, f |L| / |g|^2) g: the decrease the gradient predicts, min(...)
  |g|^2, is capped at the fraction f of the loss.
* :func:`reject_jumps`: any optimizer, with a step undone when the loss it led to is above
  ``factor`` times the lowest loss accepted so far (the statistics of a chaotic model can
  jump when a step crosses a bifurcation, where no gradient sees it coming, or creep there
  in steps that each look small); each undone step shrinks the later ones by ``shrink``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._errors import check_real


def _norm2(tree) -> jax.Array:
    return jnp.sum(jnp.stack([jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)]))


def capped_step(
    rate: float = 1.0, later: float | None = None, switch: float | None = None, fraction=0.1
) -> optax.GradientTransformationExtraArgs:
    """updates = -min(eta, fraction |L| / |g|^2) g, with eta = ``rate``, and ``later`` for
    the rest of the run once the loss L has reached ``switch`` (the paper: rate 1, later
    0.1, switch 6, fraction 0.1).

    Args:
        rate: the largest step size eta.
        later, switch: eta becomes ``later`` from the first iteration whose loss is at most
            ``switch`` (both or neither).
        fraction: the cap on the predicted decrease, as a fraction of |L|.
    """
    check_real(rate, "rate", positive=True)
    check_real(fraction, "fraction", positive=True)
    if (later is None) != (switch is None):
        raise ValueError("capped_step takes later= and switch= together (or neither)")
    if later is not None:
        check_real(later, "later", positive=True)

    def init(params):
        return jnp.zeros((), bool)

    def update(updates, state, params=None, *, value, **extra):
        switched = state if switch is None else state | (value <= switch)
        eta = rate if later is None else jnp.where(switched, later, rate)
        cap = fraction * jnp.abs(value) / jnp.maximum(_norm2(updates), jnp.finfo(float).tiny)
        size = jnp.minimum(eta, cap)
        return jax.tree_util.tree_map(lambda u: -size * u, updates), switched

    return optax.GradientTransformationExtraArgs(init, update)  # pyright: ignore[reportArgumentType]


class RejectJumpsState(NamedTuple):
    """``inner``: the wrapped optimizer's state; ``last``: the update last applied (undone
    on a jump); ``reference``: the lowest loss accepted so far; ``scale``: the factor on
    later updates; ``rejected``: steps undone so far."""

    inner: Any
    last: Any
    reference: jax.Array
    scale: jax.Array
    rejected: jax.Array


def reject_jumps(
    optimizer: optax.GradientTransformation, factor: float = 3.0, shrink: float = 0.5
) -> optax.GradientTransformationExtraArgs:
    """``optimizer``, with a step undone when it made the loss jump.

    At each iteration, with L the loss at the current parameters and L_ref the lowest loss
    accepted so far: if L > ``factor`` L_ref, the update is -(the last update), back to
    where it started, the wrapped optimizer's state is kept as it was, and later updates
    are multiplied by ``shrink`` once more; otherwise the wrapped update, times the current
    scale, and L_ref becomes min(L_ref, L). The gradient at a rejected point is not used.
    The lowest accepted loss, not the last, is the reference, so that a loss creeping up
    in steps of less than ``factor`` each is caught too. Choose ``factor`` above the loss
    estimate's own noise (the ratio of a noisy estimate to the lowest of many), or noise
    alone undoes steps.

    Args:
        optimizer: any Optax transformation (it receives ``value`` too if it takes it).
        factor: the jump that undoes a step (> 1).
        shrink: the factor on the step size after each undone step, in (0, 1].
    """
    check_real(factor, "factor", positive=True)
    check_real(shrink, "shrink", positive=True)
    if not factor > 1:
        raise ValueError(f"factor must be above 1 (a jump of the loss), got {factor}")
    if not shrink <= 1:
        raise ValueError(f"shrink must be in (0, 1], got {shrink}")
    inner = optax.with_extra_args_support(optimizer)

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return RejectJumpsState(
            inner.init(params), zeros, jnp.asarray(jnp.inf), jnp.ones(()), jnp.zeros((), int)
        )

    def update(updates, state, params=None, *, value, **extra):
        jump = value > factor * state.reference
        step, inner_state = inner.update(updates, state.inner, params, value=value, **extra)
        step = jax.tree_util.tree_map(lambda u: state.scale * u, step)

        def pick(undo, take):
            return jax.tree_util.tree_map(lambda a, b: jnp.where(jump, a, b), undo, take)

        applied = pick(jax.tree_util.tree_map(jnp.negative, state.last), step)
        after = RejectJumpsState(
            pick(state.inner, inner_state),
            pick(jax.tree_util.tree_map(jnp.zeros_like, step), step),
            jnp.where(jump, state.reference, jnp.minimum(state.reference, value)),
            jnp.where(jump, shrink * state.scale, state.scale),
            state.rejected + jump,
        )
        return applied, after

    return optax.GradientTransformationExtraArgs(init, update)  # pyright: ignore[reportArgumentType]
