"""The pilot run behind every ``"auto"`` setting: exponents, decorrelation, choices.

A short orbit measures what the method settings depend on:

* the Lyapunov spectrum with batch-means errors (QR method), enlarged until an exponent is
  clearly negative: u = the number of exponents clearly above 0 for a map, or not clearly
  below 0 for a flow (its neutral direction counts); "clearly" is 3 SE + 0.02;
* the decorrelation time of the observable: the first lag at which every component's
  autocorrelation falls below 0.05; the window W of the kernel estimators and of FAR is
  twice that;
* segment lengths from the leading exponent: lambda_1 m = 0.2 per segment, so the growth in
  one segment (e^0.2) stays moderate, within [10, 1000] steps.

Every choice goes into an :class:`AutoReport` with the pilot's numbers and a sentence saying
why, so that ``info`` and the command line can show it.
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._error_bars import count_unstable
from .._system import System, check_horizon, simulate
from ..lyapunov.spectrum import lyapunov_spectrum
from ..statistics import WindowAverage
from ._orbits import is_flow

PILOT_STEPS = 20_000
PILOT_BURN_IN = 2_000
SEGMENT_GROWTH = 0.2  # lambda_1 * segment length
DECORRELATED = 0.05


class Pilot(eqx.Module):
    """What the pilot run measured.

    Args:
        exponents, stderr: the leading exponents (per unit time for a flow) and their
            standard errors; enough of them that the last is clearly negative, or all.
        exponents_per_step: the same per step.
        unstable_dim: u, counted from them (a flow's neutral direction included).
        flow, noisy: a discretised flow; a system with noise.
        decorrelation_steps: steps until the observable's autocorrelation falls below 0.05.
        steps: pilot steps after the burn-in.
        seconds: its wall time.
    """

    exponents: np.ndarray
    stderr: np.ndarray
    exponents_per_step: np.ndarray
    unstable_dim: int
    flow: bool
    noisy: bool
    decorrelation_steps: int
    steps: int
    seconds: float

    @property
    def leading_per_step(self) -> float:
        return float(self.exponents_per_step[0])

    def window(self, largest: int) -> int:
        """A decorrelation window W: twice the decorrelation time, within [2, largest]. For
        an exponential decay the part of the response beyond W is then about 0.05^2 of it
        (at once, noisy AR(1) a = 0.8: 4 % bias at 14 steps, 0.2 % at 28)."""
        return int(np.clip(2 * self.decorrelation_steps, 2, largest))


class AutoReport(eqx.Module):
    """The settings an ``"auto"`` estimator chose, why, and the pilot they came from.

    Args:
        estimator: the estimator that ran, with every setting (its repr).
        reasons: one sentence per choice.
        pilot: the :class:`Pilot` measurements.
        hyperbolicity: the angle check, when the shadowing family was considered, else None.
    """

    estimator: str
    reasons: tuple[str, ...]
    pilot: Pilot
    hyperbolicity: object = None

    def as_dict(self) -> dict:
        """Plain numbers and text (for JSON): the choices and the pilot's measurements."""
        pilot = self.pilot
        out = {
            "estimator": " ".join(self.estimator.split()),
            "reasons": list(self.reasons),
            "pilot": {
                "exponents": np.asarray(pilot.exponents).tolist(),
                "stderr": np.asarray(pilot.stderr).tolist(),
                "unstable_dim": pilot.unstable_dim,
                "flow": pilot.flow,
                "noisy": pilot.noisy,
                "decorrelation_steps": pilot.decorrelation_steps,
                "steps": pilot.steps,
                "seconds": pilot.seconds,
            },
        }
        check = self.hyperbolicity
        if check is not None:
            out["hyperbolicity"] = {
                "min_angle_degrees": float(check.min_angle),  # type: ignore[attr-defined]
                "median_angle_degrees": float(check.median_angle),  # type: ignore[attr-defined]
                "tangent_fraction": float(check.tangent_fraction),  # type: ignore[attr-defined]
                "hyperbolic": bool(check.hyperbolic),  # type: ignore[attr-defined]
            }
        return out


def decorrelation_steps(series, limit: int) -> int:
    """First lag at which every column's autocorrelation is below 0.05 (at most ``limit``)."""
    values = np.asarray(series, dtype=float).reshape(series.shape[0], -1)
    centred = values - values.mean(axis=0)
    variance = np.mean(centred**2, axis=0)
    live = variance > 1e-300
    if not live.any():
        return 1
    centred = centred[:, live] / np.sqrt(variance[live])
    count = centred.shape[0]
    size = 1 << int(np.ceil(np.log2(2 * count)))  # autocorrelation by FFT, zero-padded
    spectrum = np.fft.rfft(centred, n=size, axis=0)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=0)[:count] / count
    below = np.all(np.abs(acf[1 : limit + 1]) < DECORRELATED, axis=1)
    return int(np.argmax(below)) + 1 if below.any() else limit


def segment_steps_for(pilot: Pilot) -> int:
    """m with lambda_1 m = 0.2 (growth e^0.2 per segment), within [10, 1000]."""
    rate = pilot.leading_per_step
    if not rate > 0:
        return 100
    return int(np.clip(round(SEGMENT_GROWTH / rate), 10, 1000))


def available_steps(system: System, wanted: int) -> int:
    """``wanted``, or the system's number of layers when it has fewer."""
    horizon = system.horizon
    return wanted if horizon is None else min(wanted, horizon)


def run_pilot(
    system: System, components, x0, key, *, steps: int = PILOT_STEPS, burn_in: int | None = None
) -> Pilot:
    """Spectrum (grown until an exponent is clearly negative) and decorrelation time."""
    began = time.perf_counter()
    if system.horizon is not None:  # a network: its layers are the whole orbit
        burn_in = 0
        steps = min(steps, system.horizon)
    burn_in = PILOT_BURN_IN if burn_in is None else burn_in
    check_horizon(system, burn_in + steps)
    start = None if x0 is None else (x0[0] if jnp.ndim(x0) == 2 else x0)
    spectrum_key, orbit_key = jax.random.split(key)
    dim = int(jax.eval_shape(system.initial_state, spectrum_key).shape[0])
    flow = is_flow(system)
    k = min(dim, 4)
    while True:
        result = lyapunov_spectrum(
            system, k, steps=steps, burn_in=burn_in, x0=start, key=spectrum_key, blocks=20
        )
        counted = count_unstable(result.exponents, result.stderr, flow)
        if counted < k or k == dim:
            break
        k = min(dim, 2 * k)
    orbit = simulate(system, start, min(steps, 20_000), key=orbit_key, burn_in=burn_in)
    values = jax.vmap(lambda y: components(y, system))(orbit)
    limit = max(1, min(1000, orbit.shape[0] // 10))
    return Pilot(
        exponents=np.asarray(result.exponents),
        stderr=np.asarray(result.stderr),
        exponents_per_step=np.asarray(result.exponents_per_step),
        unstable_dim=counted,
        flow=flow,
        noisy=bool(system.stochastic),
        decorrelation_steps=decorrelation_steps(np.asarray(values), limit),
        steps=steps,
        seconds=time.perf_counter() - began,
    )


def describe_exponents(pilot: Pilot, shown: int = 4) -> str:
    unit = "per unit time" if pilot.flow else "per step"
    text = ", ".join(
        f"{v:.3g} ± {e:.2g}"
        for v, e in zip(pilot.exponents[:shown], pilot.stderr[:shown], strict=True)
    )
    more = ", ..." if len(pilot.exponents) > shown else ""
    return f"pilot exponents {text}{more} {unit} ({pilot.steps} steps)"


def divisor_near(total: int, target: int) -> int:
    """The divisor of ``total`` closest to ``target`` (a segment length that tiles a window)."""
    divisors = [d for d in range(1, int(np.sqrt(total)) + 1) if total % d == 0]
    divisors += [total // d for d in divisors]
    return min(divisors, key=lambda d: (abs(np.log(d / target)), d))


def resolve_orbit_settings(estimator, system, components, x0, key):
    """(estimator with its ``"auto"`` settings replaced, AutoReport or None) from a pilot.

    unstable_dim: the pilot's u; segment_steps: lambda_1 m = 0.2 (a divisor of a
    WindowAverage's steps); window: twice the decorrelation time within [2, 50]. The pilot uses
    its own key (fold_in(key, 1)), so the estimate's random numbers are those of a run with
    the same settings given by hand.
    """
    wanted = estimator.auto_settings()
    if not wanted:
        return estimator, None
    pilot = run_pilot(system, components, x0, jax.random.fold_in(key, 1))
    reasons, values = [describe_exponents(pilot)], {}
    if "unstable_dim" in wanted:
        values["unstable_dim"] = pilot.unstable_dim
        reasons.append(
            f"unstable_dim = {pilot.unstable_dim}: the exponents clearly above 0"
            + (" and the flow's neutral one" if pilot.flow else "")
        )
    if "segment_steps" in wanted:
        steps = segment_steps_for(pilot)
        statistic = components.statistic
        if isinstance(statistic, WindowAverage):  # segments must tile the window
            steps = divisor_near(statistic.steps, steps)
        values["segment_steps"] = steps
        reasons.append(
            f"segment_steps = {steps}: lambda_1 x segment about 0.2 (growth e^0.2 per segment)"
        )
    if "window" in wanted:
        window = pilot.window(50)
        values["window"] = window
        reasons.append(
            f"window = {window}: twice the observable's decorrelation time, "
            f"{pilot.decorrelation_steps} steps"
        )
    resolved = dataclasses.replace(estimator, **values)
    return resolved, AutoReport(estimator=repr(resolved), reasons=tuple(reasons), pilot=pilot)


ALPHA_FACTORS = (1.5, 3.0, 6.0, 12.0)


def choose_alpha(system, components, params, x0, key, pilot: Pilot, settings: dict):
    """(alpha, reason): PathKernel's damping by pilot variance among ALPHA_FACTORS x s,
    s = max(lambda_1, 0.1) (all above lambda_1, so the damped adjoint stays bounded): the
    smallest standard error of a short run (256 samples, or orbits an eighth as long) that
    did not explode. ``settings``: the PathKernel's other settings."""
    from ._base import tree_norm
    from .path_kernel import PathKernel, PathKernelInfo  # the estimator stands above this module

    lead = max(float(pilot.exponents[0]), 0.1)
    trial = dict(settings)
    if trial.get("steps") is None:
        trial["samples"] = min(256, int(trial["samples"]))
    else:
        trial["steps"] = max(10 * int(trial.get("window") or 10), int(trial["steps"]) // 8)
    scores = {}
    for i, factor in enumerate(ALPHA_FACTORS):
        alpha = factor * lead
        probe = PathKernel(alpha=alpha, **trial)
        raw = probe.estimate(system, components, params, x0, jax.random.fold_in(key, 10 + i), None)
        assert raw is not None
        assert isinstance(raw.info, PathKernelInfo)
        if not raw.info.exploding:
            scores[alpha] = float(tree_norm(raw.stderr))
    if not scores:
        alpha = ALPHA_FACTORS[-1] * lead
        return alpha, f"alpha = {alpha:.3g}: every pilot alpha exploded, the largest kept"
    alpha = min(scores, key=lambda a: scores[a])
    tried = ", ".join(f"{a:.3g}: {score:.3g}" for a, score in scores.items())
    return alpha, (
        f"alpha = {alpha:.3g} (above lambda_1 = {pilot.exponents[0]:.3g}): the smallest pilot "
        f"standard error ({tried})"
    )


def resolve_kernel_settings(estimator, system, components, params, x0, key):
    """(Kernel/PathKernel with ``window="auto"`` / ``alpha="auto"`` replaced, AutoReport or
    None): the window twice the decorrelation time within [2, 1000], alpha by
    :func:`choose_alpha`; the pilot uses keys folded from ``key``."""
    wanted = estimator.auto_settings()
    if not wanted:
        return estimator, None
    pilot = run_pilot(system, components, x0, jax.random.fold_in(key, 1))
    reasons, values = [describe_exponents(pilot)], {}
    if "window" in wanted:
        values["window"] = pilot.window(1000)
        reasons.append(
            f"window = {values['window']}: twice the observable's decorrelation time, "
            f"{pilot.decorrelation_steps} steps"
        )
    if "alpha" in wanted:
        settings = {
            name: values.get(name, getattr(estimator, name))
            for name in ("samples", "steps", "window", "burn_in", "batch")
        }
        alpha, reason = choose_alpha(
            system, components, params, x0, jax.random.fold_in(key, 2), pilot, settings
        )
        values["alpha"] = alpha
        reasons.append(reason)
    resolved = dataclasses.replace(estimator, **values)
    return resolved, AutoReport(estimator=repr(resolved), reasons=tuple(reasons), pilot=pilot)
