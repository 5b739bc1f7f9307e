"""Per-step parameter derivatives that touch only the step's own layer.

A deep network stacks its per-layer weights on a leading axis (``System.layered``). The
derivative of step t with respect to the stack is zero outside slice t, yet a VJP with
respect to the whole stack materialises a full-size array every step and adds it to a
full-size accumulator: O(depth x size) work per sample instead of O(size). Here the
layered parameter leaves enter a step as their slice at t (``at_layer``), the VJP returns
the slice, and the accumulator is updated in place at index t (``.at[t].add``).

Systems without layered fields take the plain path (one VJP with respect to all
parameters), so this is the one shared implementation for every estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._system import at_layer


class Increment(NamedTuple):
    """A step's parameter derivative: full leaves (``None`` for layered ones) and the
    layered leaves' slices at layer ``t``."""

    rest: list
    slices: list
    t: Any


def step_pullback(system, params, t, fn: Callable, *primals):
    """``(out, pullback)`` of ``(values, *primals) -> fn(params.substitute(system, values),
    *primals)`` at step t; ``pullback(cotangent) -> (primal cotangents, Increment)``."""
    leaves, treedef = jax.tree_util.tree_flatten(params.values)
    names = params.layer_fields or (None,) * len(leaves)
    rest = [leaf for leaf, name in zip(leaves, names, strict=True) if name is None]
    slices = [leaf[t] for leaf, name in zip(leaves, names, strict=True) if name is not None]
    layer_names = [name for name in names if name is not None]

    def function(rest, slices, *primals):
        remaining = iter(rest)
        full = [
            next(remaining) if name is None else leaf
            for leaf, name in zip(leaves, names, strict=True)
        ]
        current = params.substitute(system, jax.tree_util.tree_unflatten(treedef, full))
        if layer_names:
            current = at_layer(current, dict(zip(layer_names, slices, strict=True)))
        return fn(current, *primals)

    out, pull = jax.vjp(function, rest, slices, *primals)

    def pullback(cotangent):
        g_rest, g_slices, *g_primals = pull(cotangent)
        return tuple(g_primals), Increment(list(g_rest), list(g_slices), t)

    return out, pullback


def accumulate(total, increment: Increment, params, leading: int = 0, weight=None):
    """``total + weight (x) increment``; ``total`` is shaped like the parameters with
    ``leading`` extra axes (``weight`` has those axes' shape, or is None)."""
    leaves, treedef = jax.tree_util.tree_flatten(total)
    names = params.layer_fields or (None,) * len(leaves)
    rest, slices = iter(increment.rest), iter(increment.slices)

    def scaled(g):
        if weight is None:
            return g
        return weight.reshape(weight.shape + (1,) * g.ndim) * g

    out = []
    for leaf, name in zip(leaves, names, strict=True):
        if name is None:
            out.append(leaf + scaled(next(rest)))
        else:
            index = (slice(None),) * leading + (increment.t,)
            out.append(leaf.at[index].add(scaled(next(slices))))
    return jax.tree_util.tree_unflatten(treedef, out)


def as_tree(increment: Increment, params):
    """The increment as a full parameter pytree (slices placed at layer t)."""
    return accumulate(params.zeros(), increment, params)


def rest_zeros(params) -> list:
    """Accumulators for the non-layered leaves (layered ones are scan outputs instead)."""
    leaves = jax.tree_util.tree_leaves(params.values)
    names = params.layer_fields or (None,) * len(leaves)
    return [jnp.zeros_like(leaf) for leaf, name in zip(leaves, names, strict=True) if name is None]


def add_rest(total: list, increment: Increment, weight=None) -> list:
    """``total + weight * increment`` for the non-layered leaves."""
    if weight is None:
        return [a + b for a, b in zip(total, increment.rest, strict=True)]
    return [a + weight * b for a, b in zip(total, increment.rest, strict=True)]


def assemble(params, rest: list, stacked: list, start):
    """The full parameter pytree from the non-layered sums and the layered leaves' per-step
    slices ``stacked`` (each (steps, ...), step i at layer start + i); a scan over steps
    emits the slices as outputs, so no step touches a full-size array."""
    leaves, treedef = jax.tree_util.tree_flatten(params.values)
    names = params.layer_fields or (None,) * len(leaves)
    rest_iter, stacked_iter = iter(rest), iter(stacked)
    out = []
    for leaf, name in zip(leaves, names, strict=True):
        if name is None:
            out.append(next(rest_iter))
        else:
            out.append(
                jax.lax.dynamic_update_slice_in_dim(
                    jnp.zeros_like(leaf), next(stacked_iter), start, 0
                )
            )
    return jax.tree_util.tree_unflatten(treedef, out)
