"""Building blocks as ``torch.nn.Module``s (NCHW) with the notes' (Keras/TensorFlow) semantics.

Lower layers only: this package imports ``cnnkit.ops`` and never ``cnnkit.models`` or above.
"""

from cnnkit.layers.activation import get_activation
from cnnkit.layers.conv import Conv2d, ConvTranspose2d, SeparableConv2d
from cnnkit.layers.norm import LocalResponseNorm
from cnnkit.layers.pool import AvgPool2d, DepthMaxPool2d, GlobalAvgPool2d, MaxPool2d

# Composite blocks (SEBlock, ResidualUnit, Bottleneck, InceptionModule) live in
# ``cnnkit/layers/blocks.py``, owned by the model-zoo issue (#4); its author adds the import here:
# from cnnkit.layers.blocks import ...

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "ConvTranspose2d",
    "DepthMaxPool2d",
    "GlobalAvgPool2d",
    "LocalResponseNorm",
    "MaxPool2d",
    "SeparableConv2d",
    "get_activation",
]
