"""Kernel differentiation (likelihood ratio): no tangent or adjoint is propagated.

Finite depth T (``window=None``), x_{n+1} = f(x_n; theta) + s xi_n, x_0 ~ h_0:

    d/dtheta E[Phi(x_T)] = E[(Phi(x_T) - b) S] + E[d_theta Phi(x_T)],
    S = sum_{n<T} d_theta log p(x_{n+1} | x_n) + d_theta log h_0(x_0),

with b the sample mean of Phi (allowed because E[S] = 0). The score is one local VJP per step
with cotangent xi/s (see _noise.py), for every parameter at once. One pass: batch sums of
(Phi - c) S, S and their products give the estimate with b = the final sample mean (c is a
shift from a small pilot run, against cancellation); memory does not grow with ``samples``
(batches of ``batch`` samples under vmap).

Stationary (``window=W``), on long orbits after ``burn_in``:

    delta<Phi> ~ (1/L) sum_l S_{l-1} sum_{n=0}^{W} (Phi(x_{l+n}) - Phi-bar),

S_{l-1} the score of step l-1 -> l; each of ``samples`` independent orbits gives one
estimate, and their spread the standard error. Bias decays with W like the correlations;
the standard deviation grows like sqrt(W/L).

Nothing grows with T, so nothing explodes; the variance is about Var(Phi) sum_n E|d f|^2/s^2:
linear in T and proportional to 1/s^2 (expensive for small noise).
A. Ni, "No-propagate algorithm for linear responses of random chaotic systems",
arXiv:2308.07841; "Ergodic and foliated kernel-differentiation method", arXiv:2410.10138.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._system import _run, check_horizon, resolve_start
from ._base import (AbstractEstimator, Estimate, mean_and_stderr_from_sums,
                    tree_mean_and_stderr)
from ._rollout import batch_starts, sample_keys
from ._noise import (GAUSSIAN, check_initial_law, check_noisy, check_sampling, evaluate,
                     initial_score, sample_batches, step_score, takes_system)


def _tree_scale(tree, weight):
    return jax.tree_util.tree_map(lambda leaf: weight * leaf, tree)


def _tree_sum0(tree):
    return jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf, axis=0), tree)


@eqx.filter_jit
def _terminal_values(system, observable, starts, keys, steps: int):
    def one(x0, key):
        x, _ = _run(system, x0, key, jnp.asarray(0), steps)
        return evaluate(observable, x, system)

    return jax.vmap(one)(starts, keys)


@eqx.filter_jit
def _finite_depth_sums(system, observable, params, starts, keys, shift, steps: int):
    """Sums over a batch of h = (Phi - shift) S + d_theta Phi and of S, h^2, h S, S^2, Phi.

    One pass: with c = Phi-bar - shift known at the end, the estimate with baseline Phi-bar
    is g = h - c S, so sum g = A - c B and sum g^2 = C - 2 c D + c^2 E.
    """

    def one(x0, key):
        def layer(carry, t):
            x, score = carry
            xi = system.noise(key, t, x.shape[0])
            x_next, increment = step_score(system, params, t, x, xi)
            return (x_next, jax.tree_util.tree_map(jnp.add, score, increment)), None

        (x, score), _ = jax.lax.scan(layer, (x0, initial_score(system, params, x0)),
                                     jnp.arange(steps))
        phi = evaluate(observable, x, system)
        term = _tree_scale(score, phi - shift)
        if takes_system(observable):
            explicit = jax.grad(lambda v: observable(x, params.substitute(system, v)))(
                params.values)
            term = jax.tree_util.tree_map(jnp.add, term, explicit)
        return term, score, phi

    h, score, phis = jax.vmap(one)(starts, keys)
    mul = lambda a, b: jax.tree_util.tree_map(jnp.multiply, a, b)  # noqa: E731
    return {"A": _tree_sum0(h), "B": _tree_sum0(score), "C": _tree_sum0(mul(h, h)),
            "D": _tree_sum0(mul(h, score)), "E": _tree_sum0(mul(score, score)),
            "phi": jnp.sum(phis)}


@eqx.filter_jit
def _orbit_values(system, observable, x0, key, start, steps: int):
    def one(x, t):
        x = system.step(t, x, system.noise(key, t, x.shape[0]))
        return x, evaluate(observable, x, system)

    return jax.lax.scan(one, x0, start + jnp.arange(steps))[1]


@eqx.filter_jit
def _ergodic_term(system, params, x0, key, start, weights):
    """(1/L) sum_l weights_l S_{l-1}: the score of step l-1 -> l weighted by psi_l."""
    def one(carry, inputs):
        x, total = carry
        t, weight = inputs
        xi = system.noise(key, t, x.shape[0])
        x_next, score = step_score(system, params, t, x, xi)
        total = jax.tree_util.tree_map(lambda a, b: a + weight * b, total, score)
        return (x_next, total), None

    zero = jax.tree_util.tree_map(jnp.zeros_like, params.values)
    steps = weights.shape[0]
    (_, total), _ = jax.lax.scan(one, (x0, zero), (start + jnp.arange(steps), weights))
    return _tree_scale(total, 1.0 / steps)


def forward_window_sums(phis, window: int, count: int):
    """psi_l = sum_{n=0}^{W} (Phi_{l+n} - mean), l = 1..count, from Phi_1..Phi_{count+W}."""
    centred = phis - jnp.mean(phis[:count])
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(centred)])
    first = jnp.arange(count)
    return cumulative[first + window + 1] - cumulative[first]


class Kernel(AbstractEstimator):
    """Kernel-differentiation estimate; ``window=None``: E[Phi(x_T)] at depth ``steps``;
    ``window=W``: the stationary average on ``samples`` orbits of ``steps`` steps."""

    steps: int
    samples: int
    window: int | None = None
    burn_in: int = 1000
    batch: int = 4096
    noise: str = GAUSSIAN

    def __check_init__(self):
        check_sampling(self, "Kernel")
        if self.window is not None:
            if self.window >= self.steps:
                raise ValueError(f"window ({self.window}) must be smaller than steps "
                                 f"({self.steps})")

    def estimate(self, system, observable, params, x0, key):
        check_noisy(system, "Kernel")
        if self.window is None:
            return self._finite_depth(system, observable, params, x0, key)
        return self._stationary(system, observable, params, x0, key)

    def _finite_depth(self, system, observable, params, x0, key):
        began = time.perf_counter()
        check_horizon(system, self.steps)
        init_key, noise_key = jax.random.split(key)
        if x0 is None:
            check_initial_law(system, params, init_key)
            resolve_start(system, system.initial_state(init_key), init_key)
        else:
            x0, _ = resolve_start(system, x0, init_key)
        batches = sample_batches(self.samples, self.batch, params.size())
        pilot = min(self.samples, 1024)           # a shift for the sums, against cancellation
        shift = float(jnp.mean(_terminal_values(
            system, observable, batch_starts(system, x0, init_key, 0, pilot),
            sample_keys(noise_key, pilot), self.steps)))
        sums = None
        for first, size in batches:
            batch = _finite_depth_sums(system, observable, params,
                                       batch_starts(system, x0, init_key, first, size),
                                       sample_keys(noise_key, size, first), jnp.asarray(shift),
                                       self.steps)
            sums = batch if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch)
        count = self.samples
        baseline = float(sums["phi"]) / count
        c = baseline - shift
        first = jax.tree_util.tree_map(lambda a, b: a - c * b, sums["A"], sums["B"])
        second = jax.tree_util.tree_map(lambda cc, d, e: cc - 2 * c * d + c**2 * e,
                                        sums["C"], sums["D"], sums["E"])
        grad, variance, stderr = mean_and_stderr_from_sums(first, second, count)
        info = {"method": "Kernel", "steps": self.steps, "samples": count,
                "per_sample_std": jax.tree_util.tree_map(jnp.sqrt, variance),
                "batches": len(batches), "seconds": time.perf_counter() - began}
        return Estimate(baseline, grad, stderr, info)

    def _stationary(self, system, observable, params, x0, key):
        began = time.perf_counter()
        window, steps = self.window, self.steps
        check_horizon(system, self.burn_in + steps + window)
        init_key, noise_key = jax.random.split(key)
        terms, values = [], []
        for orbit in range(self.samples):
            orbit_key = jax.random.fold_in(noise_key, orbit)
            start = (batch_starts(system, x0, init_key, orbit, 1)[0] if x0 is None
                     else resolve_start(system, x0, init_key)[0])
            if orbit == 0:
                resolve_start(system, start, init_key)
            x, _ = _run(system, start, orbit_key, jnp.asarray(0), self.burn_in) \
                if self.burn_in else (start, None)
            phis = _orbit_values(system, observable, x, orbit_key, jnp.asarray(self.burn_in),
                                 steps + window)
            if not bool(jnp.all(jnp.isfinite(phis))):
                raise FloatingPointError(f"orbit {orbit} became NaN/inf")
            weights = forward_window_sums(phis, window, steps)
            terms.append(_ergodic_term(system, params, x, orbit_key, jnp.asarray(self.burn_in),
                                       weights))
            values.append(float(jnp.mean(phis[:steps])))
        grad, stderr = tree_mean_and_stderr(
            jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *terms))
        info = {"method": "Kernel", "steps": steps, "orbits": self.samples, "window": window,
                "seconds": time.perf_counter() - began}
        return Estimate(float(np.mean(values)), grad, stderr, info)
