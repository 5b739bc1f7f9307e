"""T1: a chaotic student RNN learns a teacher RNN's long-time statistics (deterministic).

Teacher and student are discrete tanh RNNs h' = J tanh(h) + b (``TanhRNN``) with n units and
gain g; all n^2 + n weights of the student are trained. The readouts are r = tanh(h_1..h_R);
the statistics are their means and covariances, R + R(R+1)/2 numbers (44 for R = 8), and the
loss is their relative squared error

    L = |s(student) - s(teacher)|^2 / |s(teacher)|^2,    s = (E[r], Cov[r] upper triangle).

The observable is Phi(h) = (r, r r^T upper triangle); the loss maps its time average to s, so
one estimator sweep gives dL/d(J, b). The teacher has a random bias (its readout means are not
0) and its own J; the student starts at b = 0 with another J of the same gain.

The metric is L measured on an independent orbit of ``eval_steps`` steps (the same key at
every evaluation: common random numbers, so a curve's wiggles are changes of the model).

Methods: Shadowing (alone and with clipping) and FastAdjointResponse (clipped; its unstable
contribution is e^{lambda_1 W}-large on this net), the seed methods with the teacher's
measured unstable dimension; Backprop over a horizon with and without clipping, truncated BPTT
(clipped), clipping by value (each entry at 0.1) and a cosine learning-rate schedule (from 3x
the rate down to 1 % over 2000 iterations), and gradient flossing (preflossing + interleaved
episodes) + BPTT + clipping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ... import estimators as est
from ..._system import simulate
from ...lyapunov import flossing_schedule, lyapunov_penalty, lyapunov_spectrum
from ...statistics import TimeAverage
from ...systems import TanhRNN
from ...train import fit
from ._harness import Evaluations, Run, thinned


@dataclass(frozen=True)
class T1Settings:
    hidden: int = 64
    gain: float = 10.0
    readouts: int = 8
    teacher_seed: int = 0
    teacher_bias: float = 0.8
    unstable_dim: int = 5
    segment_steps: int = 10
    segments: int = 100
    burn_in: int = 200
    backprop_steps: int = 100
    samples: int = 4
    truncation: int = 10
    truncated_steps: int = 250
    learning_rate: float = 3e-3
    clip: float = 1.0
    floss_exponents: int = 8
    floss_steps: int = 50
    floss_pre: int = 100
    floss_every: int = 200
    floss_length: int = 50
    teacher_steps: int = 100_000
    eval_steps: int = 20_000
    spectrum_steps: int = 20_000


METHODS = (
    "shadowing",
    "shadowing+clip",
    "fast-response+clip",
    "bptt",
    "bptt+clip",
    "bptt+clip-value",
    "bptt+clip+cosine-schedule",
    "truncated-bptt+clip",
    "flossing+bptt+clip",
)


def readout_moments(h, readouts: int):
    """Phi(h) = (r, upper triangle of r r^T), r = tanh(h[:readouts])."""
    r = jnp.tanh(h[:readouts])
    upper = jnp.triu_indices(readouts)
    return {"mean": r, "second": jnp.outer(r, r)[upper]}


def statistics_of_moments(moments, readouts: int):
    """s = (E r, Cov r upper triangle) from the averaged moments."""
    upper = jnp.triu_indices(readouts)
    mean = moments["mean"]
    return jnp.concatenate([mean, moments["second"] - jnp.outer(mean, mean)[upper]])


def orbit_statistics(system, steps: int, key, readouts: int) -> np.ndarray:
    """s measured on one orbit of ``steps`` steps after 1000 steps of burn-in."""
    path = np.asarray(simulate(system, steps=steps, burn_in=1000, key=key))
    r = np.tanh(path[1:, :readouts])
    upper = np.triu_indices(readouts)
    return np.concatenate([r.mean(axis=0), np.cov(r.T)[upper]])


class T1Task:
    """Teacher, student and the loss of T1 (``settings`` fixes all sizes)."""

    name = "T1"
    metrics = ("loss",)
    relative = ("loss",)
    methods = METHODS

    def __init__(self, settings: T1Settings | None = None):
        self.settings = s = settings or T1Settings()
        bias = s.teacher_bias * jax.random.normal(
            jax.random.key(10_000 + s.teacher_seed), (s.hidden,)
        )
        self.teacher = TanhRNN(n=s.hidden, g=s.gain, seed=s.teacher_seed, b=bias)
        self.target = orbit_statistics(self.teacher, s.teacher_steps, jax.random.key(1), s.readouts)
        self.scale = float(np.sum(self.target**2))
        readouts, target, scale = s.readouts, jnp.asarray(self.target), self.scale
        self.statistic = TimeAverage(lambda h: readout_moments(h, readouts))
        self.loss = lambda m: jnp.sum((statistics_of_moments(m, readouts) - target) ** 2) / scale

    def describe(self) -> dict:
        s = self.settings
        spectrum = lyapunov_spectrum(
            self.teacher, 12, steps=s.spectrum_steps, burn_in=2000, key=jax.random.key(0)
        )
        return {
            "settings": asdict(s),
            "weights": s.hidden * s.hidden + s.hidden,
            "statistics": int(self.target.size),
            "teacher_spectrum": spectrum.exponents.tolist(),
            "teacher_spectrum_stderr": spectrum.stderr.tolist(),
            "teacher_positive_exponents": int(np.sum(spectrum.exponents > 0)),
        }

    def student(self, seed: int) -> TanhRNN:
        return TanhRNN(n=self.settings.hidden, g=self.settings.gain, seed=1 + seed)

    def evaluate(self, system) -> dict:
        try:
            stats = orbit_statistics(
                system, self.settings.eval_steps, jax.random.key(123), self.settings.readouts
            )
        except FloatingPointError:
            return {"loss": float("inf")}
        return {"loss": float(np.sum((stats - self.target) ** 2) / self.scale)}

    def estimator_and_optimizer(self, method: str):
        s = self.settings
        adam = optax.adam(s.learning_rate)
        clipped = optax.chain(optax.clip_by_global_norm(s.clip), adam)
        shadowing = est.Shadowing(
            unstable_dim=s.unstable_dim,
            segment_steps=s.segment_steps,
            segments=s.segments,
            burn_in=s.burn_in,
        )
        fast_response = est.FastAdjointResponse(
            unstable_dim=s.unstable_dim,
            segment_steps=s.segment_steps,
            segments=s.segments,
            burn_in=s.burn_in,
        )
        backprop = est.Backprop(samples=s.samples, steps=s.backprop_steps, burn_in=s.burn_in)
        table = {
            "shadowing": (shadowing, adam),
            "shadowing+clip": (shadowing, clipped),
            "fast-response+clip": (fast_response, clipped),
            "bptt": (backprop, adam),
            "bptt+clip": (backprop, clipped),
            "bptt+clip-value": (backprop, optax.chain(optax.clip(s.clip / 10), adam)),
            "bptt+clip+cosine-schedule": (
                backprop,
                optax.chain(
                    optax.clip_by_global_norm(s.clip),
                    optax.adam(optax.cosine_decay_schedule(3 * s.learning_rate, 2000, 0.01)),
                ),
            ),
            "truncated-bptt+clip": (
                est.TruncatedBackprop(
                    samples=s.samples,
                    steps=s.truncated_steps,
                    truncation=s.truncation,
                    burn_in=s.burn_in,
                ),
                clipped,
            ),
            "flossing+bptt+clip": (backprop, clipped),
        }
        if method not in table:
            raise ValueError(f"unknown T1 method {method!r}; choose from {METHODS}")
        return table[method]

    def run(
        self,
        method: str,
        seed: int,
        budget: float | None,
        eval_every: float,
        iterations: int | None = None,
    ) -> Run:
        s = self.settings
        estimator, optimizer = self.estimator_and_optimizer(method)
        student = self.student(seed)
        run = Run(method, seed)
        evaluations = Evaluations(run, self.evaluate, eval_every)
        evaluations.record(student)
        regularizer, schedule = None, None
        if method.startswith("flossing"):
            x0 = jnp.full(s.hidden, 0.1)
            k, steps = s.floss_exponents, s.floss_steps

            def penalty(system):
                return lyapunov_penalty(system, k, steps, x0=x0, key=jax.random.key(7), burn_in=100)

            regularizer = penalty
            schedule = flossing_schedule(s.floss_pre, s.floss_every, s.floss_length)
        result = fit(
            student,
            self.loss,
            self.statistic,
            estimator,
            optimizer,
            iterations=iterations or 10**9,
            key=jax.random.key(1000 + seed),
            budget=budget,
            regularizer=regularizer,
            schedule=schedule,
            callback=lambda i, system, record: evaluations.maybe(system, record["seconds"]),
        )
        if result.failed or run.times[-1] < evaluations.clock.elapsed:
            evaluations.record(result.system)
        run.status, run.iterations = result.status, result.iterations
        run.extra["training_loss"] = thinned(result.history["loss"])
        run.seconds = evaluations.clock.elapsed
        return run
