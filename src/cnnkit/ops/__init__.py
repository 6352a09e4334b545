"""TensorFlow's low-level convolution and pooling API as the notes use it, on PyTorch (NHWC in, out).

===================================================  ================================================
notes (TensorFlow)                                   cnnkit
===================================================  ================================================
``tf.nn.conv2d(images, filters, strides, padding)``  ``cnnkit.ops.conv2d(...)``
``tf.nn.max_pool(x, ksize, strides, padding)``       ``cnnkit.ops.max_pool(...)``
``tf.nn.avg_pool(x, ksize, strides, padding)``       ``cnnkit.ops.avg_pool(...)``
``tf.nn.local_response_normalization(x, ...)``       ``cnnkit.ops.local_response_normalization(...)``
``tf.reduce_mean(x, axis=[1, 2])``                   ``cnnkit.ops.global_avg_pool(x)``
===================================================  ================================================
"""

from cnnkit.ops.conv import conv2d, conv2d_same_nchw
from cnnkit.ops.norm import local_response_normalization, lrn_nchw
from cnnkit.ops.padding import get_same_padding, pad_nchw, same_pads_nchw, static_same_padding
from cnnkit.ops.pool import (
    avg_pool,
    avg_pool_nchw,
    depth_pool_nchw,
    global_avg_pool,
    max_pool,
    max_pool_nchw,
)

__all__ = [
    "avg_pool",
    "avg_pool_nchw",
    "conv2d",
    "conv2d_same_nchw",
    "depth_pool_nchw",
    "get_same_padding",
    "global_avg_pool",
    "local_response_normalization",
    "lrn_nchw",
    "max_pool",
    "max_pool_nchw",
    "pad_nchw",
    "same_pads_nchw",
    "static_same_padding",
]
