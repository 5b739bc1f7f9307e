"""The command's persistent compilation cache: compiled programs kept between runs.

The folder is ``$CHAOSGRAD_CACHE_DIR`` (empty: off), else ``$XDG_CACHE_HOME/chaosgrad/jax``
or ``~/.cache/chaosgrad/jax``. Only the console script turns it on (``chaosgrad.cli.main``);
a library that imports chaosgrad keeps JAX's configuration as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def cache_directory() -> Path | None:
    """Where the command keeps compiled programs; None when ``CHAOSGRAD_CACHE_DIR=""``."""
    chosen = os.environ.get("CHAOSGRAD_CACHE_DIR")
    if chosen is not None:
        return Path(chosen).expanduser() if chosen.strip() else None
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "chaosgrad" / "jax"


def enable_compilation_cache(directory: Path | None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` (every program, however
    small or quick to compile). Returns the folder, or None when off or not writable."""
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
