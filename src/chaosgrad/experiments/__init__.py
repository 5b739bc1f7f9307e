"""The comparison experiments: each a function returning an ExperimentResult (and, given
``out``, writing JSON and PNG), and a ``chaosgrad experiment`` command."""

from ._common import ExperimentResult
from .explosion import explosion_panel
from .noisy_network import train_noisy_network
from .tune_lorenz import tune_lorenz

EXPERIMENTS = {
    "tune-lorenz": tune_lorenz,
    "noisy-network": train_noisy_network,
    "explosion": explosion_panel,
}

__all__ = [
    "EXPERIMENTS",
    "ExperimentResult",
    "explosion_panel",
    "train_noisy_network",
    "tune_lorenz",
]
