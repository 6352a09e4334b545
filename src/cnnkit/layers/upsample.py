"""Upsampling for dense prediction: transposed convolutions that start as bilinear interpolation
(Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015,
§3.3), and the crop/pad that brings a map back to a size.

Geometry: a transposed convolution with stride f, kernel ``2f - f % 2`` and padding ``f // 2``
maps n cells to exactly ``n·f``, and with the kernel of ``bilinear_kernel(f)`` its output cell o
reads the input at ``(o + 0.5) / f - 0.5``, the sampling rule of
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``. The two agree except in
the outer ``f // 2`` rows and columns, where ``interpolate`` clamps the source coordinate to the edge
(it repeats the edge cell) and the transposed convolution sees zeros beyond it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The (k, k) bilinear interpolation kernel for upsampling by ``factor``, k = 2f - f % 2.

    FCN's ``upsample_filt`` (``surgery.py`` of the reference Caffe code): the outer product of the
    1-D tent ``1 - |i - c| / f`` with its centre c = f - 1 (odd k) or f - 0.5 (even k).
    Written by hand: torch and torchvision have no function that returns this kernel.
    """
    if factor < 1:
        raise ValueError(f"bilinear_kernel: factor={factor}; expected an integer >= 1")
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    tent = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    return torch.outer(tent, tent).float()


def bilinear_conv_transpose(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable ``channels → channels`` transposed convolution that upsamples by ``factor`` and
    starts as bilinear interpolation of each channel on its own (FCN's ``interp`` surgery: the
    kernel on the diagonal, zero between different channels), without bias. (N, C, H, W) →
    (N, C, H·f, W·f).
    """
    layer = nn.ConvTranspose2d(
        channels,
        channels,
        kernel_size=2 * factor - factor % 2,
        stride=factor,
        padding=factor // 2,
        bias=False,
    )
    with torch.no_grad():
        layer.weight.zero_()
        index = torch.arange(channels)
        layer.weight[index, index] = bilinear_kernel(factor).to(layer.weight)
    return layer


class FixedBilinearUpsample(nn.Module):
    """Bilinear upsampling by an integer ``factor`` as a fixed transposed convolution (FCN's final
    upsampling, which the paper keeps fixed): one kernel per channel (``groups=channels``) held in
    a buffer, so it is saved with the model and never trained. (N, C, H, W) → (N, C, H·f, W·f).
    """

    weight: torch.Tensor

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels, self.factor = channels, factor
        kernel = bilinear_kernel(factor)
        self.register_buffer("weight", kernel.expand(channels, 1, *kernel.shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        return F.conv_transpose2d(
            x, self.weight.to(x.dtype), stride=self.factor, padding=self.factor // 2,
            groups=self.channels,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"channels={self.channels}, factor={self.factor}"


def fit_to_size(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Crop or pad the last two dimensions of ``x`` to ``size`` = (height, width), at the bottom and
    right only, so that cell (0, 0) stays where it is.

    Keeping the top-left corner keeps the maps aligned: cell j of a stride-s map of a 'same'-padded
    network covers input cells from s·j on, whatever the input size, so the extra cells of an
    upsampled map are at the end. Padding (needed only after 'valid' convolutions) repeats the edge.
    Written by hand because ``torchvision.transforms.v2.functional.center_crop`` crops both sides.
    """
    # not int(): under torch.export the sizes are symbolic, and int() would fix them to the
    # example's (the ONNX export of a super-resolution model takes any height and width)
    height, width = size[0], size[1]
    x = x[..., :height, :width]
    pad_bottom, pad_right = height - x.shape[-2], width - x.shape[-1]
    if pad_bottom > 0 or pad_right > 0:
        x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")
    return x


def bicubic_resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Resize float maps (N, C, H, W) to ``size`` = (height, width) by bicubic interpolation as
    PIL's ``Image.resize(size, Image.BICUBIC)`` computes it on a float (mode ``F``) image: the cubic
    convolution kernel with a = -0.5 (Keys 1981; MATLAB's ``imresize`` uses the same), half-pixel
    centres, the kernel widened by the scale when shrinking (antialiasing), edge weights renormalised.

    That is torch's ``interpolate(mode="bicubic", antialias=True)``, whose kernels were ported from
    Pillow (the plain ``mode="bicubic"`` uses a = -0.75 and differs by up to 0.09 on [0, 1] data);
    ``tests/test_superres.py`` checks it against PIL to 1e-5. Values are not clamped: bicubic
    overshoots at edges, as PIL's float resize does.
    """
    # not int(): under torch.export the sizes are symbolic, and int() would fix them to the
    # example's (the ONNX export of a super-resolution model takes any height and width)
    height, width = size[0], size[1]
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(
        x, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )
