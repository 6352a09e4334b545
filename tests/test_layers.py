"""cnnkit.layers: output shapes (Keras' formulas), PyTorch fast paths and weights, errors, tracing.

Shape references: the Keras layer docs (``Conv2D``/``MaxPool2D``: 'same' -> ceil(n / s), 'valid' ->
floor((n - k) / s) + 1; ``Conv2DTranspose``: ``keras.utils.conv_utils.deconv_output_length``).
Numeric parity with TensorFlow is in ``test_ops_tf_parity.py``.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.export import Dim

from cnnkit import layers

X = torch.randn(2, 3, 11, 10)  # odd height, even width


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "expected_hw"),
    [
        (3, 1, "same", 1, (11, 10)),
        (4, 1, "same", 1, (11, 10)),
        (3, 2, "same", 1, (6, 5)),  # ceil(11 / 2), ceil(10 / 2)
        (7, 3, "same", 1, (4, 4)),
        (3, 1, "same", 2, (11, 10)),
        (3, 2, "valid", 1, (5, 4)),  # floor((11 - 3) / 2) + 1, floor((10 - 3) / 2) + 1
        (3, 1, "valid", 2, (7, 6)),  # 5-cell dilated window
        (3, 1, 1, 1, (11, 10)),  # torch's int padding passes through
        ((3, 5), 1, (1, 2), 1, (11, 10)),
    ],
)
def test_conv2d_output_shape(kernel, stride, padding, dilation, expected_hw):
    conv = layers.Conv2d(3, 8, kernel, stride, padding, dilation)
    assert tuple(conv(X).shape) == (2, 8, *expected_hw)


def test_conv2d_same_stride_1_odd_kernel_uses_torch_padding():
    # the fast path: no explicit pad in forward, same kernel call as nn.Conv2d(padding=1)
    conv = layers.Conv2d(3, 8, 3)
    assert conv.padding == (1, 1) and not conv.dynamic_same and conv.static_pads is None
    reference = nn.Conv2d(3, 8, 3, padding=1)
    reference.load_state_dict(conv.state_dict())
    assert torch.equal(conv(X), reference(X))


def test_conv2d_same_1x1_strided_needs_no_padding():
    conv = layers.Conv2d(3, 8, 1, stride=2)
    assert conv.padding == (0, 0) and not conv.dynamic_same
    assert tuple(conv(X).shape) == (2, 8, 6, 5)  # ceil(11 / 2), ceil(10 / 2)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv2d_same_even_kernel_matches_torch_same_padding():
    # torch's padding="same" also puts the odd cell at the bottom/right (stride 1 only)
    conv = layers.Conv2d(3, 8, 4)
    reference = nn.Conv2d(3, 8, 4, padding="same")
    reference.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv(X), reference(X))


def test_conv2d_same_stride_2_pads_only_bottom_right_on_even_sizes():
    # TF pads (0, 1) on an even side at k=3, s=2, where torch's padding=1 pads (1, 1)
    conv = layers.Conv2d(3, 8, 3, stride=2)
    x = torch.randn(1, 3, 8, 8)
    tf_padded = nn.functional.pad(x, (0, 1, 0, 1))  # (left, right, top, bottom)
    expected = nn.functional.conv2d(tf_padded, conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), expected)
    torch_symmetric = nn.functional.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert not torch.allclose(conv(x), torch_symmetric)


def test_conv2d_has_standard_state_dict_keys_and_loads_torchvision_weights():
    # torchvision's ResNet-18 stem: 7x7/2, padding 3, no bias
    stem = torchvision.models.resnet18(weights=None).conv1
    conv = layers.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    assert list(conv.state_dict()) == list(stem.state_dict()) == ["weight"]
    conv.load_state_dict(stem.state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(conv(x), stem(x))


def test_conv2d_activation_by_name_or_module():
    conv = layers.Conv2d(3, 8, 3, activation="relu")
    plain = layers.Conv2d(3, 8, 3)
    plain.load_state_dict(conv.state_dict())
    assert torch.equal(conv(X), torch.relu(plain(X)))
    assert isinstance(layers.Conv2d(3, 8, 3, activation=nn.GELU()).act, nn.GELU)


def test_separable_conv2d_parameter_count_matches_keras():
    # Keras SeparableConv2D(64, 3) on 32 channels: 3*3*32 depthwise + 32*64 pointwise + 64 bias
    layer = layers.SeparableConv2d(32, 64, 3)
    assert sum(p.numel() for p in layer.parameters()) == 2400
    assert tuple(layer(torch.randn(1, 32, 9, 9)).shape) == (1, 64, 9, 9)


def test_separable_conv2d_depth_multiplier_and_stride_shape():
    layer = layers.SeparableConv2d(3, 8, 3, stride=2, depth_multiplier=2)
    assert layer.depthwise.out_channels == 6 and layer.depthwise.groups == 3
    assert tuple(layer(X).shape) == (2, 8, 6, 5)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "expected_hw"),
    [
        (3, 2, "same", (22, 20)),  # n * s
        (4, 3, "same", (33, 30)),
        (3, 2, "valid", (23, 21)),  # (n - 1) * s + k
        (2, 3, "valid", (33, 30)),  # k < s: Keras gives n * s (n * s + max(k - s, 0))
        (1, 1, "valid", (11, 10)),
    ],
)
def test_conv_transpose2d_output_shape_is_keras(kernel, stride, padding, expected_hw):
    layer = layers.ConvTranspose2d(3, 4, kernel, stride, padding)
    assert tuple(layer(X).shape) == (2, 4, *expected_hw)


@pytest.mark.parametrize(
    ("layer", "expected_shape"),
    [
        (layers.MaxPool2d(2), (2, 3, 5, 5)),  # Keras default: stride = pool size, 'valid'
        (layers.MaxPool2d(3, 2, "same"), (2, 3, 6, 5)),
        (layers.AvgPool2d(2, padding="same"), (2, 3, 6, 5)),
        (layers.AvgPool2d((3, 2), (1, 2), "valid"), (2, 3, 9, 5)),
        (layers.DepthMaxPool2d(3), (2, 1, 11, 10)),
        (layers.GlobalAvgPool2d(), (2, 3)),
        (layers.GlobalAvgPool2d(keepdim=True), (2, 3, 1, 1)),
        (layers.LocalResponseNorm(2, 2.0, 2e-5, 0.75), (2, 3, 11, 10)),
    ],
    ids=lambda v: repr(v).replace(" ", "") if isinstance(v, nn.Module) else None,
)
def test_pool_and_norm_output_shape(layer, expected_shape):
    assert tuple(layer(X).shape) == expected_shape


def test_depth_max_pool_takes_max_over_channel_groups():
    x = torch.tensor([1.0, 5.0, 2.0, 0.0, -1.0, 3.0]).reshape(1, 6, 1, 1)
    assert layers.DepthMaxPool2d(3)(x).flatten().tolist() == [5.0, 3.0]


def test_local_response_norm_matches_torch_with_alpha_times_window():
    # torch.nn.LocalResponseNorm divides alpha by its window size n = 2r + 1
    x = torch.rand(2, 9, 4, 4)
    reference = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    torch.testing.assert_close(layers.LocalResponseNorm(2, 2.0, 1e-4, 0.75)(x), reference(x))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: layers.Conv2d(3, 8, 3, padding="full"), r"Conv2d: padding='full'; expected 'same', 'valid'"),
        (lambda: layers.Conv2d(3, 8, 3, padding=-1), r"Conv2d: padding=-1; expected 'same', 'valid', or non-negative"),
        (lambda: layers.ConvTranspose2d(3, 8, 3, padding=1), r"ConvTranspose2d: padding=1; expected 'same' or 'valid'"),
        (lambda: layers.MaxPool2d(2, padding="full"), r"MaxPool2d: padding='full'; expected 'same' or 'valid'"),
        (lambda: layers.AvgPool2d(0), r"AvgPool2d: kernel_size=0; expected a positive int"),
        (lambda: layers.MaxPool2d(2, stride=-1), r"MaxPool2d: stride=-1; expected a positive int"),
        (lambda: layers.DepthMaxPool2d(0), r"DepthMaxPool2d: kernel_size=0; expected a positive int"),
        (lambda: layers.LocalResponseNorm(-1), r"LocalResponseNorm: depth_radius=-1; expected an int >= 0"),
        (lambda: layers.Conv2d(3, 8, 3, activation="swishy"), r"activation='swishy'; expected None, an nn.Module, or one of"),
    ],
)  # fmt: skip
def test_constructor_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_depth_max_pool_error_when_kernel_does_not_divide_depth():
    with pytest.raises(ValueError, match="window of 2 channels does not divide the input depth 3"):
        layers.DepthMaxPool2d(2)(X)


TRACED = [
    layers.Conv2d(3, 4, 3, stride=2),  # dynamic 'same' padding
    layers.Conv2d(3, 4, 4),  # static asymmetric padding
    layers.MaxPool2d(3, 2, "same"),
    layers.AvgPool2d(2, 2, "same"),
    layers.SeparableConv2d(3, 4, 3, 2),
    layers.ConvTranspose2d(3, 4, 4, 2),
    layers.LocalResponseNorm(2),
    layers.DepthMaxPool2d(3),
    layers.GlobalAvgPool2d(),
]


@pytest.mark.parametrize("layer", TRACED, ids=lambda m: type(m).__name__)
def test_layer_compiles_without_graph_breaks(layer):
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(X), layer(X), rtol=0, atol=0)


@pytest.mark.parametrize("layer", TRACED, ids=lambda m: type(m).__name__)
def test_layer_exports_with_dynamic_height_and_width(layer):
    # one exported program serves odd and even sizes (the 'same' pads are symbolic, not guarded)
    x = torch.randn(1, 3, 9, 8)
    dims = {"x": {2: Dim("height", min=8, max=1024), 3: Dim("width", min=8, max=1024)}}
    program = torch.export.export(layer, (x,), dynamic_shapes=dims).module()
    for other in (torch.randn(1, 3, 16, 11), torch.randn(1, 3, 17, 24)):
        torch.testing.assert_close(program(other), layer(other), rtol=0, atol=0)
