"""Up-front memory estimates: refuse a run whose arrays cannot fit, before it starts.

A run that needs more memory than the machine has fails after minutes (XLA's
RESOURCE_EXHAUSTED) or swaps for far longer. The estimates here are lower bounds on what a
run keeps at once (its largest arrays, 8 bytes per float64 number), so a refusal is right
about the order of magnitude; a run under the bound may still need more.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

FLOAT_BYTES = 8


def state_dim(system, x0, key) -> int:
    """The state dimension of ``system`` (its ``dim``, else x0's last axis, else its initial
    state's shape, traced abstractly: nothing is allocated)."""
    if system.dim is not None:
        return int(system.dim)
    shape = np.shape(x0) if x0 is not None else jax.eval_shape(system.initial_state, key).shape
    return int(shape[-1]) if shape else 1


def available_bytes() -> int | None:
    """The memory this process may still use: MemAvailable of /proc/meminfo, or a cgroup
    limit below it; None where neither can be read (then nothing is refused)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            found.append(int(limit))
    except OSError:
        pass
    return min(found) if found else None


def check_memory(numbers: float, what: str, fix: str) -> None:
    """Refuse (ValueError) a run that keeps at least ``numbers`` float64 numbers at once when
    they exceed the memory available; ``what`` names the arrays, ``fix`` says what to
    reduce."""
    needed = float(numbers) * FLOAT_BYTES
    available = available_bytes()
    if available is not None and needed > available:
        raise ValueError(
            f"{what} need at least {needed / 2**30:.3g} GiB, more than the "
            f"{available / 2**30:.3g} GiB of memory available: {fix}"
        )
