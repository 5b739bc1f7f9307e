"""Systems: the random maps every chaosgrad algorithm acts on.

A system is the (possibly time-dependent, possibly noisy) map

    x_{t+1} = drift(t, x_t) + diffusion(t, x_t) * xi_t,    xi_t ~ N(0, I),

whose parameters are the module's inexact-array fields. ``t`` is the step (for a deep
network: the layer). A continuous-time model dx = F(t, x) dt + s(t, x) dB becomes such a map
through one step of an integrator (:class:`AbstractFlow`, :class:`Flow`): classical RK4, or
forward Euler, which is Euler-Maruyama when the model has noise (diffusion = s sqrt(dt)).

The noise of step ``t`` is ``N(0, I)`` drawn from ``jax.random.fold_in(key, t)``, so a
trajectory is a pure function of (system, x0, key) and can be replayed step by step.
"""

from __future__ import annotations

import abc
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
    is_traced,
    traceable,
)
from ._functions import reads, with_static
from ._integrate import check_method, check_time_step, integrate_step

__all__ = [
    "System",
    "AbstractFlow",
    "Flow",
    "InputDriven",
    "Map",
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


def check_dim(dim) -> int | None:
    """A user model's ``dim``: None (taken from x0) or a positive integer."""
    return None if dim is None else check_positive_int(dim, "dim")


def parameter_args(args):
    """``args`` with every Python float made a float64 array, so that it is a parameter.

    A plain float is not an array, so ``Parameters.of`` (as ``eqx.filter_grad``) would leave
    it out and its derivative would silently be missing. Equinox modules inside ``args``
    are left as they are (their float fields are settings, e.g. a dropout rate); ints too
    (counts).
    """
    return jax.tree_util.tree_map(
        lambda leaf: param(leaf, "args") if isinstance(leaf, float) else leaf,
        args,
        is_leaf=lambda node: isinstance(node, eqx.Module),
    )


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


def _user_noise(noise) -> tuple[bool, Any]:
    """(stochastic, amplitude) for a user model's ``noise``: a number or a function."""
    if callable(noise):
        return True, noise
    amplitude = param(noise, "noise")
    if is_traced(amplitude):
        raise TypeError("noise must be a concrete number (it decides whether the model is noisy)")
    return bool(np.any(np.asarray(amplitude) != 0.0)), amplitude


def _evaluate_noise(amplitude, t, x, args):
    if not callable(amplitude):
        return amplitude
    scale = amplitude(t, x, args)
    shape = np.shape(scale)  # type: ignore[arg-type]
    if shape not in ((), x.shape):
        raise ValueError(
            f"the noise function returned shape {shape} for a state of shape {x.shape}: it "
            f"must return a scalar or an array of the state's shape {x.shape}"
        )
    return scale


def _initial_state_of_user_model(model, key):
    if model.dim is None:
        name = type(model).__name__
        raise ValueError(f"this {name} has no dim: pass {name}(..., dim=N) or give x0 explicitly")
    return System.initial_state(model, key)


class Flow(AbstractFlow):
    """A user's ODE/SDE: ``vector_field(t, x, args)`` as in diffrax; ``args`` holds parameters.

    ``args`` is any pytree; its float arrays are the parameters, and plain Python floats in
    it are made float64 arrays (so ``args=28.0`` is a parameter too).
    ``noise`` is the SDE amplitude s: a number (additive noise, a differentiable parameter)
    or a function ``noise(t, x, args)``. Noise requires ``method="euler"`` (Euler-Maruyama).
    ``method`` is ``"rk4"``, ``"euler"`` or a diffrax fixed-step solver such as
    ``diffrax.Heun()`` or ``diffrax.Tsit5()`` (one step of size ``dt`` each: see
    :mod:`chaosgrad._integrate`).
    ``dim`` is needed only to draw an initial state (``initial_state``); otherwise the
    dimension comes from the ``x0`` you pass.
    """

    field: Callable = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    method: Any = eqx.field(static=True)
    args: Any
    noise_level: Any
    dim: int | None = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    def __init__(
        self,
        vector_field: Callable,
        dt: float,
        method: Any = "rk4",
        args=None,
        noise=0.0,
        *,
        dim: int | None = None,
    ):
        if not callable(vector_field):
            raise TypeError("vector_field must be a function vector_field(t, x, args)")
        self.field = vector_field
        self.dt = check_time_step(dt)
        self.args = parameter_args(args)
        self._stochastic, self.noise_level = _user_noise(noise)
        check_method(method, self._stochastic)
        self.method = method
        self.dim = check_dim(dim)

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    def vector_field(self, time, x):
        return self.field(time, x, self.args)

    def noise_scale(self, time, x):
        return _evaluate_noise(self.noise_level, time, x, self.args)

    def initial_state(self, key):
        return _initial_state_of_user_model(self, key)


class Map(System):
    """A user's map ``x' = function(t, x, args) + noise * xi`` (``noise``: number or function).

    ``function`` must return the next state, of the state's shape. ``args`` is any pytree;
    its float arrays are the parameters, and plain Python floats in it are made float64
    arrays (so ``args=3.9`` is a parameter too).
    """

    function: Callable = eqx.field(static=True)
    args: Any
    noise_level: Any
    dim: int | None = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    def __init__(self, function: Callable, args=None, noise=0.0, *, dim: int | None = None):
        if not callable(function):
            raise TypeError("function must be a function function(t, x, args)")
        self.function = function
        self.args = parameter_args(args)
        self._stochastic, self.noise_level = _user_noise(noise)
        self.dim = check_dim(dim)

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    def drift(self, t, x):
        return self.function(t, x, self.args)

    def diffusion(self, t, x):
        return _evaluate_noise(self.noise_level, t, x, self.args)

    def initial_state(self, key):
        return _initial_state_of_user_model(self, key)


class InputDriven(System):
    """A network driven by an input sequence: ``x' = function(t, x, u_t, args) + noise * xi``.

    ``inputs`` is one sequence (steps, m) shared by every sample, or one per sample
    (samples, steps, m): sample i then sees ``inputs[i]`` (``for_sample``). ``u_t`` is
    ``inputs[..., t, :]``, so the horizon is the sequence length. The inputs are data, not
    parameters: ``wrt=None`` leaves them out. Any Equinox cell works as ``args``, e.g.
    ``InputDriven(lambda t, h, u, cell: cell(u, h), inputs, args=eqx.nn.GRUCell(m, n))``
    or the tanh RNN ``h' = tanh(W_hh h + W_hu u_t + b)``. ``targets`` (optional) are data
    too: one array shared by every sample, or one per sample (leading axis = the inputs'
    samples axis), picked by ``for_sample`` with the inputs; a ``ParametricObservable`` reads
    them as ``system.targets`` (a supervised loss, see ``chaosgrad.networks``).
    """

    function: Callable = eqx.field(static=True)
    args: Any
    inputs: Array
    targets: Array | None
    noise_level: Any
    dim: int | None = eqx.field(static=True)
    per_sample: bool = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)
    data_fields = ("inputs", "targets")

    def __init__(
        self,
        function: Callable,
        inputs,
        args=None,
        noise=0.0,
        *,
        targets=None,
        dim: int | None = None,
        per_sample: bool | None = None,
    ):
        if not callable(function):
            raise TypeError("function must be a function function(t, x, u_t, args)")
        inputs = jnp.asarray(inputs)
        if inputs.ndim not in (2, 3):
            raise ValueError(
                f"inputs must have shape (steps, m) or (samples, steps, m), got {inputs.shape}"
            )
        check_float64(inputs, "inputs")
        self.function = function
        self.args = parameter_args(args)
        self.inputs = inputs
        self.per_sample = inputs.ndim == 3 if per_sample is None else bool(per_sample)
        if targets is not None:
            targets = jnp.asarray(targets)
            check_float64(targets, "targets")
            if self.per_sample and (targets.ndim < 1 or targets.shape[0] != inputs.shape[0]):
                raise ValueError(
                    f"targets must have one row per sample: shape ({inputs.shape[0]}, ...), "
                    f"got {targets.shape}"
                )
        self.targets = targets
        self._stochastic, self.noise_level = _user_noise(noise)
        self.dim = check_dim(dim)

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    @property
    def horizon(self) -> int:
        return self.inputs.shape[-2]

    def for_sample(self, index) -> InputDriven:
        if not self.per_sample:
            return self
        i = index % self.inputs.shape[0]
        if self.targets is None:
            return eqx.tree_at(lambda s: s.inputs, self, self.inputs[i])
        return eqx.tree_at(lambda s: (s.inputs, s.targets), self, (self.inputs[i], self.targets[i]))

    def drift(self, t, x):
        if self.per_sample and self.inputs.ndim == 3:
            raise ValueError(
                "this InputDriven holds one input sequence per sample: the "
                "estimators pick each sample's with for_sample(i)"
            )
        return self.function(t, x, self.inputs[t], self.args)

    def diffusion(self, t, x):
        return _evaluate_noise(self.noise_level, t, x, self.args)

    def initial_state(self, key):
        return _initial_state_of_user_model(self, key)


def check_noise_setting(system: System) -> None:
    """Refuse a noise amplitude changed after construction (``eqx.tree_at`` on noise_level).

    Whether a system draws noise is decided at construction (``stochastic`` is static, so
    that deterministic systems pay nothing for noise). Setting ``noise_level`` later would be
    silently ignored (0 -> s) or divide the kernel estimators by zero (s -> 0): refused.
    """
    level = getattr(system, "noise_level", None)
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


def _step_owner(system: System) -> str:
    """How messages name the function that makes a step: the user's, for Map and Flow."""
    name = type(system).__name__
    if isinstance(system, Flow):
        return "the Flow's vector_field"
    if isinstance(system, (Map, InputDriven)):
        return f"the {name}'s function"
    return f"{name}.drift"


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
    owner = _step_owner(system)
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
    compiles afresh instead of returning the old trajectory.
    """
    digest = _probe_step(system, system.for_sample(0), x)
    return with_static(system, reads=digest)


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
