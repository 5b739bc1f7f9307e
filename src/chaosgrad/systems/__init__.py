"""Built-in systems, one per file."""

from .henon import Henon
from .logistic import Logistic
from .lorenz63 import Lorenz63
from .lorenz96 import Lorenz96
from .mlp import DeepTanhNet
from .nine_neuron import NineNeuronNet
from .noisy_lorenz96 import NoisyLorenz96
from .rnn import TanhRNN
from .solenoid import ModifiedSolenoid
from .tent import Tent

BUILTINS = (
    Lorenz63,
    Lorenz96,
    Henon,
    Logistic,
    Tent,
    ModifiedSolenoid,
    NoisyLorenz96,
    TanhRNN,
    DeepTanhNet,
    NineNeuronNet,
)

__all__ = [
    "BUILTINS",
    "DeepTanhNet",
    "Henon",
    "Logistic",
    "Lorenz63",
    "Lorenz96",
    "ModifiedSolenoid",
    "NineNeuronNet",
    "NoisyLorenz96",
    "TanhRNN",
    "Tent",
]
