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
  towards neutrality, so it biases a chaotic attractor (lambda_1 > 0);
* :class:`STF`: sparse teacher forcing (Mikhaeil, Monfared & Durstewitz, NeurIPS 2022): the
  rollout is reset to the data every tau steps, z_t <- x_t at t = 0, tau, 2 tau, ..., and
  runs free in between; L is the BPTT loss of that rollout. A reset cuts the gradient, so
  no backpropagated Jacobian product is longer than tau steps. tau = "auto" is the
  predictability time round(ln 2 / (lambda_1 dt)) of the data's largest exponent;
* :class:`MeasureMatching`: DySLIM (Schiff et al., ICML 2024): the BPTT loss plus
  ``weight`` x MMD^2(S^l # mu, mu), the squared maximum mean discrepancy between data
  samples mu pushed ``lead`` = l steps through the model and other data samples, with the
  multiscale inverse multiquadric kernel (:mod:`chaosgrad._reconstruction_losses`). The
  data's invariant measure is invariant under the true l-step map, so the term asks the
  model to keep the data's distribution rather than to follow one orbit.

A method is an ``eqx.Module`` of settings. ``init`` makes what it carries from iteration to
iteration (GTF's alpha, STF's tau, the statistics term's Shadowing settings) from the
training series, its ``dt`` and the ``window``; ``loss_and_grad`` gives an iteration's loss
(the rollout MSE of the method's rollout) and gradient, records what it measured in the
run's history, and returns the carried state.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import check_at_least, check_positive_int, check_real
from ._reconstruction_losses import (
    DYSLIM_BANDWIDTHS,
    lyapunov_from_data,
    predictability_steps,
    squared_mmd,
)
from ._system import System
from ._user_models import Flow, InputDriven, Map
from .estimators import Shadowing
from .estimators._response import value_and_grad
from .lyapunov import lyapunov_penalty, lyapunov_spectrum
from .statistics import TimeAverage


def model_parameters(system):
    """What a method trains: a user model's ``args`` (a ``Flow`` of an MLP), else the system."""
    return system.args if isinstance(system, (Flow, Map, InputDriven)) else system


def rollout_loss(system, windows, alpha=0.0, tau: int | None = None):
    """mean |z_t - x_t|^2 of rollouts through ``windows`` (batch, T + 1, d); forced by
    alpha (z_t <- (1 - alpha) z_t + alpha x_t before each step; alpha = 0: free run) and,
    given ``tau``, reset to the data at t = 0, tau, 2 tau, ... (z_t <- x_t)."""

    def one(window):
        def step(z, pair):
            t, target_now, target_next = pair
            if tau is not None:
                z = jnp.where(t % tau == 0, target_now, z)
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
def rollout_value_and_grad(system, windows, alpha, tau: int | None = None):
    """The (forced) rollout loss and its gradient in the model's parameters."""

    def loss(params):
        model = eqx.tree_at(model_parameters, system, params)
        return rollout_loss(model, windows, alpha, tau)

    return eqx.filter_value_and_grad(loss)(model_parameters(system))


def push_forward(system, states, steps: int):
    """The model's ``steps``-step map applied to each row of ``states`` (n, d)."""

    def one(x):
        def step(z, t):
            return system.step(t, z, None), None

        return jax.lax.scan(step, x, jnp.arange(steps))[0]

    return jax.vmap(one)(states)


@eqx.filter_jit
def _measure_value_and_grad(system, windows, starts, targets, lead: int, bandwidths, weight):
    """(rollout MSE + weight MMD^2, (MSE, MMD^2)) and the gradient of the sum."""

    def loss(params):
        model = eqx.tree_at(model_parameters, system, params)
        mse = rollout_loss(model, windows)
        mmd = squared_mmd(push_forward(model, starts, lead), targets, bandwidths)
        return mse + weight * mmd, (mse, mmd)

    return eqx.filter_value_and_grad(loss, has_aux=True)(model_parameters(system))


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

    def init(self, train: jax.Array, *, dt: float, window: int) -> Any:
        """What the method carries between iterations (default: nothing), from the
        standardised training series, its sampling interval and the rollout window."""
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

    def init(self, train, *, dt, window):
        return jnp.asarray(0.0)

    def loss_and_grad(self, state, system, batch, history):
        alpha = _alpha(system, batch.windows) if batch.iteration % self.alpha_every == 0 else state
        loss, grads = rollout_value_and_grad(system, batch.windows, alpha)
        history.setdefault("alpha", []).append(float(alpha))
        return loss, grads, alpha


class StatisticsLoss(AbstractTrajectoryMethod):
    """The BPTT loss plus ``weight`` x the error of the long-time moments, its gradient by
    Shadowing (module doc).

    Args:
        weight: the statistics term's weight against the rollout MSE.
        scale: how the moments' squared errors are weighed. "relative": |S - S*|^2 / |S*|^2,
            the relative error of the moment vector (S* the data's moments); "variance":
            mean_i (S_i - S*_i)^2 / v_i, v_i the variance of moment i's integrand over the
            training series, so that every moment counts in its own units and none
            dominates (a mean and a fourth-order product alike).
        warmup: iterations of the rollout MSE alone before the statistics term enters (no
            Shadowing sweep during them). An untrained model runs off the data, and its
            moments' error is then so large that the term's gradient swamps the MSE's
            (measured on Lorenz-63: about 10^4 x); after the warm-up the model is near the
            attractor and the two terms are comparable.
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
    scale: str = "relative"
    warmup: int = 0

    def __check_init__(self):
        check_real(self.weight, "weight", nonnegative=True)
        check_positive_int(self.spectrum_every, "spectrum_every")
        check_positive_int(self.warmup, "warmup", allow_zero=True)
        if self.scale not in ("relative", "variance"):
            raise ValueError(f'scale must be "relative" or "variance", got {self.scale!r}')
        if self.unstable_dim != "auto":
            check_positive_int(self.unstable_dim, "unstable_dim", allow_zero=True)

    def init(self, train, *, dt, window):
        integrands = jax.vmap(moments)(train)
        target = jnp.mean(integrands, axis=0)
        if self.scale == "relative":
            scale = jnp.full(target.shape, jnp.sum(target**2))
        else:
            scale = target.shape[0] * jnp.var(integrands, axis=0)
        shadowing = self.estimator or Shadowing(
            unstable_dim=2, segment_steps=20, segments=50, burn_in=200
        )
        if self.unstable_dim != "auto":
            shadowing = dataclasses.replace(shadowing, unstable_dim=int(self.unstable_dim))
        return shadowing, target, scale

    def loss_and_grad(self, state, system, batch, history):
        shadowing, target, scale = state
        loss, grads = rollout_value_and_grad(system, batch.windows, 0.0)
        if batch.iteration < self.warmup:
            return loss, grads, state
        x0 = batch.train[batch.starts[0]]
        since = batch.iteration - self.warmup  # u is measured first when the term enters
        if self.unstable_dim == "auto" and since % self.spectrum_every == 0:
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
                lambda s: jnp.sum((s - target) ** 2 / scale),
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


class STF(AbstractTrajectoryMethod):
    """Sparse teacher forcing: the rollout of each window is reset to the data every ``tau``
    steps and runs free in between; the loss is the mean squared error of all its
    predictions (module doc).

    Args:
        tau: steps between resets, 1 <= tau <= window (1: one-step prediction; the
            window: BPTT), or "auto": tau = round(ln 2 / (lambda_1 dt)), the predictability
            time (a small error doubles), which Mikhaeil et al. tie tau to. It is a guide
            within a factor of about 2: their public Lorenz-63 setting is tau = 30 steps on
            sequences of 100, where the rule gives 77 at dt = 0.01. ``history["tau"]`` and
            ``history["lyapunov"]`` record what was used.
        lyapunov: lambda_1 of the data per unit time, for tau = "auto" (Lorenz-63: 0.906).
            None: estimated from the training series by
            :func:`~chaosgrad.reconstruct.lyapunov_from_data` (Rosenstein's
            nearest-neighbour divergence; measured within -10 %..+25 % on Lorenz-63 and
            40 % low on Roessler). The exponent of the model being trained is no guide:
            an untrained model is not the data's system.
    """

    name: ClassVar[str] = "stf"
    tau: int | str = "auto"
    lyapunov: float | None = None

    def __check_init__(self):
        if self.tau != "auto":
            if isinstance(self.tau, str):
                raise ValueError(f'tau must be "auto" or a number of steps, got {self.tau!r}')
            check_at_least(self.tau, "tau", 1, "the rollout is reset every tau steps")
            if self.lyapunov is not None:
                raise ValueError('lyapunov is used only with tau="auto"; give one or the other')
        if self.lyapunov is not None:
            check_real(self.lyapunov, "lyapunov", positive=True)

    def init(self, train, *, dt, window):
        lyapunov = self.lyapunov
        if self.tau == "auto":
            if lyapunov is None:
                lyapunov = lyapunov_from_data(np.asarray(train), dt)
                if not lyapunov > 0:
                    raise ValueError(
                        f"the data's lambda_1 estimate is {lyapunov:.3g} <= 0: no "
                        "predictability time; give STF(tau=...) steps"
                    )
            tau = predictability_steps(lyapunov, dt)
            source = f"round(ln 2 / (lambda_1 dt)) with lambda_1 = {lyapunov:.3g}"
        else:
            tau, source = int(self.tau), "given"
        if tau > window:
            raise ValueError(
                f"tau = {tau} steps ({source}) is longer than the window of {window} steps: "
                f"give fit_trajectory(window >= {tau}) or a smaller STF(tau=...)"
            )
        return tau, lyapunov

    def loss_and_grad(self, state, system, batch, history):
        tau, lyapunov = state
        if batch.iteration == 0:
            history["tau"] = [tau]
            if lyapunov is not None:
                history["lyapunov"] = [lyapunov]
        loss, grads = rollout_value_and_grad(system, batch.windows, 0.0, tau)
        return loss, grads, state


class MeasureMatching(AbstractTrajectoryMethod):
    """DySLIM measure matching: the BPTT loss plus ``weight`` x MMD^2 between data samples
    pushed ``lead`` steps through the model and other data samples (module doc). The
    recorded loss is the rollout MSE; ``history["mmd2"]`` records the MMD^2 term.

    Args:
        weight: lambda, the MMD^2 term's weight. Schiff et al. sweep {0, 1, 10, 100,
            1000}; the default 1 is the smallest non-zero one. The term alone is minimised
            by any measure-preserving map, the identity included: a weight large against
            the MSE term can let a near-identity model win (measured on Lorenz-63 from
            weight 10 on; docs, "Reconstruction baselines").
        lead: l, the steps of the model's map applied to the samples (None: the window,
            the length of the rollout the MSE term backpropagates through). The term's
            gradient passes through l steps, so l long against 1 / (lambda_1 dt) explodes
            as BPTT does.
        samples: data samples per iteration on each side of the MMD (the kernel matrices
            are samples x samples).
        bandwidths: the inverse multiquadric kernel's scales b, in standardised units.
    """

    name: ClassVar[str] = "measure_matching"
    weight: float = 1.0
    lead: int | None = None
    samples: int = 256
    bandwidths: tuple[float, ...] = DYSLIM_BANDWIDTHS

    def __check_init__(self):
        check_real(self.weight, "weight", nonnegative=True)
        if self.lead is not None:
            check_positive_int(self.lead, "lead")
        check_at_least(self.samples, "samples", 2, "MMD^2 compares sample sets")
        if len(self.bandwidths) == 0:
            raise ValueError("bandwidths must name at least one kernel scale")
        for scale in self.bandwidths:
            check_real(scale, "each of bandwidths", positive=True)

    def init(self, train, *, dt, window):
        return window if self.lead is None else self.lead

    def loss_and_grad(self, state, system, batch, history):
        rows = batch.train.shape[0]
        draw = jax.random.fold_in(batch.key, 1)
        starts, targets = jax.random.randint(draw, (2, self.samples), 0, rows)
        (_, (mse, mmd)), grads = _measure_value_and_grad(
            system,
            batch.windows,
            batch.train[starts],
            batch.train[targets],
            state,
            tuple(float(scale) for scale in self.bandwidths),
            self.weight,
        )
        history.setdefault("mmd2", []).append(float(mmd))
        return mse, grads, state


METHODS: dict[str, type[AbstractTrajectoryMethod]] = {
    method.name: method for method in (BPTT, GTF, StatisticsLoss, Flossing, STF, MeasureMatching)
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
        "object (BPTT(), GTF(alpha_every=...), StatisticsLoss(...), Flossing(...), "
        "STF(tau=...), MeasureMatching(weight=...))"
    )
