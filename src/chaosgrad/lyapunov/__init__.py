"""Lyapunov analysis: spectra, covariant/adjoint vectors, finite-time exponents, mean field."""

from .covariant import CovariantResult, adjoint_vectors, covariant_vectors
from .ftle import ftle
from .hyperbolicity import HyperbolicityResult, hyperbolicity
from .mean_field import MeanField, critical_sigma_w, mean_field
from .penalty import finite_time_exponents, flossing_schedule, lyapunov_penalty
from .spectrum import LyapunovResult, kaplan_yorke_dimension, lyapunov_spectrum

__all__ = [
    "CovariantResult",
    "adjoint_vectors",
    "covariant_vectors",
    "HyperbolicityResult",
    "hyperbolicity",
    "finite_time_exponents",
    "flossing_schedule",
    "ftle",
    "LyapunovResult",
    "MeanField",
    "critical_sigma_w",
    "kaplan_yorke_dimension",
    "lyapunov_penalty",
    "lyapunov_spectrum",
    "mean_field",
]
