"""``tf.nn.max_pool``, ``tf.nn.avg_pool`` and global average pooling with TensorFlow's semantics.

The NHWC functions follow the notes (Géron, *Hands-On Machine Learning*, ch. 14, "Pooling Layers");
the ``*_nchw`` cores are shared with ``cnnkit.layers``. TensorFlow's 'SAME' pooling pads like its
convolution (extra cell at the bottom/right); padded cells never win a max and are not counted by an
average, so 'SAME' average pooling divides by the number of real cells under the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.ops._args import (
    _as_tuple,
    check_output_size,
    nchw_to_nhwc,
    nhwc_to_nchw,
    parse_padding,
    parse_pool_window,
    to_float_tensor,
)
from cnnkit.ops.padding import pad_nchw, same_pads_nchw, use_symmetric_shortcut

ArrayLike = np.ndarray | torch.Tensor
Window = int | Sequence[int]


def max_pool_nchw(
    x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int], same: bool
) -> torch.Tensor:
    """NCHW max pooling; 'SAME' pads with -inf so a padded cell never wins."""
    if not same:
        return F.max_pool2d(x, kernel_size, stride)
    top, bottom, left, right = same_pads_nchw(x, kernel_size, stride)
    if use_symmetric_shortcut(
        (top, bottom, left, right)
    ):  # torch's own padding is -inf too: no copy
        return F.max_pool2d(x, kernel_size, stride, (top, left))
    return F.max_pool2d(pad_nchw(x, (top, bottom, left, right), float("-inf")), kernel_size, stride)


def avg_pool_nchw(
    x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int], same: bool
) -> torch.Tensor:
    """NCHW average pooling; 'SAME' divides each window by its number of real (unpadded) cells."""
    if not same:
        return F.avg_pool2d(x, kernel_size, stride)
    pads = same_pads_nchw(x, kernel_size, stride)
    top, bottom, left, right = pads
    if use_symmetric_shortcut((top, bottom, left, right)):
        return F.avg_pool2d(x, kernel_size, stride, (top, left), count_include_pad=False)
    # torch's count_include_pad=False only knows symmetric padding, so pad explicitly and divide the
    # window sums by the pooled mask of real cells (one 1×1×H×W map, cheap next to the images).
    sums = F.avg_pool2d(pad_nchw(x, pads), kernel_size, stride)
    real = pad_nchw(x.new_ones((1, 1, x.shape[-2], x.shape[-1])), pads)
    fraction_real = F.avg_pool2d(real, kernel_size, stride)
    return sums / fraction_real


def depth_pool_nchw(x: torch.Tensor, depth: int, mode: str = "max") -> torch.Tensor:
    """Pool groups of ``depth`` consecutive channels: N×C×H×W -> N×(C/depth)×H×W."""
    channels = x.shape[1]
    if channels % depth != 0:
        raise ValueError(
            f"depth pooling: window of {depth} channels does not divide the input depth "
            f"{channels}; expected a divisor of {channels} (as TensorFlow requires)"
        )
    grouped = x.unflatten(1, (channels // depth, depth))  # N x C/k x k x H x W
    return grouped.amax(2) if mode == "max" else grouped.mean(2)


def _pool(
    images: ArrayLike, ksize: Window, strides: Window, padding: str, mode: str
) -> torch.Tensor:
    op = "max_pool" if mode == "max" else "avg_pool"
    x = to_float_tensor(images, "images", op)
    if x.ndim != 4:
        raise ValueError(
            f"{op}: images must be 4-D [batch, height, width, channels] (NHWC), "
            f"got shape {tuple(x.shape)}"
        )
    kernel, stride, depth = parse_pool_window(ksize, strides, op)
    same = parse_padding(padding, op)
    x = nhwc_to_nchw(x)
    if depth > 1:
        try:
            return nchw_to_nhwc(depth_pool_nchw(x, depth, mode))
        except ValueError as exc:
            raise ValueError(f"{op}: ksize={list(_as_tuple(ksize))}: {exc}") from None
    if not same:
        check_output_size(op, "height", x.shape[2], kernel[0])
        check_output_size(op, "width", x.shape[3], kernel[1])
    pool = max_pool_nchw if mode == "max" else avg_pool_nchw
    return nchw_to_nhwc(pool(x, kernel, stride, same))


def max_pool(
    images: ArrayLike, ksize: Window, strides: Window, padding: str = "VALID"
) -> torch.Tensor:
    """``tf.nn.max_pool(images, ksize, strides, padding)`` on NHWC images, returning NHWC.

    ``ksize`` and ``strides`` are an int, ``(h, w)`` or ``(1, h, w, 1)``; ``ksize=(1, 1, 1, k)``
    with ``strides=(1, 1, 1, k)`` pools along depth as in the notes (``k`` must divide the depth).
    """
    return _pool(images, ksize, strides, padding, "max")


def avg_pool(
    images: ArrayLike, ksize: Window, strides: Window, padding: str = "VALID"
) -> torch.Tensor:
    """``tf.nn.avg_pool(images, ksize, strides, padding)`` on NHWC images, returning NHWC.

    'SAME' divides by the real cells under each window, as TensorFlow does. Depth windows
    ``(1, 1, 1, k)`` average groups of ``k`` channels; TensorFlow itself only pools depth with max.
    """
    return _pool(images, ksize, strides, padding, "avg")


def global_avg_pool(images: ArrayLike, keepdims: bool = False) -> torch.Tensor:
    """``tf.reduce_mean(images, axis=[1, 2])``: N×H×W×C -> N×C (N×1×1×C with ``keepdims``)."""
    x = to_float_tensor(images, "images", "global_avg_pool")
    if x.ndim != 4:
        raise ValueError(
            f"global_avg_pool: images must be 4-D [batch, height, width, channels] (NHWC), "
            f"got shape {tuple(x.shape)}"
        )
    return x.mean(dim=(1, 2), keepdim=keepdims)
