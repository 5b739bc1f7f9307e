"""The user's models: a map, an ODE/SDE and an input-driven network around any function.

``Map(function, args=...)``, ``Flow(vector_field, dt, args=...)`` and
``InputDriven(function, inputs, args=...)`` make a :class:`~chaosgrad._system.System` of a
user's function, as diffrax takes a vector field: ``args`` is any pytree (an Equinox model
included) whose floating-point arrays are the parameters. ``noise`` is a number (additive,
a differentiable parameter) or a function of (t, x, args).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._errors import check_float64, check_positive_int, is_traced
from ._integrate import check_method, check_time_step
from ._system import AbstractFlow, System, param


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
    noise_field: ClassVar[str | None] = "noise_level"
    dim: int | None = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    def __init__(
        self,
        vector_field: Callable,
        dt: float,
        method: Any = "rk4",
        args=None,
        noise: float | Array | Callable = 0.0,
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

    @property
    def step_name(self) -> str:
        return "the Flow's vector_field"

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
    noise_field: ClassVar[str | None] = "noise_level"
    dim: int | None = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    def __init__(
        self,
        function: Callable,
        args=None,
        noise: float | Array | Callable = 0.0,
        *,
        dim: int | None = None,
    ):
        if not callable(function):
            raise TypeError("function must be a function function(t, x, args)")
        self.function = function
        self.args = parameter_args(args)
        self._stochastic, self.noise_level = _user_noise(noise)
        self.dim = check_dim(dim)

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    @property
    def step_name(self) -> str:
        return f"the {type(self).__name__}'s function"

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
    noise_field: ClassVar[str | None] = "noise_level"
    dim: int | None = eqx.field(static=True)
    per_sample: bool = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)
    data_fields = ("inputs", "targets")

    def __init__(
        self,
        function: Callable,
        inputs,
        args=None,
        noise: float | Array | Callable = 0.0,
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
        if not self.per_sample or self.inputs.ndim == 2:  # shared, or one sample already
            return self
        i = index % self.inputs.shape[0]
        if self.targets is None:
            return eqx.tree_at(lambda s: s.inputs, self, self.inputs[i])
        return eqx.tree_at(lambda s: (s.inputs, s.targets), self, (self.inputs[i], self.targets[i]))

    @property
    def step_name(self) -> str:
        return "the InputDriven's function"

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
