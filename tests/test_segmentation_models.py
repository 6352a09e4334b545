"""Segmentation models (issue #13): FCN-32s/16s/8s (Long et al. 2015), the dilated variant, a
DeepLab-style ASPP head (Chen et al. 2017) and U-Net (Ronneberger et al. 2015); and the operations
they rest on: transposed convolutions, bilinear initialization, dilated convolutions.

Contract under test: ``model(x)`` with x (N, C, H, W) returns logits (N, num_classes, H, W).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.layers import Conv2d, FixedBilinearUpsample, bilinear_conv_transpose
from cnnkit.losses import cross_entropy_dice_loss
from cnnkit.models import create_model, list_models, model_info
from cnnkit.models.features import create_backbone

SEGMENTATION_MODELS = {
    "fcn32s": {},
    "fcn16s": {},
    "fcn8s": {},
    "fcn8s-dilated": {"dilated": True},
    "fcn8s-scaled": {"input_scale": 1.25},
    "deeplab": {},
    "unet": {"base_width": 4},
}


def build(key: str, num_classes: int = 3, in_channels: int = 1) -> torch.nn.Module:
    name = key.removesuffix("-dilated").removesuffix("-scaled")
    return create_model(name, num_classes, in_channels, **SEGMENTATION_MODELS[key])


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- the contract: logits at the input size ---------------------------------------------------------
@pytest.mark.parametrize("size", [31, 32, 33, 127])
@pytest.mark.parametrize("key", sorted(SEGMENTATION_MODELS))
def test_output_is_logits_at_the_input_size(key: str, size: int) -> None:
    model = build(key).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 3, size, size)


@pytest.mark.parametrize("key", sorted(SEGMENTATION_MODELS))
def test_output_size_of_a_non_square_odd_input_in_training_mode(key: str) -> None:
    model = build(key).train()
    assert model(torch.randn(2, 1, 33, 71)).shape == (2, 3, 33, 71)


@pytest.mark.parametrize("backbone", list_models())
def test_fcn8s_works_on_every_zoo_backbone(backbone: str) -> None:
    size = 71  # Xception's smallest input, the largest minimum in the zoo
    assert size >= model_info(backbone).min_size
    with torch.device("meta"):
        model = create_model("fcn8s", num_classes=4, in_channels=3, backbone=backbone)
        out = model(torch.empty(1, 3, size, size))
    assert out.shape == (1, 4, size, size)


def test_the_registry_lists_segmentation_models_under_their_task() -> None:
    assert list_models(task="segment") == ["deeplab", "fcn16s", "fcn32s", "fcn8s", "unet"]
    assert not set(list_models(task="segment")) & set(list_models())  # classifiers by default
    assert model_info("fcn8s").task == "segment" and model_info("resnet18").task == "classify"


def test_a_segmentation_model_is_not_a_backbone() -> None:
    with pytest.raises(ValueError, match="has no option 'features_only'"):
        create_backbone("fcn8s", in_channels=3)


def test_create_backbone_returns_the_extractor_and_its_stages() -> None:
    backbone, feature_info = create_backbone("resnet18", in_channels=1)
    assert feature_info is backbone.feature_info
    assert len(backbone.eval()(torch.randn(1, 1, 32, 32))) == len(feature_info) == 5


# ---- FCN structure ------------------------------------------------------------------------------------
def test_fcn_skips_come_from_the_stride_16_and_stride_8_stages() -> None:
    model = create_model("fcn8s", num_classes=3, in_channels=1)
    reductions = [model.feature_info[t]["reduction"] for t in model.taps]
    assert reductions == [32, 16, 8]
    assert model.upsample.factor == 8


def test_dilated_fcn_reads_a_stride_8_last_stage() -> None:
    model = create_model("fcn32s", num_classes=3, in_channels=1, dilated=True)
    assert model.feature_info[model.taps[0]]["reduction"] == 8
    assert model.upsample.factor == 8


def test_fcn_names_the_missing_stage_when_a_backbone_is_too_shallow_for_its_skips() -> None:
    # resnet18_small dilated: stage reductions 1, 1, 2, 2, 2; FCN-8s would need a stage at 1/2
    with pytest.raises(ValueError, match=r"no stage at reduction 0 .* \[1, 1, 2, 2, 2\]"):
        create_model("fcn8s", num_classes=3, backbone="resnet18_small", dilated=True)


def test_dilated_needs_a_resnet_backbone() -> None:
    with pytest.raises(ValueError, match="model 'vgg16' has no option 'dilated'"):
        create_model("fcn8s", num_classes=3, backbone="vgg16", dilated=True)


def test_fcn_starts_with_zero_scores_as_the_paper() -> None:
    # Long et al. §4.3: the class scoring layers are zero-initialized
    model = create_model("fcn8s", num_classes=3, in_channels=1).eval()
    with torch.no_grad():
        assert torch.equal(model(torch.randn(1, 1, 32, 32)), torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(("scale", "size"), [(1.25, (33, 70)), (0.5, (64, 31))])
def test_fcn_input_scale_runs_the_same_network_on_the_resized_input(scale, size) -> None:
    torch.manual_seed(0)
    scaled = create_model("fcn8s", num_classes=3, in_channels=1, input_scale=scale).eval()
    plain = create_model("fcn8s", num_classes=3, in_channels=1).eval()
    for layer in scaled.score:  # non-zero scores, so the comparison means something
        torch.nn.init.normal_(layer.weight)
    plain.load_state_dict(scaled.state_dict())  # the option adds no parameter
    x = torch.randn(2, 1, *size)
    inner = tuple(round(v * scale) for v in size)
    with torch.no_grad():
        resized = F.interpolate(x, inner, mode="bilinear", align_corners=False, antialias=scale < 1)
        expected = F.interpolate(plain(resized), size, mode="bilinear", align_corners=False)
        out = scaled(x)
    assert out.shape == (2, 3, *size)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, plain(x).detach(), atol=1e-3)
    with pytest.raises(ValueError, match=r"input_scale=0.0; expected a factor in \(0, 4\]"):
        create_model("fcn8s", num_classes=3, input_scale=0.0)


def test_fcn8s_parameter_count_by_hand() -> None:
    # Backbone: torchvision's resnet18 (11,689,512) less its fc (512·1000 + 1000) and, for one input
    # channel instead of 3, less 2·7·7·64 stem weights: 11,170,240.
    # Head for K = 5 classes: 1×1 score layers with bias on 512, 256 and 128 maps, (C + 1)·K each;
    # two learned 4×4 transposed convs K → K without bias, K·K·16 each; the final ×8 upsampling is
    # a fixed buffer.
    k = 5
    head = (512 + 1) * k + (256 + 1) * k + (128 + 1) * k + 2 * k * k * 16
    model = create_model("fcn8s", num_classes=k, in_channels=1)
    assert trainable_parameters(model) == 11_689_512 - 513_000 - 2 * 7 * 7 * 64 + head


# ---- U-Net --------------------------------------------------------------------------------------------
def test_unet_parameter_count_by_hand_for_a_small_config() -> None:
    # base_width 4, depth 2, 1 input channel, 3 classes, BN (convs without bias; BN: 2 per channel)
    double = lambda i, o: i * o * 9 + 2 * o + o * o * 9 + 2 * o  # noqa: E731
    encoder = double(1, 4) + double(4, 8) + double(8, 16)  # 196 + 896 + 3,520
    up = (16 * 8 * 4 + 8) + (8 * 4 * 4 + 4)  # 2×2 transposed convs with bias: 520 + 132
    decoder = double(16, 8) + double(8, 4)  # on the concatenations: 1,760 + 448
    head = 4 * 3 + 3
    assert encoder + up + decoder + head == 7_487
    model = create_model("unet", num_classes=3, in_channels=1, base_width=4, depth=2)
    assert trainable_parameters(model) == 7_487


def test_unet_paper_configuration_parameter_count_by_hand() -> None:
    # Ronneberger et al. fig. 1: widths 64 … 1024, 3×3 convs with bias, 2×2 up-convs, 1×1 to 2 classes
    widths = [64, 128, 256, 512, 1024]
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    encoder = sum(
        conv(1 if i == 0 else widths[i - 1], w, 3) + conv(w, w, 3) for i, w in enumerate(widths)
    )
    decoder = sum(
        conv(widths[i + 1], widths[i], 2)
        + conv(2 * widths[i], widths[i], 3)
        + conv(widths[i], widths[i], 3)
        for i in range(4)
    )
    expected = encoder + decoder + conv(64, 2, 1)
    with torch.device("meta"):
        model = create_model("unet", base_width=64, batch_norm=False)
    assert trainable_parameters(model) == expected == 31_030_658


def test_unet_pads_by_mirroring_and_crops_back() -> None:
    # An odd input is mirrored up to a multiple of 16 and the output cropped to the input: the
    # logits of the input's pixels do not depend on where the input sits in a larger mirrored tile.
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, base_width=4, batch_norm=False).eval()
    x = torch.randn(1, 1, 30, 30)
    with torch.no_grad():
        padded = model(F.pad(x, (1, 1, 1, 1), mode="reflect"))  # 32 × 32: no padding inside
        direct = model(x)  # 30 × 30: padded inside by reflection, (1, 1) on each side
    torch.testing.assert_close(direct, padded[..., 1:-1, 1:-1])


# ---- DeepLab ------------------------------------------------------------------------------------------
def test_deeplab_trains_on_a_batch_of_one() -> None:
    # the image-pooling branch has no BatchNorm, which would fail on one value per channel
    model = create_model("deeplab", num_classes=3, in_channels=1).train()
    model(torch.randn(1, 1, 32, 32)).sum().backward()


def test_deeplab_aspp_has_the_1x1_three_atrous_and_image_pooling_branches() -> None:
    model = create_model("deeplab", num_classes=3, in_channels=1, atrous_rates=(2, 4, 6))
    convs = [branch[0] for branch in model.aspp.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2), (4, 4), (6, 6)]
    assert model.feature_info[-1]["reduction"] == 8  # dilated ResNet-18


# ---- transposed convolution, bilinear initialization, dilation ----------------------------------------
def test_transposed_convolution_is_zero_insertion_then_a_convolution_with_the_flipped_kernel() -> (
    None
):
    # The notes: "stretch the image by inserting empty rows and columns (full of zeros), then
    # perform a regular convolution". Stride s inserts s - 1 zeros between cells; the convolution
    # is 'full' (pad k - 1 each side) with the kernel rotated 180° and its in/out axes swapped.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=generator)
    weight = torch.randn(
        3, 2, 3, 3, generator=generator
    )  # (in, out, k, k): ConvTranspose2d's layout
    stride, k = 2, 3
    stretched = torch.zeros(2, 3, (4 - 1) * stride + 1, (5 - 1) * stride + 1)
    stretched[..., ::stride, ::stride] = x
    expected = F.conv2d(
        F.pad(stretched, [k - 1] * 4), weight.flip(-2, -1).transpose(0, 1)
    )  # 2 x 2 x 9 x 11
    torch.testing.assert_close(F.conv_transpose2d(x, weight, stride=stride), expected)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_bilinear_initialized_transposed_conv_reproduces_interpolate_away_from_the_border(
    factor: int,
) -> None:
    # Output cell o reads the input at (o + 0.5)/f - 0.5 in both. Inside the input's span, i.e.
    # for o from f//2 to (n - 1)·f + f//2, the two agree exactly; in the outer f//2 rows and
    # columns interpolate clamps to the edge cell (weight 1) while the transposed conv sees zeros
    # beyond it (weight < 1).
    x = torch.randn(2, 3, 5, 7)
    layer = bilinear_conv_transpose(3, factor)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == expected.shape == (2, 3, 5 * factor, 7 * factor)
    b = factor // 2
    torch.testing.assert_close(out[..., b : 5 * factor - b, b : 7 * factor - b],
                               expected[..., b : 5 * factor - b, b : 7 * factor - b])  # fmt: skip


def test_the_border_is_where_the_transposed_conv_and_interpolate_differ() -> None:
    ones = torch.ones(1, 1, 3, 3)
    with torch.no_grad():
        out = bilinear_conv_transpose(1, 4)(ones)
    assert torch.all(F.interpolate(ones, scale_factor=4, mode="bilinear") == 1)
    assert out[0, 0, 0, 0] < 1 and out[0, 0, 2, 2] == 1  # row/column 0 and 1 are border for f = 4


def test_fcn_upsampling_layers_start_as_bilinear_interpolation() -> None:
    # before training: the learned ×2 steps and the fixed final ×8 of an FCN-8s
    model = create_model("fcn8s", num_classes=3, in_channels=1)
    x = torch.randn(1, 3, 6, 6)
    for layer, factor in ((model.upscore[0], 2), (model.upscore[1], 2), (model.upsample, 8)):
        with torch.no_grad():
            out = layer(x)
        expected = F.interpolate(x, scale_factor=factor, mode="bilinear")
        b = factor // 2
        torch.testing.assert_close(out[..., b:-b, b:-b], expected[..., b:-b, b:-b])
    assert isinstance(model.upsample, FixedBilinearUpsample)
    assert not any(name.startswith("upsample") for name, _ in model.named_parameters())


def test_dilated_convolution_is_a_convolution_with_the_notes_zero_inserted_kernel() -> None:
    # The notes: dilation_rate=4 turns the 1×3 filter [[1,2,3]] into [[1,0,0,0,2,0,0,0,3]]
    layer = Conv2d(1, 1, (1, 3), padding="same", dilation=(1, 4), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[[1.0, 2.0, 3.0]]]]))
    holes = torch.tensor([[[[1.0, 0, 0, 0, 2.0, 0, 0, 0, 3.0]]]])
    x = torch.randn(2, 1, 5, 13)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, holes, padding=(0, 4)))


# ---- a tiny training run ------------------------------------------------------------------------------
def synthetic_scenes() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 32×32 grey images: a bright square (class 1) and a dim bar (class 2) on black (class 0),
    with a 255 (ignored) border around the square."""
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(4, 1, 32, 32)
    masks = torch.zeros(4, 32, 32, dtype=torch.long)
    for i in range(4):
        top, left = torch.randint(2, 18, (2,), generator=generator).tolist()
        masks[i, top - 1 : top + 11, left - 1 : left + 11] = 255
        masks[i, top : top + 10, left : left + 10] = 1
        images[i, 0, top : top + 10, left : left + 10] = 1.0
        row = (top + 14) % 28
        masks[i, row : row + 3, :] = 2
        images[i, 0, row : row + 3, :] = 0.5
    return images + 0.05 * torch.randn(images.shape, generator=generator), masks


@pytest.mark.parametrize(
    ("name", "options"), [("fcn8s", {}), ("unet", {"base_width": 8, "depth": 3})]
)
def test_loss_decreases_in_a_few_steps_on_synthetic_scenes(name: str, options: dict) -> None:
    torch.manual_seed(0)
    images, masks = synthetic_scenes()
    model = create_model(name, num_classes=3, in_channels=1, **options).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = cross_entropy_dice_loss(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]
