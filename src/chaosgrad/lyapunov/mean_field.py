"""Mean-field theory of wide random tanh networks: the order-to-chaos line.

The public home of ``mean_field``, ``critical_sigma_w`` and ``MeanField``. They are computed in
``chaosgrad._mean_field``, a bottom-layer module, so that ``systems/mlp.py`` can place its
``"critical"`` initialisation on the line without importing ``lyapunov``.
"""

from .._mean_field import MeanField, critical_sigma_w, mean_field

__all__ = ["MeanField", "critical_sigma_w", "mean_field"]
