"""The training methods of ``fit_trajectory``: objects with their own settings.

Every method trains a model x_{t+1} = step(x_t) on windows of ``window`` + 1 points of a
standardised trajectory. They differ in the gradient of an iteration:

* :class:`BPTT`: L = mean_{windows, t} |z_t - x_t|^2 / d of the free rollout z_{t+1} =
  step(z_t), z_0 = x_0, differentiated through the rollout (backpropagation through time);
* :class:`GTF`: generalized teacher forcing (Hess, Monfared, Brenner & Durstewitz, ICML
  2023): the rollout is forced before every step, z_t <- (1 - alpha) z_t + alpha x_t, so
  every backpropagated Jacobian product is damped by (1 - alpha)^T. alpha = max(0, 1 - 1/G)
  with G = (prod_t |J_t|_2)^(1/T) the per-step geometric mean of the model's step-Jacobian
  norms along data windows (re-estimated every ``alpha_every`` iterations): then
  (1 - alpha)^T G^T <= 1, an upper bound of the forced Jacobian product's norm that does
  not grow;
* :class:`StatisticsLoss`: the BPTT loss plus ``weight`` times the relative squared error
  of the model's long-time statistics (means and second moments of the standardised
  coordinates) against the data's, whose gradient comes from ``Shadowing`` (adjoint
  shadowing: a bounded derivative of a long-time average);
* :class:`Flossing`: the BPTT loss plus ``weight`` times the gradient-flossing penalty
  (lambda_1 - target)^2 of :func:`~chaosgrad.lyapunov.lyapunov_penalty` (Engelken,
  NeurIPS 2023). Target 0 is the paper's choice for trainability; it pulls a chaotic model
  towards neutrality, so it biases a chaotic attractor (lambda_1 > 0).

A method is an ``eqx.Module`` of settings. ``init`` makes what it carries from iteration to
iteration (GTF's alpha, the statistics term's Shadowing settings); ``loss_and_grad`` gives
an iteration's loss and gradient, records what it measured in the run's history, and
returns the carried state.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import check_positive_int, check_real
from ._system import System
from ._user_models import Flow, InputDriven, Map
from .estimators import Shadowing
from .estimators._response import value_and_grad
from .lyapunov import lyapunov_penalty, lyapunov_spectrum
from .statistics import TimeAverage


def model_parameters(system):
    """What a method trains: a user model's ``args`` (a ``Flow`` of an MLP), else the system."""
    return system.args if isinstance(system, (Flow, Map, InputDriven)) else system


def rollout_loss(system, windows, alpha=0.0):
    """mean |z_t - x_t|^2 of rollouts through ``windows`` (batch, T + 1, d); forced by
    alpha (z_t <- (1 - alpha) z_t + alpha x_t before each step; alpha = 0: free run)."""

    def one(window):
        def step(z, pair):
            t, target_now, target_next = pair
            z = (1 - alpha) * z + alpha * target_now
            z = system.step(t, z, None)
            return z, jnp.mean((z - target_next) ** 2)

        steps = jnp.arange(window.shape[0] - 1)
        _, errors = jax.lax.scan(step, window[0], (steps, window[:-1], window[1:]))
        return jnp.mean(errors)

    return jnp.mean(jax.vmap(one)(windows))


def forcing_alpha(system, windows) -> jax.Array:
    """alpha = max(0, 1 - 1/G), G = exp(mean_t log |J_t|_2) over the windows' states."""
    states = windows.reshape(-1, windows.shape[-1])

    def log_norm(x):
        jacobian = jax.jacfwd(lambda y: system.step(0, y, None))(x)
        return jnp.log(jnp.linalg.norm(jacobian, 2))

    growth = jnp.exp(jnp.mean(jax.vmap(log_norm)(states)))
    return jnp.maximum(0.0, 1.0 - 1.0 / growth)


@eqx.filter_jit
def rollout_value_and_grad(system, windows, alpha):
    """The (forced) rollout loss and its gradient in the model's parameters."""

    def loss(params):
        model = eqx.tree_at(model_parameters, system, params)
        return rollout_loss(model, windows, alpha)

    return eqx.filter_value_and_grad(loss)(model_parameters(system))


@eqx.filter_jit
def _penalty_value_and_grad(system, x0, key, steps: int, target):
    def penalty(params):
        model = eqx.tree_at(model_parameters, system, params)
        return lyapunov_penalty(model, 1, steps, x0=x0, key=key, target=target, burn_in=100)

    return eqx.filter_value_and_grad(penalty)(model_parameters(system))


@eqx.filter_jit
def _alpha(system, windows):
    return forcing_alpha(system, windows)


def unstable_dimension(system, x0, key, steps: int = 2000, threshold: float = -0.05) -> int:
    """The number of the model's exponents above ``threshold`` (per unit time) on a short
    orbit from x0: the unstable plus neutral directions Shadowing must treat as unstable."""
    dim = x0.shape[0]
    try:
        spectrum = lyapunov_spectrum(system, dim, steps=steps, burn_in=500, x0=x0, key=key)
    except FloatingPointError:
        return 0
    return int(np.sum(spectrum.exponents > threshold))


def moments(x):
    """Phi(x) = (x, upper triangle of x x^T): means and second moments."""
    upper = jnp.triu_indices(x.shape[0])
    return jnp.concatenate([x, jnp.outer(x, x)[upper]])


def _add(grads, extra, weight: float):
    return jax.tree_util.tree_map(lambda g, e: g + weight * e, grads, extra)


class Batch(eqx.Module):
    """One iteration's data: the training series (standardised), the windows drawn from it,
    their starting rows, the iteration's key and its number."""

    train: jax.Array
    windows: jax.Array
    starts: jax.Array
    key: Any
    iteration: int = eqx.field(static=True)


class AbstractTrajectoryMethod(eqx.Module):
    """How ``fit_trajectory`` computes an iteration's gradient (module doc)."""

    name: ClassVar[str]

    def init(self, train) -> Any:
        """What the method carries between iterations (default: nothing)."""
        return None

    @abc.abstractmethod
    def loss_and_grad(
        self, state, system: System, batch: Batch, history: dict[str, list]
    ) -> tuple[jax.Array, Any, Any]:
        """(the rollout loss, the gradient in the model's parameters, the new state); what
        the method measured goes into ``history``."""


class BPTT(AbstractTrajectoryMethod):
    """Backpropagation through the free rollout of each window (module doc). No settings."""

    name: ClassVar[str] = "bptt"

    def loss_and_grad(self, state, system, batch, history):
        loss, grads = rollout_value_and_grad(system, batch.windows, 0.0)
        return loss, grads, state


class GTF(AbstractTrajectoryMethod):
    """Generalized teacher forcing with the adaptive alpha of the module doc.

    Args:
        alpha_every: iterations between re-estimates of alpha from the model's Jacobians.
    """

    name: ClassVar[str] = "gtf"
    alpha_every: int = 10

    def __check_init__(self):
        check_positive_int(self.alpha_every, "alpha_every")

    def init(self, train):
        return jnp.asarray(0.0)

    def loss_and_grad(self, state, system, batch, history):
        alpha = _alpha(system, batch.windows) if batch.iteration % self.alpha_every == 0 else state
        loss, grads = rollout_value_and_grad(system, batch.windows, alpha)
        history.setdefault("alpha", []).append(float(alpha))
        return loss, grads, alpha


class StatisticsLoss(AbstractTrajectoryMethod):
    """The BPTT loss plus ``weight`` x the relative error of the long-time moments, its
    gradient by Shadowing (module doc).

    Args:
        weight: the statistics term's weight against the rollout MSE.
        estimator: the Shadowing settings of the statistics term (default
            segment_steps=20, segments=50, burn_in=200).
        unstable_dim: u for that Shadowing, or "auto": every ``spectrum_every`` iterations
            u = the number of the model's exponents above -0.05 per unit time (the positive
            ones and the neutral direction of a chaotic or periodic flow; 0 at a stable
            fixed point), from a 2000-step spectrum. The model changes while it trains (a
            fresh MLP is not chaotic), and Shadowing with a wrong u returns garbage of huge
            norm (measured: gradient norms 30-600 against the MSE term's 0.03 with u = 2
            on an untrained model). u is capped at d - 1 (Shadowing needs a stable
            direction); ``history["unstable_dim_measured"]`` keeps the count before the
            cap, ``history["unstable_dim"]`` the u used.
        spectrum_every: iterations between measurements of u.
    """

    name: ClassVar[str] = "statistics"
    weight: float = 1.0
    estimator: Shadowing | None = None
    unstable_dim: int | str = "auto"
    spectrum_every: int = 50

    def __check_init__(self):
        check_real(self.weight, "weight", nonnegative=True)
        check_positive_int(self.spectrum_every, "spectrum_every")
        if self.unstable_dim != "auto":
            check_positive_int(self.unstable_dim, "unstable_dim", allow_zero=True)

    def init(self, train):
        target = jnp.mean(jax.vmap(moments)(train), axis=0)
        shadowing = self.estimator or Shadowing(
            unstable_dim=2, segment_steps=20, segments=50, burn_in=200
        )
        if self.unstable_dim != "auto":
            shadowing = dataclasses.replace(shadowing, unstable_dim=int(self.unstable_dim))
        return shadowing, target, jnp.sum(target**2)

    def loss_and_grad(self, state, system, batch, history):
        shadowing, target, scale = state
        loss, grads = rollout_value_and_grad(system, batch.windows, 0.0)
        x0 = batch.train[batch.starts[0]]
        if self.unstable_dim == "auto" and batch.iteration % self.spectrum_every == 0:
            measured = unstable_dimension(system, x0, batch.key)
            # Shadowing needs a stable direction: a model whose every exponent rose above
            # the threshold (a near-neutral third exponent of a learned Roessler) is shadowed
            # with u = dim - 1, and the history records both numbers
            u = min(measured, batch.train.shape[1] - 1)
            shadowing = dataclasses.replace(shadowing, unstable_dim=u)
            history.setdefault("unstable_dim", []).append(u)
            history.setdefault("unstable_dim_measured", []).append(measured)
        try:
            _, extra, _ = value_and_grad(
                system,
                lambda s: jnp.sum((s - target) ** 2) / scale,
                TimeAverage(moments),
                shadowing,
                wrt=model_parameters,
                x0=x0,
                key=batch.key,
            )
            grads = _add(grads, extra, self.weight)
        except FloatingPointError:
            skipped = history.setdefault("skipped_statistics_terms", [0])
            skipped[0] += 1
        return loss, grads, (shadowing, target, scale)


class Flossing(AbstractTrajectoryMethod):
    """The BPTT loss plus ``weight`` x the gradient-flossing penalty (module doc).

    Args:
        weight: the penalty's weight.
        target: the exponent lambda_1 is pulled to (0: the paper's choice).
        steps: steps of the penalty's finite-time exponent.
    """

    name: ClassVar[str] = "flossing"
    weight: float = 0.1
    target: float = 0.0
    steps: int = 200

    def __check_init__(self):
        check_real(self.weight, "weight", nonnegative=True)
        check_real(self.target, "target")
        check_positive_int(self.steps, "steps")

    def loss_and_grad(self, state, system, batch, history):
        loss, grads = rollout_value_and_grad(system, batch.windows, 0.0)
        x0 = batch.train[batch.starts[0]]
        _, extra = _penalty_value_and_grad(system, x0, batch.key, self.steps, self.target)
        return loss, _add(grads, extra, self.weight), state


METHODS: dict[str, type[AbstractTrajectoryMethod]] = {
    method.name: method for method in (BPTT, GTF, StatisticsLoss, Flossing)
}
"""The methods by name (``fit_trajectory(..., method="gtf")`` is ``GTF()``)."""


def as_method(method) -> AbstractTrajectoryMethod:
    """A method object, or a name for the method with its default settings."""
    if isinstance(method, AbstractTrajectoryMethod):
        return method
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]()
    raise ValueError(
        f"unknown method {method!r}; choose one of {', '.join(METHODS)} or pass a method "
        "object (BPTT(), GTF(alpha_every=...), StatisticsLoss(...), Flossing(...))"
    )
