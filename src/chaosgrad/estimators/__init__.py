"""Gradient estimators: one class per file, one entry point ``linear_response``."""

from ._base import AbstractEstimator, Estimate, Parameters, linear_response
from .backprop import Backprop, TruncatedBackprop
from .fast_adjoint_response import FastAdjointResponse
from .finite_difference import FiniteDifference
from ._noise import ParametricObservable
from .kernel import Kernel
from .path_kernel import PathKernel
from .shadowing import Shadowing

__all__ = ["AbstractEstimator", "Backprop", "Estimate", "FastAdjointResponse", "FiniteDifference", "Kernel", "ParametricObservable", "Parameters", "PathKernel",
           "Shadowing", "TruncatedBackprop", "linear_response"]
