"""Systems: the random maps every chaosgrad algorithm acts on.

A system is the (possibly time-dependent, possibly noisy) map

    x_{t+1} = drift(t, x_t) + diffusion(t, x_t) * xi_t,    xi_t ~ N(0, I),

whose parameters are the module's inexact-array fields. ``t`` is the step (for a deep
network: the layer). A continuous-time model dx = F(t, x) dt + s(t, x) dB becomes such a map
through one step of an integrator (:class:`AbstractFlow`, ``chaosgrad.Flow``): classical RK4, or
forward Euler, which is Euler-Maruyama when the model has noise (diffusion = s sqrt(dt)).

The noise of step ``t`` is ``N(0, I)`` drawn from ``jax.random.fold_in(key, t)``, so a
trajectory is a pure function of (system, x0, key) and can be replayed step by step.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._errors import (
    _X64_HINT,
    as_state,
    check_finite_array,
    check_float64,
    check_key,
    check_positive_int,
    check_x64,
    first_line,
    first_nonfinite_step,
    traceable,
)
from ._functions import StepFunction, is_user_function, reads, with_static
from ._integrate import integrate_step

__all__ = [
    "System",
    "AbstractFlow",
    "integrate_step",
    "simulate",
    "param",
    "check_horizon",
    "check_noise_setting",
    "resolve_start",
    "check_step",
    "bind",
]


def param(value, name: str | None = None) -> Array:
    """A parameter as a float64 array (what every built-in stores its parameters as).

    With ``name``, NaN or inf is refused (a concrete value; traced ones pass unchecked).
    """
    array = jnp.asarray(value, dtype=jnp.float64)
    if name is not None:
        check_finite_array(array, name)
    return array


class System(eqx.Module):
    """x_{t+1} = drift(t, x) + diffusion(t, x) * xi_t,  xi_t ~ N(0, I).

    Subclasses define ``drift`` (and, if noisy, ``diffusion`` and ``stochastic``) and a field
    ``dim: int = eqx.field(static=True)``. Parameters are the inexact-array fields; change
    them with ``eqx.tree_at``.

    A deep network keeps per-layer weights stacked on a leading layer axis and names those
    fields in ``layered``; ``drift`` and ``diffusion`` must read them only as
    ``self.field[t]``. The estimators then hand each step its own layer's slice
    (:func:`at_layer`), so a step's VJP writes a slice, never a full-size gradient.
    """

    dim: eqx.AbstractVar[int]
    reads: str | None = eqx.field(static=True, default=None, kw_only=True, repr=False)
    """What the step computes and reads (:mod:`chaosgrad._functions`), set by :func:`bind`
    at each call of a public function; it keys every compiled program of the system."""
    layered: ClassVar[tuple[str, ...]] = ()
    """The fields stacked per layer (see the class doc)."""
    data_fields: ClassVar[tuple[str, ...]] = ()
    """The fields that hold data, not parameters (an input sequence, targets): ``wrt=None``
    leaves them out."""
    noise_field: ClassVar[str | None] = None
    """The field holding the noise amplitude, if one does: changing it after construction
    is refused (:func:`check_noise_setting`)."""
    component_names: ClassVar[tuple[str, ...]] = ()
    """Names of the state's entries, for observables written as text (``"z"``)."""
    default_observable: ClassVar[str | None] = None
    """The command line's observable when none is given (text, as ``--observable``)."""
    default_statistic: ClassVar[str] = "average"
    """The command line's statistic when none is given: ``"average"`` or ``"terminal"``."""
    default_steps: ClassVar[int | None] = None
    """The command line's horizon for a ``"terminal"`` default statistic."""

    @abc.abstractmethod
    def drift(self, t, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        """The deterministic part of one step."""

    def diffusion(self, t, x: Float[Array, " dim"]):
        """Noise amplitude of one step: a scalar or one value per component."""
        return 0.0

    @property
    def stochastic(self) -> bool:
        """Whether the system draws noise (decided statically, never from traced values)."""
        return False

    @property
    def time_step(self) -> float | None:
        """The time one step represents, for a discretised flow; ``None`` for a map."""
        return None

    def vector_field(self, time, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        """F(time, x) of the flow dx/dt = F that a system with a ``time_step`` discretises;
        its direction is the neutral one that Shadowing treats. A map has none."""
        raise NotImplementedError(
            f"{type(self).__name__} has a time_step but does not define vector_field(time, x)"
        )

    @property
    def horizon(self) -> int | None:
        """The largest number of steps the system defines (a network's depth), or None."""
        return None

    def initial_state(self, key: PRNGKeyArray) -> Float[Array, " dim"]:
        """A typical starting point (runs burn in from it): N(0, I) unless overridden."""
        return jax.random.normal(key, (self.dim,), dtype=jnp.float64)

    def initial_log_density(self, x0: Float[Array, " dim"]) -> Float[Array, ""] | None:
        """log h_0(x0; theta), the density of ``initial_state``'s law, or None (the default)
        when it does not depend on the parameters. A system whose initial state depends on
        its parameters defines it: the kernel estimators need its score d_theta log h_0."""
        return None

    def noise(self, key: PRNGKeyArray, t, dim: int | None = None) -> Float[Array, " dim"]:
        """xi_t ~ N(0, I), a pure function of (key, t); ``dim`` defaults to ``self.dim``."""
        dim = self.dim if dim is None else dim
        return jax.random.normal(jax.random.fold_in(key, t), (dim,), dtype=jnp.float64)

    def for_sample(self, index) -> System:
        """The system seen by sample ``index`` (a traced integer inside ``vmap``).

        The identity, except for systems that carry per-sample data such as an input
        sequence per sample (:class:`~chaosgrad.systems.InputDriven`).
        """
        return self

    @property
    def step_name(self) -> str:
        """How messages name the function that makes a step (a user model names its own)."""
        return f"{type(self).__name__}.drift"

    def step(self, t, x, xi=None):
        """One step of the map with the noise sample ``xi`` (ignored when deterministic)."""
        if not self.stochastic or xi is None:
            return self.drift(t, x)
        return self.drift(t, x) + self.diffusion(t, x) * xi


class LayerSlice(eqx.Module):
    """A stacked per-layer field inside one step: ``field[t]`` is this step's layer.

    Stands in for the whole stack in :func:`at_layer`; indexing ignores its argument
    because the slice already belongs to the step's layer.
    """

    value: Array

    def __getitem__(self, index):
        return self.value


def at_layer(system: System, slices: dict[str, Array]) -> System:
    """``system`` with each named stacked field replaced by its one-layer slice."""
    names = tuple(slices)
    return eqx.tree_at(
        lambda s: tuple(getattr(s, name) for name in names),
        system,
        tuple(LayerSlice(slices[name]) for name in names),
    )


def layer_slices(system: System, start, steps: int) -> dict[str, Array]:
    """The layered fields' slices for steps start..start+steps-1 (scan inputs)."""
    return {
        name: jax.lax.dynamic_slice_in_dim(getattr(system, name), start, steps)
        for name in system.layered
    }


class AbstractFlow(System):
    """A continuous-time model dx = F(t, x) dt + s(t, x) dB seen through one integrator step.

    drift(n, x) = one RK4/Euler step of F from time n*dt; diffusion = s(n*dt, x) * sqrt(dt),
    so that with noise and method="euler" the map is exactly Euler-Maruyama.
    Subclasses define ``vector_field(time, x)`` and the static fields ``dt`` and ``method``.
    """

    dt: eqx.AbstractVar[float]
    method: eqx.AbstractVar[Any]

    @abc.abstractmethod
    def vector_field(self, time, x):
        """F(time, x)."""

    def noise_scale(self, time, x):
        """s(time, x), the SDE's noise amplitude (0 for an ODE)."""
        return 0.0

    @property
    def time_step(self) -> float:
        return self.dt

    def drift(self, t, x):
        return integrate_step(self.vector_field, t * self.dt, x, self.dt, self.method)

    def diffusion(self, t, x):
        return self.noise_scale(t * self.dt, x) * math.sqrt(self.dt)


def check_noise_setting(system: System) -> None:
    """Refuse a noise amplitude changed after construction (``eqx.tree_at`` on noise_level).

    Whether a system draws noise is decided at construction (``stochastic`` is static, so
    that deterministic systems pay nothing for noise). Setting ``noise_level`` later would be
    silently ignored (0 -> s) or divide the kernel estimators by zero (s -> 0): refused.
    """
    if system.noise_field is None:
        return
    level = getattr(system, system.noise_field)
    if level is None or callable(level):
        return
    try:
        nonzero = bool(np.any(np.asarray(level) != 0))
    except jax.errors.TracerArrayConversionError:  # inside a transformation: not checkable
        return
    if nonzero != system.stochastic:
        name = type(system).__name__
        raise ValueError(
            f"{name}.noise_level is {np.asarray(level).tolist()} but the "
            f"{name} was built {'with' if system.stochastic else 'without'} "
            f"noise: noise is switched on or off at construction; build a new "
            f"one with {name}(..., noise=...)"
        )


def check_horizon(system: System, steps: int) -> None:
    """Raise ValueError when ``steps`` runs past the system's last layer."""
    horizon = system.horizon
    if horizon is not None and steps > horizon:
        raise ValueError(
            f"{type(system).__name__} has {horizon} layers: steps + burn_in = "
            f"{steps} runs past the last one"
        )


def resolve_start(system: System, x0, key) -> tuple[Array, PRNGKeyArray]:
    """(x0, key for the noise): x0 drawn from ``system.initial_state`` when not given.

    Also checks, once and without running it, that the system's step maps a state to a
    state of the same shape (:func:`check_step`)."""
    if key is None:
        if x0 is None or system.stochastic:
            raise ValueError("key is required (jax.random.key(seed)) to draw x0 or the noise")
        key = jax.random.key(0)
    check_key(key)
    init_key, noise_key = jax.random.split(key)
    if x0 is None:
        x0 = system.initial_state(init_key)
    return check_start(system, x0), noise_key


def check_start(system: System, x0) -> Array:
    """``x0`` as a float64 state of ``system``: refused, naming the reason, when it is not a
    real vector, its length is not the system's ``dim``, or the step does not map it to a
    state of its shape (:func:`check_step`). The checks of :func:`resolve_start` after the
    draw; orbits drawn together (:func:`chaosgrad._tangent.draw_orbit_starts`) check one
    with :func:`check_state_shape`, which needs no conversion."""
    x0 = as_state(x0, "x0")
    check_state_shape(system, x0)
    return x0


def check_state_shape(system: System, x0) -> None:
    """The checks of :func:`check_start` on anything with a ``shape`` and ``dtype`` (an
    array or a ``jax.ShapeDtypeStruct``), already a real array: float64 and a vector of the
    system's ``dim``. That the step maps it to a state of its shape is checked by
    :func:`bind`, which every public function calls before it computes."""
    check_float64(system, "system parameters")
    if x0.dtype != jnp.float64:
        raise TypeError(f"x0 has dtype {x0.dtype}; {_X64_HINT}")
    if len(x0.shape) != 1:
        raise ValueError(f"x0 must be a vector of shape (dim,), got shape {tuple(x0.shape)}")
    dim = system.dim
    if dim is not None and x0.shape[0] != dim:
        raise ValueError(f"x0 has {x0.shape[0]} components but the system has dim={dim}")


@eqx.filter_jit
def _field_shape(system: AbstractFlow, t, x):
    return system.vector_field(t * system.dt, x)


@eqx.filter_jit
def _step_shape(system: System, t, x, xi):
    return system.step(t, x, xi)


def check_step(system: System, x) -> None:
    """Refuse a step that does not return a state of ``x``'s shape, naming the expected one.

    Evaluated abstractly (``eqx.filter_eval_shape``: nothing runs), so a wrong-shaped
    ``Map``/``Flow`` function is one clear error before any computation, not a ``scan``
    carry mismatch from inside JAX. A flow's field is checked before the integrator step
    that uses it. :func:`bind` runs this check as it traces the step."""
    _probe_step(system, system.for_sample(0), x)


def _step_of(system: System, t, x, xi):
    return system.step(t, x, xi)


def _probe_step(system: System, one: System, x) -> str:
    """Check the step abstractly (module doc of :func:`check_step`) and return what it
    computes and reads (:func:`chaosgrad._functions.reads`)."""
    owner = system.step_name
    t = jax.ShapeDtypeStruct((), jnp.int64)
    state = jax.ShapeDtypeStruct(x.shape, x.dtype)
    xi = state if one.stochastic else None
    probes: list[Callable[[], tuple[str | None, Any]]] = [
        lambda: reads(_step_of, one, t, state, xi)
    ]
    if isinstance(one, AbstractFlow):
        probes.insert(0, lambda: (None, eqx.filter_eval_shape(_field_shape, one, t, state)))
    digest = None
    for probe in probes:
        try:
            with traceable(owner):
                digest, out = probe()
        except (TypeError, ValueError, IndexError) as exc:
            if str(exc).startswith(owner) or str(exc).startswith("the noise function"):
                raise
            raise ValueError(
                f"{owner} failed on a state of shape {x.shape} ({first_line(exc).rstrip('.')}): "
                f"it must map a state to an array of the same shape {x.shape}"
            ) from exc
        shape = getattr(out, "shape", None)
        if shape != x.shape:
            got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
            raise ValueError(
                f"{owner} returned {got} for a state of shape {x.shape}: it must return an "
                f"array of the state's shape {x.shape}"
            )
        if out.dtype != x.dtype:
            raise TypeError(
                f"{owner} returned dtype {out.dtype} for a state of dtype {x.dtype}: "
                "compute in float64 (jnp operations on float64 arrays)"
            )
    assert digest is not None
    return digest


def bind(system: System, x) -> System:
    """``system`` keyed on what its step computes and reads at states shaped like ``x``.

    Every public function that takes a system calls this first: the step is traced
    (abstractly: nothing runs) and checked as :func:`check_step` checks it, and the digest
    of the trace (:mod:`chaosgrad._functions`) is set as the system's static ``reads``. A
    compiled program of the system is then looked up by the values the step read: a
    ``Map`` whose function reads a changed global or a closed-over array mutated in place
    compiles afresh instead of returning the old trajectory. The system's own functions
    (a ``Map``'s, a noise function) are compared by that digest too
    (:class:`~chaosgrad._functions.StepFunction`): a system rebuilt with a new lambda of
    the same code reuses the compiled programs.
    """
    digest = _probe_step(system, system.for_sample(0), x)
    functions = {
        field.name: StepFunction(value, digest)
        for field in dataclasses.fields(system)
        if is_user_function(value := getattr(system, field.name))
    }
    return with_static(system, reads=digest, **functions)


@eqx.filter_jit
def _run(system: System, x0, key, start, steps: int):
    def one_step(x, t):
        xi = system.noise(key, t, x.shape[0]) if system.stochastic else None
        x_next = system.step(t, x, xi)
        return x_next, x_next

    ts = start + jnp.arange(steps)
    last, path = jax.lax.scan(one_step, x0, ts)
    return last, path


def simulate(
    system: System, x0=None, steps: int = 1000, key=None, burn_in: int = 0
) -> Float[Array, "steps+1 dim"]:
    """The trajectory x_{burn_in}, ..., x_{burn_in+steps} (``steps + 1`` states).

    ``x0`` defaults to ``system.initial_state``; ``key`` draws x0 and the noise (required
    for a stochastic system). Raises ``FloatingPointError`` naming the first step whose
    state is NaN/inf.
    """
    check_x64()
    check_positive_int(steps, "steps")
    check_positive_int(burn_in, "burn_in", allow_zero=True)
    check_horizon(system, burn_in + steps)
    x0, noise_key = resolve_start(system, x0, key)
    system = bind(system, x0)
    if burn_in:
        x0, _ = _run(system, x0, noise_key, 0, burn_in)
        bad = first_nonfinite_step(x0[None])
        if bad is not None:
            raise FloatingPointError(
                f"the trajectory became NaN/inf during the burn-in "
                f"({burn_in} steps); check parameters and dt"
            )
    _, path = _run(system, x0, noise_key, burn_in, steps)
    path = jnp.concatenate([x0[None], path])
    bad = first_nonfinite_step(path)
    if bad is not None:
        raise FloatingPointError(f"the trajectory became NaN/inf at step {burn_in + bad}")
    return path
