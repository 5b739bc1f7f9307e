"""``chaosgrad learn --data FILE.npy``: learn a dynamical system from your own trajectory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

console = Console()


def load_trajectory(path: Path) -> np.ndarray:
    """The (steps, dimensions) float array in ``path`` (.npy), or a one-line error.

    Refused: a complex array (its imaginary part would be dropped), NaN or inf, and values
    so large that their squares overflow float64 (the standardisation, the loss and the
    metrics all square them)."""
    if not path.exists():
        raise ValueError(f"--data {path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--data {path}: not a readable .npy array ({exc})") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"--data {path}: expected a numeric (steps, dimensions) array, got "
            f"shape {array.shape} of {array.dtype}"
        )
    if np.iscomplexobj(array):
        raise ValueError(
            f"--data {path}: the array is {array.dtype}, and learn fits real states: save "
            "the real and imaginary parts as separate columns"
        )
    array = array.astype(np.float64)
    bad = np.argwhere(~np.all(np.isfinite(array), axis=1))
    if bad.size:
        raise ValueError(f"--data {path}: NaN or inf at row {int(bad[0, 0])}")
    with np.errstate(over="ignore", invalid="ignore"):
        spread = np.std(array, axis=0)
    if array.size and not np.all(np.isfinite(spread)):
        largest = float(np.max(np.abs(array)))
        raise ValueError(
            f"--data {path}: values up to {largest:.3g} overflow float64 when squared and "
            "summed (their standard deviation is not finite): rescale the data, e.g. divide "
            "it by "
            f"{10.0 ** math.floor(math.log10(largest)):.0e}"
        )
    return array


def initial_model(array: np.ndarray, dt: float, key):
    """The untrained model ``fit_trajectory`` starts from with ``key`` (its first split)."""
    import jax

    from ..reconstruct import neural_vector_field

    model_key, _ = jax.random.split(key)
    return neural_vector_field(array.shape[1], dt, key=model_key)


def check_time_step(model, array: np.ndarray, dt: float, window: int) -> None:
    """Refuse a ``--dt`` with which training cannot start or cannot move: the untrained
    model's squared error over one window (a free run from the first row, standardised as
    the fit does) or its gradient not finite (dt too large: the fit would stop at its first
    iteration and report the untrained model), or a step of the model that leaves the
    state unchanged (dt x the vector field lost in rounding: dt too small)."""
    import equinox as eqx
    import jax.numpy as jnp
    import optax

    from ..reconstruct import rollout_loss

    steps = min(window, len(array) - 1)
    if steps < 1:
        return  # too short for any window: fit_trajectory says so
    spread = array.std(axis=0)
    series = jnp.asarray((array - array.mean(axis=0)) / np.where(spread > 0, spread, 1.0))

    def loss(mlp):
        return rollout_loss(eqx.tree_at(lambda s: s.args, model, mlp), series[None, : steps + 1])

    value, grads = eqx.filter_value_and_grad(loss)(model.args)
    norm = optax.tree.norm(eqx.filter(grads, eqx.is_inexact_array))  # as the fit tests it
    if not (bool(jnp.isfinite(value)) and bool(jnp.isfinite(norm))):
        raise ValueError(
            f"--dt {dt:g} is too large: the untrained model's squared error over one "
            f"--window of {steps} steps, or its gradient's norm, overflows float64, so "
            "training cannot start: give the time between rows in units that make --dt "
            "smaller"
        )
    if bool(jnp.all(model.step(0, series[0], None) == series[0])):
        raise ValueError(
            f"--dt {dt:g} is too small: a step of the model leaves the state unchanged "
            "(dt x the vector field is lost in rounding): give the time between rows in "
            "units that make --dt larger"
        )


def memory_hint(method: str) -> str:
    """What ``learn`` can reduce when it runs out of memory."""
    if method in ("gtf", "statistics"):
        return (
            f"--method {method} holds a dimensions x dimensions Jacobian for every state of "
            "a batch; use --method bptt, a smaller --window, or fewer columns in --data"
        )
    return "use a smaller --window or fewer columns in --data"


def learn_command(
    data: Annotated[Path, typer.Option(help=".npy file: one trajectory, (steps, dimensions)")],
    dt: Annotated[float, typer.Option(help="time between rows")],
    out: Annotated[Path, typer.Option(help="directory for learn.json and learn.png")] = Path(
        "chaosgrad-learn"
    ),
    method: Annotated[
        str, typer.Option(help="bptt, gtf, stf, measure_matching, statistics or flossing")
    ] = "gtf",
    budget: Annotated[float, typer.Option(help="seconds of training")] = 60.0,
    window: Annotated[int, typer.Option(help="rollout window (steps)")] = 30,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-3,
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
):
    """Fit a neural vector field to a trajectory and report the attractor metrics."""
    import jax

    from ..plot import plot_reconstruction
    from ..reconstruct import METHODS, attractor_metrics, fit_trajectory
    from .errors import user_errors
    from .options import check_numbers
    from .report import prepare_out, write_json

    with user_errors(memory=memory_hint(method)):
        check_numbers(
            {
                "dt": dt,
                "budget": budget,
                "window": window,
                "learning_rate": learning_rate,
                "seed": seed,
            }
        )
        if method not in METHODS:
            raise ValueError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
        array = load_trajectory(data)
        key = jax.random.key(seed)
        model = initial_model(array, dt, key)
        check_time_step(model, array, dt, window)
        prepare_out(out)
        fit = fit_trajectory(
            array,
            dt=dt,
            method=method,
            model=model,
            key=key,
            budget=budget,
            window=window,
            learning_rate=learning_rate,
            evaluate=lambda f: attractor_metrics(f, array, steps=min(len(array), 20_000)),
            eval_every=budget / 4,
        )
        final = attractor_metrics(fit, array, steps=min(len(array), 20_000))
        final = {k: (v if math.isfinite(v) else None) for k, v in final.items()}
        payload = {**fit.to_json(), "final": final, "data": str(data), "dt": dt}
        write_json(out / "learn.json", payload)
        plot_reconstruction(out / "learn.png", fit, array)
    if json_output:
        console.print_json(data=final)
        return
    console.print(f"{method}: {len(fit.history['loss'])} iterations, status {fit.status}")
    for name, value in final.items():
        console.print(f"  {name:>8} = {'inf' if value is None else f'{value:.4g}'}")
    console.print(f"wrote {out / 'learn.json'} and {out / 'learn.png'}")
