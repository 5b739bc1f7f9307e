"""Auto: choose the estimator and its settings from a pilot run, and say why.

The choice follows the decision chart of the documentation (design.md, "Choosing a method"),
first match wins, from the pilot's exponents lambda_i (with standard errors), u (the count
of clearly positive exponents, plus a flow's neutral one), the noise, map or flow, and the
statistic:

1. noise, Terminal or TimeAverage: the kernel family, which needs no hyperbolicity:
   ``PathKernel`` with alpha chosen by pilot variance among (1.5, 3, 6, 12) max(lambda_1, 0.1)
   (all above lambda_1, so the damped adjoint stays bounded), the window from the
   decorrelation time. Even with lambda_1 < 0 (the typical growth) the per-sample backprop
   gradient of a noisy network can be heavy-tailed (the nine-neuron net: lambda_1 = -0.14
   per layer, yet backprop's per-sample spread passes 1e5), so noise always means kernels.
2. no positive exponent (u = 0, or only a flow's neutral one): nothing explodes.
   Terminal / WindowAverage: ``Backprop``; TimeAverage: ``Shadowing`` with that u (the plain
   adjoint of the long-time average, plus the time dilation of a flow). A noisy
   WindowAverage with u > 0: ``FiniteDifference`` for at most 8 parameter elements, else
   ``TruncatedBackprop`` (biased; said so). The path forms of Kernel and PathKernel apply
   there too; Auto does not choose them (task B, 4D-Var: PathKernel lost to pathwise BPTT
   at T = 20 where the nudged model did not explode).
3. deterministic chaos, Terminal or WindowAverage over a horizon T (a WindowAverage's
   burn-in included) with lambda_1 T <= 5 (growth e^5 at most): ``Backprop``, exact and
   cheapest. Measured (trainability benchmark, control-short): fitting Lorenz-63's
   (sigma, rho) on a window of one Lyapunov time, BPTT reached the truth to 1e-11 while
   ES, SPSA, NRES and central differences stopped at their smoothing bias (1e-4); a
   long-time method (the shadowing family) estimates another quantity there.
   Beyond: a Terminal goes to rule 5; a WindowAverage to rule 4.
4. deterministic chaos, TimeAverage / WindowAverage: the shadowing family after the
   hyperbolicity check (``hyperbolicity``: under 1 % of the angles between E^u and E^s
   below 5 degrees). A map with a TimeAverage: ``FastAdjointResponse`` (the full
   response); otherwise ``Shadowing``. ``orbits`` independent orbits give a calibrated
   standard error. Where the check fails, Auto switches rather than keep a method whose
   error bar may cover every answer: ``FiniteDifference`` with common random numbers for
   at most 8 parameter elements (Lorenz-96, n = 20, F = 8, d<mean x>/dF: shadowing gave
   1221 +- 1519, central differences 0.14 +- 0.01); for more, a ValueError that says why
   and names the ways on (fewer parameters, noise and the kernel family, or Shadowing by
   hand). A noisy system never reaches this point: rule 1.
5. deterministic chaos, Terminal with lambda_1 T > 5: ``FiniteDifference`` (at most 8
   parameter elements) or ``TruncatedBackprop`` over one Lyapunov time (biased; the reasons
   say so).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from .._errors import check_positive_int, check_samples
from ..lyapunov.hyperbolicity import hyperbolicity
from ..statistics import Terminal, TimeAverage, WindowAverage
from ._base import AbstractEstimator, Estimate, check_sizes
from ._pilot import (
    AutoReport,
    Pilot,
    choose_alpha,
    describe_exponents,
    run_pilot,
    segment_steps_for,
)
from .backprop import Backprop, TruncatedBackprop
from .fast_adjoint_response import FastAdjointResponse
from .finite_difference import FiniteDifference
from .path_kernel import PathKernel
from .shadowing import Shadowing

FEW_PARAMETERS = 8
GROWTH_LIMIT = 5.0  # lambda_1 T beyond which backprop's e^{lambda_1 T} is called exploding


def not_hyperbolic_refusal(system, params, check) -> str:
    """Why Auto has no method for a deterministic, non-hyperbolic system with many
    parameters, and the three ways on."""
    return (
        f"Auto has no method that holds here: the {type(system).__name__} is deterministic, "
        f"with u = {check.unstable_dim}, and {check.describe()}, so Shadowing and "
        "FastAdjointResponse would be heavy-tailed or biased; and wrt selects "
        f"{params.size} parameter elements, more than the "
        f"{FEW_PARAMETERS} that FiniteDifference takes (two runs each). Select at most "
        f"{FEW_PARAMETERS} with wrt= (finite differences with common random numbers), give "
        "the system noise (Kernel and PathKernel need no hyperbolicity: they differentiate "
        "the noisy statistic), or run Shadowing yourself knowing its estimate may be "
        "heavy-tailed"
    )


class Auto(AbstractEstimator):
    """Choose and configure an estimator from a pilot run (module doc); report every choice.

    Supports: TimeAverage, WindowAverage, Terminal. The returned ``info`` is the chosen
    estimator's, with ``info.auto`` (an ``AutoReport``: the estimator with all its settings,
    one sentence per choice, the pilot's exponents and decorrelation time, and the
    hyperbolicity check). The standard error is the chosen estimator's (see its docstring).
    A deterministic, non-hyperbolic system with more than 8 parameter elements is refused
    (ValueError, module doc rule 4).

    Args:
        steps: for a TimeAverage, the orbit steps spent in total (over all orbits, after
            their burn-ins) by an orbit estimator; default 400 000. Each orbit gets at least
            40 Lyapunov times when the budget allows (the finite-orbit bias falls like 1/T).
        samples: samples of a sample estimator (default 10 000; Backprop 1 000).
        orbits: at most this many independent orbits of an orbit estimator (default 16;
            at least 8).
        pilot_steps: steps of the pilot run (default 20 000; a network: its depth).
        burn_in: burn-in of the pilot and of the chosen estimator (default 2 000 for the
            pilot, the estimator's own default after).
    """

    statistics = (TimeAverage, WindowAverage, Terminal)
    own_defaults: ClassVar[bool] = True  # the command line leaves unset settings to Auto
    steps: int = 400_000
    samples: int | None = None
    orbits: int = 16
    pilot_steps: int = 20_000
    burn_in: int | None = None

    def __check_init__(self):
        check_positive_int(self.steps, "steps")
        check_positive_int(self.orbits, "orbits")
        check_positive_int(self.pilot_steps, "pilot_steps")
        check_sizes(self, "burn_in")
        if self.samples is not None:
            check_samples(self.samples)

    def resolve(self, system, components, params, x0, key):
        """(the chosen estimator, the AutoReport): a pilot run with the first half of
        ``key``, on the host. :meth:`estimate` runs the choice with the second half."""
        pilot_key = jax.random.split(key)[0]
        pilot = run_pilot(
            system, components, x0, pilot_key, steps=self.pilot_steps, burn_in=self.burn_in
        )
        chosen, reasons, check = self.choose(system, components, params, pilot, x0, pilot_key)
        chosen.check_statistic(components.statistic, system)
        report = AutoReport(
            estimator=repr(chosen), reasons=tuple(reasons), pilot=pilot, hyperbolicity=check
        )
        return chosen, report

    def estimate(self, system, components, params, x0, key, cotangent):
        chosen, report = self.resolve(system, components, params, x0, key)
        raw = chosen.estimate(system, components, params, x0, jax.random.split(key)[1], cotangent)
        return Estimate(raw.value, raw.grad, raw.stderr, dataclasses.replace(raw.info, auto=report))

    def terms(self, system, components, params, x0, key, cotangent):
        raise ValueError(
            "Auto chooses its method from a pilot run on the host, which cannot run inside a "
            "compiled computation: resolve it first, estimator = chaosgrad.configure(system, "
            "statistic, Auto(...), key=key), and pass the estimator it returns"
        )

    def finish(self, terms, system, components, params, x0, key):
        raise NotImplementedError("Auto runs its chosen estimator's finish")

    def choose(self, system, components, params, pilot: Pilot, x0, key):
        """(estimator, reasons, hyperbolicity check or None) for the pilot's measurements."""
        statistic = components.statistic
        u, rate = pilot.unstable_dim, pilot.leading_per_step
        reasons = [describe_exponents(pilot)]
        neutral = int(pilot.flow)  # a flow's neutral direction is not an instability
        finite = not isinstance(statistic, TimeAverage)
        few = params.size <= FEW_PARAMETERS
        samples = self.samples
        if pilot.noisy and not isinstance(statistic, WindowAverage):
            reasons.append(
                "noisy: the kernel family (a negative lambda_1 is a typical growth only; the "
                "per-sample backprop gradient can still be heavy-tailed)"
            )
            chosen = self._path_kernel(system, components, params, pilot, x0, key, reasons)
            return chosen, reasons, None
        if pilot.noisy and u > neutral:
            reasons.append(
                "noisy WindowAverage: the path forms of Kernel and PathKernel apply; in the "
                "one training task measured (4D-Var, trainability task B) PathKernel lost to "
                "pathwise BPTT at the longest horizon, so Auto does not choose them; pass "
                "PathKernel(samples=..., alpha=...) to use it"
            )
            return self._unbounded(statistic, few, rate, samples, reasons, params), reasons, None
        if u <= neutral:
            reasons.append(
                f"no positive exponent (u = {u}{' with the neutral direction' if u else ''}): "
                "nothing explodes"
            )
            if finite:
                return Backprop(samples=samples or 1000), reasons, None
            reasons.append("TimeAverage: the plain adjoint of the long-time average")
            return self._shadowing(u, pilot, reasons, x0, system), reasons, None
        if finite:
            horizon = statistic.horizon  # a WindowAverage's burn-in included
            growth = rate * horizon
            if growth <= GROWTH_LIMIT:
                reasons.append(
                    f"{type(statistic).__name__} over T = {horizon} steps: lambda_1 T = "
                    f"{growth:.2g} <= {GROWTH_LIMIT:g}, backprop grows by at most "
                    f"e^{growth:.2g} and is exact"
                )
                return Backprop(samples=samples or 1000), reasons, None
            if isinstance(statistic, Terminal):
                chosen = self._unbounded(statistic, few, rate, samples, reasons, params)
                return chosen, reasons, None
        dim = int(jax.eval_shape(system.initial_state, key).shape[0])
        if u >= dim:
            reasons.append(
                f"every direction expands (u = {u} = the dimension): the shadowing family "
                "needs a stable direction"
            )
            return self._unbounded(statistic, few, rate, samples, reasons, params), reasons, None
        check = hyperbolicity(
            system,
            u,
            steps=min(5_000, pilot.steps),
            burn_in=0 if system.horizon is not None else 2_000,
            burn_out=min(2_000, pilot.steps),
            x0=None if x0 is None else (x0[0] if np.ndim(x0) == 2 else x0),
            key=jax.random.fold_in(key, 2),
        )
        reasons.append(f"deterministic chaos with u = {u}: {check.describe()}")
        if not check.hyperbolic:
            reasons.append(
                "the shadowing family would be heavy-tailed or biased: a method that needs no "
                "hyperbolicity"
            )
            if not few:
                raise ValueError(not_hyperbolic_refusal(system, params, check))
            share = max(1, 3 * (u + 1) // (2 * params.size))  # what shadowing would spend
            chosen = self._unbounded(statistic, few, rate, samples, reasons, params, share)
            return chosen, reasons, check
        if isinstance(statistic, TimeAverage) and not pilot.flow:
            estimator = self._far(u, pilot, reasons)
        else:
            estimator = self._shadowing(u, pilot, reasons, x0, system)
        return estimator, reasons, check

    def _orbit_layout(self, pilot: Pilot, reasons):
        """Segments of lambda_1 m = 0.2; orbits of at least 40 Lyapunov times each (the
        finite-orbit bias falls like 1/T), at least 8 of them (a calibrated spread)."""
        segment_steps = segment_steps_for(pilot)
        rate = max(pilot.leading_per_step, 1e-12)
        per_orbit = max(int(40 / rate), 10 * segment_steps)
        orbits = int(np.clip(self.steps // per_orbit, min(8, self.orbits), self.orbits))
        segments = max(2, self.steps // (orbits * segment_steps))
        reasons.append(
            f"segment_steps = {segment_steps} (lambda_1 x segment = 0.2, growth e^0.2); "
            f"{orbits} independent orbits of {segments} segments "
            f"({orbits * segments * segment_steps} steps in all) for a calibrated standard "
            "error"
        )
        return segment_steps, segments, orbits

    def _shadowing(self, u, pilot, reasons, x0, system):
        segment_steps, segments, orbits = self._orbit_layout(pilot, reasons)
        if x0 is not None and np.ndim(x0) == 1 and not system.stochastic:
            orbits = 1  # one given start of a deterministic system: one orbit
            segments = max(2, self.steps // segment_steps)
            reasons.append("one x0 given for a deterministic system: one orbit")
        return Shadowing(
            unstable_dim=u,
            segment_steps=segment_steps,
            segments=segments,
            burn_in=self.burn_in,
            orbits=orbits,
        )

    def _far(self, u, pilot, reasons):
        segment_steps, segments, orbits = self._orbit_layout(pilot, reasons)
        window = pilot.window(50)
        reasons.append(
            f"a map with a TimeAverage: FastAdjointResponse (the full response); window = "
            f"{window}, twice the observable's decorrelation time "
            f"({pilot.decorrelation_steps} steps)"
        )
        return FastAdjointResponse(
            unstable_dim=u,
            segment_steps=segment_steps,
            segments=segments,
            window=window,
            burn_in=self.burn_in,
            orbits=orbits,
        )

    def _path_kernel(self, system, components, params, pilot, x0, key, reasons):
        """PathKernel with alpha by pilot variance (``choose_alpha``) and, for a
        TimeAverage, the window from the decorrelation time."""
        settings = {"samples": self.samples or 10_000}
        if isinstance(components.statistic, TimeAverage):
            window = pilot.window(1000)
            settings = {
                "samples": self.orbits,
                "steps": max(10 * window, self.steps // self.orbits),
                "window": window,
                "burn_in": self.burn_in,
            }
            reasons.append(
                f"window = {window} steps, twice the observable's decorrelation time; "
                f"{self.orbits} independent orbits of {settings['steps']} steps"
            )
        alpha, reason = choose_alpha(system, components, params, x0, key, pilot, settings)
        reasons.append(reason)
        return PathKernel(alpha=alpha, **settings)

    def _unbounded(self, statistic, few, rate, samples, reasons, params, share=1):
        """FiniteDifference for a few parameters (eps 1 % of their scale), else
        TruncatedBackprop over one Lyapunov time (biased).

        A TimeAverage gets 16 x ``share`` runs of steps / 16 steps on each side. In place of
        the shadowing family ``share`` = 3 (u + 1) / 2p, its cost: u + 1 adjoint solves per
        orbit step, each a VJP of about 3 forward steps, against 2p forward runs of p
        central differences (measured, Lorenz-96 n = 20, u = 8: one Shadowing run of 400 000
        orbit steps took the time of 24 pairs of forward runs of 400 000 steps; the model
        says 13.5). eps stays 1 %: a larger step can leave the parameter's range (Henon's
        attractor ends near a = 1.43)."""
        timed = isinstance(statistic, TimeAverage)
        if few:
            values = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(params.values)])
            eps = float(f"{0.01 * max(1.0, float(np.sqrt(np.mean(values**2)))):.3g}")
            count = samples or (16 * share if timed else 1000)
            steps = max(1000, self.steps // 16) if timed else None
            spent = f" ({count} runs, the cost of the shadowing family)" if share > 1 else ""
            reasons.append(
                "no bounded adjoint applies (backprop would grow like e^{lambda_1 T}): "
                f"FiniteDifference with common random numbers, eps = {eps:.3g} (1 % of the "
                f"parameters' scale), for a few parameters{spent}"
            )
            return FiniteDifference(eps=eps, samples=count, steps=steps)
        truncation = max(1, int(round(1.0 / rate)))
        count = samples or (16 if timed else 1000)
        steps = max(10 * truncation, self.steps // count) if timed else None
        reasons.append(
            f"no bounded adjoint applies and there are many parameters: TruncatedBackprop over "
            f"one Lyapunov time ({truncation} steps), biased"
        )
        return TruncatedBackprop(samples=count, truncation=truncation, steps=steps)
