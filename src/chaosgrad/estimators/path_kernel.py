"""Adjoint path-kernel: backpropagation damped at rate alpha, the damping undone by a kernel.

For x_{k+1} = f(x_k; theta) + s(x_k; theta) xi_k (Euler-Maruyama: f = x + F dt,
s = sigma sqrt(dt)) the pathwise perturbation of x_{k+1} is
w_k = [f_* v_k + d_theta f] + [(grad s . v_k) + d_theta s] xi_k: a part that moves the
Gaussian's mean and a part that scales its noise. Split the mean part: (1 - a) of it is
carried on in the tangent v_{k+1}; the rest, a (f_* v_k + d_theta f), is a shift of the mean
of x_{k+1} given x_k, and its likelihood-ratio weight a (f_* v_k + d_theta f) . xi_k / s_k
restores it exactly (the noise part stays pathwise). The damping per step is
a = 1 - exp(-alpha dt) for a flow (about alpha dt, removing alpha dt v_k as in the SDE
papers, up to O(dt^2)) and a = 1 - exp(-alpha) for a map: alpha = 0 is plain
backpropagation, alpha above lambda_1 stops the explosion, alpha -> infinity is kernel
differentiation. In adjoint form (one backward pass, all parameters), nu the cotangent of v:

finite time, terminal cost (``window=None``): nu_T = grad Phi(x_T),
    m_k = (1 - a) nu_{k+1} + a (Phi(x_T) - b) xi_k / s_k           (cotangent of the mean)
    nu_k = f_*^T m_k + (grad s xi_k)^T nu_{k+1},
    grad = sum_k [(d_theta f)^T m_k + (d_theta s xi_k)^T nu_{k+1}] + (d x_0/d theta)^T nu_0;

stationary (``window=W``), from nu_N = 0 on an orbit of N + W steps, the same recursion
with the weight (Phi(x_T) - b) replaced by sum_{j=k+1}^{k+W} (Phi_j - Phi-bar), the forcing
grad Phi(x_k) added to nu_k, and grad averaged over k in [W, N - W).

b is any constant (the kernel term has mean zero); it is the mean of Phi from a pilot run
on separate samples, so the finite-time estimator is unbiased for every alpha.
``info["exploding"]`` flags adjoints that grew past 1e12 or overflowed (alpha too small),
instead of returning silent garbage.
A. Ni, "Adjoint path-kernel method for backpropagation and data assimilation in unstable
diffusions", arXiv:2507.21497; "Differentiating unstable diffusion", arXiv:2503.00718.
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
from ._noise import (GAUSSIAN, check_noisy, check_sampling, evaluate, sample_batches,
                     takes_system)
from ._rollout import batch_starts, sample_keys
from .kernel import _terminal_values

EXPLOSION = 1e12


def _adjoint_pass(system, params, states, key, times, nu_end, forcing, weights, mask, damping):
    """Backward recursion over the stored states: (sum_k mask_k X_k^T mu_{k+1}, nu_0, max|mu|)."""
    dim = states.shape[1]

    def back(carry, inputs):
        nu, grad, largest = carry
        t, x, force, weight, include = inputs
        xi = system.noise(key, t, dim)

        def mean_and_noise(y, values):
            current = params.substitute(system, values)
            return current.drift(t, y), current.diffusion(t, y) * xi

        std = jnp.broadcast_to(system.diffusion(t, x), (dim,))
        mean_cotangent = (1.0 - damping) * nu + damping * weight * xi / std
        _, pullback = jax.vjp(mean_and_noise, x, params.values)
        back_x, back_p = pullback((mean_cotangent, nu))
        grad = jax.tree_util.tree_map(lambda g, b: g + include * b, grad, back_p)
        largest = jnp.maximum(largest, jnp.linalg.norm(mean_cotangent))
        return (back_x + force, grad, largest), None

    zero = jax.tree_util.tree_map(jnp.zeros_like, params.values)
    init = (nu_end, zero, jnp.linalg.norm(nu_end))
    (nu, grad, largest), _ = jax.lax.scan(back, init, (times, states, forcing, weights, mask),
                                          reverse=True)
    return grad, nu, largest


@eqx.filter_jit
def _finite_time_terms(system, observable, params, draw_keys, starts, keys, baseline, steps: int,
                       damping, draw_x0: bool):
    dim = starts.shape[1]

    def one(draw_key, x0, key):
        if draw_x0:
            x0, pull_x0 = jax.vjp(lambda v: params.substitute(system, v).initial_state(draw_key),
                                  params.values)
        x_end, path = _run(system, x0, key, jnp.asarray(0), steps)
        states = jnp.concatenate([x0[None], path[:-1]])
        phi, nu_end = jax.value_and_grad(lambda y: evaluate(observable, y, system))(x_end)
        weights = jnp.full(steps, phi - baseline)
        grad, nu0, largest = _adjoint_pass(
            system, params, states, key, jnp.arange(steps), nu_end, jnp.zeros((steps, dim)),
            weights, jnp.ones(steps), damping)
        if draw_x0:
            grad = jax.tree_util.tree_map(jnp.add, grad, pull_x0(nu0)[0])
        if takes_system(observable):
            explicit = jax.grad(lambda v: observable(x_end, params.substitute(system, v)))(
                params.values)
            grad = jax.tree_util.tree_map(jnp.add, grad, explicit)
        return grad, largest, phi

    grads, largest, phis = jax.vmap(one)(draw_keys, starts, keys)
    sums = jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf, axis=0), grads)
    squares = jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf**2, axis=0), grads)
    return sums, squares, jnp.max(largest), jnp.sum(phis)


@eqx.filter_jit
def _stationary_term(system, observable, params, x, key, start, steps: int, window: int,
                     damping):
    total = steps + window
    x_end, path = _run(system, x, key, start, total)
    states = jnp.concatenate([x[None], path[:-1]])                 # x_0 .. x_{N+W-1}
    phis = jax.vmap(lambda y: evaluate(observable, y, system))(states)
    forcing = jax.vmap(jax.grad(lambda y: evaluate(observable, y, system)))(states[:steps])
    centred = phis - jnp.mean(phis[:steps])
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(centred)])
    k = jnp.arange(steps)
    weights = cumulative[k + window + 1] - cumulative[k + 1]      # sum_{j=k+1}^{k+W}
    mask = ((k >= window) & (k < steps - window)).astype(jnp.float64)
    grad, _, largest = _adjoint_pass(system, params, states[:steps], key, start + k,
                                     jnp.zeros(x.shape[0]), forcing, weights, mask, damping)
    count = jnp.sum(mask)
    return jax.tree_util.tree_map(lambda g: g / count, grad), jnp.mean(phis[:steps]), largest


class PathKernel(AbstractEstimator):
    """Adjoint path-kernel estimate; ``window=None``: E[Phi(x_T)] at ``steps``; ``window=W``:
    the stationary average on ``samples`` orbits of ``steps`` steps after ``burn_in``.

    ``alpha`` is a rate per unit time for a flow, per step for a map (damping fraction
    1 - exp(-alpha dt) per step).
    """

    steps: int
    samples: int
    alpha: float
    window: int | None = None
    burn_in: int = 1000
    batch: int = 4096
    noise: str = GAUSSIAN

    def __check_init__(self):
        check_sampling(self, "PathKernel")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.window is not None:
            if 2 * self.window >= self.steps:
                raise ValueError(f"window ({self.window}) must be smaller than steps / 2 "
                                 f"({self.steps}): the estimate drops W steps at both ends")

    def _damping(self, system):
        """a = 1 - exp(-alpha * dt): the fraction of the tangent moved into the kernel per step."""
        return float(-np.expm1(-self.alpha * (system.time_step or 1.0)))

    def estimate(self, system, observable, params, x0, key):
        check_noisy(system, "PathKernel")
        if self.window is None:
            return self._finite_time(system, observable, params, x0, key)
        return self._stationary(system, observable, params, x0, key)

    def _finite_time(self, system, observable, params, x0, key):
        began = time.perf_counter()
        check_horizon(system, self.steps)
        init_key, noise_key = jax.random.split(key)
        draw_x0 = x0 is None
        if x0 is not None:
            x0, _ = resolve_start(system, x0, init_key)
        else:
            resolve_start(system, system.initial_state(init_key), init_key)
        batches = sample_batches(self.samples, self.batch, params.size())
        pilot = min(self.samples, 1024)   # baseline b from samples not used afterwards
        baseline = float(jnp.mean(_terminal_values(
            system, observable, batch_starts(system, x0, init_key, self.samples, pilot),
            sample_keys(noise_key, pilot, self.samples), self.steps)))
        sums = squares = None
        largest, phi_total = 0.0, 0.0
        for first, count in batches:
            draw_keys = sample_keys(init_key, count, first)
            s, q, big, phi_sum = _finite_time_terms(
                system, observable, params, draw_keys,
                batch_starts(system, x0, init_key, first, count),
                sample_keys(noise_key, count, first), jnp.asarray(baseline), self.steps,
                self._damping(system), draw_x0)
            sums = s if sums is None else jax.tree_util.tree_map(jnp.add, sums, s)
            squares = q if squares is None else jax.tree_util.tree_map(jnp.add, squares, q)
            largest = max(largest, float(big))
            phi_total += float(phi_sum)
        n = self.samples
        grad, variance, stderr = mean_and_stderr_from_sums(sums, squares, n)
        return Estimate(phi_total / n, grad, stderr,
                        self._info(largest, began, per_sample_std=jax.tree_util.tree_map(
                            jnp.sqrt, variance)))

    def _stationary(self, system, observable, params, x0, key):
        began = time.perf_counter()
        check_horizon(system, self.burn_in + self.steps + self.window)
        init_key, noise_key = jax.random.split(key)
        terms, values, largest = [], [], 0.0
        for orbit in range(self.samples):
            orbit_key = jax.random.fold_in(noise_key, orbit)
            start = (batch_starts(system, None, init_key, orbit, 1)[0] if x0 is None
                     else x0)
            start, _ = resolve_start(system, start, init_key)
            x = _run(system, start, orbit_key, jnp.asarray(0), self.burn_in)[0] \
                if self.burn_in else start
            grad, value, big = _stationary_term(system, observable, params, x, orbit_key,
                                                jnp.asarray(self.burn_in), self.steps,
                                                self.window, self._damping(system))
            terms.append(grad)
            values.append(float(value))
            largest = max(largest, float(big))
        grad, stderr = tree_mean_and_stderr(
            jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *terms))
        return Estimate(float(np.mean(values)), grad, stderr,
                        self._info(largest, began, orbits=self.samples, window=self.window))

    def _info(self, largest, began, **extra):
        exploding = not np.isfinite(largest) or largest > EXPLOSION
        info = {"method": "PathKernel", "steps": self.steps, "alpha": self.alpha,
                "max_adjoint_norm": largest, "exploding": exploding, **extra,
                "seconds": time.perf_counter() - began}
        if exploding:
            info["warning"] = (f"the adjoint grew to {largest:.3g}: alpha={self.alpha} is too "
                               "small to stop the explosion (take alpha above the top "
                               "Lyapunov exponent); the estimate is not meaningful")
        return info
