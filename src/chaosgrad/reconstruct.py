"""Learn a dynamical system from one trajectory: any (N, d) array, with any training method.

The data are standardised with the training part's mean and standard deviation, and the
model (default: a neural vector field dx/dt = MLP(x) in a ``Flow``, RK4 with the data's dt)
is trained in standardised coordinates. Every iteration draws ``batch`` windows of
``window`` + 1 points from the training part; the method object (``BPTT()``, ``GTF()``,
``StatisticsLoss()``, ``Flossing()``, ``STF()``, ``MeasureMatching()``: their equations in
``chaosgrad._trajectory_methods`` and on the documentation's "Reconstruction baselines"
page) gives the iteration's gradient, with its own settings.

Clipping by global norm (``clip``) and Adam are applied to every method. Evaluations (not
counted in the budget) measure the attractor metrics of ``chaosgrad.metrics`` on a free
run of the model, the n-step prediction errors on the held-out part, and optionally
lambda_1's relative error.
"""

from __future__ import annotations

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
from ._reconstruction_losses import inverse_multiquadric_kernel, lyapunov_from_data, squared_mmd
from ._system import System, simulate
from ._trajectory_methods import (
    BPTT,
    GTF,
    METHODS,
    STF,
    AbstractTrajectoryMethod,
    Batch,
    Flossing,
    MeasureMatching,
    StatisticsLoss,
    as_method,
    forcing_alpha,
    model_parameters,
    moments,
    rollout_loss,
    unstable_dimension,
)
from ._user_models import Flow
from .estimators._base import tree_norm
from .lyapunov import lyapunov_spectrum
from .metrics import (
    power_spectrum_distance,
    prediction_error,
    relative_exponent_error,
    state_space_divergence,
    state_space_divergence_gmm,
)

__all__ = [
    "BPTT",
    "GTF",
    "METHODS",
    "STF",
    "AbstractTrajectoryMethod",
    "Flossing",
    "MeasureMatching",
    "StatisticsLoss",
    "TrajectoryFit",
    "attractor_metrics",
    "fit_trajectory",
    "forcing_alpha",
    "inverse_multiquadric_kernel",
    "lyapunov_from_data",
    "moments",
    "neural_vector_field",
    "rollout_loss",
    "squared_mmd",
    "unstable_dimension",
]


def _mlp_field(t, x, mlp):
    return mlp(x)


def neural_vector_field(dim: int, dt: float, *, key, width: int = 48, depth: int = 2) -> Flow:
    """dx/dt = MLP(x) (tanh, ``depth`` hidden layers of ``width``), RK4 with step ``dt``."""
    mlp = eqx.nn.MLP(dim, dim, width_size=width, depth=depth, activation=jnp.tanh, key=key)
    mlp = jax.tree_util.tree_map(
        lambda leaf: leaf.astype(jnp.float64) if eqx.is_inexact_array(leaf) else leaf, mlp
    )
    return Flow(_mlp_field, dt=dt, method="rk4", args=mlp, dim=dim)


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


def fit_trajectory(
    data,
    *,
    dt: float,
    method: AbstractTrajectoryMethod | str = "bptt",
    model: System | None = None,
    key,
    budget: float | None = None,
    iterations: int | None = None,
    window: int = 30,
    batch: int = 16,
    learning_rate: float = 1e-3,
    clip: float | None = 1.0,
    validation: float = 0.1,
    evaluate: Callable | None = None,
    eval_every: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrajectoryFit:
    """Train ``model`` (default :func:`neural_vector_field`) on the trajectory ``data``.

    Args:
        data: (N, d) states sampled every ``dt``; the last ``validation`` part is held out.
        method: a method object with its settings, ``BPTT()``, ``GTF(alpha_every=10)``,
            ``StatisticsLoss(weight=1.0, estimator=..., unstable_dim="auto")``,
            ``Flossing(weight=0.1, target=0.0, steps=200)``, ``STF(tau="auto",
            lyapunov=None)`` (sparse teacher forcing) or ``MeasureMatching(weight=1.0,
            lead=None, samples=256, bandwidths=(0.2, 0.5, 0.9, 1.3))`` (DySLIM), or one of
            their names ("bptt", "gtf", "statistics", "flossing", "stf",
            "measure_matching") for the default settings.
        budget, iterations: stop after this much training time (seconds; evaluations not
            counted) or this many iterations (at least one of them).
        window, batch: rollout length and windows per iteration (the statistics, flossing
            and measure-matching methods use them for their MSE term; STF resets the
            rollout every tau <= window steps inside each window).
        learning_rate, clip: Adam's learning rate, and the global-norm clipping threshold
            in front of it (None: no clipping).
        evaluate: ``evaluate(fit_so_far) -> dict`` called every ``eval_every`` seconds of
            training (e.g. :func:`attractor_metrics`); its time is not counted.
        progress: called with 1 after each iteration (progress bars).
    """
    check_x64()
    method = as_method(method)
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    for name, value in (("window", window), ("batch", batch)):
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
    params = model_parameters(system)
    optimizer = optax.adam(learning_rate)
    if clip is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(clip), optimizer)
    opt_state = optimizer.init(eqx.filter(params, eqx.is_inexact_array))
    fit = TrajectoryFit(system, mean, std, method.name)
    history: dict[str, list] = {"seconds": [], "loss": [], "grad_norm": []}
    fit.history = history
    state = method.init(train, dt=dt, window=window)
    elapsed, next_eval, iteration = 0.0, 0.0, 0
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
        drawn = Batch(train, windows, starts, step_key, iteration)
        loss, grads, state = method.loss_and_grad(state, system, drawn, history)
        grad_norm = tree_norm(grads)
        if not (bool(jnp.isfinite(loss)) and bool(jnp.isfinite(grad_norm))):
            fit.status = f"diverged at iteration {iteration}: non-finite loss or gradient"
            break
        updates, opt_state = optimizer.update(
            grads, opt_state, eqx.filter(params, eqx.is_inexact_array)
        )
        params = eqx.apply_updates(params, updates)
        system = eqx.tree_at(model_parameters, system, params)
        jax.block_until_ready(params)
        elapsed += time.perf_counter() - began
        iteration += 1
        history["seconds"].append(elapsed)
        history["loss"].append(float(loss))
        history["grad_norm"].append(float(grad_norm))
        if progress is not None:
            progress(1)
    fit.system = system
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
