"""The ``chaosgrad`` command line (Typer + Rich).

The command line runs every computation in float64: it turns on ``jax_enable_x64`` here,
before any array is made (the library itself leaves JAX's configuration alone).
"""

import jax

jax.config.update("jax_enable_x64", True)

from .main import app, main  # noqa: E402

__all__ = ["app", "main"]
