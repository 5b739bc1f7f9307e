"""Task A3: task A1's gradient estimators as the parameter count p grows (the scale sweep).

A1's model (Lorenz-63 at rho = 32 plus a tanh closure 3 -> w -> w -> 3, p = w^2 + 8 w + 3
weights) at widths w = 8, 24 and 96: p = 131, 771 and 9987. At each p and for
each method, at the start model of seed 0 (same settings as A1's run):

* the cost of one gradient: the seconds of ``value_and_grad`` with the method's estimator,
  compiled (the median of ``repeats`` calls after the first; the first call's time, which
  includes compilation, is stored beside it);
* its quality, as in A1 (:meth:`A1Task.quality`): the descent ratio (the held-out loss's
  slope along the draw, by central differences on 32 long orbits, over |g|: 1 for an exact
  gradient) with its SE, and the cosine between two independent draws.

Why: Shadowing's cost is about u = 2 adjoint sweeps whatever p is, backpropagation's one
sweep; ES and SPSA cost 2N runs whatever p is, but their variance grows like p at fixed N,
so their descent ratio and draw cosine should fall like 1/sqrt(p) and 1/p.
"""

from __future__ import annotations

import time
from dataclasses import replace

import jax
import numpy as np

from ...estimators._response import value_and_grad
from .a1_closure import A1Settings, A1Task, weights_of

WIDTHS = (8, 24, 96)
METHODS = ("shadowing", "truncated-bptt+clip", "bptt+clip", "es", "spsa")


def parameters(width: int) -> int:
    """p of the closure 3 -> w -> w -> 3."""
    return width * width + 8 * width + 3


def gradient_seconds(task: A1Task, method: str, repeats: int) -> tuple[float, float]:
    """(the first call's seconds, compilation included; the median of ``repeats`` more)."""
    estimator, _ = task.estimator_and_optimizer(method)
    system = task.model(0)
    seconds = []
    for i in range(repeats + 1):
        began = time.perf_counter()
        value = value_and_grad(
            system,
            task.loss,
            task.statistic,
            estimator,
            wrt=weights_of,
            key=jax.random.key(500 + i),
        )
        jax.block_until_ready(value)
        seconds.append(time.perf_counter() - began)
    return seconds[0], float(np.median(seconds[1:]))


def scale_sweep(
    widths=WIDTHS,
    methods=METHODS,
    *,
    repeats: int = 3,
    quick: bool = False,
    progress=None,
) -> dict:
    """Every method at every width (module doc): {"rows": [{width, parameters, method,
    first_seconds, seconds, ratio, ratio_stderr, draw_cosine, norm}], "settings": ...}."""
    base = A1Settings.quick() if quick else A1Settings()
    rows = []
    for width in widths:
        task = A1Task(replace(base, hidden=(width, width)))
        for method in methods:
            if progress is not None:
                progress(f"A3 p = {parameters(width)} {method}")
            first, seconds = gradient_seconds(task, method, repeats)
            quality = task.quality(task.model(0), method, jax.random.key(2000))
            rows.append(
                {
                    "width": width,
                    "parameters": parameters(width),
                    "method": method,
                    "first_seconds": first,
                    "seconds": seconds,
                    "ratio": quality.get("ratio"),
                    "ratio_stderr": quality.get("ratio_stderr"),
                    "draw_cosine": quality.get("draw_cosine"),
                    "norm": quality.get("norm"),
                }
            )
    return {"rows": rows, "settings": {"widths": list(widths), "repeats": repeats, "quick": quick}}
