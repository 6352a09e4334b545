"""Checkpoint key mapping (``cnnkit.models.checkpoints``): torchvision's ResNet and VGG weights give
torchvision's outputs in our models, and every mismatch is an error that names the key."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnkit.models import create_model
from cnnkit.models.checkpoints import convert_state_dict, list_converters, load_state_dict_strict


def _torchvision_model(name: str, **kwargs) -> torch.nn.Module:
    """torchvision's model with random weights and non-trivial BatchNorm statistics (a fresh
    BatchNorm is the identity in eval mode, which would hide a wrongly mapped mean or variance)."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "vgg19"]
)
def test_torchvision_weights_reproduce_torchvision_outputs(name: str) -> None:
    reference = _torchvision_model(name)
    with torch.device("meta"):  # built without memory; the loaded tensors replace the meta ones
        ours = create_model(name).eval()
    sd = convert_state_dict(name, reference.state_dict())
    load_state_dict_strict(ours, sd, source=f"torchvision {name}", assign=True)
    # 32×32 is the smallest input of both families (VGG's adaptive pool repeats its 1×1 map)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, found = reference(x), ours(x)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-5)


def test_resnet_keys_map_to_our_stage_names() -> None:
    converted = convert_state_dict("resnet50", torchvision.models.resnet50().state_dict())
    assert converted.keys() >= {
        "stem.conv.weight",
        "stem.bn.running_var",
        "stages.0.0.shortcut.0.weight",  # torchvision's layer1.0.downsample.0
        "stages.3.2.conv3.weight",  # layer4.2.conv3
        "fc.bias",
    }


def test_converter_is_found_by_family_prefix() -> None:
    assert ("resnet", "torchvision") in list_converters()
    assert ("vgg", "torchvision") in list_converters()


def test_unknown_family_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no checkpoint converter for model 'alexnet'.*resnet"):
        convert_state_dict("alexnet", {})


def test_wrong_shape_names_the_key_and_both_shapes() -> None:
    # torchvision's 7×7 stem does not fit resnet18_small's 3×3 stem
    sd = convert_state_dict("resnet18_small", torchvision.models.resnet18().state_dict())
    model = create_model("resnet18_small", num_classes=1000)
    with pytest.raises(
        ValueError, match=r"'stem\.conv\.weight' has shape \(64, 3, 7, 7\).*\(64, 3, 3, 3\)"
    ):
        load_state_dict_strict(model, sd, source="torchvision resnet18")


def test_missing_key_is_an_error_naming_it() -> None:
    sd = convert_state_dict("resnet18", torchvision.models.resnet18().state_dict())
    del sd["stages.1.0.bn2.running_mean"]
    with pytest.raises(
        ValueError, match=r"torchvision resnet18: model key 'stages\.1\.0\.bn2\.running_mean'"
    ):
        load_state_dict_strict(create_model("resnet18"), sd, source="torchvision resnet18")


def test_unexpected_key_is_an_error_naming_it() -> None:
    sd = convert_state_dict("resnet18", torchvision.models.resnet18().state_dict())
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"'extra\.weight' is not a parameter or buffer"):
        load_state_dict_strict(create_model("resnet18"), sd)


def test_key_outside_the_mapping_is_an_error_naming_it() -> None:
    sd = dict(torchvision.models.resnet18().state_dict())
    sd["avgpool.scale"] = torch.ones(1)
    with pytest.raises(ValueError, match=r"key 'avgpool\.scale' matches no rule"):
        convert_state_dict("resnet18", sd)


def test_vgg_with_batch_norm_is_refused() -> None:
    # vgg16_bn interleaves BatchNorm, so its parameters sit 1 index apart: not our VGG
    with torch.device("meta"):
        sd = torchvision.models.vgg16_bn().state_dict()
    with pytest.raises(ValueError, match=r"torchvision vgg: conv features\.1 follows features\.0"):
        convert_state_dict("vgg16", sd)
