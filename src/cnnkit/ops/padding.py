"""TensorFlow's 'SAME' padding arithmetic, in one place for ``cnnkit.ops`` and ``cnnkit.layers``.

TensorFlow pads so that the output has ``ceil(n / s)`` cells along an axis of size ``n``: the total
padding is ``max((ceil(n / s) - 1) * s + k_eff - n, 0)`` with ``k_eff = d * (k - 1) + 1`` for
dilation ``d``, and when it is odd the extra cell goes at the end (bottom/right). PyTorch's
``padding=`` pads both sides equally, so it reproduces 'SAME' only when that total is even;
otherwise we pad explicitly first. Reference: TensorFlow,
``tensorflow/core/framework/kernel_shape_util.cc`` (``GetWindowedOutputSizeVerbose``), and timm's
``timm/layers/padding.py`` (``get_same_padding``, ``pad_same``), which does the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """The extent a dilated kernel covers: ``d * (k - 1) + 1``."""
    return dilation * (kernel_size - 1) + 1


def get_same_padding(
    size: int, kernel_size: int, stride: int = 1, dilation: int = 1
) -> tuple[int, int]:
    """``(before, after)`` padding of TensorFlow's 'SAME' for one axis of ``size`` cells.

    >>> get_same_padding(224, 7, stride=2)  # ResNet's stem: 2 above, 3 below
    (2, 3)
    """
    output_size = -(-size // stride)  # ceil without floats, so it also works on symbolic sizes
    extent = effective_kernel_size(kernel_size, dilation)
    total = (output_size - 1) * stride + extent - size
    if (
        extent < stride
    ):  # only then can it go negative; kept out of the expression traced for export
        total = max(total, 0)
    return total // 2, total - total // 2


def use_symmetric_shortcut(pads: tuple[int, int, int, int]) -> bool:
    """Whether to hand symmetric pads to torch's kernels instead of padding first.

    Not while ``torch.export`` traces: the test depends on the input size's parity, and a branch on
    it would pin exported programs to one parity. The explicit pad is exact for every size.
    """
    top, bottom, left, right = pads
    return not torch.compiler.is_exporting() and top == bottom and left == right


def static_same_padding(kernel_size: int, dilation: int = 1) -> tuple[int, int]:
    """'SAME' padding at stride 1, independent of the input size: total ``d * (k - 1)``."""
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


def same_pads_nchw(
    x: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> tuple[int, int, int, int]:
    """'SAME' pads of an NCHW tensor as ``(top, bottom, left, right)``."""
    top, bottom = get_same_padding(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    left, right = get_same_padding(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    return top, bottom, left, right


def pad_nchw(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """Pad an NCHW tensor by ``(top, bottom, left, right)`` (``F.pad`` wants the last axis first)."""
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)
