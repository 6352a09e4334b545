"""Building blocks of the zoo (``cnnkit.layers.blocks``) and LeNet-5's paper-specific layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.layers import Bottleneck, InceptionModule, ResidualUnit, SEBlock
from cnnkit.models.lenet import (
    C3_CONNECTIONS,
    LeNet5,
    PartialConv2d,
    ScaledTanh,
    hadamard_matrix_84,
    preprocess,
)


# ---- SEBlock (Hu et al. 2018, fig. 3) -------------------------------------------------------------
def test_se_block_with_zero_excitation_halves_every_map() -> None:
    # fc2 = 0 gives sigmoid(0) = 0.5 for every channel, whatever the squeeze
    block = SEBlock(32, ratio=16)
    nn.init.zeros_(block.fc2.weight)
    nn.init.zeros_(block.fc2.bias)
    x = torch.randn(2, 32, 5, 7)
    torch.testing.assert_close(block(x), 0.5 * x)


def test_se_block_hidden_width_is_channels_over_ratio() -> None:
    block = SEBlock(256, ratio=16)
    assert block.fc1.out_features == 16 and block.fc2.out_features == 256


def test_se_block_rejects_fewer_channels_than_ratio() -> None:
    with pytest.raises(ValueError, match="channels=8 is smaller than ratio=16"):
        SEBlock(8, ratio=16)


# ---- residual units (He et al. 2016) ----------------------------------------------------------------
def test_residual_unit_keeps_shape_with_identity_skip() -> None:
    unit = ResidualUnit(64, 64)
    assert isinstance(unit.shortcut, nn.Identity)
    assert unit(torch.randn(2, 64, 9, 9)).shape == (2, 64, 9, 9)


def test_residual_unit_stride_2_uses_1x1_projection_and_ceil_size() -> None:
    # the notes: a 1×1 stride-2 conv on the skip; 'same' at stride 2 gives ceil(9 / 2) = 5
    unit = ResidualUnit(64, 128, stride=2)
    assert unit.shortcut[0].kernel_size == (1, 1) and unit.shortcut[0].stride == (2, 2)
    assert unit(torch.randn(2, 64, 9, 9)).shape == (2, 128, 5, 5)


def test_residual_unit_paddings_differ_on_even_inputs_at_stride_2() -> None:
    # TensorFlow's 'same' pads (0, 1) on an even input at stride 2, torchvision pads (1, 1):
    # same weights, same output size, different values
    torch.manual_seed(0)
    same = ResidualUnit(4, 8, stride=2, padding="same").eval()
    symmetric = ResidualUnit(4, 8, stride=2, padding=1).eval()
    symmetric.load_state_dict(same.state_dict())
    x = torch.randn(1, 4, 8, 8)
    assert same(x).shape == symmetric(x).shape == (1, 8, 4, 4)
    assert not torch.allclose(same(x), symmetric(x))


def test_bottleneck_width_is_a_quarter_of_its_output() -> None:
    unit = Bottleneck(256, 512, stride=2)
    assert unit.conv1.out_channels == 128 and unit.conv3.out_channels == 512
    assert unit.conv2.stride == (2, 2)  # torchvision's v1.5: the stride on the 3×3
    assert unit(torch.randn(1, 256, 8, 8)).shape == (1, 512, 4, 4)


def test_bottleneck_rejects_output_not_multiple_of_4() -> None:
    with pytest.raises(ValueError, match="out_channels=30 is not a multiple of 4"):
        Bottleneck(16, 30)


# ---- inception module (Szegedy et al. 2014, table 1, module 3a) ------------------------------------
def test_inception_3a_outputs_256_maps_at_the_input_size() -> None:
    module = InceptionModule(192, 64, 96, 128, 16, 32, 32)
    assert module.out_channels == 256
    assert module(torch.randn(1, 192, 28, 28)).shape == (1, 256, 28, 28)


def test_inception_3a_parameter_count() -> None:
    # 192·64+64 + 192·96+96 + 9·96·128+128 + 192·16+16 + 25·16·32+32 + 192·32+32 = 163,696
    module = InceptionModule(192, 64, 96, 128, 16, 32, 32)
    assert sum(p.numel() for p in module.parameters()) == 163_696


# ---- LeNet-5 (LeCun et al. 1998) ---------------------------------------------------------------------
def test_scaled_tanh_maps_plus_minus_one_to_themselves() -> None:
    # appendix A: A = 1.7159 and S = 2/3 are chosen so that f(1) = 1 and f(-1) = -1
    torch.testing.assert_close(
        ScaledTanh()(torch.tensor([-1.0, 1.0])), torch.tensor([-1.0, 1.0]), atol=1e-4, rtol=0
    )


def test_c3_connection_table_is_the_papers_table_1() -> None:
    # six maps see 3 contiguous S2 maps, nine see 4, the last sees all 6: 60 connections
    assert [len(c) for c in C3_CONNECTIONS] == [3] * 6 + [4] * 9 + [6]
    assert C3_CONNECTIONS[4] == (0, 4, 5) and C3_CONNECTIONS[14] == (0, 2, 3, 5)


def test_partial_conv_has_zero_kernels_outside_the_table() -> None:
    conv = PartialConv2d(6, C3_CONNECTIONS, 5)
    connected = conv.dense_weight().abs().sum(dim=(2, 3)) != 0  # (16, 6)
    expected = torch.zeros(16, 6, dtype=torch.bool)
    for out, inputs in enumerate(C3_CONNECTIONS):
        expected[out, list(inputs)] = True
    assert torch.equal(connected, expected)


def test_partial_conv_equals_a_dense_conv_with_the_masked_kernel() -> None:
    conv = PartialConv2d(6, C3_CONNECTIONS, 5)
    x = torch.randn(2, 6, 14, 14)
    expected = torch.nn.functional.conv2d(x, conv.dense_weight(), conv.bias)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape == (2, 16, 10, 10)


def test_rbf_prototypes_are_orthogonal_plus_minus_one_codes() -> None:
    h = hadamard_matrix_84()
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(h @ h.T, 84 * torch.eye(84))


def test_lenet_scores_are_negated_squared_distances_to_the_prototypes() -> None:
    model = LeNet5().eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        f6 = model.squash(model.f6(model.forward_features(x).flatten(1)))
        distances = ((f6[:, None, :] - model.fc.prototypes[None]) ** 2).sum(-1)
        torch.testing.assert_close(model(x), -distances, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(model.rbf_distances(x), distances, rtol=1e-5, atol=1e-4)


def test_lenet_criterion_is_the_papers_map_loss_and_the_trainer_uses_it() -> None:
    # eq. 9: E = y_c + log(exp(-j) + sum_i exp(-y_i)), y the RBF distances, c the target
    from cnnkit.train import Trainer

    model = LeNet5()
    distances = torch.tensor([[3.0, 0.5, 40.0], [7.0, 9.0, 2.0]])
    target = torch.tensor([1, 0])
    j = model.rbf_j
    expected = torch.stack(
        [
            distances[n, target[n]]
            + torch.log(torch.exp(torch.tensor(-j)) + torch.exp(-distances[n]).sum())
            for n in range(2)
        ]
    ).mean()
    torch.testing.assert_close(model.criterion(-distances, target), expected)
    # not plain cross-entropy: the e^-j term still pulls a correct but distant prototype closer
    assert model.criterion(-distances, target) > torch.nn.functional.cross_entropy(
        -distances, target
    )
    assert Trainer(model, device="cpu", progress=False).task.criterion == model.criterion
    softmax = LeNet5(head="softmax")
    logits = torch.randn(2, 10)
    torch.testing.assert_close(
        softmax.criterion(logits, target), torch.nn.functional.cross_entropy(logits, target)
    )


def test_lenet_preprocess_pads_with_background_and_scales_ink() -> None:
    # §II.B: 28×28 → 32×32, background -0.1, full ink 1.175
    images = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    x = preprocess(images)
    assert x.shape == (1, 1, 32, 32)
    torch.testing.assert_close(x[0, 0, 0, 0], torch.tensor(-0.1))
    torch.testing.assert_close(x[0, 0, 16, 16], torch.tensor(1.175))


@pytest.mark.parametrize(
    ("name", "options", "size"),
    [
        ("resnet18_narrow", {}, 64),
        ("resnet50_small", {"num_classes": 10, "in_channels": 1}, 32),
        ("efficientnet_lite0", {"num_classes": 10, "in_channels": 1}, 64),
        ("yolo", {"backbone": "resnet18_narrow", "feature_index": -3, "crop": 16}, 64),
    ],
)
def test_folding_batchnorm_into_convolutions_keeps_the_outputs(name, options, size):
    from cnnkit.models import create_model
    from cnnkit.models.fusion import fuse_conv_bn

    torch.manual_seed(0)
    model = create_model(name, **options)
    for module in model.modules():  # statistics far from the identity, so folding shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.5, 0.5)
    model.eval()
    x = torch.randn(2, 1, size, size)
    before = model(x)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    folded = fuse_conv_bn(model)
    assert folded == norms  # every BatchNorm of these models follows a convolution
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)


def test_folding_refuses_a_model_in_training_mode():
    from cnnkit.models import create_model
    from cnnkit.models.fusion import fuse_conv_bn

    with pytest.raises(ValueError, match="training mode; call model.eval"):
        fuse_conv_bn(create_model("resnet18_narrow"))
