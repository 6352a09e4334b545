"""Convolutions with Keras' padding semantics: ``Conv2d``, ``SeparableConv2d``, ``ConvTranspose2d``.

'same' is TensorFlow's at every stride: the output has ``ceil(n / s)`` cells and an odd total
padding puts the extra row/column at the bottom/right (PyTorch's ``padding=`` pads both sides
alike). When torch's own padding is equivalent (stride 1, odd effective kernel) it is used, so those
convolutions stay on PyTorch's fast path; otherwise the padding comes from the actual input size in
``forward``, as timm's ``Conv2dSame`` does. The classes subclass the ``torch.nn`` ones, so
``weight``/``bias`` keep their standard ``state_dict`` keys and torchvision weights load into them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from cnnkit.layers.activation import get_activation
from cnnkit.ops._args import parse_padding
from cnnkit.ops.conv import conv2d_same_nchw
from cnnkit.ops.padding import effective_kernel_size, pad_nchw, static_same_padding

Size2 = int | tuple[int, int]
Padding = str | int | tuple[int, int]


class Conv2d(nn.Conv2d):
    """``keras.layers.Conv2D`` in NCHW: N×C×H×W -> N×out_channels×H'×W'.

    Output size along an axis of ``n`` cells, with ``k_eff = dilation * (kernel_size - 1) + 1``:
    'same' -> ``ceil(n / stride)``; 'valid' -> ``floor((n - k_eff) / stride) + 1``;
    an int or tuple ``p`` -> ``floor((n + 2p - k_eff) / stride) + 1`` (torch's symmetric padding).

    Args:
        activation: None, a Keras-style name ("relu", "gelu", ...) or a module, applied last.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Size2,
        stride: Size2 = 1,
        padding: Padding = "same",
        dilation: Size2 = 1,
        groups: int = 1,
        bias: bool = True,
        activation: str | nn.Module | None = None,
    ) -> None:
        kernel_hw, stride_hw, dilation_hw = _pair(kernel_size), _pair(stride), _pair(dilation)
        mode = _padding_mode(padding, "Conv2d")
        # 'same' pads at run time unless it is static (stride 1); static and symmetric (odd k_eff)
        # goes to torch's own padding, the fast path.
        static_pads: tuple[int, int, int, int] | None = None
        dynamic_same = False
        torch_padding: int | tuple[int, int] = 0
        if mode == "same" and stride_hw == (1, 1):
            top, bottom = static_same_padding(kernel_hw[0], dilation_hw[0])
            left, right = static_same_padding(kernel_hw[1], dilation_hw[1])
            if top == bottom and left == right:
                torch_padding = (top, left)
            else:
                static_pads = (top, bottom, left, right)
        elif mode == "same" and kernel_hw == (1, 1):
            pass  # a 1x1 window never needs padding at any stride (ResNet's strided skip convs)
        elif mode == "same":
            dynamic_same = True
        elif mode == "explicit":
            torch_padding = padding  # type: ignore[assignment]
        super().__init__(
            in_channels,
            out_channels,
            kernel_hw,
            stride_hw,
            torch_padding,
            dilation_hw,
            groups,
            bias,
        )
        self.padding_mode_keras = mode
        self.static_pads = static_pads
        self.dynamic_same = dynamic_same
        # None stays None (no Identity call in forward), so a plain conv costs what nn.Conv2d does.
        self.act = None if activation is None else get_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same:
            stride, dilation = _pair(self.stride), _pair(self.dilation)
            x = conv2d_same_nchw(x, self.weight, self.bias, stride, dilation, self.groups)
        elif self.static_pads is not None:
            x = F.conv2d(
                pad_nchw(x, self.static_pads), self.weight, self.bias, self.stride, 0,
                self.dilation, self.groups,
            )  # fmt: skip
        else:
            x = self._conv_forward(x, self.weight, self.bias)
        return x if self.act is None else self.act(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", keras_padding={self.padding_mode_keras!r}"


class SeparableConv2d(nn.Module):
    """``keras.layers.SeparableConv2D``: a depthwise k×k conv (``depth_multiplier`` filters per
    input channel, no bias) then a pointwise 1×1 conv (with bias), as Xception (Chollet, 2017).

    N×C×H×W -> N×out_channels×H'×W', H' and W' as ``Conv2d``'s with the same kernel, stride and
    padding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Size2,
        stride: Size2 = 1,
        padding: Padding = "same",
        depth_multiplier: int = 1,
        dilation: Size2 = 1,
        bias: bool = True,
        activation: str | nn.Module | None = None,
    ) -> None:
        super().__init__()
        depthwise_channels = in_channels * depth_multiplier
        self.depthwise = Conv2d(
            in_channels, depthwise_channels, kernel_size, stride, padding, dilation,
            groups=in_channels, bias=False,
        )  # fmt: skip
        self.pointwise = Conv2d(depthwise_channels, out_channels, 1, bias=bias)
        self.act = None if activation is None else get_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x)  # N x C*depth_multiplier x H' x W'
        x = self.pointwise(x)  # N x out_channels x H' x W'
        return x if self.act is None else self.act(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``keras.layers.Conv2DTranspose`` (no ``output_padding``) in NCHW, with Keras' output sizes.

    Along an axis of ``n`` cells, with ``k_eff = dilation * (kernel_size - 1) + 1``:
    'same' -> ``n * stride``; 'valid' -> ``n * stride + max(k_eff - stride, 0)``, which is
    ``(n - 1) * stride + k_eff`` when ``k_eff >= stride`` (Keras' ``deconv_output_length``).

    'same' is the gradient of a 'same' convolution: the cropped border is ``total // 2`` at the
    top/left and the rest at the bottom/right, so an odd total crops one more cell at the end. torch
    crops both ends alike, so we crop the smaller amount and slice the last cell off in ``forward``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Size2,
        stride: Size2 = 1,
        padding: str = "same",
        dilation: Size2 = 1,
        groups: int = 1,
        bias: bool = True,
        activation: str | nn.Module | None = None,
    ) -> None:
        kernel_hw, stride_hw, dilation_hw = _pair(kernel_size), _pair(stride), _pair(dilation)
        mode = _padding_mode(padding, "ConvTranspose2d")
        if mode == "explicit":
            raise ValueError(
                f"ConvTranspose2d: padding={padding!r}; expected 'same' or 'valid' (Keras' forms)"
            )
        crop: list[int] = []
        output_padding: list[int] = []
        crop_end: list[bool] = []
        for k, s, d in zip(kernel_hw, stride_hw, dilation_hw, strict=True):
            extent = effective_kernel_size(k, d)
            total = max(extent - s, 0) if mode == "same" else 0
            crop.append(total // 2)
            crop_end.append(total % 2 == 1)
            # Keras' output is at least n * s; torch's full output is (n - 1) * s + k_eff.
            output_padding.append(max(s - extent, 0))
        super().__init__(
            in_channels, out_channels, kernel_hw, stride_hw, (crop[0], crop[1]),
            (output_padding[0], output_padding[1]), groups, bias, dilation_hw,
        )  # fmt: skip
        self.padding_mode_keras = mode
        self.crop_end = tuple(crop_end)
        self.act = None if activation is None else get_activation(activation)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None:
            raise ValueError("ConvTranspose2d: the output size follows from 'same'/'valid'")
        height, width = x.shape[-2], x.shape[-1]
        y = super().forward(x)
        if self.crop_end[0]:
            y = y[..., : height * self.stride[0], :]  # N x out x H*s x W'
        if self.crop_end[1]:
            y = y[..., : width * self.stride[1]]
        return y if self.act is None else self.act(y)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", keras_padding={self.padding_mode_keras!r}"


def _padding_mode(padding: Padding, layer: str) -> str:
    """'same', 'valid' (any case) or 'explicit' for torch's int / (int, int) padding."""
    if isinstance(padding, str):
        same = parse_padding(padding, layer, keras=True, more=", an int or a pair")
        return "same" if same else "valid"
    values = (padding,) if isinstance(padding, int) else tuple(padding)
    if len(values) not in (1, 2) or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values
    ):
        raise ValueError(
            f"{layer}: padding={padding!r}; expected 'same', 'valid', or non-negative int(s) "
            f"(an int or a (height, width) pair)"
        )
    return "explicit"
