"""The architecture zoo (issue #4): parameter counts, shapes, conventions shared by every model.

Shapes at the paper's input size are computed on the ``meta`` device (no memory, no arithmetic), so the
big models cost nothing; real arithmetic runs only at the documented minimum size on a batch of 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.models import create_model, list_models, model_info

# The classifier contract ((N, num_classes) outputs) holds for these; "detect" models (YOLO) return
# a detection grid and are tested in tests/test_detection_yolo.py.
CLASSIFIERS = [n for n in list_models() if model_info(n).task == "classify"]


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_meta(name: str, **options) -> torch.nn.Module:
    options.setdefault("in_channels", model_info(name).input_size[0])
    with torch.device("meta"):
        return create_model(name, **options)


# ---- parameter counts (trainable; BatchNorm statistics are buffers) ------------------------------
PARAMETER_COUNTS = [
    # LeCun et al. 1998 §II.B: C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 + F6 10,164
    ("lenet5", {"num_classes": 10}, 60_000),
    # the dense head instead of the RBF layer: + 84·10 + 10
    ("lenet5", {"num_classes": 10, "head": "softmax"}, 60_850),
    # the notes' AlexNet table, one tower; groups=2 on C3, C6, C7 (the paper's two GPUs)
    ("alexnet", {}, 62_378_344),
    ("alexnet", {"groups": 2}, 60_965_224),
    # Caffe's bvlc_googlenet, with and without the two auxiliary classifiers
    ("googlenet", {}, 13_378_280),
    ("googlenet", {"aux_classifiers": False}, 6_998_552),
    # + an SE block per inception module, 2·C·(C//16) + C//16 + C each (Hu et al. 2018 §3), for
    # C = 256, 480, 512 ×3, 528, 832 ×2, 1024: 480,103
    ("se_inception", {}, 13_858_383),
    # torchvision.models.vgg16 / vgg19
    ("vgg16", {}, 138_357_544),
    ("vgg19", {}, 143_667_240),
    # torchvision.models.resnet*
    ("resnet18", {}, 11_689_512),
    ("resnet34", {}, 21_797_672),
    ("resnet50", {}, 25_557_032),
    ("resnet101", {}, 44_549_160),
    ("resnet152", {}, 60_192_808),
    # the notes' Keras ResNet-34 (Dense(10) head), Keras' trainable parameter count
    ("resnet34_notes", {"num_classes": 10}, 21_289_802),
    # timm 1.0.31 seresnet50
    ("se_resnet50", {}, 28_088_024),
    # Keras' Xception, trainable parameters with the 1000-class top
    ("xception", {}, 22_855_952),
    # resnet18 with a 3×3 stem (3·9·64 instead of 3·49·64) and a 10-class head:
    # 11,689,512 - 9,408 + 1,728 - 513,000 + 5,130
    ("resnet18_small", {"num_classes": 10}, 11_173_962),
    # ResNet-18 at half width, 1 grey channel, 10 classes, counted by hand: stem 1·49·32 + BN 64;
    # stage widths 32/64/128/256 with two units each: 37,120 + 131,712 + 525,568 + 2,099,712
    # (3×3 convs, BNs, 1×1 downsamples); fc 256·10 + 10
    ("resnet18_narrow", {"num_classes": 10}, 2_798_314),
    # airbench's conv groups at widths 32/64/128 on 1 channel, counted by hand: per group
    # conv1 c_in·c_out·9 + BN 2·c_out + conv2 c_out²·9 + BN 2·c_out: 9,632 + 55,552 + 221,696;
    # fc 128·10 without bias
    ("speednet", {"num_classes": 10}, 288_160),
    # + a 3×3 stem of 24 filters with biases (1·9·24 + 24), and group 1 then reads 24 channels:
    # 288,160 + 240 + (24 − 1)·32·9
    ("speednet", {"num_classes": 10, "stem_width": 24}, 295_024),
]


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    PARAMETER_COUNTS,
    ids=[
        f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}"
        for n, o, _ in PARAMETER_COUNTS
    ],
)
def test_trainable_parameter_count(name: str, options: dict, expected: int) -> None:
    assert trainable_parameters(build_meta(name, **options)) == expected


# ---- shapes at the paper's input size ------------------------------------------------------------
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_output_shape_at_paper_size(name: str) -> None:
    info = model_info(name)
    model = build_meta(name, num_classes=7).eval()
    assert model(torch.empty(2, *info.input_size, device="meta")).shape == (2, 7)


# Stage feature maps (channels, height) at the paper's size; the architectures' own figures/tables:
# ResNet table 1, VGG table 1, GoogLeNet table 1, Keras' Xception summary, AlexNet table, LeNet fig. 2.
STAGE_SHAPES = {
    "resnet50": [(64, 112), (256, 56), (512, 28), (1024, 14), (2048, 7)],
    "resnet18": [(64, 112), (64, 56), (128, 28), (256, 14), (512, 7)],
    "resnet18_small": [(64, 32), (64, 32), (128, 16), (256, 8), (512, 4)],
    "resnet18_narrow": [(32, 64), (32, 32), (64, 16), (128, 8), (256, 4)],  # at its 128×128
    "vgg16": [(64, 112), (128, 56), (256, 28), (512, 14), (512, 7)],
    "googlenet": [(64, 112), (192, 56), (480, 28), (832, 14), (1024, 7)],
    "xception": [(64, 147), (128, 74), (256, 37), (728, 19), (2048, 10)],
    "alexnet": [(96, 55), (256, 27), (256, 13), (256, 6)],
    "lenet5": [(6, 28), (6, 14), (16, 10), (16, 5), (120, 1)],
    "fashion_cnn": [(64, 28), (128, 14), (256, 7)],
    "speednet": [(32, 14), (64, 7), (128, 3)],
    "efficientnet_lite0": [(16, 112), (24, 56), (40, 28), (112, 14), (320, 7)],
}


@pytest.mark.parametrize("name", sorted(STAGE_SHAPES))
def test_features_only_returns_the_stage_maps(name: str) -> None:
    info = model_info(name)
    model = build_meta(name, num_classes=10, features_only=True).eval()
    maps = model(torch.empty(1, *info.input_size, device="meta"))
    assert [(m.shape[1], m.shape[2]) for m in maps] == STAGE_SHAPES[name]
    assert [m.shape[1] for m in maps] == model.feature_channels


@pytest.mark.parametrize("name", list_models("resnet*"))
def test_resnet_stage_strides_at_224(name: str) -> None:
    # He et al. table 1: conv1 at 112×112 (stride 2), conv2_x … conv5_x at 56, 28, 14, 7
    model = build_meta(name, num_classes=10, features_only=True)
    channels = model_info(name).input_size[0]
    maps = model(torch.empty(1, channels, 224, 224, device="meta"))
    assert [m.shape[-1] for m in maps] == [math.ceil(224 / s) for s in model.feature_strides]


# ---- conventions every model follows (real arithmetic, minimum size) -------------------------------
def _min_input(name: str, batch: int = 2) -> torch.Tensor:
    info = model_info(name)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, info.input_size[0], info.min_size, info.min_size, generator=generator)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_backward_at_minimum_size(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=model_info(name).input_size[0]).train()
    out = model(_min_input(name))
    outputs = out if isinstance(out, tuple) else (out,)
    assert all(o.shape == (2, 5) for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# Width of the pooled features (num_classes=0), from each paper's last layer before the classifier.
FEATURE_WIDTHS = {
    "lenet5": 84,  # F6
    "alexnet": 4096,  # F10
    "vgg16": 4096,
    "googlenet": 1024,  # 5b, globally pooled
    "resnet18": 512,
    "resnet18_small": 512,
    "resnet18_narrow": 256,
    "speednet": 128,
    "resnet50": 2048,
    "se_resnet50": 2048,
    "xception": 2048,
}


@pytest.mark.parametrize("name", sorted(FEATURE_WIDTHS))
def test_num_classes_zero_returns_pooled_features(name: str) -> None:
    info = model_info(name)
    model = build_meta(name, num_classes=0).train()  # training mode: no auxiliary outputs either
    out = model(torch.empty(2, *info.input_size, device="meta"))
    assert out.shape == (2, FEATURE_WIDTHS[name])


@pytest.mark.parametrize("name", list_models())
def test_eval_forward_is_deterministic(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=model_info(name).input_size[0]).eval()
    x = _min_input(name, batch=1)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ---- architecture-specific behaviour ---------------------------------------------------------------
def test_googlenet_returns_auxiliary_logits_in_training_only() -> None:
    model = create_model("googlenet", num_classes=4)
    x = torch.randn(2, 3, 96, 96)
    model.train()
    logits, aux1, aux2 = model(x)
    assert logits.shape == aux1.shape == aux2.shape == (2, 4)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 4)


def test_googlenet_without_auxiliary_classifiers_returns_logits_in_training() -> None:
    model = create_model("googlenet", num_classes=4, aux_classifiers=False).train()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_models_accept_inputs_larger_than_the_paper_size() -> None:
    # adaptive pooling before the dense layers, as torchvision: AlexNet at 320×256
    model = build_meta("alexnet", num_classes=3).eval()
    assert model(torch.empty(1, 3, 320, 256, device="meta")).shape == (1, 3)


def test_alexnet_below_its_minimum_size_is_an_error() -> None:
    # the valid 11×11/4 conv and three valid 3×3/2 pools need 67×67: 66 → 14 → 6 → 2 → (none)
    model = build_meta("alexnet", num_classes=10).eval()
    with pytest.raises(RuntimeError):
        model(torch.empty(1, 3, 66, 66, device="meta"))


def test_registry_documents_paper_sizes() -> None:
    # LeNet-5 32×32 grey, AlexNet 227×227 (the notes' table), Xception 299×299 (Keras)
    assert model_info("lenet5").input_size == (1, 32, 32)
    assert model_info("alexnet").input_size == (3, 227, 227)
    assert model_info("xception").input_size == (3, 299, 299)
