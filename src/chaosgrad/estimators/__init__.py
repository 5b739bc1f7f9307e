"""Gradient estimators: one class per file; ``linear_response``, ``value_and_grad`` and the
differentiable statistic ``average``.

``ESTIMATORS`` is the registry the command line reads: a new estimator is its file plus one
line here.
"""

from ._base import AbstractEstimator, AbstractInfo, Estimate
from ._parameters import Parameters
from ._pilot import AutoReport, Pilot
from ._response import linear_response, value_and_grad
from .auto import Auto
from .average import average, configure
from .backprop import Backprop, BackpropInfo, TruncatedBackprop
from .composite import Composite, CompositeInfo
from .evolution import ES, NRES, PES, SPSA, ZerothOrderInfo
from .fast_adjoint_response import FastAdjointResponse, FastResponseInfo
from .finite_difference import FiniteDifference, FiniteDifferenceInfo
from .kernel import Kernel, KernelInfo
from .online import Online, Particles
from .path_kernel import PathKernel, PathKernelInfo
from .shadowing import Shadowing, ShadowingInfo
from .sweeps import AbstractSweep, AutoSweep, SegmentJacobians, SegmentParallel, StepByStep

ESTIMATORS: dict[str, type[AbstractEstimator]] = {
    "backprop": Backprop,
    "truncated": TruncatedBackprop,
    "fd": FiniteDifference,
    "shadowing": Shadowing,
    "far": FastAdjointResponse,
    "kernel": Kernel,
    "path-kernel": PathKernel,
    "composite": Composite,
    "es": ES,
    "pes": PES,
    "nres": NRES,
    "spsa": SPSA,
    "auto": Auto,
}

__all__ = [
    "ES",
    "ESTIMATORS",
    "AbstractEstimator",
    "AbstractInfo",
    "AbstractSweep",
    "AutoSweep",
    "Auto",
    "AutoReport",
    "Backprop",
    "BackpropInfo",
    "Composite",
    "CompositeInfo",
    "Estimate",
    "FastAdjointResponse",
    "FastResponseInfo",
    "FiniteDifference",
    "FiniteDifferenceInfo",
    "Kernel",
    "KernelInfo",
    "NRES",
    "Online",
    "PES",
    "Particles",
    "Parameters",
    "Pilot",
    "PathKernel",
    "PathKernelInfo",
    "SegmentJacobians",
    "SegmentParallel",
    "Shadowing",
    "ShadowingInfo",
    "SPSA",
    "StepByStep",
    "TruncatedBackprop",
    "average",
    "configure",
    "linear_response",
    "ZerothOrderInfo",
    "value_and_grad",
]
