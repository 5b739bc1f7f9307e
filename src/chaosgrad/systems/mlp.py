"""A deep tanh network as a time-dependent map: layer t is step t.

    x_{t+1} = W_t tanh(x_t) + b_t + noise * xi_t,    t = 0 .. depth-1,

(x_t are pre-activations; Poole et al.'s convention). Weights are stacked along a leading
layer axis, W: (depth, width, width), b: (depth, width). Initialisations:

* ``"gaussian"``: W_ij ~ N(0, sigma_w^2 / width), b_i ~ N(0, sigma_b^2);
* ``"xavier"`` (Glorot & Bengio 2010): variance 2 / (n_in + n_out) = 1 / width;
* ``"he"`` (He et al. 2015): variance 2 / width;
* ``"orthogonal"`` (Saxe et al. 2014): sigma_w times a Haar-random orthogonal matrix;
* ``"critical"``: Gaussian at the order-to-chaos line sigma_w = critical_sigma_w(sigma_b^2)
  (B. Poole et al., "Exponential expressivity in deep neural networks through transient
  chaos", NeurIPS 2016), where chi_1 = 1.

Options (the conventional remedies, as model choices):

* ``residual=eps``: x_{t+1} = x_t + eps (W_t tanh(x_t) + b_t) (He et al., "Deep residual
  learning", CVPR 2016);
* ``layer_norm=True``: tanh acts on LayerNorm(x_t) (Ba, Kiros & Hinton 2016), the
  parameter-free ``eqx.nn.LayerNorm(width, use_weight=False, use_bias=False)``, so the
  per-layer stacking of the weights is unchanged;
* supervised data: ``inputs`` (examples, width) and ``targets`` (examples, outputs) are
  data fields, and ``readout`` (outputs, width) is a trained output layer y = readout @
  tanh(x_T). Sample i of an estimator sees example i mod examples (``for_sample``), and
  layer 0 reads that example instead of the state: x_1 = W_0 tanh(u_i) + b_0 (the start
  state is ignored), so every sample carries its own input through the same layers.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_positive_int, check_real
from .._mean_field import critical_sigma_w
from .._system import System, param

INITS = ("gaussian", "xavier", "he", "orthogonal", "critical")


def _supervised(inputs, targets, width: int, key):
    """(inputs, targets, readout) checked; all None without data."""
    if inputs is None and targets is None:
        return None, None, None
    if inputs is None or targets is None:
        raise ValueError("give both inputs (examples, width) and targets (examples, outputs)")
    inputs = jnp.asarray(inputs, dtype=jnp.float64)
    targets = jnp.asarray(targets, dtype=jnp.float64)
    if inputs.ndim != 2 or inputs.shape[1] != width:
        raise ValueError(f"inputs must have shape (examples, {width}), got {inputs.shape}")
    if targets.ndim != 2 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"targets must have shape ({inputs.shape[0]}, outputs), got {targets.shape}"
        )
    readout_key = jax.random.fold_in(key, 7)
    readout = jax.random.normal(readout_key, (targets.shape[1], width), dtype=jnp.float64)
    return inputs, targets, param(readout / width**0.5)


def _orthogonal(key, n):
    a = jax.random.normal(key, (n, n), dtype=jnp.float64)
    q, r = jnp.linalg.qr(a)
    return q * jnp.sign(jnp.diag(r))


def initial_matrix(key, shape, scheme: str, sigma_w: float = 1.0, sigma_b: float = 0.0):
    """Square weight matrices (n, n), or a stack (layers, n, n), by ``scheme`` (see INITS):
    N(0, s^2 / n) with s = sigma_w ("gaussian"), 1 ("xavier": 2 / (n_in + n_out)),
    sqrt 2 ("he": 2 / n_in) or critical_sigma_w(sigma_b^2) ("critical"); or sigma_w times
    a Haar-random orthogonal matrix per layer ("orthogonal")."""
    if scheme not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}")
    n = shape[-1]
    if scheme == "orthogonal":
        if len(shape) == 2:
            return sigma_w * _orthogonal(key, n)
        keys = jax.random.split(key, shape[0])
        return sigma_w * jax.vmap(lambda k: _orthogonal(k, n))(keys)
    scale = {
        "gaussian": sigma_w,
        "xavier": 1.0,
        "he": 2.0**0.5,
        "critical": critical_sigma_w(sigma_b**2) if scheme == "critical" else 0.0,
    }[scheme]
    return scale / n**0.5 * jax.random.normal(key, shape, dtype=jnp.float64)


class DeepTanhNet(System):
    """A depth x width tanh network with per-layer weights and optional noise per layer."""

    weights: jax.Array
    biases: jax.Array
    noise_level: jax.Array
    noise_field: ClassVar[str | None] = "noise_level"
    readout: jax.Array | None
    inputs: jax.Array | None
    targets: jax.Array | None
    layered = ("weights", "biases")
    data_fields = ("inputs", "targets")
    dim: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    residual: float | None = eqx.field(static=True)
    layer_norm: eqx.nn.LayerNorm | None = eqx.field(static=True)
    _stochastic: bool = eqx.field(static=True)

    def __init__(
        self,
        depth=50,
        width=32,
        sigma_w=2.0,
        sigma_b=0.0,
        init="gaussian",
        noise=0.0,
        seed=0,
        key=None,
        *,
        residual=None,
        layer_norm=False,
        inputs=None,
        targets=None,
    ):
        depth, width = check_positive_int(depth, "depth"), check_positive_int(width, "width")
        sigma_w, sigma_b = check_real(sigma_w, "sigma_w"), check_real(sigma_b, "sigma_b")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        noise = check_real(noise, "noise", nonnegative=True)
        key = jax.random.key(seed) if key is None else key
        w_key, b_key = jax.random.split(key)
        weights = initial_matrix(w_key, (depth, width, width), init, sigma_w, sigma_b)
        self.weights = param(weights)
        self.biases = param(sigma_b * jax.random.normal(b_key, (depth, width), dtype=jnp.float64))
        self.noise_level = param(noise)
        self.dim, self.depth = width, depth
        self._stochastic = noise != 0.0
        if residual is not None and not check_real(residual, "residual") > 0:
            raise ValueError(f"residual must be a positive step eps (or None), got {residual}")
        self.residual = None if residual is None else float(residual)
        self.layer_norm = (
            eqx.nn.LayerNorm(width, use_weight=False, use_bias=False) if layer_norm else None
        )
        self.inputs, self.targets, self.readout = _supervised(inputs, targets, width, key)

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    @property
    def horizon(self) -> int:
        return self.depth

    @property
    def per_sample(self) -> bool:
        """True while the net holds many examples (before ``for_sample``)."""
        return self.inputs is not None and self.inputs.ndim == 2

    def for_sample(self, index) -> DeepTanhNet:
        """The net with example ``index`` (mod the number of examples) as its data."""
        if not self.per_sample:
            return self
        assert self.inputs is not None and self.targets is not None
        i = index % self.inputs.shape[0]
        return eqx.tree_at(lambda s: (s.inputs, s.targets), self, (self.inputs[i], self.targets[i]))

    def activation(self, x):
        """tanh(x), or tanh(LayerNorm(x)) with ``layer_norm``."""
        return jnp.tanh(x if self.layer_norm is None else self.layer_norm(x))

    def output(self, x):
        """The readout y = readout @ tanh(x) of a final state (supervised nets)."""
        if self.readout is None:
            raise ValueError("this DeepTanhNet has no readout: build it with inputs and targets")
        return self.readout @ jnp.tanh(x)

    def drift(self, t, x):
        if self.inputs is not None:
            if self.per_sample:
                raise ValueError(
                    "this DeepTanhNet holds many examples: the estimators pick each "
                    "sample's with for_sample(i)"
                )
            x = jnp.where(t == 0, self.inputs, x)
        update = self.weights[t] @ self.activation(x) + self.biases[t]
        return update if self.residual is None else x + self.residual * update

    def diffusion(self, t, x):
        return self.noise_level
