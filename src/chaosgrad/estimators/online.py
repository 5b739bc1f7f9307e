"""Online truncated evolution strategies: one truncation per optimiser step, the particles
carried from step to step (PES: Vicol, Metz & Sohl-Dickstein, ICML 2021; NRES: Li et al.,
NeurIPS 2023).

An episode is the statistic's window of T steps (a WindowAverage or a Terminal), cut into
W = T / K truncations of K steps, and J = sum_tau L_tau with L_tau the truncation's share
(its steps' weights w_t Phi(x_t): 1/T each for a window average, the last step alone for a
terminal value). N antithetic particle pairs run through their own episodes, staggered: at
one optimiser step particle i is at truncation tau_i, holds the states x_i^+ and x_i^- it
reached so far and its perturbation, runs its K steps with theta +- sigma e_i, and

    g = (W / N) sum_i xi_i (L_{i,tau_i}^+ - L_{i,tau_i}^-) / (2 sigma),

then moves on to tau_i + 1 (after the last truncation: to 0, with a fresh start, noise and
perturbation). The strategy gives e and xi (``online_draw``): PES draws e fresh in every
truncation and weighs with xi = e_1 + ... + e_tau, the perturbations since the episode's
start; NRES draws e at the episode's start and reuses it, xi = e. With the particles spread
evenly over the truncations, E[W L_tau] = J, so for theta held fixed the estimate is the
fixed-theta estimator's (:class:`~chaosgrad.PES`, :class:`~chaosgrad.NRES`) at W times less
work per step: one truncation instead of an episode. While theta moves, a particle's state
was reached under the earlier thetas: the bias the papers accept for the speed.

The particles start staggered: particle i is first run, with its own perturbations and no
update, through truncations 0 .. floor(i W / N) - 1 (at most one episode per particle, once).

The statistic's estimate (the training loss) is W times the mean over particles of their
truncation's (L^+ + L^-) / 2: unbiased for evenly spread particles and a fixed theta, and
noisy (one truncation per particle). A loss's cotangent is taken at it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._memory import check_memory
from .._system import check_horizon
from ..statistics import Terminal, WindowAverage
from ._base import AbstractEstimator, Terms, resolve_horizon
from ._rollout import rollout, sample_start
from .evolution import DIRECTION_STREAM, AbstractTruncated, step_weights


class Particles(eqx.Module):
    """What online ES carries from one optimiser step to the next (leading axis: the N
    particle pairs).

    Args:
        plus, minus: (N, d) the states the + and - runs of each pair have reached.
        e, xi: (N, p) each pair's perturbation and the accumulated perturbation its
            truncation's loss is weighed with.
        window: (N,) the truncation each pair runs next (0: a new episode).
        episode: (N,) the episodes each pair has begun (its start and noise are drawn from
            (key, pair, episode)).
        key: the key the starts and noise are drawn from.
    """

    plus: jax.Array
    minus: jax.Array
    e: jax.Array
    xi: jax.Array
    window: jax.Array
    episode: jax.Array
    key: jax.Array


class Online(AbstractEstimator):
    """Train with PES or NRES online: one truncation per optimiser step (module doc).

    ``fit(system, loss, WindowAverage(phi, T), Online(NRES(sigma, samples, truncation=K)),
    optimizer, ...)`` updates theta after every truncation of K steps, each of the N
    particle pairs carrying its states and perturbation to the next step; the particles
    are held by the training state (:class:`~chaosgrad.TrainState`'s ``carry``).

    Outside a training loop (``linear_response``, ``value_and_grad``, ``average``) there is
    nothing to carry, and the estimate is the strategy's fixed-theta one over whole
    episodes.

    Args:
        strategy: ``PES(...)`` or ``NRES(...)``: sigma, the N particle pairs
            (``samples``) and the truncation K, which must divide the window's steps.
    """

    strategy: AbstractTruncated
    statistics = (Terminal, WindowAverage)

    def __check_init__(self):
        if not isinstance(self.strategy, AbstractTruncated):
            raise TypeError(
                "Online takes the strategy whose truncations it steps on, PES(...) or "
                f"NRES(...), got {self.strategy!r:.60}"
            )

    def check_statistic(self, statistic, system) -> None:
        super().check_statistic(statistic, system)
        self.strategy.check_statistic(statistic, system)

    def terms(self, system, components, params, x0, key, cotangent):
        return self.strategy.terms(system, components, params, x0, key, cotangent)

    def finish(self, terms, system, components, params, x0, key):
        return self.strategy.finish(terms, system, components, params, x0, key)

    def _sizes(self, components) -> tuple[int, int]:
        """(W truncations, K steps each) of the statistic's window."""
        horizon = resolve_horizon(components.statistic, self.strategy)
        truncation = self.strategy.truncation_steps(horizon.steps)
        return horizon.steps // truncation, truncation

    def _advance(self, particles, system, params, components, x0, key, active):
        """Every pair whose ``active`` entry is True runs its next truncation (the others
        keep their state): (the particles after it, L^+ and L^- (N, k), xi (N, p))."""
        horizon = resolve_horizon(components.statistic, self.strategy)
        windows, truncation = self._sizes(components)
        weights = step_weights(horizon).reshape(windows, truncation)
        flat, unravel = ravel_pytree(params.values)
        scale = jnp.asarray(self.strategy.scale, dtype=jnp.float64)
        init_key, noise_key = jax.random.split(particles.key)
        draw_key = jax.random.fold_in(key, DIRECTION_STREAM)

        def one(index, plus, minus, e, xi, window, episode):
            restart = window == 0
            episode = episode + restart
            e, xi = self.strategy.online_draw(jax.random.fold_in(draw_key, index), e, xi, restart)
            start_key = jax.random.fold_in(jax.random.fold_in(init_key, index), episode)
            start = system.initial_state(start_key) if x0 is None else x0
            plus, minus = jnp.where(restart, start, plus), jnp.where(restart, start, minus)
            noise = jax.random.fold_in(jax.random.fold_in(noise_key, index), episode)
            t0 = window * truncation

            def run(x, offset):
                at = params.substitute(system, unravel(flat + offset)).for_sample(index)
                x, phis = rollout(at, components, x, noise, t0, truncation)
                return x, weights[window] @ phis

            (plus, loss_plus), (minus, loss_minus) = run(plus, scale * e), run(minus, -scale * e)
            return (plus, minus, e, xi, (window + 1) % windows, episode), loss_plus, loss_minus

        count = particles.window.shape[0]
        fields, loss_plus, loss_minus = jax.vmap(one)(
            jnp.arange(count),
            particles.plus,
            particles.minus,
            particles.e,
            particles.xi,
            particles.window,
            particles.episode,
        )

        def keep(new, old):
            return jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        olds = (particles.plus, particles.minus, particles.e, particles.xi)
        olds += (particles.window, particles.episode)
        kept = Particles(*map(keep, fields, olds), key=particles.key)
        return kept, loss_plus, loss_minus, fields[3]

    def start(self, system, components, params, x0, key) -> Particles:
        """The particles before the first optimiser step: pair i run, under its own
        perturbations and without an update, through truncations 0 .. floor(i W / N) - 1
        (a traceable computation)."""
        strategy = self.strategy
        windows, _ = self._sizes(components)
        horizon = resolve_horizon(components.statistic, strategy)
        check_horizon(system, horizon.steps)
        count, size = strategy.samples, params.size
        check_memory(
            4 * count * size,
            f"the perturbations of {count} online particle pairs x {size} parameter elements",
            "use fewer samples",
        )
        x0 = sample_start(system, x0, key)
        probe = system.initial_state(key) if x0 is None else x0
        state = jnp.zeros((count,) + probe.shape, probe.dtype)
        zeros = jnp.zeros((count, size), jnp.float64)
        particle_key, stagger_key = jax.random.split(key)
        particles = Particles(
            state,
            state,
            zeros,
            zeros,
            jnp.zeros(count, jnp.int32),
            jnp.full(count, -1, jnp.int32),
            particle_key,
        )
        targets = (np.arange(count) * windows) // count

        def stagger(particles, position):
            active = jnp.asarray(targets) > position
            particles = self._advance(
                particles,
                system,
                params,
                components,
                x0,
                jax.random.fold_in(stagger_key, position),
                active,
            )[0]
            return particles, None

        if windows > 1:
            particles, _ = jax.lax.scan(stagger, particles, jnp.arange(windows - 1))
        return particles

    def step(self, particles, system, components, params, x0, key, cotangent):
        """One online estimate: every pair runs its next truncation (module doc). Returns
        (the :class:`Terms` of the estimate, the particles after it); traceable."""
        windows, _ = self._sizes(components)
        x0 = sample_start(system, x0, key)
        active = jnp.ones(particles.window.shape, bool)
        particles, plus, minus, xi = self._advance(
            particles, system, params, components, x0, key, active
        )
        scale = jnp.asarray(self.strategy.scale, dtype=jnp.float64)
        centre = windows * 0.5 * (plus + minus).mean(axis=0)  # (k,)
        differences = plus - minus  # (N, k)
        if cotangent is not None:
            differences = differences @ cotangent(centre)  # (N, k')
        per_sample = windows * jnp.einsum("nk,np->knp", differences, xi) / (2 * scale)
        count = particles.window.shape[0]
        unravel = jax.vmap(ravel_pytree(params.values)[1])
        finite = (
            jnp.all(jnp.isfinite(plus))
            & jnp.all(jnp.isfinite(minus))
            & jnp.all(jnp.isfinite(particles.plus))
            & jnp.all(jnp.isfinite(particles.minus))
        )
        terms = Terms(
            centre,
            unravel(per_sample.mean(axis=1)),
            unravel(per_sample.std(axis=1, ddof=1) / np.sqrt(count)),
            finite,
        )
        return terms, particles
