"""Adjoint path-kernel: backpropagation damped at rate alpha, the damping undone by a kernel.

For x_{k+1} = f(x_k; theta) + s(x_k; theta) xi_k (Euler-Maruyama: f = x + F dt,
s = sigma sqrt(dt)) the pathwise perturbation of x_{k+1} is
delta_{k+1} = [f_* v_k + d_theta f] + [(grad s . v_k) + d_theta s] xi_k: a part that moves
the Gaussian's mean and a part that scales its noise. Split the mean part: (1 - a) of it is
carried on in the tangent v_{k+1}; the rest, a (f_* v_k + d_theta f), is a shift of the mean
of x_{k+1} given x_k, and its likelihood-ratio weight a (f_* v_k + d_theta f) . xi_k / s_k
restores it exactly (the noise part stays pathwise). The damping per step is
a = 1 - exp(-alpha dt) for a flow (about alpha dt, removing alpha dt v_k as in the SDE
papers, up to O(dt^2)) and a = 1 - exp(-alpha) for a map: alpha = 0 is plain
backpropagation, alpha above lambda_1 stops the explosion, alpha -> infinity is kernel
differentiation. In adjoint form (one backward pass, all parameters), nu the cotangent of v:

finite time, a cost along the path (``Terminal``, ``WindowAverage``): on the path
x_0 -> x_1 -> ... -> x_N, J = E[sum_{t=1}^{N} w_t Phi(x_t)] with w_t the window's weights
(``WindowAverage(phi, T, burn_in=B)``: N = B + T, w_t = 1/T for t > B, 0 before; a
``Terminal``: w = e_N), backwards from nu_N = w_N grad Phi(x_N),
    R_k = sum_{j=k+1}^{N} w_j (Phi(x_j) - b_j)      (the future cost the noise xi_k moves)
    m_k = (1 - a) nu_{k+1} + a R_k xi_k / s_k                      (cotangent of the mean)
    nu_k = f_*^T m_k + (grad s xi_k)^T nu_{k+1} + w_k grad Phi(x_k)      (the last for k >= 1)
    grad = sum_k [(d_theta f)^T m_k + (d_theta s xi_k)^T nu_{k+1}] + (d x_0/d theta)^T nu_0,
plus sum_t w_t d_theta Phi(x_t; theta) for a parametric observable. b_t, the mean of
Phi(x_t) over separate pilot samples, is a constant: allowed because the kernel term of
step k has mean zero given x_0 .. x_k (E[xi_k | x_0 .. x_k] = 0). A Terminal evaluates Phi
and its Jacobian at x_N only. A loss's cotangent comes from the same pilot, so a quadratic
loss is unbiased too. The path form is 4D-Var's trajectory misfit: alpha = 0 is its
adjoint (backpropagation), alpha above lambda_1 keeps that adjoint bounded;

stationary (``TimeAverage``, window W), from nu_N = 0 on an orbit of N + W steps, the same
recursion with R_k replaced by sum_{j=k+1}^{k+W} (Phi_j - Phi-bar), the forcing
grad Phi(x_k) added to nu_k, and grad averaged over k in [W, N - W).

Components without noise: where the step's noise scale has a zero entry, s_{k,i} = 0 (an
auxiliary state that accumulates a cost deterministically), the transition has no density
in that component and nothing can reweight it, so it is not damped: a_i = 0 and no kernel
term there (the division xi/s is skipped), a_i = a elsewhere. The Gaussian factorises over
components, so moving the noisy components' mean shifts alone into the kernel is exact.

A k'-component statistic runs the backward pass once per component, vmapped over the
components on the shared forward states. The finite-time estimator is unbiased for every
alpha. ``info.exploding`` flags adjoints that grew past 1e12 or overflowed (alpha too
small), instead of returning silent garbage.
A. Ni, "Adjoint path-kernel method for backpropagation and data assimilation in unstable
diffusions", arXiv:2507.21497; "Differentiating unstable diffusion", arXiv:2503.00718.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_real, check_samples
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
    resolve_horizon,
    tree_mean_and_stderr,
)
from ._layers import add_rest, assemble, rest_zeros, step_pullback
from ._noise import (
    AbstractKernelEstimator,
    check_orbits_finite,
    explicit_term,
    orbit_values,
    sample_batches,
    sum_over_batches,
    terminal_values,
)
from ._rollout import batch_starts, burn, rollout, sample_keys, sample_start, window_sums
from .evolution import step_weights

EXPLOSION = 1e12


class PathKernelInfo(AbstractInfo):
    """Diagnostics of PathKernel.

    Args:
        steps: the depth (Terminal), the path's length B + T (WindowAverage) or each
            orbit's length (TimeAverage).
        samples: samples (Terminal, WindowAverage) or independent orbits (TimeAverage).
        alpha: the damping rate; window: W (TimeAverage) else None.
        max_adjoint_norm: the largest |cotangent| met; exploding: it passed 1e12 or
            overflowed (alpha too small: the estimate is not meaningful).
        per_sample_std: spread of the per-sample terms (shaped like grad).
    """

    per_parameter = ("per_sample_std",)
    steps: int
    samples: int
    alpha: float
    window: int | None
    max_adjoint_norm: float
    exploding: bool
    per_sample_std: object


def _record(system, x0, key, start, steps: int):
    """(x_steps, states x_0 .. x_{steps-1}, noises xi_0 .. xi_{steps-1}) of one sample's
    ``steps`` steps from step ``start``. The backward pass reads the noise kept here instead
    of drawing it again: the draws are most of a small noisy network's step."""

    def one(x, t):
        xi = system.noise(key, t, x.shape[0])
        return system.step(t, x, xi), (x, xi)

    x_end, (states, noises) = jax.lax.scan(one, x0, start + jnp.arange(steps))
    return x_end, states, noises


def _adjoint_pass(system, params, states, noises, times, nu_end, forcing, weights, mask, damping):
    """Backward recursion over the stored states and noises (consecutive ``times``) for one
    component: (sum_k mask_k X_k^T mu_{k+1}, nu_0, max|mu|), with ``weights`` R_k and
    ``forcing`` the term added to nu_k (module doc). Components whose noise scale is zero at
    a step are not damped there (a_i = 0, no kernel term). A deep net's layer slices leave
    the scan as outputs (_layers.py)."""
    dim = states.shape[1]

    def back(carry, inputs):
        nu, grad, largest = carry
        t, x, xi, force, weight, include = inputs

        def mean_and_noise(current, y):
            return current.drift(t, y), current.diffusion(t, y) * xi

        std = jnp.broadcast_to(system.diffusion(t, x), (dim,))
        noisy = std != 0.0  # a component without noise has no density to reweight
        rate = jnp.where(noisy, damping, 0.0)
        kernel = jnp.where(noisy, damping * weight * xi / jnp.where(noisy, std, 1.0), 0.0)
        mean_cotangent = (1.0 - rate) * nu + kernel
        _, pullback = step_pullback(system, params, t, mean_and_noise, x)
        (back_x,), increment = pullback((mean_cotangent, nu))
        grad = add_rest(grad, increment, weight=include)
        largest = jnp.maximum(largest, jnp.linalg.norm(mean_cotangent))
        slices = [include * g for g in increment.slices]
        return (back_x + force, grad, largest), slices

    init = (nu_end, rest_zeros(params), jnp.linalg.norm(nu_end))
    (nu, rest, largest), slices = jax.lax.scan(
        back, init, (times, states, noises, forcing, weights, mask), reverse=True
    )
    return assemble(params, rest, slices, times[0]), nu, largest


class RunningCost(NamedTuple):
    """One sample's cost along its path as the backward pass reads it (k' components).

    nu_end: (k', dim) w_N grad Phi~(x_N); forcing: (N, k', dim), row k: w_k grad Phi~(x_k)
    (row 0 zero: x_0 is not scored); future: (N, k'), row k: R_k = sum_{j>k} w_j
    (Phi~(x_j) - b_j); value: (k,) sum_t w_t ravel Phi(x_t), the sample's raw statistic.
    """

    nu_end: jax.Array
    forcing: jax.Array
    future: jax.Array
    value: jax.Array


def _visited(states, x_end):
    """x_1 .. x_N from the stored x_0 .. x_{N-1} and x_N."""
    return jnp.concatenate([states[1:], x_end[None]])


def _running_cost(system, components, states, x_end, weights, baseline, terminal: bool):
    """The :class:`RunningCost` of J = sum_t w_t Phi~(x_t); ``baseline`` b: (k',) for a
    terminal cost (w = e_N: Phi and its Jacobian at x_N only), else (N, k')."""
    steps, dim = states.shape
    phi_of = lambda y: components(y, system)
    if terminal:
        return RunningCost(
            jax.jacrev(phi_of)(x_end),
            jnp.zeros((steps, components.count, dim)),
            jnp.broadcast_to(phi_of(x_end) - baseline, (steps, components.count)),
            components.raw(x_end, system),
        )
    visited = _visited(states, x_end)
    raws = jax.vmap(lambda y: components.raw(y, system))(visited)  # (N, k)
    phis = raws @ components.projection  # (N, k')
    gradients = weights[:, None, None] * jax.vmap(jax.jacrev(phi_of))(visited)  # (N, k', dim)
    costs = weights[:, None] * (phis - baseline)
    future = jnp.flip(jnp.cumsum(jnp.flip(costs, axis=0), axis=0), axis=0)
    forcing = jnp.concatenate([jnp.zeros_like(gradients[:1]), gradients[:-1]])
    return RunningCost(gradients[-1], forcing, future, weights @ raws)


def _explicit_along_path(components, params, system, visited, weights):
    """sum_t w_t d_theta Phi~(x_t; theta) for a ParametricObservable, leaves (k', ...): one
    reverse pass through the weighted sum."""

    def weighted(values):
        current = params.substitute(system, values)
        return weights @ jax.vmap(lambda y: components(y, current))(visited)

    return jax.jacrev(weighted)(params.values)


@sample_parallel
def _finite_time_terms(
    system,
    components,
    params,
    draw_keys,
    starts,
    keys,
    indices,
    weights,
    baseline,
    damping,
    terminal: bool,
    draw_x0: bool,
):
    """Per batch: the sums of the per-sample terms and of their squares, max|mu| and the sum
    of the samples' raw statistics, for J = sum_t w_t Phi~(x_t) (``weights`` w, N steps)."""
    steps = weights.shape[0]

    def one(draw_key, x0, key, index):
        sample = system.for_sample(index)
        if draw_x0:
            x0, pull_x0 = jax.vjp(
                lambda v: params.substitute(sample, v).initial_state(draw_key), params.values
            )
        x_end, states, noises = _record(sample, x0, key, 0, steps)
        cost = _running_cost(sample, components, states, x_end, weights, baseline, terminal)

        def component(nu_j, forcing_j, future_j):
            grad, nu0, largest = _adjoint_pass(
                sample,
                params,
                states,
                noises,
                jnp.arange(steps),
                nu_j,
                forcing_j,
                future_j,
                jnp.ones(steps),
                damping,
            )
            if draw_x0:
                grad = jax.tree_util.tree_map(jnp.add, grad, pull_x0(nu0)[0])
            return grad, largest

        grad, largest = jax.vmap(component, in_axes=(0, 1, 1))(
            cost.nu_end, cost.forcing, cost.future
        )
        if takes_system(components.statistic.observable):
            explicit = (
                explicit_term(components, params, sample, x_end)
                if terminal
                else _explicit_along_path(
                    components, params, sample, _visited(states, x_end), weights
                )
            )
            grad = jax.tree_util.tree_map(jnp.add, grad, explicit)
        return grad, jnp.max(largest), cost.value

    grads, largest, raws = jax.vmap(one)(*spread((draw_keys, starts, keys, indices)))
    sums = jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf, axis=0), grads)
    squares = jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf**2, axis=0), grads)
    return sums, squares, jnp.max(largest), jnp.sum(raws, axis=0)


@sample_parallel
def _path_values(system, components, starts, keys, indices, steps: int):
    """Phi~(x_t), t = 1 .. steps, of every sample (forward only), shape (samples, steps, k')."""

    def one(x0, key, index):
        return rollout(system.for_sample(index), components, x0, key, jnp.asarray(0), steps)[1]

    return jax.vmap(one)(*spread((starts, keys, indices)))


@sample_parallel
def _stationary_terms(
    system, components, params, starts, keys, start, steps: int, window: int, damping
):
    """Per orbit: the averaged adjoint term and max|mu| (vmapped)."""

    def orbit(x, key):
        _, states, noises = _record(system, x, key, start, steps + window)  # x_0 .. x_{N+W-1}
        phis = jax.vmap(lambda y: components(y, system))(states)  # (N+W, k')
        forcing = jax.vmap(jax.jacrev(lambda y: components(y, system)))(states[:steps])
        centred = phis - jnp.mean(phis[:steps], axis=0)
        k = jnp.arange(steps)
        weights = window_sums(centred, k + 1, window)  # sum_{j=k+1}^{k+W}
        mask = ((k >= window) & (k < steps - window)).astype(jnp.float64)

        def component(force_j, weight_j):
            grad, _, largest = _adjoint_pass(
                system,
                params,
                states[:steps],
                noises[:steps],
                start + k,
                jnp.zeros(x.shape[0]),
                force_j,
                weight_j,
                mask,
                damping,
            )
            return grad, largest

        grad, largest = jax.vmap(component, in_axes=(1, 1))(forcing, weights)
        count = jnp.sum(mask)
        return jax.tree_util.tree_map(lambda g: g / count, grad), jnp.max(largest)

    return jax.vmap(orbit)(*spread((starts, keys)))


class PathKernel(AbstractKernelEstimator):
    """Adjoint path-kernel estimate: damped backpropagation plus a kernel correction.

    Supports: Terminal, WindowAverage (a loss along paths from x_0: the path form of the
    module doc), TimeAverage (noisy systems). Components without noise are not damped. The
    standard error is the spread over samples (Terminal, WindowAverage) or independent
    orbits (TimeAverage); it covers the whole error of the finite-time forms (unbiased for
    every alpha), not the window bias of the stationary form, and is meaningless when
    ``info.exploding`` is set.

    Args:
        samples: Terminal, WindowAverage: independent samples (paths); TimeAverage:
            independent orbits; at least 2 (the standard error is their spread).
        alpha: the damping rate, per unit time for a flow, per step for a map (fraction
            1 - exp(-alpha dt) of the tangent moved into the kernel per step); 0 is
            backpropagation, alpha above lambda_1 stops the explosion. ``"auto"``: by the
            variance of short pilot runs among (1.5, 3, 6, 12) max(lambda_1, 0.1), lambda_1
            from a pilot spectrum; the choice is reported in ``info.auto``.
        steps: for a TimeAverage only, each orbit's length after the burn-in.
        window: for a TimeAverage only, W, the decorrelation window (default 10), or
            ``"auto"``: the observable's decorrelation time in a pilot run.
        burn_in: for a TimeAverage only, steps run before each orbit (default 1000).
        batch: at most this many samples under vmap at once (memory bound).
    """

    statistics = (Terminal, WindowAverage, TimeAverage)
    auto_fields = ("window", "alpha")
    samples: int
    alpha: float | str
    steps: int | None = None
    window: int | str | None = None
    burn_in: int | None = None
    batch: int = 4096

    def __check_init__(self):
        check_samples(self.samples)
        if self.alpha != "auto":
            check_real(self.alpha, "alpha", nonnegative=True)

    def _damping(self, system):
        """a = 1 - exp(-alpha * dt): the fraction of the tangent moved into the kernel."""
        alpha = float(self.alpha)  # resolved: not "auto"
        return jnp.asarray(-np.expm1(-alpha * (system.time_step or 1.0)))

    def _finite(self, system, components, params, x0, key, cotangent):
        """The finite-time form (Terminal, WindowAverage): module doc."""
        horizon = resolve_horizon(components.statistic, self)
        steps, terminal = horizon.steps, horizon.kind == "terminal"
        weights = step_weights(horizon)
        check_horizon(system, steps)
        init_key, noise_key = jax.random.split(key)
        draw_x0 = x0 is None
        x0 = sample_start(system, x0, init_key)
        pilot = min(self.samples, 1024)  # baseline b (and loss cotangent) from other samples
        raw = components.with_projection(jnp.eye(components.projection.shape[0]))
        pilot_starts = batch_starts(system, x0, init_key, self.samples, pilot)
        pilot_keys = sample_keys(noise_key, pilot, self.samples)
        if terminal:
            pilot_raw = terminal_values(system, raw, pilot_starts, pilot_keys, steps)
            components = project(components, cotangent, jnp.mean(pilot_raw, axis=0))
        else:  # Phi(x_t), t = 1 .. N: (pilot, N, k)
            indices = self.samples + jnp.arange(pilot)
            pilot_raw = _path_values(system, raw, pilot_starts, pilot_keys, indices, steps)
            components = project(components, cotangent, weights @ jnp.mean(pilot_raw, axis=0))
        baseline = jnp.mean(pilot_raw @ components.projection, axis=0)  # b_N or b_t
        dim = batch_starts(system, x0, init_key, 0, 1).shape[1]
        path = 0 if terminal else steps * components.count * (dim + 1)  # gradients, R_k
        batches = sample_batches(
            self.samples, self.batch, params.size * components.count + 2 * steps * dim + path
        )  # per sample: the parameters' sums, the states and noises kept

        def batch_sums(first, count):
            return _finite_time_terms(
                system,
                components,
                params,
                sample_keys(init_key, count, first),
                batch_starts(system, x0, init_key, first, count),
                sample_keys(noise_key, count, first),
                first + jnp.arange(count),
                weights,
                baseline,
                self._damping(system),
                terminal,
                draw_x0,
            )

        def combine(a, b):
            add = functools.partial(jax.tree_util.tree_map, jnp.add)
            return add(a[0], b[0]), add(a[1], b[1]), jnp.maximum(a[2], b[2]), a[3] + b[3]

        total = sum_over_batches(batch_sums, self.samples, batches[0][1], combine)
        assert total is not None  # samples >= 1
        sums, squares, largest, raw_total = total
        n = self.samples
        grad, variance, stderr = mean_and_stderr_from_sums(sums, squares, n)
        value = raw_total / n
        extras = {"std": jax.tree_util.tree_map(jnp.sqrt, variance), "largest": largest}
        return Terms(value, grad, stderr, jnp.all(jnp.isfinite(value)), extras)

    def _stationary(self, system, components, params, x0, key, cotangent):
        if self.steps is None:
            raise ValueError("PathKernel needs steps= for a TimeAverage: each orbit's length")
        window = 10 if self.window is None else int(self.window)  # resolved: not "auto"
        if 2 * window >= self.steps:
            raise ValueError(
                f"window ({window}) must be smaller than steps / 2 "
                f"({self.steps}): the estimate drops W steps at both ends"
            )
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
        # Phi(x_0) .. Phi(x_{N-1}): the window the adjoint terms use (and centre on)
        first = jax.vmap(lambda y: raw(y, system))(starts)[:, None]
        later = orbit_values(system, raw, starts, keys, jnp.asarray(burn_in), steps - 1)
        raw_values = jnp.concatenate([first, later], axis=1)
        value = jnp.mean(raw_values, axis=(0, 1))
        components = project(components, cotangent, value)  # same orbits' value
        per_batch = max(1, 2**24 // (2 * (steps + window) * starts.shape[1] * components.count))
        grads, largest = [], jnp.asarray(0.0)
        for first in range(0, orbits, per_batch):
            chunk = slice(first, min(orbits, first + per_batch))
            grad, big = _stationary_terms(
                system,
                components,
                params,
                starts[chunk],
                keys[chunk],
                jnp.asarray(burn_in),
                steps,
                window,
                self._damping(system),
            )
            grads.append(grad)
            largest = jnp.maximum(largest, jnp.max(big))
        terms = jax.tree_util.tree_map(lambda *leaves: jnp.concatenate(leaves), *grads)
        grad, stderr = tree_mean_and_stderr(terms)
        per_orbit_std = jax.tree_util.tree_map(lambda s: s * np.sqrt(orbits), stderr)
        extras = {"std": per_orbit_std, "largest": largest, "raw_values": raw_values}
        return Terms(value, grad, stderr, jnp.all(jnp.isfinite(raw_values)), extras)

    def finish(self, terms, system, components, params, x0, key):
        if isinstance(components.statistic, TimeAverage):
            burn_in = DEFAULT_BURN_IN if self.burn_in is None else self.burn_in
            check_orbits_finite(terms, burn_in)
            assert self.steps is not None  # checked by the computation
            steps, window = self.steps, 10 if self.window is None else int(self.window)
        else:
            steps, window = components.statistic.horizon, None
            assert steps is not None  # a Terminal statistic
        largest = float(terms.extras["largest"])
        info = self._info(steps, self.samples, window, largest, terms.extras["std"])
        return Estimate(np.asarray(terms.value), terms.grad, terms.stderr, info)

    def _info(self, steps, samples, window, largest, per_sample_std):
        exploding = bool(not np.isfinite(largest) or largest > EXPLOSION)
        warning = None
        if exploding:
            warning = (
                f"the adjoint grew to {largest:.3g}: alpha={self.alpha} is too small to "
                "stop the explosion (take alpha above the top Lyapunov exponent); the "
                "estimate is not meaningful"
            )
        return PathKernelInfo(
            method="PathKernel",
            seconds=0.0,
            warning=warning,
            steps=steps,
            samples=samples,
            alpha=float(self.alpha),
            window=window,
            max_adjoint_norm=largest,
            exploding=exploding,
            per_sample_std=per_sample_std,
        )
