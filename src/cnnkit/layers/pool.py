"""Pooling with Keras' 'same'/'valid' semantics (NCHW): max, average, depth-max, global average.

Reference: the notes (Géron, *Hands-On Machine Learning*, ch. 14, "Pooling Layers"); the arithmetic
is ``cnnkit.ops.pool``'s, shared with the TensorFlow-layout functions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from cnnkit.ops._args import parse_padding
from cnnkit.ops.pool import avg_pool_nchw, depth_pool_nchw, max_pool_nchw

Size2 = int | tuple[int, int]


def _same(padding: str, layer: str) -> bool:
    return parse_padding(padding, layer, keras=True)


def _positive_pair(value: Size2, name: str, layer: str) -> tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"{layer}: {name}={value!r}; expected a positive int or a pair of them")
    return pair


class _Pool2d(nn.Module):
    def __init__(self, kernel_size: Size2, stride: Size2 | None, padding: str) -> None:
        super().__init__()
        layer = type(self).__name__
        self.kernel_size = _positive_pair(kernel_size, "kernel_size", layer)
        # Keras' default: stride = pool size (torch's too).
        self.stride = (
            self.kernel_size if stride is None else _positive_pair(stride, "stride", layer)
        )
        self.same = _same(padding, layer)

    def extra_repr(self) -> str:
        padding = "same" if self.same else "valid"
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={padding!r}"


class MaxPool2d(_Pool2d):
    """``keras.layers.MaxPool2D``: N×C×H×W -> N×C×H'×W', H' = ceil(H / s) ('same') or
    floor((H - k) / s) + 1 ('valid'). Padded cells never win ('same' pads with -inf)."""

    def __init__(self, kernel_size: Size2, stride: Size2 | None = None, padding: str = "valid"):
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_nchw(x, self.kernel_size, self.stride, self.same)


class AvgPool2d(_Pool2d):
    """``keras.layers.AvgPool2D``: shapes as ``MaxPool2d``; 'same' averages only the real cells
    under each window (TensorFlow's rule)."""

    def __init__(self, kernel_size: Size2, stride: Size2 | None = None, padding: str = "valid"):
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool_nchw(x, self.kernel_size, self.stride, self.same)


class DepthMaxPool2d(nn.Module):
    """Max over groups of ``kernel_size`` consecutive channels: N×C×H×W -> N×(C/k)×H×W.

    The notes' ``tf.nn.max_pool(X, ksize=(1, 1, 1, k), strides=(1, 1, 1, k), padding="valid")``;
    ``k`` must divide C.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(
                f"DepthMaxPool2d: kernel_size={kernel_size!r}; expected a positive int"
            )
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_pool_nchw(x, self.kernel_size, "max")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class GlobalAvgPool2d(nn.Module):
    """``keras.layers.GlobalAvgPool2D``: N×C×H×W -> N×C (N×C×1×1 with ``keepdim=True``)."""

    def __init__(self, keepdim: bool = False) -> None:
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"keepdim={self.keepdim}"
