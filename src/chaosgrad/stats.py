"""Standard errors for Monte-Carlo and time-average estimates."""

from __future__ import annotations

import numpy as np


def batch_means(block_values, axis: int = 0):
    """Standard error of the mean of ``block_values`` (one row per block): std / sqrt(B).

    Blocks long compared with the correlation time are nearly independent, so the spread of
    block means measures the error of the overall mean (batch-means method). With a single
    block the error is unknown: NaN.
    """
    values = np.asarray(block_values, dtype=float)
    count = values.shape[axis]
    if count < 2:
        return np.full(np.delete(values.shape, axis), np.nan)
    return np.std(values, axis=axis, ddof=1) / np.sqrt(count)


def mean_and_stderr(samples, axis: int = 0):
    """Sample mean and its standard error std / sqrt(n) over ``axis``."""
    samples = np.asarray(samples, dtype=float)
    return samples.mean(axis=axis), batch_means(samples, axis=axis)
