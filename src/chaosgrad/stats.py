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


def short_run_warning(rows: int, blocks: int, row: str, fix: str) -> str | None:
    """A sentence when a run has fewer ``rows`` (segments, renormalisation periods) than the
    ``blocks`` of batch means asked: then each block is a single row, rows that close
    together are correlated, and the spread of so few, so short block means can be far
    from the error (too small by an unknown factor); None when every block has rows."""
    if rows >= blocks:
        return None
    return (
        f"batch means over only {rows} blocks of one {row} each ({blocks} asked): the run is "
        f"too short for them, and the standard error may be far too small: {fix}"
    )


def mean_and_stderr(samples, axis: int = 0):
    """Sample mean and its standard error std / sqrt(n) over ``axis``."""
    samples = np.asarray(samples, dtype=float)
    return samples.mean(axis=axis), batch_means(samples, axis=axis)
