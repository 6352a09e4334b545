"""``LocalResponseNorm`` with TensorFlow's parameters (AlexNet's LRN, as the notes write it).

Differs from ``torch.nn.LocalResponseNorm(size, alpha, beta, k)``, which takes the window *size* and
divides ``alpha`` by it: ``LocalResponseNorm(r, bias, alpha, beta)`` here equals
``torch.nn.LocalResponseNorm(2 * r + 1, alpha * (2 * r + 1), beta, bias)``. See ``cnnkit.ops.norm``.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.ops.norm import lrn_nchw


class LocalResponseNorm(nn.Module):
    """``tf.nn.local_response_normalization`` as a module, NCHW -> NCHW (same shape).

    ``b_c = a_c / (bias + alpha * sum_{j=c-r}^{c+r} a_j**2) ** beta``, the window clipped at the
    first and last channel. AlexNet (Krizhevsky et al., 2012, §3.3: k=2, n=5, α=1e-4, β=0.75, α not
    divided by n) is ``LocalResponseNorm(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)``.
    """

    def __init__(
        self, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0, beta: float = 0.5
    ) -> None:
        super().__init__()
        if isinstance(depth_radius, bool) or not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError(
                f"LocalResponseNorm: depth_radius={depth_radius!r}; expected an int >= 0"
            )
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrn_nchw(x, self.depth_radius, self.bias, self.alpha, self.beta)

    def extra_repr(self) -> str:
        return (
            f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, "
            f"beta={self.beta}"
        )
