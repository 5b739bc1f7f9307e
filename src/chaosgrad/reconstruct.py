"""Learn a dynamical system from one trajectory: any (N, d) array, with four gradients.

The data are standardised with the training part's mean and standard deviation, and the
model (default: a neural vector field dx/dt = MLP(x) in a ``Flow``, RK4 with the data's dt)
is trained in standardised coordinates. Every iteration draws ``batch`` windows of
``window`` + 1 points from the training part. The methods differ in the gradient:

* ``"bptt"``: L = mean_{windows, t} |z_t - x_t|^2 / d of the free rollout z_{t+1} =
  step(z_t), z_0 = x_0, differentiated through the rollout (backpropagation through time);
* ``"gtf"``: generalized teacher forcing (Hess, Monfared, Brenner & Durstewitz, ICML 2023):
  the rollout is forced before every step, z_t <- (1 - alpha) z_t + alpha x_t, so every
  backpropagated Jacobian product is damped by (1 - alpha)^T. alpha = max(0, 1 - 1/G) with
  G = (prod_t |J_t|_2)^(1/T) the per-step geometric mean of the model's step-Jacobian norms
  along data windows (re-estimated every ``alpha_every`` iterations): then (1 - alpha)^T G^T
  <= 1, an upper bound of the forced Jacobian product's norm that does not grow;
* ``"statistics"``: the bptt loss on short windows plus ``statistics_weight`` times the
  relative squared error of the model's long-time statistics (means and second moments of
  the standardised coordinates) against the data's, whose gradient comes from
  ``Shadowing`` (adjoint shadowing: a bounded derivative of a long-time average);
* ``"flossing"``: the bptt loss plus ``floss_weight`` times the gradient-flossing penalty
  (lambda_1 - target)^2 of :func:`~chaosgrad.lyapunov.lyapunov_penalty` (Engelken,
  NeurIPS 2023). Target 0 is the paper's choice for trainability; it pulls a chaotic
  model towards neutrality, so it biases a chaotic attractor (lambda_1 > 0).

Clipping by global norm (``clip``) and Adam are applied to every method. Evaluations (not
counted in the budget) measure the attractor metrics of ``chaosgrad.metrics`` on a free
run of the model, the n-step prediction errors on the held-out part, and optionally
lambda_1's relative error.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._errors import check_x64
from ._system import Flow, System, simulate
from .estimators import Shadowing
from .estimators._base import tree_norm
from .estimators._response import value_and_grad
from .lyapunov import lyapunov_penalty, lyapunov_spectrum
from .metrics import (
    power_spectrum_distance,
    prediction_error,
    relative_exponent_error,
    state_space_divergence,
    state_space_divergence_gmm,
)
from .statistics import TimeAverage

METHODS = ("bptt", "gtf", "statistics", "flossing")


def _mlp_field(t, x, mlp):
    return mlp(x)


def neural_vector_field(dim: int, dt: float, *, key, width: int = 48, depth: int = 2) -> Flow:
    """dx/dt = MLP(x) (tanh, ``depth`` hidden layers of ``width``), RK4 with step ``dt``."""
    mlp = eqx.nn.MLP(dim, dim, width_size=width, depth=depth, activation=jnp.tanh, key=key)
    mlp = jax.tree_util.tree_map(
        lambda leaf: leaf.astype(jnp.float64) if eqx.is_inexact_array(leaf) else leaf, mlp
    )
    return Flow(_mlp_field, dt=dt, method="rk4", args=mlp, dim=dim)


def _parameters(system):
    return system.args if hasattr(system, "args") else system


@dataclass
class TrajectoryFit:
    """The trained model (standardised coordinates), the standardisation and the history."""

    system: System
    mean: np.ndarray
    std: np.ndarray
    method: str
    history: dict = field(default_factory=dict)
    evaluations: list = field(default_factory=list)
    status: str = "ok"

    def to_json(self) -> dict:
        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        return {
            "method": self.method,
            "status": self.status,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "history": {k: [clean(float(v)) for v in vs] for k, vs in self.history.items()},
            "evaluations": [{k: clean(float(v)) for k, v in e.items()} for e in self.evaluations],
        }


def _check_data(data, window: int, validation: float) -> np.ndarray:
    array = np.asarray(data, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"data must be a (steps, dimensions) array, got shape {array.shape}")
    bad = np.argwhere(~np.all(np.isfinite(array), axis=1))
    if bad.size:
        raise ValueError(f"data contains NaN or inf at row {int(bad[0, 0])}")
    if not 0 <= validation < 1:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation}")
    train = int(len(array) * (1 - validation))
    if train < window + 2:
        raise ValueError(
            f"data has {len(array)} rows: too short for windows of {window} steps "
            f"(the training part needs at least {window + 2})"
        )
    return array


def _windows(series, starts, length: int):
    return jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(series, s, length + 1))(starts)


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
def _rollout_value_and_grad(system, windows, alpha):
    def loss(params):
        model = eqx.tree_at(_parameters, system, params)
        return rollout_loss(model, windows, alpha)

    return eqx.filter_value_and_grad(loss)(_parameters(system))


@eqx.filter_jit
def _penalty_value_and_grad(system, x0, key, steps: int, target):
    def penalty(params):
        model = eqx.tree_at(_parameters, system, params)
        return lyapunov_penalty(model, 1, steps, x0=x0, key=key, target=target, burn_in=100)

    return eqx.filter_value_and_grad(penalty)(_parameters(system))


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


def fit_trajectory(
    data,
    *,
    dt: float,
    method: str = "bptt",
    model: System | None = None,
    key,
    budget: float | None = None,
    iterations: int | None = None,
    window: int = 30,
    batch: int = 16,
    learning_rate: float = 1e-3,
    clip: float | None = 1.0,
    validation: float = 0.1,
    alpha_every: int = 10,
    statistics_weight: float = 1.0,
    statistics_estimator: Shadowing | None = None,
    statistics_unstable_dim: int | str = "auto",
    spectrum_every: int = 50,
    floss_weight: float = 0.1,
    floss_target: float = 0.0,
    floss_steps: int = 200,
    evaluate: Callable | None = None,
    eval_every: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrajectoryFit:
    """Train ``model`` (default :func:`neural_vector_field`) on the trajectory ``data``.

    Args:
        data: (N, d) states sampled every ``dt``; the last ``validation`` part is held out.
        method: "bptt", "gtf", "statistics" or "flossing" (see the module docstring).
        budget, iterations: stop after this much training time (seconds; evaluations not
            counted) or this many iterations (at least one of them).
        window, batch: rollout length and windows per iteration (the "statistics" method
            uses them for its short-window MSE term).
        statistics_estimator: the Shadowing settings of the statistics term (default
            segment_steps=20, segments=50, burn_in=200).
        statistics_unstable_dim: u for that Shadowing, or "auto": every ``spectrum_every``
            iterations u = the number of the model's exponents above -0.05 per unit time
            (the positive ones and the neutral direction of a chaotic or periodic flow;
            0 at a stable fixed point), from a 2000-step spectrum. The model changes
            while it trains (a fresh MLP is not chaotic), and Shadowing with a wrong u
            returns garbage of huge norm (measured: gradient norms 30-600 against the MSE
            term's 0.03 with u = 2 on an untrained model). u is capped at d - 1 (Shadowing
            needs a stable direction); ``history["unstable_dim_measured"]`` keeps the
            count before the cap, ``history["unstable_dim"]`` the u used.
        evaluate: ``evaluate(fit_so_far) -> dict`` called every ``eval_every`` seconds of
            training (e.g. :func:`attractor_metrics`); its time is not counted.
    """
    check_x64()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    for name, value in (("window", window), ("batch", batch), ("alpha_every", alpha_every)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if budget is None and iterations is None:
        raise ValueError("give budget (seconds) or iterations")
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if key is None:
        raise ValueError("key is required: fit_trajectory(..., key=jax.random.key(0))")
    array = _check_data(data, window, validation)
    train_rows = int(len(array) * (1 - validation))
    mean, std = array[:train_rows].mean(axis=0), array[:train_rows].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    series = jnp.asarray((array - mean) / std)
    train = series[:train_rows]
    model_key, key = jax.random.split(key)
    system = model if model is not None else neural_vector_field(array.shape[1], dt, key=model_key)
    params = _parameters(system)
    optimizer = optax.adam(learning_rate)
    if clip is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(clip), optimizer)
    opt_state = optimizer.init(eqx.filter(params, eqx.is_inexact_array))
    target_stats = jnp.mean(jax.vmap(moments)(train), axis=0)
    scale = jnp.sum(target_stats**2)
    stats_loss = lambda s: jnp.sum((s - target_stats) ** 2) / scale  # noqa: E731
    shadowing = statistics_estimator or Shadowing(
        unstable_dim=2, segment_steps=20, segments=50, burn_in=200
    )
    auto_u = statistics_unstable_dim == "auto"
    if not auto_u:
        shadowing = dataclasses.replace(shadowing, unstable_dim=int(statistics_unstable_dim))
    fit = TrajectoryFit(system, mean, std, method)
    history: dict[str, list] = {"seconds": [], "loss": [], "grad_norm": [], "alpha": []}
    fit.history = history
    alpha = jnp.asarray(0.0)
    elapsed, next_eval, iteration, skipped = 0.0, 0.0, 0, 0
    while True:
        if evaluate is not None and eval_every is not None and elapsed >= next_eval:
            fit.system = system
            fit.evaluations.append({"seconds": elapsed, **evaluate(fit)})
            next_eval = elapsed + eval_every
        if (budget is not None and elapsed >= budget) or (
            iterations is not None and iteration >= iterations
        ):
            break
        began = time.perf_counter()
        step_key = jax.random.fold_in(key, iteration)
        starts = jax.random.randint(step_key, (batch,), 0, train_rows - window - 1)
        windows = _windows(train, starts, window)
        if method == "gtf" and iteration % alpha_every == 0:
            alpha = _alpha(system, windows)
        loss, grads = _rollout_value_and_grad(system, windows, alpha if method == "gtf" else 0.0)
        if method == "statistics" and auto_u and iteration % spectrum_every == 0:
            measured = unstable_dimension(system, train[starts[0]], step_key)
            # Shadowing needs a stable direction: a model whose every exponent rose above
            # the threshold (a near-neutral third exponent of a learned Roessler) is shadowed
            # with u = dim - 1, and the history records both numbers
            u = min(measured, train.shape[1] - 1)
            shadowing = dataclasses.replace(shadowing, unstable_dim=u)
            history.setdefault("unstable_dim", []).append(u)
            history.setdefault("unstable_dim_measured", []).append(measured)
        if method == "statistics":
            try:
                _, extra, _ = value_and_grad(
                    system,
                    stats_loss,
                    TimeAverage(moments),
                    shadowing,
                    wrt=_parameters,
                    x0=train[starts[0]],
                    key=step_key,
                )
                grads = jax.tree_util.tree_map(lambda g, e: g + statistics_weight * e, grads, extra)
            except FloatingPointError:
                skipped += 1
        elif method == "flossing":
            _, extra = _penalty_value_and_grad(
                system, train[starts[0]], step_key, floss_steps, floss_target
            )
            grads = jax.tree_util.tree_map(lambda g, e: g + floss_weight * e, grads, extra)
        grad_norm = tree_norm(grads)
        if not (bool(jnp.isfinite(loss)) and bool(jnp.isfinite(grad_norm))):
            fit.status = f"diverged at iteration {iteration}: non-finite loss or gradient"
            break
        updates, opt_state = optimizer.update(
            grads, opt_state, eqx.filter(params, eqx.is_inexact_array)
        )
        params = eqx.apply_updates(params, updates)
        system = eqx.tree_at(_parameters, system, params)
        jax.block_until_ready(params)
        elapsed += time.perf_counter() - began
        iteration += 1
        history["seconds"].append(elapsed)
        history["loss"].append(float(loss))
        history["grad_norm"].append(float(grad_norm))
        history["alpha"].append(float(alpha))
        if progress is not None:
            progress(1)
    fit.system = system
    if skipped:
        fit.history["skipped_statistics_terms"] = [skipped]
    return fit


def attractor_metrics(
    fit: TrajectoryFit,
    data,
    *,
    validation: float = 0.1,
    steps: int = 20_000,
    burn_in: int = 500,
    reference_exponent: float | None = None,
    exponent_steps: int = 20_000,
    key=None,
) -> dict:
    """D_stsp, D_H, 1- and 10-step prediction MSE (held-out part) and, given the data's
    lambda_1 (per unit time), the relative error of the model's, all in standardised
    coordinates. A model whose free run leaves the finite numbers scores inf."""
    key = jax.random.key(0) if key is None else key
    array = (np.asarray(data, dtype=np.float64) - fit.mean) / fit.std
    train_rows = int(len(array) * (1 - validation))
    reference = array[: min(train_rows, steps)]
    start = jnp.asarray(array[0])
    metrics: dict[str, float] = {}
    try:
        path = np.asarray(simulate(fit.system, x0=start, steps=steps, burn_in=burn_in, key=key))
    except FloatingPointError:
        path = None
    if path is None:
        metrics["d_stsp"] = metrics["d_h"] = float("inf")
    elif array.shape[1] <= 3:
        metrics["d_stsp"] = state_space_divergence(reference, path, bins=30)
        metrics["d_h"] = float(power_spectrum_distance(reference, path, smoothing=20.0))
    else:
        metrics["d_stsp"] = state_space_divergence_gmm(reference, path)
        metrics["d_h"] = float(power_spectrum_distance(reference, path, smoothing=20.0))
    held_out = jnp.asarray(array[train_rows:] if train_rows < len(array) - 11 else array)
    model = fit.system

    def step(x):
        return model.step(0, x, None)

    for horizon in (1, 10):
        value = prediction_error(step, held_out, horizon)
        metrics[f"mse_{horizon}"] = value if math.isfinite(value) else float("inf")
    if reference_exponent is not None:
        try:
            spectrum = lyapunov_spectrum(
                model, 1, steps=exponent_steps, burn_in=1000, x0=start, key=key
            )
            metrics["lambda_1"] = float(spectrum.exponents[0])
            metrics["lambda_1_error"] = relative_exponent_error(
                spectrum.exponents[0], reference_exponent
            )
        except FloatingPointError:
            metrics["lambda_1"] = metrics["lambda_1_error"] = float("inf")
    return metrics
