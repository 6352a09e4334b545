"""The notes' Fashion-MNIST CNN and the model registry."""

from __future__ import annotations

import pytest
import torch

from cnnkit.models import create_model, list_models, model_info


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_parameter_count_equals_keras_for_the_same_listing():
    # Keras' model.summary() of the book's listing (Conv 64@7 ... Dense 10): 1,413,834 parameters.
    # By layer: 3,200 + 73,856 + 147,584 + 295,168 + 590,080 + 295,040 + 8,256 + 650.
    assert count(create_model("fashion_cnn", num_classes=10, in_channels=1)) == 1_413_834


def test_output_shape_and_pooled_features():
    model = create_model("fashion_cnn", num_classes=10, in_channels=1).eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    headless = create_model("fashion_cnn", num_classes=0, in_channels=1).eval()
    assert headless(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    assert model.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, 256, 3, 3)  # the last map


def test_registry_lists_and_describes_the_model():
    assert "fashion_cnn" in list_models()
    assert list_models("fashion*") == ["fashion_cnn"]
    info = model_info("fashion_cnn")
    assert info.input_size == (1, 28, 28) and info.classifier == "fc"


def test_unknown_model_and_option_errors_list_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown model 'fashion'; choose one of: .*fashion_cnn"):
        create_model("fashion")
    with pytest.raises(ValueError, match=r"has no option 'depth'; its options are: dropout"):
        create_model("fashion_cnn", depth=3)
