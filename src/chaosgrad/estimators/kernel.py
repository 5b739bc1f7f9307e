"""Kernel differentiation (likelihood ratio): no tangent or adjoint is propagated.

Finite depth (``Terminal(phi, T)``), x_{n+1} = f(x_n; theta) + s xi_n, x_0 ~ h_0:

    d/dtheta E[Phi(x_T)] = E[(Phi(x_T) - b) S] + E[d_theta Phi(x_T)],
    S = sum_{n<T} d_theta log p(x_{n+1} | x_n) + d_theta log h_0(x_0),

with b the sample mean of Phi (allowed because E[S] = 0). The score is one local VJP per step
with cotangent xi/s (see _noise.py), for every parameter at once. One pass: batch sums of
(Phi - c) S, S and their products give the estimate with b = the final sample mean (c is a
shift from a pilot run on the first samples, against cancellation); memory does not grow
with ``samples`` (batches of ``batch`` samples under vmap).

Stationary (``TimeAverage``), on ``samples`` independent orbits (vmapped) after ``burn_in``:

    delta<Phi> ~ (1/L) sum_l S_{l-1} sum_{n=0}^{W} (Phi(x_{l+n}) - Phi-bar),

S_{l-1} the score of step l-1 -> l; each orbit gives one estimate, and their spread the
standard error. Bias decays with W like the correlations; the standard deviation grows like
sqrt(W/L).

Path form (``WindowAverage(phi, T, burn_in=B)``), a loss along a path from x_0 (a
trajectory misfit, 4D-Var): every step's score weighs every later window term,

    d/dtheta E[(1/T) sum_{t=B+1}^{B+T} Phi(x_t)]
        = E[ sum_{l=0}^{B+T-1} S_l (1/T) sum_{t > l, t > B} (Phi(x_t) - b_t) ],

S_l the score of step l -> l+1 and b_t the sample mean of Phi(x_t) at time t (allowed
because E[S_l | x_0..x_l] = 0); a ``ParametricObservable`` Phi(x; theta) (a trained readout)
adds its own derivative at the path's states, E[(1/T) sum_{t>B} d_theta Phi(x_t; theta)].
Sample i runs ``system.for_sample(i)`` (per-sample input sequences). One pass stores
Phi(x_t) of every sample (samples x (B+T) numbers), the reverse cumulative sums give the
weights, and a second pass sums the weighted scores. The variance grows like the window's
length: each score meets all later terms.

Nothing grows with T, so nothing explodes; the variance is about Var(Phi) sum_n E|d f|^2/s^2:
linear in T and proportional to 1/s^2 (expensive for small noise).
A. Ni, "No-propagate algorithm for linear responses of random chaotic systems",
arXiv:2308.07841; "Ergodic and foliated kernel-differentiation method", arXiv:2410.10138.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_samples
from .._system import check_horizon
from ..parallel import sample_parallel, spread
from ..statistics import Terminal, TimeAverage, WindowAverage, takes_system
from ._base import (
    DEFAULT_BURN_IN,
    AbstractInfo,
    Estimate,
    Terms,
    mean_and_stderr_from_sums,
    project,
    tree_mean_and_stderr,
)
from ._layers import accumulate
from ._noise import (
    AbstractKernelEstimator,
    check_initial_law,
    check_noise_free_drift,
    check_noisy,
    check_orbits_finite,
    explicit_term,
    orbit_values,
    path_score,
    sample_batches,
    step_score,
    sum_over_batches,
    terminal_values,
)
from ._rollout import batch_starts, burn, sample_keys, sample_start, window_sums


class KernelInfo(AbstractInfo):
    """Diagnostics of Kernel.

    Args:
        steps: the depth (Terminal), the path's length B + T (WindowAverage) or each
            orbit's length (TimeAverage).
        samples: samples (Terminal) or independent orbits (TimeAverage).
        window: the decorrelation window W (TimeAverage), else None.
        per_sample_std: spread of the per-sample terms (shaped like grad).
        batches: how many vmapped batches the samples were run in.
    """

    per_parameter = ("per_sample_std",)
    steps: int
    samples: int
    window: int | None
    per_sample_std: object
    batches: int


def _tree_sum0(tree):
    return jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf, axis=0), tree)


def _outer(weights, tree):
    return jax.tree_util.tree_map(
        lambda leaf: weights.reshape(weights.shape + (1,) * leaf.ndim) * leaf, tree
    )


@sample_parallel
def _finite_depth_sums(system, components, params, starts, keys, indices, shift, steps: int):
    """Sums over a batch of h = (Phi~ - shift) S + d_theta Phi~ and of S, h^2, h S, S^2, Phi~.

    One pass: with c = Phi~-bar - shift known at the end, the estimate with baseline Phi~-bar
    is g = h - c S, so sum g = A - c B and sum g^2 = C - 2 c D + c^2 E.
    """

    def one(x0, key, index):
        sample = system.for_sample(index)
        x, score = path_score(sample, params, x0, key, steps)
        phi = components(x, sample)
        term = _outer(phi - shift, score)
        if takes_system(components.statistic.observable):
            term = jax.tree_util.tree_map(
                jnp.add, term, explicit_term(components, params, sample, x)
            )
        return term, score, phi, components.raw(x, sample)

    h, score, phis, raws = jax.vmap(one)(*spread((starts, keys, indices)))
    mul = lambda a, b: jax.tree_util.tree_map(  # noqa: E731
        lambda u, v: u * v[:, None] if u.ndim > v.ndim else u * v, a, b
    )
    return {
        "A": _tree_sum0(h),
        "B": _tree_sum0(score),
        "C": _tree_sum0(mul(h, h)),
        "D": _tree_sum0(mul(h, score)),
        "E": _tree_sum0(mul(score, score)),
        "phi": jnp.sum(phis, axis=0),
        "raw": jnp.sum(raws, axis=0),
    }


@sample_parallel
def _ergodic_terms(system, params, starts, keys, start, weights, components=None, explicit=None):
    """Per orbit: (1/L) sum_l [weights_l (x) S_{l-1} + explicit_l d_theta Phi~(x_l)], S_{l-1}
    the score of step l-1 -> l; orbit i runs ``system.for_sample(i)``. The second term (a
    ParametricObservable's own dependence on theta, at the orbit's states) only with
    ``explicit``, the per-step weights (L,)."""

    def orbit(x0, key, psi, index):
        sample = system.for_sample(index)

        def one(carry, inputs):
            x, total = carry
            t, weight, own = inputs
            xi = sample.noise(key, t, x.shape[0])
            x_next, score = step_score(sample, params, t, x, xi)
            total = accumulate(total, score, params, leading=1, weight=weight)
            if explicit is not None:
                direct = explicit_term(components, params, sample, x_next)
                total = jax.tree_util.tree_map(lambda a, d: a + own * d, total, direct)
            return (x_next, total), None

        zero = params.zeros((psi.shape[1],))
        steps = psi.shape[0]
        own = jnp.zeros(steps) if explicit is None else explicit
        (_, total), _ = jax.lax.scan(one, (x0, zero), (start + jnp.arange(steps), psi, own))
        return jax.tree_util.tree_map(lambda leaf: leaf / steps, total)

    indices = jnp.arange(starts.shape[0])
    return jax.vmap(orbit)(*spread((starts, keys, weights, indices)))


class Kernel(AbstractKernelEstimator):
    """Kernel-differentiation (likelihood-ratio) estimate: nothing propagates.

    Supports: Terminal (finite depth), TimeAverage (stationary, noisy systems),
    WindowAverage (a loss along paths from x_0: the path form of the module doc). The
    standard error is the spread over samples (Terminal, WindowAverage) or over independent
    orbits (TimeAverage); it does not cover the window bias of the stationary form
    (correlations beyond W steps).

    Args:
        samples: Terminal, WindowAverage: independent samples (paths); TimeAverage:
            independent orbits; at least 2 (the standard error is their spread).
        steps: for a TimeAverage only, each orbit's length after the burn-in.
        window: for a TimeAverage only, W, the decorrelation window (default 10), or
            ``"auto"``: the observable's decorrelation time in a pilot run (autocorrelation
            below 0.05), reported in ``info.auto``.
        burn_in: for a TimeAverage only, steps run before each orbit (default 1000).
        batch: at most this many samples under vmap at once (memory bound; Terminal only:
            the path form keeps every sample's path of Phi values).
    """

    statistics = (Terminal, TimeAverage, WindowAverage)
    auto_fields = ("window",)
    samples: int
    steps: int | None = None
    window: int | str | None = None
    burn_in: int | None = None
    batch: int = 4096

    def __check_init__(self):
        check_samples(self.samples)

    def resolve(self, system, components, params, x0, key):
        statistic = components.statistic
        if not isinstance(statistic, TimeAverage) and x0 is None:
            check_noisy(system, "Kernel")
            path = isinstance(statistic, WindowAverage)
            check_initial_law(system, params, jax.random.split(key)[0], density_used=not path)
        if system.stochastic:
            start = sample_start(system, x0, jax.random.split(key)[0])
            if start is None:
                start = system.initial_state(jax.random.split(key)[0])
            start = start[0] if start.ndim == 2 else start
            check_noise_free_drift(system, params, start, "Kernel")
        return super().resolve(system, components, params, x0, key)

    def terms(self, system, components, params, x0, key, cotangent):
        if isinstance(components.statistic, WindowAverage):
            return self._path(system, components, params, x0, key, cotangent)
        return super().terms(system, components, params, x0, key, cotangent)

    def _path(self, system, components, params, x0, key, cotangent):
        """The path form of a WindowAverage (module doc)."""
        statistic = components.statistic
        skip, total = statistic.skip, statistic.horizon
        check_horizon(system, total)
        init_key, noise_key = jax.random.split(key)
        x0 = sample_start(system, x0, init_key)
        keys = sample_keys(noise_key, self.samples)
        starts = batch_starts(system, x0, init_key, 0, self.samples)
        raw = components.with_projection(jnp.eye(components.projection.shape[0]))
        raw_values = orbit_values(system, raw, starts, keys, jnp.asarray(0), total)
        value = jnp.mean(raw_values[:, skip:], axis=(0, 1))
        components = project(components, cotangent, value)
        phis = raw_values @ components.projection  # row t - 1: Phi(x_t), t = 1 .. B + T
        centred = (phis - jnp.mean(phis, axis=0)).at[:, :skip].set(0.0)
        later = jnp.flip(jnp.cumsum(jnp.flip(centred, axis=1), axis=1), axis=1)
        scale = total / (total - skip)  # _ergodic_terms divides by B + T
        explicit = None
        if takes_system(statistic.observable):  # + (1/T) sum_{t>B} d_theta Phi(x_t; theta)
            explicit = jnp.where(jnp.arange(1, total + 1) > skip, scale, 0.0)
        terms = _ergodic_terms(
            system, params, starts, keys, jnp.asarray(0), later * scale, components, explicit
        )
        grad, stderr = tree_mean_and_stderr(terms)
        per_sample_std = jax.tree_util.tree_map(lambda s: s * np.sqrt(self.samples), stderr)
        finite = jnp.all(jnp.isfinite(raw_values))
        return Terms(value, grad, stderr, finite, {"std": per_sample_std, "raw_values": raw_values})

    def _finite(self, system, components, params, x0, key, cotangent):
        steps = components.statistic.steps
        check_horizon(system, steps)
        init_key, noise_key = jax.random.split(key)
        x0 = sample_start(system, x0, init_key)
        pilot = min(self.samples, 1024)  # a shift for the sums (and the loss cotangent)
        raw = components.with_projection(jnp.eye(components.projection.shape[0]))
        pilot_raw = terminal_values(
            system,
            raw,
            batch_starts(system, x0, init_key, 0, pilot),
            sample_keys(noise_key, pilot),
            steps,
        )
        components = project(components, cotangent, jnp.mean(pilot_raw, axis=0))
        shift = jnp.mean(pilot_raw @ components.projection, axis=0)
        batches = sample_batches(self.samples, self.batch, params.size * components.count)

        def batch_sums(first, size):
            return _finite_depth_sums(
                system,
                components,
                params,
                batch_starts(system, x0, init_key, first, size),
                sample_keys(noise_key, size, first),
                first + jnp.arange(size),
                shift,
                steps,
            )

        sums = sum_over_batches(batch_sums, self.samples, batches[0][1])
        assert sums is not None  # samples >= 1
        count = self.samples
        c = sums["phi"] / count - shift

        def lead(leaf, v):
            return v.reshape(v.shape + (1,) * (leaf.ndim - 1))

        first_sum = jax.tree_util.tree_map(lambda a, b: a - lead(a, c) * b, sums["A"], sums["B"])
        second = jax.tree_util.tree_map(
            lambda cc, d, e: cc - 2 * lead(cc, c) * d + lead(cc, c) ** 2 * e,
            sums["C"],
            sums["D"],
            sums["E"],
        )
        grad, variance, stderr = mean_and_stderr_from_sums(first_sum, second, count)
        value = sums["raw"] / count
        per_sample_std = jax.tree_util.tree_map(jnp.sqrt, variance)
        return Terms(value, grad, stderr, jnp.all(jnp.isfinite(value)), {"std": per_sample_std})

    def _stationary(self, system, components, params, x0, key, cotangent):
        if self.steps is None:
            raise ValueError("Kernel needs steps= for a TimeAverage: each orbit's length")
        window = 10 if self.window is None else int(self.window)  # resolved: not "auto"
        if window >= self.steps:
            raise ValueError(f"window ({window}) must be smaller than steps ({self.steps})")
        burn_in = DEFAULT_BURN_IN if self.burn_in is None else self.burn_in
        steps, orbits = self.steps, self.samples
        check_horizon(system, burn_in + steps + window)
        init_key, noise_key = jax.random.split(key)
        x0 = sample_start(system, x0, init_key)
        keys = sample_keys(noise_key, orbits)
        starts = burn(
            system, batch_starts(system, x0, init_key, 0, orbits), keys, jnp.arange(orbits), burn_in
        )
        raw = components.with_projection(jnp.eye(components.projection.shape[0]))
        raw_values = orbit_values(system, raw, starts, keys, jnp.asarray(burn_in), steps + window)
        value = jnp.mean(raw_values[:, :steps], axis=(0, 1))
        components = project(components, cotangent, value)  # same orbits' value
        phis = raw_values @ components.projection
        centred = phis - jnp.mean(phis[:, :steps], axis=1, keepdims=True)
        weights = jax.vmap(lambda c: window_sums(c, jnp.arange(steps), window + 1))(centred)
        terms = _ergodic_terms(system, params, starts, keys, jnp.asarray(burn_in), weights)
        grad, stderr = tree_mean_and_stderr(terms)
        per_orbit_std = jax.tree_util.tree_map(lambda s: s * np.sqrt(orbits), stderr)
        finite = jnp.all(jnp.isfinite(raw_values))
        return Terms(value, grad, stderr, finite, {"std": per_orbit_std, "raw_values": raw_values})

    def finish(self, terms, system, components, params, x0, key):
        stationary = isinstance(components.statistic, TimeAverage)
        if isinstance(components.statistic, WindowAverage):
            check_orbits_finite(terms, 1)
            steps, window, batches = components.statistic.horizon, None, 1
        elif stationary:
            check_orbits_finite(
                terms, DEFAULT_BURN_IN + 1 if self.burn_in is None else self.burn_in + 1
            )
            assert self.steps is not None  # checked by the computation
            steps, window, batches = self.steps, 10 if self.window is None else int(self.window), 1
        else:
            steps, window = components.statistic.horizon, None
            assert steps is not None  # a Terminal statistic
            batches = len(sample_batches(self.samples, self.batch, params.size * components.count))
        info = KernelInfo(
            method="Kernel",
            seconds=0.0,
            warning=None,
            steps=steps,
            samples=self.samples,
            window=window,
            per_sample_std=terms.extras["std"],
            batches=batches,
        )
        return Estimate(np.asarray(terms.value), terms.grad, terms.stderr, info)
