"""``chaosgrad learn --data FILE.npy``: learn a dynamical system from your own trajectory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

console = Console()


def load_trajectory(path: Path) -> np.ndarray:
    """The (steps, dimensions) float array in ``path`` (.npy), or a one-line error."""
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
    return array.astype(np.float64)


def learn_command(
    data: Annotated[Path, typer.Option(help=".npy file: one trajectory, (steps, dimensions)")],
    dt: Annotated[float, typer.Option(help="time between rows")],
    out: Annotated[Path, typer.Option(help="directory for learn.json and learn.png")] = Path(
        "chaosgrad-learn"
    ),
    method: Annotated[str, typer.Option(help="bptt, gtf, statistics or flossing")] = "gtf",
    budget: Annotated[float, typer.Option(help="seconds of training")] = 60.0,
    window: Annotated[int, typer.Option(help="rollout window (steps)")] = 30,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-3,
    seed: Annotated[int, typer.Option(help="PRNG seed")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
):
    """Fit a neural vector field to a trajectory and report the attractor metrics."""
    import jax

    from ..plot import plot_reconstruction
    from ..reconstruct import attractor_metrics, fit_trajectory
    from .main import user_errors
    from .options import check_numbers
    from .report import prepare_out

    with user_errors():
        check_numbers(
            {
                "dt": dt,
                "budget": budget,
                "window": window,
                "learning_rate": learning_rate,
                "seed": seed,
            }
        )
        array = load_trajectory(data)
        prepare_out(out)
        fit = fit_trajectory(
            array,
            dt=dt,
            method=method,
            key=jax.random.key(seed),
            budget=budget,
            window=window,
            learning_rate=learning_rate,
            evaluate=lambda f: attractor_metrics(f, array, steps=min(len(array), 20_000)),
            eval_every=budget / 4,
        )
        final = attractor_metrics(fit, array, steps=min(len(array), 20_000))
        final = {k: (v if math.isfinite(v) else None) for k, v in final.items()}
        payload = {**fit.to_json(), "final": final, "data": str(data), "dt": dt}
        (out / "learn.json").write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
        plot_reconstruction(out / "learn.png", fit, array)
    if json_output:
        console.print_json(data=final)
        return
    console.print(f"{method}: {len(fit.history['loss'])} iterations, status {fit.status}")
    for name, value in final.items():
        console.print(f"  {name:>8} = {'inf' if value is None else f'{value:.4g}'}")
    console.print(f"wrote {out / 'learn.json'} and {out / 'learn.png'}")
