"""``tf.nn.conv2d`` with TensorFlow's layouts and 'SAME' padding, on PyTorch.

``conv2d`` takes images ``[batch, height, width, channels]`` and filters ``[fh, fw, fn', fn]`` as
the notes (Géron, *Hands-On Machine Learning*, ch. 14, "TensorFlow Implementation") and
``tf.nn.conv2d`` do, and returns an NHWC tensor. ``conv2d_same_nchw`` is the NCHW core that
``cnnkit.layers.Conv2d`` shares, so layer and op agree by construction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.ops._args import (
    check_output_size,
    nchw_to_nhwc,
    nhwc_to_nchw,
    parse_padding,
    parse_window,
    to_float_tensor,
)
from cnnkit.ops.padding import pad_nchw, same_pads_nchw, use_symmetric_shortcut

ArrayLike = np.ndarray | torch.Tensor


def conv2d_same_nchw(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> torch.Tensor:
    """NCHW convolution with TensorFlow's 'SAME' padding (extra row/column at the bottom/right).

    When the padding this input needs is symmetric, it goes to ``F.conv2d`` itself (no copy);
    otherwise the input is padded first, as timm's ``conv2d_same`` does.
    """
    kernel_size = (weight.shape[-2], weight.shape[-1])
    top, bottom, left, right = same_pads_nchw(x, kernel_size, stride, dilation)
    if use_symmetric_shortcut((top, bottom, left, right)):
        return F.conv2d(x, weight, bias, stride, (top, left), dilation, groups)
    x = pad_nchw(x, (top, bottom, left, right))
    return F.conv2d(x, weight, bias, stride, 0, dilation, groups)


def conv2d(
    images: ArrayLike,
    filters: ArrayLike,
    strides: int | tuple[int, ...] | list[int] = 1,
    padding: str = "SAME",
    dilations: int | tuple[int, ...] | list[int] = 1,
) -> torch.Tensor:
    """``tf.nn.conv2d(images, filters, strides, padding, dilations)``, returning an NHWC tensor.

    Args:
        images: ``[batch, height, width, channels]`` (numpy array or tensor, floating point).
        filters: ``[fh, fw, fn', fn]``; ``fn'`` is the input depth, or a divisor of it for a grouped
            convolution (as TensorFlow allows).
        strides: an int, ``(sh, sw)``, or the notes' 4-element ``[1, sh, sw, 1]``.
        padding: ``"SAME"`` or ``"VALID"``, any case.
        dilations: as ``strides``.

    Returns:
        ``[batch, ceil(h / sh), ceil(w / sw), fn]`` for 'SAME';
        ``[batch, ceil((h - kh_eff + 1) / sh), ceil((w - kw_eff + 1) / sw), fn]`` for 'VALID',
        with ``kh_eff = dh * (fh - 1) + 1``.
    """
    x = to_float_tensor(images, "images", "conv2d")
    w = to_float_tensor(filters, "filters", "conv2d", like=x)
    if x.ndim != 4:
        raise ValueError(
            f"conv2d: images must be 4-D [batch, height, width, channels] (NHWC), "
            f"got shape {tuple(x.shape)}"
        )
    if w.ndim != 4:
        raise ValueError(
            f"conv2d: filters must be 4-D [filter_height, filter_width, in_channels, "
            f"out_channels], "
            f"got shape {tuple(w.shape)}"
        )
    channels, filter_in = x.shape[3], w.shape[2]
    if channels % filter_in != 0:
        hint = ""
        if x.shape[1] % filter_in == 0 and x.shape[1] <= 4 < x.shape[3]:
            hint = " (the images look NCHW; cnnkit.ops takes NHWC, cnnkit.layers takes NCHW)"
        raise ValueError(
            f"conv2d: images have {channels} channels (last axis of shape {tuple(x.shape)}) but "
            f"filters expect {filter_in} input channels (axis 2 of shape {tuple(w.shape)}); "
            f"expected equal, or a divisor for a grouped convolution{hint}"
        )
    stride = parse_window(strides, "strides", "conv2d")
    dilation = parse_window(dilations, "dilations", "conv2d")
    same = parse_padding(padding, "conv2d")
    kernel_size = (w.shape[0], w.shape[1])
    if not same:
        for axis, name in ((0, "height"), (1, "width")):
            check_output_size("conv2d", name, x.shape[1 + axis], kernel_size[axis], dilation[axis])
    weight = w.permute(3, 2, 0, 1)  # [fh, fw, fn', fn] -> [fn, fn', fh, fw]
    groups = channels // filter_in
    x = nhwc_to_nchw(x)
    if same:
        y = conv2d_same_nchw(x, weight, None, stride, dilation, groups)
    else:
        y = F.conv2d(x, weight, None, stride, 0, dilation, groups)
    return nchw_to_nhwc(y)
