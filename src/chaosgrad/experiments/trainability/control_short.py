"""Control task: a short-window Lorenz-63 parameter fit, where backpropagation is exact and
cheapest and the seed methods have nothing to add.

The NRES paper's Lorenz-63 setting (forward Euler, dt = 0.005, x_0 = (1.2, 1.3, 1.6),
b = 8/3 fixed, truth (sigma, rho) = (10, 28), start (e^3.116, e^3.7) = (22.6, 40.4),
parameters (log sigma, log rho)), cut to a window of one Lyapunov time (T = 1.1 time units,
220 steps) so that no gradient explodes. The loss is the window average of (z - z_data)^2.

A trajectory loss is written as a statistic of chaosgrad: the data ride along as the fourth
state component of an :class:`~chaosgrad.InputDriven` system (its input at step t is
z_data_{t+1}), so the loss is ``WindowAverage((x[2] - x[3])^2, steps)`` and every estimator
that supports a window average applies (the data component does not depend on the
parameters). Shadowing, FAR and the kernel family do not apply: the system is deterministic
and the loss is not a long-time statistic.

Metrics: the loss on the window and the relative parameter error |theta - theta*| /
|theta*| (in (sigma, rho)). Pre-registered success: parameter error below 1 %.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ... import estimators as est
from ..._user_models import InputDriven
from ...estimators._response import value_and_grad
from ...statistics import WindowAverage
from ...train import fit
from ._harness import Evaluations, Run, thinned

METHODS = ("bptt", "es", "spsa", "nres", "finite-difference")
GRID = (0.001, 0.003, 0.01, 0.03)
"""Adam's learning rates tuned on the tuning seed, the same grid for every method."""
SUCCESS = 0.01
"""Pre-registered: a run succeeds when its final relative parameter error is below this."""
TRUTH = (10.0, 28.0)
START = (3.116, 3.7)  # log sigma, log rho: (22.6, 40.4)
X0 = (1.2, 1.3, 1.6)


@dataclass(frozen=True)
class ShortSettings:
    steps: int = 220
    dt: float = 0.005
    sigma: float = 0.01
    pairs: int = 16
    truncation: int = 20
    learning_rate: float = 0.01

    @classmethod
    def quick(cls) -> ShortSettings:
        return replace(cls(), steps=60, pairs=8)


def _lorenz_euler(x, log_params, dt):
    sigma, rho = jnp.exp(log_params[0]), jnp.exp(log_params[1])
    dx = jnp.stack([sigma * (x[1] - x[0]), x[0] * (rho - x[2]) - x[1], x[0] * x[1] - 8 / 3 * x[2]])
    return x + dt * dx


def _step(t, x, u, args):
    log_params, dt = args
    return jnp.concatenate([_lorenz_euler(x[:3], log_params, dt), u])


def _mismatch(x):
    return (x[2] - x[3]) ** 2


def weights(system):
    """What trains: (log sigma, log rho)."""
    return system.args[0]


class ShortTask:
    """The control (module doc)."""

    name = "control-short"

    def __init__(self, settings: ShortSettings | None = None):
        self.settings = s = settings or ShortSettings()
        self.methods = METHODS
        self.grid = GRID
        self.metrics = ("loss", "parameter_error")
        truth = jnp.log(jnp.asarray(TRUTH))
        x, path = jnp.asarray(X0), []
        for _ in range(s.steps):
            x = _lorenz_euler(x, truth, s.dt)
            path.append(x[2])
        self.data = jnp.stack(path)[:, None]
        self.statistic = WindowAverage(_mismatch, s.steps)
        self.x0 = jnp.concatenate([jnp.asarray(X0), jnp.asarray([X0[2]])])

    def model(self, log_params, noise: float = 0.0) -> InputDriven:
        """The model at (log sigma, log rho); ``noise`` is added to all four components
        (the data component is overwritten by its input each step, so its noise adds
        noise^2 to the loss and nothing to a score)."""
        args = (log_params, self.settings.dt)
        return InputDriven(_step, self.data, args=args, noise=noise, dim=4)

    def start_model(self, method: str) -> InputDriven:
        """The model a method starts from: the NRES paper's start, deterministic."""
        return self.model(jnp.asarray(START))

    def describe(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "truth": TRUTH,
            "start": np.exp(START).tolist(),
            "success": f"final parameter_error below {SUCCESS}",
        }

    def evaluate(self, system) -> dict:
        """The unperturbed loss (the deterministic model at the trained parameters) and the
        parameter error."""
        loss, _, _ = value_and_grad(
            self.model(weights(system)),
            lambda s: s,
            self.statistic,
            est.Backprop(samples=2, diagnostics=False),
            wrt=weights,
            x0=self.x0,
            key=jax.random.key(0),
        )
        theta = np.exp(np.asarray(weights(system)))
        error = np.linalg.norm(theta - np.asarray(TRUTH)) / np.linalg.norm(TRUTH)
        return {"loss": float(loss), "parameter_error": float(error)}

    def estimator(self, method: str):
        s = self.settings
        if method == "bptt":
            return est.Backprop(samples=2, diagnostics=False)
        if method == "es":
            return est.ES(sigma=s.sigma, samples=s.pairs)
        if method == "spsa":
            return est.SPSA(c=s.sigma, samples=s.pairs)
        if method == "nres":
            return est.NRES(sigma=s.sigma, samples=s.pairs, truncation=s.truncation)
        if method == "finite-difference":
            return est.FiniteDifference(eps=s.sigma, samples=2)
        raise ValueError(f"unknown {self.name} method {method!r}; choose from {self.methods}")

    def run(self, method: str, seed: int, budget: float | None, eval_every: float, **options):
        estimator = self.estimator(method)
        rate = options.get("learning_rate") or self.settings.learning_rate
        model = self.start_model(method)
        run = Run(method, seed)
        evaluations = Evaluations(run, self.evaluate, eval_every)
        evaluations.record(model)
        result = fit(
            model,
            lambda s: s,
            self.statistic,
            estimator,
            optax.adam(rate),
            iterations=options.get("iterations") or 10**9,
            wrt=weights,
            x0=self.x0,
            key=jax.random.key(1000 + seed),
            budget=budget,
            callback=lambda i, system, record: evaluations.maybe(system, record["seconds"]),
        )
        if result.failed or run.times[-1] < evaluations.clock.elapsed:
            evaluations.record(result.system)
        run.status, run.iterations = result.status, result.iterations
        run.extra["training_loss"] = thinned(result.history["loss"])
        run.extra["success"] = bool(run.metrics[-1]["parameter_error"] < SUCCESS)
        run.seconds = evaluations.clock.elapsed
        return run
