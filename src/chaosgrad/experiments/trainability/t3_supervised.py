"""T3: supervised learning through a noisy deep network and a noisy RNN.

The loss is an expectation over the injected noise (and over the training examples) of the
output's squared error, L = E[ |y_hat(x_T) - y|^2 ] / outputs, a ``Terminal`` statistic of
``networks.squared_error()`` (each sample reads its own example through ``for_sample``).

* **T3-deep**: a depth-50 tanh net of width 32 in its chaotic phase (sigma_w = 2, lambda_1 > 0
  per layer), noise sigma per layer, learns a 10-output regression y = tanh(A u) of 32-dim
  Gaussian inputs (64 training examples). Depth matters: the input's information has to
  cross 50 expanding layers. Methods: Kernel, PathKernel at two damping rates, Backprop +
  clipping, and the remedies trained with Backprop + clipping: critical initialisation
  (Poole et al.), orthogonal initialisation, residual links, LayerNorm.
* **T3-rnn**: delayed XOR with injected noise. Bits b_t = +-1 arrive one per step for
  L = 3 d steps; the target at the last step is the XOR of the bits d and 2d steps before
  the end, y = -b_{L-1-d} b_{L-1-2d} (+-1 encoding). A tanh RNN of N = 80 units (Engelken's
  size) with gain g: Kernel, PathKernel, Backprop + clipping, GRU and LSTM cells, LayerNorm,
  orthogonal initialisation, and gradient flossing (preflossing + episodes).

Metrics: the loss on held-out examples with fresh noise (fixed evaluation key: common random
numbers across evaluations), and for T3-rnn the accuracy sign(y_hat) = y; a run "succeeds"
when its final held-out accuracy is at least 0.9.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ... import estimators as est
from ..._system import _run
from ...lyapunov import flossing_schedule, lyapunov_penalty
from ...networks import deep_network, readout, recurrent_network, squared_error, trainable
from ...statistics import Terminal
from ...train import fit
from ._harness import Evaluations, Run, thinned

DEEP_METHODS = (
    "kernel",
    "path-kernel(alpha=0.5)",
    "path-kernel(alpha=2)",
    "bptt+clip",
    "critical-init+bptt+clip",
    "orthogonal-init+bptt+clip",
    "residual+bptt+clip",
    "layernorm+bptt+clip",
)
RNN_METHODS = (
    "kernel",
    "path-kernel(alpha=0.5)",
    "bptt+clip",
    "gru+bptt+clip",
    "lstm+bptt+clip",
    "layernorm+bptt+clip",
    "orthogonal-init+bptt+clip",
    "flossing+bptt+clip",
)


@dataclass(frozen=True)
class T3Settings:
    depth: int = 50
    width: int = 32
    outputs: int = 10
    sigma_w: float = 2.0
    sigma_b: float = 0.1
    deep_noise: float = 0.2
    residual: float = 0.2
    train_examples: int = 64
    test_examples: int = 256
    hidden: int = 80
    delay: int = 10
    gain: float = 1.5
    rnn_noise: float = 0.1
    rnn_train: int = 128
    kernel_copies: int = 4
    learning_rate: float = 3e-3
    clip: float = 1.0
    floss_exponents: int = 20
    floss_steps: int = 30
    floss_pre: int = 50
    floss_every: int = 100
    floss_length: int = 25
    eval_copies: int = 4

    @classmethod
    def quick(cls) -> T3Settings:
        return replace(
            cls(), depth=20, train_examples=32, test_examples=64, hidden=32, delay=5, rnn_train=64
        )


def _deep_data(settings: T3Settings, key, count: int):
    teacher_key, input_key = jax.random.split(key)
    a = 1.5 * jax.random.normal(
        jax.random.key(77), (settings.outputs, settings.width), dtype=jnp.float64
    )
    a = a / jnp.sqrt(settings.width)
    u = jax.random.normal(input_key, (count, settings.width), dtype=jnp.float64)
    return u, jnp.tanh(u @ a.T)


def _xor_data(settings: T3Settings, key, count: int):
    length = 3 * settings.delay
    bits = jnp.where(jax.random.bernoulli(key, 0.5, (count, length)), 1.0, -1.0)
    last = length - 1
    y = -bits[:, last - settings.delay] * bits[:, last - 2 * settings.delay]
    return bits[:, :, None].astype(jnp.float64), y[:, None].astype(jnp.float64)


def expected_output_error(system, steps: int, copies: int, key):
    """(mean squared error, accuracy of sign) over every example x ``copies`` noise draws."""
    examples = system.inputs.shape[0]
    x0 = jnp.zeros(_state_dim(system))
    indices = jnp.tile(jnp.arange(examples), copies)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(indices.shape[0]))
    return _errors(system, x0, indices, keys, steps)


@eqx.filter_jit
def _errors(system, x0, indices, keys, steps: int):
    def one(index, key):
        sample = system.for_sample(index)
        x, _ = _run(sample, x0, key, jnp.asarray(0), steps)
        prediction = readout(x, sample)
        target = sample.targets.reshape(prediction.shape)
        return jnp.mean((prediction - target) ** 2), jnp.mean(
            jnp.sign(prediction) == jnp.sign(target)
        )

    errors, hits = jax.vmap(one)(indices, keys)
    return jnp.mean(errors), jnp.mean(hits)


class T3Task:
    """T3-deep or T3-rnn (``name``), with the settings' sizes."""

    def __init__(self, name: str, settings: T3Settings):
        if name not in ("T3-deep", "T3-rnn"):
            raise ValueError(f"unknown T3 part {name!r}")
        self.name, self.settings = name, settings
        deep = name == "T3-deep"
        self.methods = DEEP_METHODS if deep else RNN_METHODS
        self.metrics = ("test_loss",) if deep else ("test_loss", "test_accuracy")
        self.relative = ("test_loss",)
        data = _deep_data if deep else _xor_data
        count = settings.train_examples if deep else settings.rnn_train
        self.train = data(settings, jax.random.key(1), count)
        self.test = data(settings, jax.random.key(2), settings.test_examples)
        self.steps = settings.depth if deep else 3 * settings.delay
        self.statistic = Terminal(squared_error(), self.steps)

    def describe(self) -> dict:
        s = self.settings
        model = self.model("bptt+clip", 0)
        weights = sum(
            leaf.size
            for leaf in jax.tree_util.tree_leaves(
                eqx.filter(trainable(model), eqx.is_inexact_array)
            )
        )
        return {
            "settings": asdict(s),
            "steps": self.steps,
            "weights": int(weights),
            "train_examples": int(self.train[0].shape[0]),
        }

    def model(self, method: str, seed: int, data=None):
        s, (inputs, targets) = self.settings, (data or self.train)
        key = jax.random.key(100 + seed)
        if self.name == "T3-deep":
            init = "gaussian"
            if method.startswith("critical-init"):
                init = "critical"
            elif method.startswith("orthogonal-init"):
                init = "orthogonal"
            return deep_network(
                s.depth,
                s.width,
                inputs,
                targets,
                noise=s.deep_noise,
                init=init,
                sigma_w=1.0 if init == "orthogonal" else s.sigma_w,
                sigma_b=s.sigma_b,
                residual=s.residual if method.startswith("residual") else None,
                layer_norm=method.startswith("layernorm"),
                key=key,
            )
        cell = "tanh"
        if method.startswith("gru"):
            cell = "gru"
        elif method.startswith("lstm"):
            cell = "lstm"
        return recurrent_network(
            cell,
            inputs,
            targets,
            s.hidden,
            noise=s.rnn_noise,
            init="orthogonal" if method.startswith("orthogonal-init") else "gaussian",
            gain=s.gain,
            layer_norm=method.startswith("layernorm"),
            key=key,
        )

    def with_data(self, system, data):
        inputs, targets = data
        return eqx.tree_at(lambda m: (m.inputs, m.targets), system, (inputs, targets))

    def evaluate(self, system) -> dict:
        error, accuracy = expected_output_error(
            self.with_data(system, self.test),
            self.steps,
            self.settings.eval_copies,
            jax.random.key(999),
        )
        metrics = {"test_loss": float(error)}
        if self.name == "T3-rnn":
            metrics["test_accuracy"] = float(accuracy)
        return metrics

    def estimator_and_optimizer(self, method: str):
        s = self.settings
        examples = self.train[0].shape[0]
        clipped = optax.chain(optax.clip_by_global_norm(s.clip), optax.adam(s.learning_rate))
        copies = examples * s.kernel_copies
        if method == "kernel":
            return est.Kernel(samples=copies, batch=copies), optax.adam(s.learning_rate)
        if method.startswith("path-kernel"):
            alpha = float(method.split("=")[1].rstrip(")"))
            return est.PathKernel(samples=examples, alpha=alpha, batch=examples), optax.adam(
                s.learning_rate
            )
        if method not in self.methods:
            raise ValueError(f"unknown {self.name} method {method!r}; choose from {self.methods}")
        return est.Backprop(samples=examples, diagnostics=False), clipped

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
        model = self.model(method, seed)
        x0 = jnp.zeros(_state_dim(model))
        run = Run(method, seed)
        evaluations = Evaluations(run, self.evaluate, eval_every)
        evaluations.record(model)
        regularizer, schedule = None, None
        if method.startswith("flossing"):
            k, steps = min(s.floss_exponents, x0.shape[0]), min(s.floss_steps, self.steps)
            starts = jnp.zeros((8, x0.shape[0]))

            def penalty(system):
                return jnp.mean(
                    jax.vmap(
                        lambda i, x: lyapunov_penalty(
                            system.for_sample(i), k, steps, x0=x, key=jax.random.key(7)
                        )
                    )(jnp.arange(8), starts)
                )

            regularizer = penalty

            schedule = flossing_schedule(s.floss_pre, s.floss_every, s.floss_length)
        result = fit(
            model,
            lambda loss: loss,
            self.statistic,
            estimator,
            optimizer,
            iterations=iterations or 10**9,
            wrt=trainable,
            x0=x0,
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
        if self.name == "T3-rnn":
            run.extra["success"] = bool(run.metrics[-1].get("test_accuracy", 0.0) >= 0.9)
        return run


def _state_dim(system) -> int:
    dim = system.dim
    if dim is None:
        raise ValueError("the network has no dim")
    return int(dim)
