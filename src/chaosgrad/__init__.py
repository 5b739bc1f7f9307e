"""chaosgrad: gradients that do not explode for unstable networks and chaotic systems.

Importing chaosgrad turns on ``jax_enable_x64``: every chaos computation runs in float64.
"""

import jax

jax.config.update("jax_enable_x64", True)

from ._system import AbstractFlow, Flow, InputDriven, Map, System, simulate  # noqa: E402
from .estimators import (  # noqa: E402
    AbstractSweep,
    Auto,
    AutoSweep,
    Backprop,
    Estimate,
    FastAdjointResponse,
    FiniteDifference,
    Kernel,
    PathKernel,
    SegmentJacobians,
    SegmentParallel,
    Shadowing,
    StepByStep,
    TruncatedBackprop,
    average,
    configure,
    linear_response,
    value_and_grad,
)
from .lyapunov import (  # noqa: E402
    CovariantResult,
    LyapunovResult,
    MeanField,
    adjoint_vectors,
    covariant_vectors,
    critical_sigma_w,
    finite_time_exponents,
    ftle,
    hyperbolicity,
    kaplan_yorke_dimension,
    lyapunov_penalty,
    lyapunov_spectrum,
    mean_field,
)
from .statistics import (  # noqa: E402
    ParametricObservable,
    Terminal,
    TimeAverage,
    WindowAverage,
)
from .systems import (  # noqa: E402
    DeepTanhNet,
    Henon,
    Logistic,
    Lorenz63,
    Lorenz96,
    ModifiedSolenoid,
    NineNeuronNet,
    NoisyLorenz96,
    TanhRNN,
    Tent,
)
from .train import FitResult, fit  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AbstractSweep",
    "Auto",
    "AutoSweep",
    "SegmentJacobians",
    "SegmentParallel",
    "StepByStep",
    "hyperbolicity",
    "Backprop",
    "Estimate",
    "FastAdjointResponse",
    "FiniteDifference",
    "Kernel",
    "ParametricObservable",
    "PathKernel",
    "Shadowing",
    "Terminal",
    "TimeAverage",
    "TruncatedBackprop",
    "WindowAverage",
    "average",
    "configure",
    "linear_response",
    "value_and_grad",
    "InputDriven",
    "AbstractFlow",
    "FitResult",
    "fit",
    "CovariantResult",
    "adjoint_vectors",
    "covariant_vectors",
    "ftle",
    "DeepTanhNet",
    "Flow",
    "Henon",
    "Logistic",
    "Lorenz63",
    "Lorenz96",
    "LyapunovResult",
    "Map",
    "MeanField",
    "ModifiedSolenoid",
    "NineNeuronNet",
    "NoisyLorenz96",
    "System",
    "TanhRNN",
    "Tent",
    "critical_sigma_w",
    "kaplan_yorke_dimension",
    "finite_time_exponents",
    "lyapunov_penalty",
    "lyapunov_spectrum",
    "mean_field",
    "simulate",
]
