"""Gradient quality: how close independent gradient estimates come to a reference, and
whether their mean can be trusted at all.

Given n independent draws g_1, ..., g_n of a gradient (per-sample, per-orbit or per-key
estimates, each flattened to a vector in R^p), their mean m = (1/n) sum_i g_i and a
reference r (:func:`gradient_quality`):

* cosine            c = m . r / (|m| |r|)
* relative error    e = |m - r| / |r|
* sign agreement    s = (1/p) sum_j [sign m_j = sign r_j]; per draw, the same averaged
  over the n draws: (1/(n p)) sum_i sum_j [sign g_ij = sign r_j]
* signal-to-noise   SNR = |m| / sqrt(sum_j v_j / n), v_j the sample variance (ddof 1) of
  component j over the draws: the norm of the mean over the norm of its standard error.

The standard errors of c and e come from the bootstrap (Efron 1979): B resamples of the n
draws with replacement, each giving a mean and its c and e; the SE is the standard
deviation of the B values.

Heavy tails. The mean of draws whose variance is infinite converges slowly and its error bar
is meaningless. The tail of the draws' norms X_i = |g_i| is measured by Hill's estimator
(:func:`hill_index`): with X_(1) >= ... >= X_(k+1) the order statistics,

    alpha = [ (1/k) sum_{i=1}^k ln(X_(i) / X_(k+1)) ]^-1,

the maximum-likelihood index of a Pareto tail P(X > x) ~ x^-alpha fitted to the k largest
samples. alpha < 2 means an infinite variance. Reference: B. M. Hill, "A simple general
approach to inference about the tail of a distribution", Ann. Statist. 3 (1975) 1163-1174.

A noisy reference. A reference r = r* + eps with noise of standard errors s_j caps the cosine
even of a perfect estimate m = r*: to leading order at c_max = |r*| / |r| with
|r*|^2 ~ |r|^2 - sum_j s_j^2, i.e. c_max = sqrt(1 - rho^2), rho = sqrt(sum_j s_j^2) / |r|
the reference's relative noise. c / c_max corrects the cosine for it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import check_at_least, check_key, check_x64
from .estimators import Estimate, linear_response

MIN_TAIL_SAMPLES = 20
"""Fewer positive samples say nothing about a tail: :func:`hill_index` refuses them and
:func:`gradient_quality` reports no tail index."""

HEAVY_TAIL = 2.0
"""A tail index below this means an infinite variance."""


def default_tail_count(n: int) -> int:
    """k = max(10, floor(sqrt(n))) (at most n - 1): the number of largest samples Hill's
    estimator uses by default.

    Hill's estimator is consistent when k -> infinity and k / n -> 0: its variance is about
    alpha^2 / k, and its bias (the samples below the tail's power law) grows with k / n. The
    square root meets both limits and is a common compromise (a fixed fraction such as
    10 % of n would not let k / n go to 0); at least 10 so that the estimate is not a
    handful of samples.
    """
    return min(n - 1, max(10, math.isqrt(n)))


def hill_index(samples, k: int | None = None) -> float:
    """Hill's estimator of the tail index alpha of positive ``samples``.

    With X_(1) >= ... >= X_(k+1) the largest k + 1 samples,
    alpha = [ (1/k) sum_{i=1}^k ln(X_(i) / X_(k+1)) ]^-1
    (Hill 1975, Ann. Statist. 3, 1163). It is the maximum-likelihood index of a Pareto tail
    P(X > x) ~ x^-alpha; its standard error is about alpha / sqrt(k). alpha < 2: an infinite
    variance; alpha < 1: an infinite mean. Returns inf when the k + 1 largest samples are
    equal (no tail at all).

    Args:
        samples: at least 20 positive, finite numbers (a 1-D array).
        k: how many of the largest samples to use, 1 <= k <= n - 1; default
            :func:`default_tail_count`: max(10, floor(sqrt(n))).
    """
    values = np.asarray(samples, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"samples must be a 1-D array, got shape {values.shape}")
    n = values.size
    if n < MIN_TAIL_SAMPLES:
        raise ValueError(
            f"hill_index needs at least {MIN_TAIL_SAMPLES} samples to see a tail, got {n}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"samples must be finite: {int(np.sum(~np.isfinite(values)))} NaN/inf")
    if not np.all(values > 0):
        raise ValueError(f"samples must be positive: {int(np.sum(values <= 0))} are <= 0")
    if k is None:
        k = default_tail_count(n)
    elif isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {k!r}")
    elif not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1}, got {k}")
    largest = np.sort(values)[::-1][: k + 1]
    mean_log = float(np.mean(np.log(largest[:k]) - np.log(largest[k])))
    return math.inf if mean_log == 0.0 else 1.0 / mean_log


@dataclasses.dataclass(frozen=True)
class GradientQuality:
    """How n independent gradient draws compare with a reference (:func:`gradient_quality`).

    Attributes:
        n: number of draws.
        dimension: p, the number of gradient components.
        cosine: cosine between the mean draw and the reference.
        cosine_stderr: its bootstrap standard error.
        relative_error: |mean - reference| / |reference|.
        relative_error_stderr: its bootstrap standard error.
        sign_agreement: fraction of components where the mean has the reference's sign
            (a zero agrees only with a zero).
        draw_sign_agreement: the same for single draws, averaged over the draws.
        snr: |mean| / sqrt(sum_j Var_j / n): the mean's norm over its standard error's.
        tail_index: Hill's index of the draws' norms |g_i| (None with fewer than 20 positive
            norms).
        tail_index_stderr: its asymptotic standard error alpha / sqrt(k).
        heavy_tailed: tail_index < 2: infinite variance, the mean is not trustworthy (None
            when the tail was not measured).
        reference_noise: sqrt(sum_j s_j^2) / |reference| from the reference's standard
            errors s_j (None when they are not given).
        cosine_ceiling: sqrt(1 - reference_noise^2): the cosine a perfect estimate would
            reach against this noisy reference (None without its standard errors).
        note: sentences on what limits the numbers (heavy tail, noisy reference or mean),
            or None.
    """

    n: int
    dimension: int
    cosine: float
    cosine_stderr: float
    relative_error: float
    relative_error_stderr: float
    sign_agreement: float
    draw_sign_agreement: float
    snr: float
    tail_index: float | None
    tail_index_stderr: float | None
    heavy_tailed: bool | None
    reference_noise: float | None
    cosine_ceiling: float | None
    note: str | None

    def summary(self) -> str:
        """One line: cosine, relative error, sign agreement, SNR, tail index and n."""
        tail = "not measured" if self.tail_index is None else f"{self.tail_index:.3g}"
        line = (
            f"cosine {self.cosine:.4f} ± {self.cosine_stderr:.2g}, relative error "
            f"{self.relative_error:.3g} ± {self.relative_error_stderr:.2g}, sign agreement "
            f"{self.sign_agreement:.3f} (per draw {self.draw_sign_agreement:.3f}), SNR "
            f"{self.snr:.3g}, tail index {tail}, n = {self.n}"
        )
        if self.cosine_ceiling is not None:
            line += f", cosine ceiling {self.cosine_ceiling:.3f}"
        return line

    def __str__(self) -> str:
        return self.summary()

    def as_dict(self) -> dict:
        """Every field as a Python number, bool, string or None (NaN and inf stay floats)."""
        return dataclasses.asdict(self)


def _vectors(draws, reference) -> tuple[np.ndarray, np.ndarray]:
    """(n, p) draws and the (p,) reference, flattened leaf by leaf in the same order."""
    if isinstance(draws, (list, tuple)) and draws and all(isinstance(d, Estimate) for d in draws):
        draws = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *[d.grad for d in draws])
    if isinstance(reference, Estimate):
        reference = reference.grad
    leaves, structure = jax.tree_util.tree_flatten(draws)
    ref_leaves, ref_structure = jax.tree_util.tree_flatten(reference)
    if structure != ref_structure:
        raise ValueError(
            f"draws and reference have different structures: {structure} and {ref_structure} "
            "(draws: the reference's structure with a leading axis n on every leaf, or a list "
            "of Estimate objects)"
        )
    if not leaves:
        raise ValueError("draws hold no arrays")
    arrays = [np.asarray(leaf, dtype=np.float64) for leaf in leaves]
    ref_arrays = [np.asarray(leaf, dtype=np.float64) for leaf in ref_leaves]
    if arrays[0].ndim == 0:
        raise ValueError("draws leaves need a leading axis n: one row per draw")
    n = arrays[0].shape[0]
    for index, (leaf, ref) in enumerate(zip(arrays, ref_arrays, strict=True)):
        if leaf.shape != (n, *ref.shape):
            raise ValueError(
                f"draws leaf {index} has shape {leaf.shape}; expected (n, *reference shape) "
                f"= ({n}, {', '.join(map(str, ref.shape))}): stack the draws on a leading axis"
            )
    if n < 2:
        raise ValueError(f"gradient_quality needs at least 2 draws (their spread), got {n}")
    matrix = np.concatenate([leaf.reshape(n, -1) for leaf in arrays], axis=1)
    vector = np.concatenate([ref.ravel() for ref in ref_arrays])
    for name, values in (("draws hold", matrix), ("reference holds", vector)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} {int(np.sum(~np.isfinite(values)))} NaN/inf values")
    if not np.any(vector):
        raise ValueError("reference is zero: no direction to compare with")
    return matrix, vector


def _cosines(means: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``means`` with ``reference`` (NaN for a zero row)."""
    norms = np.linalg.norm(means, axis=-1) * np.linalg.norm(reference)
    with np.errstate(invalid="ignore", divide="ignore"):
        return means @ reference / norms


def _relative_errors(means: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.linalg.norm(means - reference, axis=-1) / np.linalg.norm(reference)


def _bootstrap(matrix: np.ndarray, reference: np.ndarray, resamples: int, key):
    """Cosines and relative errors of ``resamples`` means of the n rows of ``matrix`` drawn
    with replacement; resample chunk c (at most ~4M numbers at once) uses fold_in(key, c)."""
    n, p = matrix.shape
    size = max(1, 2**22 // max(n, p))
    cosines, errors = [], []
    for chunk, start in enumerate(range(0, resamples, size)):
        count = min(size, resamples - start)
        picks = np.asarray(jax.random.randint(jax.random.fold_in(key, chunk), (count, n), 0, n))
        rows = (picks + n * np.arange(count)[:, None]).ravel()
        means = np.bincount(rows, minlength=count * n).reshape(count, n) @ matrix / n
        cosines.append(_cosines(means, reference))
        errors.append(_relative_errors(means, reference))
    return np.concatenate(cosines), np.concatenate(errors)


def _tail(norms: np.ndarray) -> tuple[float | None, float | None]:
    """Hill's index of the positive norms and its standard error alpha / sqrt(k)."""
    positive = norms[norms > 0]
    if positive.size < MIN_TAIL_SAMPLES:
        return None, None
    alpha = hill_index(positive)
    return alpha, alpha / math.sqrt(default_tail_count(positive.size))


def _reference_noise(reference: np.ndarray, stderr) -> float:
    """sqrt(sum_j s_j^2) / |r| from the reference's standard errors (a pytree or array)."""
    errors = np.concatenate(
        [np.asarray(leaf, dtype=np.float64).ravel() for leaf in jax.tree_util.tree_leaves(stderr)]
    )
    if errors.shape != reference.shape:
        raise ValueError(
            f"reference_stderr has {errors.size} components, the reference {reference.size}"
        )
    if not np.all(np.isfinite(errors)) or np.any(errors < 0):
        raise ValueError("reference_stderr must be finite and >= 0")
    return float(np.linalg.norm(errors) / np.linalg.norm(reference))


def _note(quality: dict) -> str | None:
    """What limits the numbers, in sentences (None when nothing does)."""
    notes = []
    if quality["heavy_tailed"]:
        notes.append(
            f"the draws' norms have tail index {quality['tail_index']:.2g} < 2: their variance "
            "is infinite, so the mean and its error bars are not trustworthy"
        )
    if quality["snr"] < 3:
        notes.append(
            f"the mean is noisy (SNR {quality['snr']:.2g} < 3): its noise alone lowers the "
            "cosine; use more draws"
        )
    noise = quality["reference_noise"]
    if noise is not None and noise >= 0.5:
        notes.append(
            f"the reference is too noisy to referee (relative noise {noise:.2g} >= 0.5): a "
            "cosine against it says little; make it from more samples or orbits"
        )
    elif noise is not None and noise > 0.1:
        notes.append(
            f"the reference's own noise caps the cosine at about "
            f"{quality['cosine_ceiling']:.3f}: cosine / ceiling = "
            f"{quality['cosine'] / quality['cosine_ceiling']:.3f}"
        )
    return "; ".join(notes) if notes else None


def gradient_quality(
    draws, reference, *, reference_stderr=None, bootstrap: int = 1000, key=None
) -> GradientQuality:
    """Cosine, relative error, sign agreement, SNR and tail index of gradient draws against
    a reference, with bootstrap standard errors (equations: the module docstring).

    The bootstrap SE is calibrated when the cosine falls short of 1 through a bias of the
    mean (tests/test_diagnostics.py: within 1.5x of the spread over repeated draw sets). When
    the mean is unbiased and only its noise lowers the cosine, the cosine sits at its maximum,
    quadratic in the noise, and the bootstrap overstates its SE (about 2x there): a
    conservative error bar. The SNR says which case holds.

    Args:
        draws: n >= 2 independent estimates: a pytree whose leaves have a leading axis n
            (per-sample, per-orbit or per-key estimates, e.g. from :func:`gradient_draws`),
            or a list of ``Estimate`` objects (their ``grad``).
        reference: the gradient to compare with: the same pytree without the leading axis,
            or an ``Estimate`` (its ``grad``; its ``stderr`` is then the default
            ``reference_stderr`` when finite).
        reference_stderr: the reference's standard errors, shaped like it; gives
            ``reference_noise`` and ``cosine_ceiling``.
        bootstrap: resamples of the draws for the standard errors (at least 2).
        key: PRNG key of the resampling; None means ``jax.random.key(0)``, so that the same
            draws always give the same standard errors.
    """
    check_x64()
    check_at_least(bootstrap, "bootstrap", 2, "the standard error is the resamples' spread")
    key = jax.random.key(0) if key is None else key
    check_key(key)
    if reference_stderr is None and isinstance(reference, Estimate):
        leaves = jax.tree_util.tree_leaves(reference.stderr)
        if leaves and all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves):
            reference_stderr = reference.stderr
    matrix, vector = _vectors(draws, reference)
    n, p = matrix.shape
    mean = matrix.mean(axis=0)
    cosines, errors = _bootstrap(matrix, vector, bootstrap, key)
    mean_stderr = math.sqrt(float(np.sum(np.var(matrix, axis=0, ddof=1))) / n)
    signs = np.sign(vector)
    tail_index, tail_stderr = _tail(np.linalg.norm(matrix, axis=1))
    noise = None if reference_stderr is None else _reference_noise(vector, reference_stderr)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = float(np.linalg.norm(mean) / np.float64(mean_stderr))
    quality = {
        "n": n,
        "dimension": p,
        "cosine": float(_cosines(mean, vector)),
        "cosine_stderr": float(np.std(cosines, ddof=1)),
        "relative_error": float(_relative_errors(mean, vector)),
        "relative_error_stderr": float(np.std(errors, ddof=1)),
        "sign_agreement": float(np.mean(np.sign(mean) == signs)),
        "draw_sign_agreement": float(np.mean(np.sign(matrix) == signs)),
        "snr": snr,
        "tail_index": tail_index,
        "tail_index_stderr": tail_stderr,
        "heavy_tailed": None if tail_index is None else bool(tail_index < HEAVY_TAIL),
        "reference_noise": noise,
        "cosine_ceiling": None if noise is None else math.sqrt(max(0.0, 1.0 - noise**2)),
    }
    return GradientQuality(**quality, note=_note(quality))


def gradient_draws(
    system,
    statistic,
    estimator,
    *,
    wrt: Callable | None = None,
    x0=None,
    key,
    repeats: int,
):
    """``repeats`` independent estimates by ``estimator``, stacked: the ``grad`` of
    ``linear_response(system, statistic, estimator, wrt=wrt, x0=x0, key=fold_in(key, i))``
    for i = 0, ..., repeats - 1, with a leading axis of length ``repeats`` on every leaf.

    The draws for :func:`gradient_quality` from any estimator: each is one whole estimate
    (all its samples or orbits), so their spread is that of the estimator's result.

    Args:
        system, statistic, estimator, wrt, x0: as for ``linear_response``.
        key: PRNG key; draw i uses ``jax.random.fold_in(key, i)``.
        repeats: how many estimates (at least 2).
    """
    check_x64()
    check_key(key)
    check_at_least(repeats, "repeats", 2, "the draws are compared by their spread")
    grads = [
        linear_response(
            system, statistic, estimator, wrt=wrt, x0=x0, key=jax.random.fold_in(key, i)
        ).grad
        for i in range(repeats)
    ]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *grads)
