"""Backbones for heads (issue #10): ``features_only=True`` drops the classifier and auxiliary heads,
and ``feature_info`` states each stage's channels, reduction and module; dilated ResNets (issue #13).

Shapes are computed on the ``meta`` device (no arithmetic); gradients at each model's documented
minimum size on a batch of 2.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from cnnkit.models import create_model, list_models, model_info


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(name: str, **options) -> torch.nn.Module:
    options.setdefault("in_channels", model_info(name).input_size[0])
    with torch.device("meta"):
        return create_model(name, **options)


# ---- no unused parameter (what DistributedDataParallel needs) -----------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_every_parameter_of_a_feature_extractor_receives_a_gradient(name: str) -> None:
    info = model_info(name)
    model = create_model(name, in_channels=info.input_size[0], features_only=True).train()
    x = torch.randn(2, info.input_size[0], info.min_size, info.min_size)
    sum(feature.sum() for feature in model(x)).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_resnet50_feature_extractor_drops_exactly_the_classifier() -> None:
    # torchvision's resnet50 has 25,557,032 parameters; its fc is 2048·1000 weights + 1000 biases
    full = build_meta("resnet50")
    features = build_meta("resnet50", features_only=True)
    assert parameter_count(full) == 25_557_032
    assert parameter_count(features) == 25_557_032 - 2_049_000


def test_googlenet_feature_extractor_drops_the_classifier_and_both_auxiliary_heads() -> None:
    # Caffe's bvlc_googlenet without auxiliary heads: 6,998,552, of which fc is 1024·1000 + 1000
    features = build_meta("googlenet", features_only=True)
    assert features.aux1 is None and features.aux2 is None
    assert parameter_count(features) == 6_998_552 - 1_025_000


# The keys a feature extractor leaves out of a classification checkpoint: its head, nothing else.
HEAD_KEYS = {
    "resnet18": {"fc.weight", "fc.bias"},
    "googlenet": {"fc.weight", "fc.bias"} | {f"aux{i}." for i in (1, 2)},
    "vgg16": {"fc.weight", "fc.bias", "pre_logits."},
    "efficientnet_lite0": {"fc.weight", "fc.bias", "head."},
}


@pytest.mark.parametrize("name", sorted(HEAD_KEYS))
def test_a_classification_checkpoint_loads_into_the_feature_extractor_less_its_head(
    name: str,
) -> None:
    full = build_meta(name).state_dict()
    features = build_meta(name, features_only=True)
    result = features.load_state_dict(full, strict=False, assign=True)
    assert result.missing_keys == []
    prefixes = tuple(HEAD_KEYS[name])
    assert result.unexpected_keys and all(k.startswith(prefixes) for k in result.unexpected_keys)
    assert all(any(k.startswith(p) for k in result.unexpected_keys) for p in prefixes)


# ---- feature_info ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_feature_info_names_real_modules_and_the_maps_channels(name: str) -> None:
    info = model_info(name)
    model = build_meta(name, features_only=True).eval()
    maps = model(torch.empty(1, *info.input_size, device="meta"))
    modules = dict(model.named_modules())
    assert [f["channels"] for f in model.feature_info] == [m.shape[1] for m in maps]
    assert all(f["name"] in modules for f in model.feature_info)
    reductions = [f["reduction"] for f in model.feature_info]
    assert reductions == sorted(reductions)


# 'same'-padded families: a stage at reduction r maps H×W to ceil(H/r)×ceil(W/r) exactly. Reductions
# from the papers: ResNet table 1 (conv1 … conv5_x), GoogLeNet table 1, EfficientNet
# table 1 (stages ending at 112, 56, 28, 14, 7 at 224).
SAME_PADDED_REDUCTIONS = {
    "resnet18": [2, 4, 8, 16, 32],
    "resnet50": [2, 4, 8, 16, 32],
    "resnet18_small": [1, 1, 2, 4, 8],
    "googlenet": [2, 4, 8, 16, 32],
    "efficientnet_lite0": [2, 4, 8, 16, 32],
}


@pytest.mark.parametrize("name", sorted(SAME_PADDED_REDUCTIONS))
def test_stage_reductions_give_the_map_sizes(name: str) -> None:
    model = build_meta(name, in_channels=3, features_only=True).eval()
    maps = model(torch.empty(1, 3, 97, 160, device="meta"))
    reductions = [f["reduction"] for f in model.feature_info]
    assert reductions == SAME_PADDED_REDUCTIONS[name]
    assert [tuple(m.shape[-2:]) for m in maps] == [
        (math.ceil(97 / r), math.ceil(160 / r)) for r in reductions
    ]


# ---- dilated ResNets ------------------------------------------------------------------------------------
def test_dilated_resnet_keeps_stride_8_in_its_last_two_stages() -> None:
    model = build_meta("resnet50", features_only=True, dilated=True).eval()
    maps = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 8, 8]
    assert [(m.shape[1], m.shape[-1]) for m in maps] == [
        (64, 112),
        (256, 56),
        (512, 28),
        (1024, 28),
        (2048, 28),
    ]


def _conv3x3_geometry(model: torch.nn.Module) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(stride, dilation) of every 3×3 conv inside the residual stages, in order."""
    stages = (
        model.stages
        if hasattr(model, "stages")
        else torch.nn.Sequential(model.layer1, model.layer2, model.layer3, model.layer4)
    )
    return [
        (m.stride, m.dilation)
        for m in stages.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]


def test_dilated_resnet50_dilates_as_torchvisions_replace_stride_with_dilation() -> None:
    # reference: torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]),
    # which gives the first unit of a dilated stage the previous stage's dilation
    with torch.device("meta"):
        reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    ours = build_meta("resnet50", features_only=True, dilated=True)
    assert _conv3x3_geometry(ours) == _conv3x3_geometry(reference)


def test_a_plain_resnet_checkpoint_loads_into_the_dilated_one_and_the_first_stages_agree() -> None:
    plain = create_model("resnet18", in_channels=1, features_only=True).eval()
    dilated = create_model("resnet18", in_channels=1, features_only=True, dilated=True).eval()
    dilated.load_state_dict(plain.state_dict())  # strict: same keys, same shapes
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        plain_maps, dilated_maps = plain(x), dilated(x)
    for ours, theirs in zip(plain_maps[:3], dilated_maps[:3], strict=True):
        torch.testing.assert_close(ours, theirs)  # stem, stages 1-2 are not dilated
    assert dilated_maps[4].shape[-1] == 4 * plain_maps[4].shape[-1]  # 64/8 vs 64/32


def test_dilated_needs_a_resnet() -> None:
    with pytest.raises(ValueError, match="has no option 'dilated'"):
        create_model("vgg16", features_only=True, dilated=True)
