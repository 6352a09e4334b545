"""cnnkit.memory: what a step holds, checked against values computed by hand.

Sizes are float32 (4 bytes) unless said. What each operation saves for backward is what PyTorch's
``tools/autograd/derivatives.yaml`` says its backward formula needs: a convolution its input and
weight, ReLU its result, max pooling its input and int64 indices, a linear layer its input and weight.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.memory import estimate, max_batch_size
from cnnkit.models import create_model

F32 = 4


class Residual(nn.Module):
    """y = relu(conv(x)) + x: the input must stay alive until the add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x)) + x


def small_cnn() -> nn.Sequential:
    # (2, 1, 8, 8) -> conv (2, 4, 8, 8) -> relu -> pool (2, 4, 4, 4) -> flatten (2, 64) -> (2, 10)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def test_parameter_and_gradient_bytes_of_a_conv_and_a_dense_layer():
    report = estimate(small_cnn(), (1, 8, 8), batch_size=2, suggestions=False)
    params = (4 * 1 * 3 * 3 + 4) + (64 * 10 + 10)  # 40 + 650
    assert report.trainable_params == params
    assert report.param_bytes == params * F32
    assert report.grad_bytes == params * F32


@pytest.mark.parametrize(
    ("optimizer", "copies"),
    [("sgd", 1), ("rmsprop", 1), ("adam", 2), ("adamw", 2), ("nadam", 2)],
)
def test_optimizer_state_is_zero_one_or_two_copies_of_the_weights(optimizer, copies):
    # torch.optim: SGD keeps nothing, momentum_buffer / square_avg one tensor per weight,
    # exp_avg + exp_avg_sq two.
    report = estimate(nn.Linear(10, 5), (1, 1, 10), 3, optimizer=optimizer, suggestions=False)
    assert report.optimizer_bytes == copies * 55 * F32


def test_activations_saved_for_backward_per_layer_conv_relu_pool_dense():
    report = estimate(small_cnn(), (1, 8, 8), batch_size=2, suggestions=False)
    saved = {row.name: row.saved_bytes for row in report.layers}
    assert saved["0"] == 2 * 1 * 8 * 8 * F32  # conv: its input (its weight is a parameter)
    assert saved["1"] == 2 * 4 * 8 * 8 * F32  # relu: its result
    assert saved["2"] == 2 * 4 * 4 * 4 * 8  # pool: int64 indices; its input is relu's result
    assert saved["3"] == 0  # flatten is a view
    assert saved["4"] == 2 * 64 * F32  # dense: its input (the pooled map, seen through the view)
    model_rows = sum(v for k, v in saved.items() if k != "(loss)")
    assert model_rows == 512 + 2048 + 1024 + 512


def test_inference_holds_two_consecutive_layers_and_the_input():
    # The notes: at inference a layer's memory is released once the next layer is computed. With
    # avg pooling (no indices) per image: input 1 KiB, conv 8 KiB, pool 2 KiB, conv 1 KiB; the
    # largest pair is conv+pool, and the caller still holds the input.
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(8, 4, 3, padding=1)
    )
    report = estimate(model, (1, 16, 16), batch_size=2, mode="inference", suggestions=False)
    per_image = 1024 + 8192 + 2048
    assert report.inference_activation_bytes == 2 * per_image
    assert report.peak_bytes == report.inference_peak_bytes == report.param_bytes + 2 * per_image


def test_a_skip_connection_keeps_its_input_alive_past_two_layers():
    # Per image every map is 4 x 8 x 8 floats = 1 KiB. In the residual unit the unit's input, the
    # conv output and the relu output are live together (3 maps), plus the model's input: 4 KiB, where
    # the "two consecutive layers" rule would say 3 KiB.
    model = nn.Sequential(
        nn.Conv2d(4, 4, 1, bias=False), Residual(4), nn.Conv2d(4, 4, 1, bias=False)
    )
    report = estimate(model, (4, 8, 8), batch_size=2, mode="inference", suggestions=False)
    assert report.inference_activation_bytes == 2 * 4 * 1024


def test_a_skip_connection_saves_each_map_once_for_backward():
    # conv0 saves the input, the unit's conv its input, relu its result, conv2 the sum: 4 maps.
    model = nn.Sequential(
        nn.Conv2d(4, 4, 1, bias=False), Residual(4), nn.Conv2d(4, 4, 1, bias=False)
    )
    report = estimate(model, (4, 8, 8), batch_size=2, suggestions=False)
    model_saved = sum(r.saved_bytes for r in report.layers if r.name != "(loss)")
    assert model_saved == 2 * 4 * 1024


def test_flops_per_image_equal_torch_flop_counter_on_a_real_forward():
    model = create_model("fashion_cnn", num_classes=10, in_channels=1).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(3, 1, 28, 28))
    report = estimate(model, (1, 28, 28), batch_size=5, suggestions=False)
    assert report.flops == counter.get_total_flops() // 3


def test_batchnorm_statistics_count_as_non_trainable_parameters_as_in_keras():
    # Keras' BatchNormalization(8): 32 parameters, 16 trainable (gamma, beta) and 16 not (moving
    # mean and variance).
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8))
    report = estimate(model, (3, 8, 8), 2, suggestions=False)
    assert (report.trainable_params, report.non_trainable_params) == (216 + 16, 16)


def test_an_input_the_model_rejects_raises_the_models_own_error():
    # The real model on a real 32x32 image fails in its first dense layer with this message.
    model = create_model("fashion_cnn", num_classes=10, in_channels=1)
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(1x4096"):
        estimate(model, (1, 32, 32), 8)


def test_a_wrong_channel_count_raises_the_models_own_error():
    model = create_model("fashion_cnn", num_classes=10, in_channels=1)
    with pytest.raises(RuntimeError, match="to have 1 channels, but got 3 channels"):
        estimate(model, (3, 28, 28), 8)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"batch_size": 0}, "batch_size"),
        ({"mode": "eval"}, "mode"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"dtype": torch.float64}, "dtype"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = {"input_shape": (1, 8, 8), "batch_size": 2} | kwargs
    with pytest.raises(ValueError, match=field):
        estimate(small_cnn(), **args)


def test_estimate_leaves_the_model_untouched():
    model = create_model("fashion_cnn", num_classes=10, in_channels=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate(model, (1, 28, 28), 4, optimizer="adam")
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bf16_autocast_lowers_the_peak_and_keeps_fp32_weights():
    model = create_model("fashion_cnn", num_classes=10, in_channels=1)
    fp32 = estimate(model, (1, 28, 28), 64, suggestions=False)
    bf16 = estimate(model, (1, 28, 28), 64, dtype=torch.bfloat16, suggestions=False)
    assert bf16.param_bytes == fp32.param_bytes
    assert bf16.activation_bytes < 0.75 * fp32.activation_bytes


def test_suggestions_give_the_traced_peak_of_each_cure():
    model = create_model("fashion_cnn", num_classes=10, in_channels=1)
    report = estimate(model, (1, 28, 28), 64)
    by_change = {s.change.split(" (")[0]: s for s in report.suggestions}
    half = estimate(model, (1, 28, 28), 32, suggestions=False)
    assert by_change["batch 64 -> 32"].peak_bytes == half.peak_bytes
    assert by_change["batch 64 -> 32"].saving_bytes == report.peak_bytes - half.peak_bytes
    # The dense head fixes the map size, so a stride in the first layer is reported as impossible.
    assert by_change["stride 2 in the first layer"].peak_bytes is None
    assert any(
        s.change.startswith("gradient checkpointing") and s.saving_bytes > 0
        for s in report.suggestions
    )


def test_to_dict_is_json_with_the_issue_fields():
    report = estimate(small_cnn(), (1, 8, 8), 2)
    d = json.loads(json.dumps(report.to_dict()))
    for key in (
        "param_bytes",
        "grad_bytes",
        "optimizer_bytes",
        "activation_bytes",
        "peak_bytes",
        "flops",
    ):
        assert isinstance(d[key], int)
    assert d["layers"][0]["output_shape"] == [2, 4, 8, 8]


def test_max_batch_size_is_the_largest_batch_whose_peak_fits():
    model, budget = small_cnn(), 2**20
    batch = max_batch_size(model, (1, 8, 8), budget, optimizer="adam")
    fits = estimate(model, (1, 8, 8), batch, optimizer="adam", suggestions=False)
    over = estimate(model, (1, 8, 8), batch + 1, optimizer="adam", suggestions=False)
    assert batch > 1
    assert fits.peak_bytes <= budget < over.peak_bytes


def test_max_batch_size_is_zero_when_one_image_does_not_fit():
    model = create_model("fashion_cnn", num_classes=10, in_channels=1)
    assert max_batch_size(model, (1, 28, 28), budget_bytes=2**20) == 0
