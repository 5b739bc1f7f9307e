"""Supervised networks as chaosgrad systems: recurrent cells driven by per-sample input
sequences, the supervised deep net, and the loss observables that read each sample's target.

Recurrent networks are ``InputDriven`` systems whose ``args`` is a :class:`RecurrentModel`:

* ``"tanh"``: h' = tanh(W_hh h + W_hu u_t + b), W_hh from an initialisation scheme with gain
  g (Gaussian N(0, g^2/n), or g times a Haar-orthogonal matrix, Saxe et al., ICLR 2014);
* ``"gru"``: ``eqx.nn.GRUCell`` (Cho et al., EMNLP 2014), state h;
* ``"lstm"``: ``eqx.nn.LSTMCell`` (Hochreiter & Schmidhuber, Neural Computation 1997), state
  (h, c) stored as one vector [h, c];

optionally with ``eqx.nn.LayerNorm`` (Ba, Kiros & Hinton 2016) applied to h before the cell,
and a trained linear readout y = W_out h + b_out (``eqx.nn.Linear``). The cells are used as
Equinox writes them, only cast to float64. Noise of amplitude ``noise`` is added to the
whole state after every step, so the kernel estimators apply.

The loss observables are ``ParametricObservable`` s: they depend on the readout (trained)
and on the sample's own target (data, ``system.targets`` after ``for_sample``).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._user_models import InputDriven
from .statistics import ParametricObservable
from .systems import DeepTanhNet
from .systems.mlp import INITS, initial_matrix

CELLS = ("tanh", "gru", "lstm")


class TanhCell(eqx.Module):
    """h' = tanh(W_hh h + W_hu u + b)."""

    recurrent: jax.Array
    input_weights: jax.Array
    bias: jax.Array

    def __call__(self, u, h):
        return jnp.tanh(self.recurrent @ h + self.input_weights @ u + self.bias)


class RecurrentModel(eqx.Module):
    """A cell, an optional LayerNorm on h, and the readout; ``hidden`` units."""

    cell: Any
    norm: eqx.nn.LayerNorm | None
    out: eqx.nn.Linear
    hidden: int = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    def hidden_state(self, x):
        return x[: self.hidden]

    def step(self, x, u):
        h = self.hidden_state(x)
        h_in = h if self.norm is None else self.norm(h)
        if self.kind == "lstm":
            h_new, c_new = self.cell(u, (h_in, x[self.hidden :]))
            return jnp.concatenate([h_new, c_new])
        return self.cell(u, h_in)


def _float64(module):
    return jax.tree_util.tree_map(
        lambda leaf: leaf.astype(jnp.float64) if eqx.is_inexact_array(leaf) else leaf, module
    )


def _recurrent_step(t, x, u, model: RecurrentModel):
    return model.step(x, u)


def recurrent_network(
    cell: str,
    inputs,
    targets,
    hidden: int,
    *,
    noise: float = 0.0,
    init: str = "gaussian",
    gain: float = 1.0,
    layer_norm: bool = False,
    key,
) -> InputDriven:
    """A noisy recurrent network on per-sample input sequences with per-sample targets.

    Args:
        cell: "tanh", "gru" or "lstm".
        inputs: (samples, steps, m) sequences (sample i sees inputs[i]).
        targets: (samples, outputs): what the readout of the final state should give.
        hidden: number of hidden units n (the state has n, or 2n for an LSTM, components).
        noise: amplitude of the Gaussian noise added to the state after every step.
        init, gain: W_hh's initialisation (tanh cell): "gaussian", "orthogonal", "xavier",
            "he" or "critical" (see ``DeepTanhNet``), at sigma_w = gain.
        layer_norm: apply a LayerNorm (with its own gain and bias, trained) to h first.
        key: draws every weight.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    hidden = int(hidden)
    if hidden < 1:
        raise ValueError(f"hidden must be a positive number of units, got {hidden}")
    inputs = jnp.asarray(inputs, dtype=jnp.float64)
    targets = jnp.asarray(targets, dtype=jnp.float64)
    if inputs.ndim != 3:
        raise ValueError(f"inputs must have shape (samples, steps, m), got {inputs.shape}")
    if targets.ndim != 2 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"targets must have shape ({inputs.shape[0]}, outputs), got {targets.shape}"
        )
    m, outputs = inputs.shape[2], targets.shape[1]
    cell_key, input_key, out_key = jax.random.split(key, 3)
    if cell == "tanh":
        recurrent = initial_matrix(cell_key, (hidden, hidden), init, sigma_w=gain)
        input_weights = jax.random.normal(input_key, (hidden, m), dtype=jnp.float64)
        module: Any = TanhCell(recurrent, input_weights, jnp.zeros(hidden))
    elif cell == "gru":
        module = _float64(eqx.nn.GRUCell(m, hidden, key=cell_key))
    else:
        module = _float64(eqx.nn.LSTMCell(m, hidden, key=cell_key))
    norm = _float64(eqx.nn.LayerNorm(hidden)) if layer_norm else None
    out = _float64(eqx.nn.Linear(hidden, outputs, key=out_key))
    model = RecurrentModel(module, norm, out, hidden, cell)
    dim = 2 * hidden if cell == "lstm" else hidden
    return InputDriven(_recurrent_step, inputs, args=model, noise=noise, targets=targets, dim=dim)


def deep_network(
    depth: int,
    width: int,
    inputs,
    targets,
    *,
    noise: float = 0.0,
    init: str = "gaussian",
    sigma_w: float = 2.0,
    sigma_b: float = 0.0,
    residual: float | None = None,
    layer_norm: bool = False,
    key,
) -> DeepTanhNet:
    """A supervised ``DeepTanhNet``: inputs (examples, width), targets (examples, outputs)."""
    return DeepTanhNet(
        depth,
        width,
        sigma_w=sigma_w,
        sigma_b=sigma_b,
        init=init,
        noise=noise,
        key=key,
        residual=residual,
        layer_norm=layer_norm,
        inputs=inputs,
        targets=targets,
    )


def trainable(system):
    """The trained parameters of a supervised network (not its noise level or data)."""
    if isinstance(system, DeepTanhNet):
        return (system.weights, system.biases, system.readout)
    return system.args


def readout(x, system):
    """The network's output y for a final state x."""
    if isinstance(system, DeepTanhNet):
        return system.output(x)
    model = system.args
    return model.out(model.hidden_state(x))


def _squared_error(x, system):
    prediction = readout(x, system)
    return jnp.mean((prediction - system.targets.reshape(prediction.shape)) ** 2)


def _cross_entropy(x, system):
    logits = readout(x, system)
    return -jnp.sum(system.targets.reshape(logits.shape) * jax.nn.log_softmax(logits))


def squared_error() -> ParametricObservable:
    """Phi(x, system) = mean_j (y_j - target_j)^2 of the sample's own target."""
    return ParametricObservable(_squared_error)


def cross_entropy() -> ParametricObservable:
    """Phi(x, system) = -sum_j target_j log softmax(y)_j (one-hot targets)."""
    return ParametricObservable(_cross_entropy)
