"""``tf.nn.local_response_normalization`` (AlexNet's LRN) with TensorFlow's parameter convention.

TensorFlow: ``b_c = a_c / (bias + alpha * sum_{j=c-r}^{c+r} a_j**2) ** beta`` (window clipped at the
ends, ``alpha`` NOT divided by the window size). ``torch.nn.LocalResponseNorm(size, alpha, beta,
k)`` divides ``alpha`` by ``size``, so TensorFlow's ``(r, bias, alpha, beta)`` is torch's
``(size=2r+1, alpha=alpha*(2r+1), beta=beta, k=bias)``; we call torch's kernel with that mapping.
References: Krizhevsky et al., "ImageNet Classification with Deep CNNs" (2012), §3.3; TensorFlow's
``tf.nn.local_response_normalization`` docs; ``torch.nn.functional.local_response_norm``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.ops._args import nchw_to_nhwc, nhwc_to_nchw, to_float_tensor


def _check_radius(depth_radius: int, op: str) -> None:
    if isinstance(depth_radius, bool) or not isinstance(depth_radius, int) or depth_radius < 0:
        raise ValueError(f"{op}: depth_radius={depth_radius!r}; expected an integer >= 0")


def lrn_nchw(
    x: torch.Tensor, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0, beta: float = 0.5
) -> torch.Tensor:
    """LRN over the channel axis of an NCHW tensor, TensorFlow's convention (see module docs)."""
    size = 2 * depth_radius + 1
    return F.local_response_norm(x, size, alpha=alpha * size, beta=beta, k=bias)


def local_response_normalization(
    images: np.ndarray | torch.Tensor,
    depth_radius: int = 5,
    bias: float = 1.0,
    alpha: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """``tf.nn.local_response_normalization`` on NHWC input, returning NHWC (defaults as TF's)."""
    _check_radius(depth_radius, "local_response_normalization")
    x = to_float_tensor(images, "images", "local_response_normalization")
    if x.ndim != 4:
        raise ValueError(
            f"local_response_normalization: input must be 4-D [batch, height, width, channels], "
            f"got shape {tuple(x.shape)}"
        )
    return nchw_to_nhwc(lrn_nchw(nhwc_to_nchw(x), depth_radius, bias, alpha, beta))
