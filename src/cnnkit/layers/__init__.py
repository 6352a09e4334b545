"""Building blocks as ``torch.nn.Module``s (NCHW) with the notes' (Keras/TensorFlow) semantics.

Lower layers only: this package imports ``cnnkit.ops`` and never ``cnnkit.models`` or above.
"""

from cnnkit.layers.activation import get_activation
from cnnkit.layers.blocks import Bottleneck, InceptionModule, ResidualUnit, SEBlock
from cnnkit.layers.conv import Conv2d, ConvTranspose2d, SeparableConv2d
from cnnkit.layers.norm import LocalResponseNorm
from cnnkit.layers.pool import AvgPool2d, DepthMaxPool2d, GlobalAvgPool2d, MaxPool2d
from cnnkit.layers.upsample import (
    FixedBilinearUpsample,
    bilinear_conv_transpose,
    bilinear_kernel,
    fit_to_size,
)

__all__ = [
    "AvgPool2d",
    "Bottleneck",
    "Conv2d",
    "ConvTranspose2d",
    "DepthMaxPool2d",
    "FixedBilinearUpsample",
    "GlobalAvgPool2d",
    "InceptionModule",
    "LocalResponseNorm",
    "MaxPool2d",
    "ResidualUnit",
    "SEBlock",
    "SeparableConv2d",
    "bilinear_conv_transpose",
    "bilinear_kernel",
    "fit_to_size",
    "get_activation",
]
