"""cnnkit.ops: TensorFlow's argument forms, 'SAME' arithmetic on hand-worked examples, and error paths.

References: TensorFlow's padding rule (``tensorflow/core/framework/kernel_shape_util.cc``: output
``ceil(n / s)``, total padding ``max((ceil(n/s) - 1) * s + k - n, 0)``, extra cell at the end) and the
``tf.nn.conv2d`` / ``tf.nn.max_pool`` / ``tf.nn.avg_pool`` docs; numeric parity with TensorFlow itself
is in ``test_ops_tf_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit import ops
from cnnkit.ops.padding import get_same_padding

GRID_3X3 = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)  # [[0 1 2] [3 4 5] [6 7 8]]


# --- 'SAME' padding arithmetic -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "expected"),
    [
        (224, 7, 2, 1, (2, 3)),  # ResNet stem: 112 outputs, 5 cells of padding, 3 of them below
        (224, 3, 2, 1, (0, 1)),  # stride-2 3x3 on an even size: only the bottom row is padded
        (225, 3, 2, 1, (1, 1)),  # odd size: symmetric, as torch's padding=1
        (8, 4, 1, 1, (1, 2)),  # even kernel at stride 1: the extra cell below
        (8, 3, 1, 2, (2, 2)),  # dilation 2: a 5-cell window
        (7, 3, 3, 1, (1, 1)),  # ceil(7/3) = 3 outputs: (3-1)*3 + 3 - 7 = 2
        (9, 1, 2, 1, (0, 0)),  # 1x1 never pads
        (2, 5, 3, 1, (1, 2)),  # window larger than the input
    ],
)
def test_get_same_padding_follows_tensorflow_rule(size, kernel, stride, dilation, expected):
    assert get_same_padding(size, kernel, stride, dilation) == expected


def test_same_conv_stride_2_pads_bottom_right_like_tensorflow():
    # 4x4 ones, 3x3 ones kernel, stride 2: TF pads (0, 1), so output[0, 0] sums rows/cols 0-2 (9 cells)
    # and output[1, 1] sums rows/cols 2-3 plus padding (4 cells). torch's padding=1 would give 4 and 9.
    images = np.ones((1, 4, 4, 1), np.float32)
    filters = np.ones((3, 3, 1, 1), np.float32)
    out = ops.conv2d(images, filters, strides=2, padding="SAME")
    assert out[0, :, :, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_valid_conv_output_size():
    # floor((n - k) / s) + 1 = floor((10 - 3) / 3) + 1 = 3 rows, floor((7 - 3) / 3) + 1 = 2 columns
    out = ops.conv2d(
        np.zeros((2, 10, 7, 3), np.float32), np.zeros((3, 3, 3, 5), np.float32), 3, "VALID"
    )
    assert tuple(out.shape) == (2, 3, 2, 5)


def test_grouped_conv_when_filter_depth_divides_image_depth():
    # TF runs a grouped conv when filters' in-depth divides the images' depth: 4 channels, 2 groups
    images = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)  # channels 0 1 2 3
    filters = np.ones(
        (1, 1, 2, 2), np.float32
    )  # group 0 -> out 0 sums channels 0, 1; group 1 -> 2, 3
    assert ops.conv2d(images, filters).flatten().tolist() == [1.0, 5.0]


@pytest.mark.parametrize("strides", [2, (2, 2), [2, 2], [1, 2, 2, 1], np.int64(2)])
def test_conv2d_accepts_every_strides_form(strides):
    out = ops.conv2d(
        np.zeros((1, 5, 5, 1), np.float32), np.zeros((3, 3, 1, 1), np.float32), strides
    )
    assert tuple(out.shape) == (1, 3, 3, 1)  # ceil(5 / 2)


def test_conv2d_accepts_tensors_and_returns_nhwc_tensor():
    out = ops.conv2d(torch.zeros(1, 6, 4, 3), torch.zeros(3, 3, 3, 2), padding="same")
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 6, 4, 2)


def test_conv2d_follows_image_dtype_like_the_notes_float64_images():
    # the notes divide uint8 images by 255 (float64) and build float32 filters
    out = ops.conv2d(np.ones((1, 3, 3, 1)), np.ones((1, 1, 1, 1), np.float32))
    assert out.dtype == torch.float64


# --- pooling ----------------------------------------------------------------------------------------


def test_same_avg_pool_divides_by_real_cells():
    # 3x3 grid, 2x2 windows, stride 2: TF pads one row/col at the end and averages real cells only:
    # mean(0,1,3,4)=2, mean(2,5)=3.5, mean(6,7)=6.5, mean(8)=8
    out = ops.avg_pool(GRID_3X3, 2, 2, "SAME")
    assert out[0, :, :, 0].tolist() == [[2.0, 3.5], [6.5, 8.0]]


def test_same_max_pool_never_picks_padding():
    out = ops.max_pool(-1 - GRID_3X3, 2, 2, "SAME")  # all negative: a zero pad would win
    assert out[0, :, :, 0].tolist() == [[-1.0, -3.0], [-7.0, -9.0]]


def test_valid_pool_drops_the_leftover_row_and_column():
    assert ops.max_pool(GRID_3X3, 2, 2, "valid")[0, :, :, 0].tolist() == [[4.0]]


def test_depth_max_pool_as_the_notes():
    # ksize=(1,1,1,3): max over channels 0-2 and 3-5
    images = np.array([1, 5, 2, 0, -1, 3], np.float32).reshape(1, 1, 1, 6)
    out = ops.max_pool(images, ksize=(1, 1, 1, 3), strides=(1, 1, 1, 3), padding="VALID")
    assert out.flatten().tolist() == [5.0, 3.0]


def test_depth_avg_pool_averages_channel_groups():
    images = np.array([1, 5, 0, 4], np.float32).reshape(1, 1, 1, 4)
    out = ops.avg_pool(images, ksize=(1, 1, 1, 2), strides=(1, 1, 1, 2), padding="VALID")
    assert out.flatten().tolist() == [3.0, 2.0]


def test_global_avg_pool_is_mean_over_height_and_width():
    assert ops.global_avg_pool(GRID_3X3).tolist() == [[4.0]]
    assert tuple(ops.global_avg_pool(GRID_3X3, keepdims=True).shape) == (1, 1, 1, 1)


# --- local response normalization -------------------------------------------------------------------


def test_lrn_uses_tensorflow_alpha_convention():
    # channels [1, 2, 3], r=1, bias=1, alpha=1, beta=1: b_c = a_c / (1 + sum of squares c-1..c+1)
    images = np.array([1, 2, 3], np.float32).reshape(1, 1, 1, 3)
    out = ops.local_response_normalization(images, depth_radius=1, bias=1.0, alpha=1.0, beta=1.0)
    np.testing.assert_allclose(out.flatten().numpy(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-6)


def test_lrn_equals_torch_local_response_norm_with_alpha_times_window():
    # torch divides alpha by the window size n = 2r + 1 (torch.nn.LocalResponseNorm docs)
    x = torch.rand(2, 4, 3, 9)
    ours = ops.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    reference = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x.permute(0, 3, 1, 2))
    torch.testing.assert_close(ours, reference.permute(0, 2, 3, 1), rtol=1e-6, atol=1e-7)


# --- error paths: each message says what was found and what was expected ------------------------


IMAGES = np.zeros((2, 8, 8, 3), np.float32)
FILTERS = np.zeros((3, 3, 3, 2), np.float32)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ops.conv2d(IMAGES[0], FILTERS), ValueError,
         r"images must be 4-D \[batch, height, width, channels\] \(NHWC\), got shape \(8, 8, 3\)"),
        (lambda: ops.conv2d(IMAGES, FILTERS[0]), ValueError,
         r"filters must be 4-D \[filter_height, filter_width, in_channels, out_channels\], got shape"),
        (lambda: ops.conv2d(IMAGES.transpose(0, 3, 1, 2), FILTERS), ValueError,
         r"images have 8 channels .* filters expect 3 input channels .*the images look NCHW"),
        (lambda: ops.conv2d(IMAGES, np.zeros((3, 3, 2, 2), np.float32)), ValueError,
         r"images have 3 channels .* expected equal, or a divisor"),
        (lambda: ops.conv2d(IMAGES, FILTERS, strides=[2, 2, 2, 2]), ValueError,
         r"strides=\[2, 2, 2, 2\]; the 4-element form is \[1, strides_height, strides_width, 1\]"),
        (lambda: ops.conv2d(IMAGES, FILTERS, strides=[1, 2, 2]), ValueError,
         r"strides=\[1, 2, 2\] has 3 elements; expected an int, 2 elements"),
        (lambda: ops.conv2d(IMAGES, FILTERS, strides=-1), ValueError,
         r"conv2d: strides=-1; expected positive integers"),
        (lambda: ops.conv2d(IMAGES, FILTERS, strides=(2, 0)), ValueError,
         r"strides=\(2, 0\) holds 0; expected positive integers"),
        (lambda: ops.conv2d(IMAGES, FILTERS, strides=1.5), TypeError,
         r"strides=1.5; expected positive integers"),
        (lambda: ops.conv2d(IMAGES, FILTERS, dilations=[1, 2, 2, 2]), ValueError,
         r"dilations=\[1, 2, 2, 2\]; the 4-element form"),
        (lambda: ops.conv2d(IMAGES, FILTERS, padding="full"), ValueError,
         r"padding='full'; expected 'SAME' or 'VALID'"),
        (lambda: ops.conv2d(IMAGES, np.zeros((9, 9, 3, 2), np.float32), padding="VALID"),
         ValueError, r"'VALID' window of 9 cells along height does not fit the input's 8 cells"),
        (lambda: ops.conv2d(IMAGES, FILTERS, dilations=4, padding="VALID"), ValueError,
         r"window of 9 cells along height"),
        (lambda: ops.conv2d(IMAGES.astype(np.uint8), FILTERS), TypeError,
         r"conv2d: images has dtype torch.uint8; expected a floating-point array"),
        (lambda: ops.max_pool(IMAGES, (1, 1, 1, 2), (1, 1, 1, 2), "VALID"), ValueError,
         r"window of 2 channels does not divide the input depth 3"),
        (lambda: ops.max_pool(IMAGES, (1, 1, 1, 3), (1, 1, 1, 1), "VALID"), ValueError,
         r"depth pooling needs ksize=\(1, 1, 1, k\) and strides=\(1, 1, 1, k\) with the same k"),
        (lambda: ops.max_pool(IMAGES, (1, 2, 2, 3), (1, 2, 2, 3), "VALID"), ValueError,
         r"cannot also pool along height or width"),
        (lambda: ops.max_pool(IMAGES, (2, 1, 1, 1), 1, "VALID"), ValueError,
         r"pooling along the batch is not supported"),
        (lambda: ops.avg_pool(IMAGES, -2, 2, "VALID"), ValueError,
         r"avg_pool: ksize=-2; expected positive integers"),
        (lambda: ops.avg_pool(IMAGES, 9, 2, "VALID"), ValueError,
         r"avg_pool: 'VALID' window of 9 cells along height does not fit"),
        (lambda: ops.max_pool(IMAGES[0], 2, 2), ValueError, r"max_pool: images must be 4-D"),
        (lambda: ops.local_response_normalization(IMAGES, depth_radius=-1), ValueError,
         r"depth_radius=-1; expected an integer >= 0"),
        (lambda: ops.global_avg_pool(IMAGES[0]), ValueError, r"global_avg_pool: images must be 4-D"),
    ],
)  # fmt: skip
def test_error_messages(call, error, message):
    with pytest.raises(error, match=message):
        call()
