"""The parameters being differentiated: which leaves of a system ``wrt`` selects, and how
new values go back into the system (by leaf position: a compiled program holds no
selector)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_float64, first_line
from .._system import System


class _Position:
    """A stand-in for the system's leaf at ``index``, to see which leaves ``wrt`` selects."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _kind(leaf) -> str:
    """How an error names a selected leaf that is not a parameter."""
    if eqx.is_array(leaf):
        return f"a {leaf.dtype} array"
    return f"a Python {type(leaf).__name__}"


class Selection(eqx.Module):
    """A ``wrt`` held by what it selects: the positions of the leaves it picks among the
    system's and the structure it returns them in. Compared by value, so a compiled program
    that takes it is found again for a fresh selector of the same leaves."""

    picks: tuple[int, ...] = eqx.field(static=True)
    treedef: Any = eqx.field(static=True)

    @classmethod
    def of(cls, system: System, wrt: Callable) -> Selection:
        """What ``wrt`` selects in ``system`` (checked as :meth:`Parameters.of` checks it)."""
        _select(system, wrt)
        leaves, treedef = jax.tree_util.tree_flatten(system)
        chosen = wrt(treedef.unflatten([_Position(i) for i in range(len(leaves))]))
        picked, structure = jax.tree_util.tree_flatten(chosen)
        return cls(tuple(marker.index for marker in picked), structure)

    def __call__(self, system):
        leaves = jax.tree_util.tree_leaves(system)
        return self.treedef.unflatten([leaves[i] for i in self.picks])


def _select(system: System, wrt: Callable) -> tuple[Any, tuple[int, ...]]:
    """(the selected subtree with non-parameter leaves None, the selected parameters'
    positions among ``system``'s leaves). ``wrt`` is called on a copy of the system whose
    leaves are :class:`_Position` markers, as ``eqx.tree_at`` finds its nodes: the selection
    is read once, on the host, and a compiled program never calls ``wrt``."""
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(system)
    names = [jax.tree_util.keystr(path) for path, _ in paths_and_leaves]
    leaves = [leaf for _, leaf in paths_and_leaves]
    markers = treedef.unflatten([_Position(i) for i in range(len(leaves))])
    try:
        chosen = wrt(markers)
    except Exception as exc:  # noqa: BLE001 - any failure means wrt computes, not selects
        raise TypeError(
            "wrt must select fields of the system, as eqx.tree_at's where does (e.g. "
            "wrt=lambda s: s.rho or lambda s: (s.rho, s.sigma)), not compute new values "
            f"from them ({first_line(exc)})"
        ) from None
    picked = jax.tree_util.tree_leaves(chosen)
    strays = [leaf for leaf in picked if not isinstance(leaf, _Position)]
    if strays:
        raise TypeError(
            f"wrt must select fields of the system (e.g. wrt=lambda s: s.rho), but it "
            f"returned {_kind(strays[0])} ({strays[0]!r:.40}) that is not one of them"
        )
    seen: dict[int, int] = {}
    for marker in picked:
        seen[marker.index] = seen.get(marker.index, 0) + 1
    twice = [names[i] for i, n in seen.items() if n > 1]
    if twice:
        raise ValueError(
            f"wrt selects s{twice[0]} more than once: select each parameter once (a "
            "repeated parameter would get its gradient in one copy and 0 in the others)"
        )
    values = jax.tree_util.tree_map(
        lambda marker: leaves[marker.index] if eqx.is_inexact_array(leaves[marker.index]) else None,
        chosen,
    )
    positions = tuple(m.index for m in picked if eqx.is_inexact_array(leaves[m.index]))
    if not positions:
        shown = "; ".join(f"s{names[m.index]} is {_kind(leaves[m.index])}" for m in picked[:3])
        raise ValueError(
            f"wrt selects no parameters ({shown or 'an empty selection'}): it must select "
            "floating-point arrays of the system; store a parameter as "
            "jnp.asarray(value, dtype=jnp.float64)"
        )
    return values, positions


def _every_parameter(system: System) -> tuple[Any, tuple[int, ...]]:
    """``wrt=None``: every inexact-array leaf but the system's data (an input sequence)."""
    leaves, treedef = jax.tree_util.tree_flatten(system)
    markers = treedef.unflatten([_Position(i) for i in range(len(leaves))])
    data = {
        marker.index
        for name in system.data_fields
        for marker in jax.tree_util.tree_leaves(getattr(markers, name))
    }
    chosen = [i for i, leaf in enumerate(leaves) if eqx.is_inexact_array(leaf) and i not in data]
    if not chosen:
        raise ValueError(
            "wrt selects no parameters: the system has no floating-point array fields; "
            "store them as jnp.asarray(value, dtype=jnp.float64)"
        )
    kept = set(chosen)
    values = treedef.unflatten([leaf if i in kept else None for i, leaf in enumerate(leaves)])
    return values, tuple(chosen)


class Parameters(eqx.Module):
    """The parameters being differentiated, and how to put new values back into a system.

    ``wrt`` is None (every inexact-array field) or a selector ``system -> subtree`` as in
    ``eqx.tree_at`` (``lambda s: s.rho``, ``lambda s: (s.rho, s.sigma)``,
    ``lambda s: s.args`` for an ``eqx.nn.MLP``). The subtree may hold non-array leaves (an
    activation function): only its inexact arrays are parameters, as ``eqx.filter_grad``
    does. The selection is kept as the selected leaves' positions (``positions``), read on
    the host at every call: a compiled program holds no selector, so a fresh lambda does
    not recompile and a selector that reads a changed value is never stale.
    """

    values: Any
    positions: tuple[int, ...] = eqx.field(static=True)
    layer_fields: tuple[str | None, ...] | None = eqx.field(static=True, default=None)

    @classmethod
    def of(cls, system: System, wrt: Callable | None) -> Parameters:
        if wrt is not None and not callable(wrt):
            raise TypeError(f"wrt must be None or a function system -> parameters, got {wrt!r}")
        if wrt is None:
            values, positions = _every_parameter(system)
        else:
            values, positions = _select(system, wrt)
        check_float64(values, "parameters selected by wrt")
        # which leaves are a layered field of the system (stacked per layer): by identity
        stacks = {id(getattr(system, name)): name for name in system.layered}
        fields = tuple(stacks.get(id(leaf)) for leaf in jax.tree_util.tree_leaves(values))
        return cls(values, positions, fields if any(fields) else None)

    def substitute(self, system: System, values) -> System:
        """``system`` with the selected parameters replaced by ``values`` (by position: the
        system's other leaves and its static fields, ``reads`` included, stay its own)."""
        leaves, treedef = jax.tree_util.tree_flatten(system)
        for position, value in zip(self.positions, jax.tree_util.tree_leaves(values), strict=True):
            leaves[position] = value
        return treedef.unflatten(leaves)

    @property
    def size(self) -> int:
        """How many numbers the parameters hold."""
        return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(self.values))

    def zeros(self, leading: tuple[int, ...] = ()):
        """Zeros shaped like the parameters, with extra leading axes."""
        return jax.tree_util.tree_map(lambda v: jnp.zeros(leading + v.shape, v.dtype), self.values)
