"""chaosgrad: gradients that do not explode for unstable networks and chaotic systems.

Every chaos computation runs in float64, and chaosgrad leaves JAX's configuration to its
user: turn float64 on once, at the start of the program, before building systems::

    jax.config.update("jax_enable_x64", True)   # or JAX_ENABLE_X64=1 in the environment

Every entry point refuses, in one line that says this, when it is off. The ``chaosgrad``
command line turns it on itself.
"""

from ._system import AbstractFlow, System, simulate
from ._train_step import TrainMetrics, TrainState, TrainStep
from ._user_models import Flow, InputDriven, Map
from .estimators import (
    ES,
    NRES,
    PES,
    SPSA,
    AbstractSweep,
    Auto,
    AutoSweep,
    Backprop,
    Composite,
    Estimate,
    FastAdjointResponse,
    FiniteDifference,
    Kernel,
    Online,
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
from .lyapunov import (
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
from .statistics import (
    ParametricObservable,
    Terminal,
    TimeAverage,
    WindowAverage,
)
from .systems import (
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
from .train import FitResult, fit

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
    "Composite",
    "ES",
    "Estimate",
    "FastAdjointResponse",
    "FiniteDifference",
    "Kernel",
    "NRES",
    "Online",
    "PES",
    "ParametricObservable",
    "PathKernel",
    "SPSA",
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
    "TrainMetrics",
    "TrainState",
    "TrainStep",
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
