"""cnnkit.detection.fcn: dense layers become convolutions; same outputs at the training size, a grid
of class scores on larger images."""

import pytest
import torch
from torch import nn

from cnnkit.detection.fcn import FCNError, to_fully_convolutional
from cnnkit.models import create_model


def fashion_cnn_with_random_biases() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("fashion_cnn").eval()
    for module in model.head.modules():  # dense biases non-zero, so the test sees them copied
        if isinstance(module, nn.Linear):
            nn.init.uniform_(module.bias, -0.5, 0.5)
    nn.init.uniform_(model.fc.bias, -0.5, 0.5)
    return model


def test_fashion_cnn_outputs_are_equal_at_the_training_size():
    model = fashion_cnn_with_random_biases()
    fcn = to_fully_convolutional(model, (1, 28, 28))
    x = torch.randn(4, 1, 28, 28)
    out = fcn(x)
    assert out.shape == (4, 10, 1, 1)
    torch.testing.assert_close(out.flatten(1), model(x), atol=1e-5, rtol=0)


def test_fashion_cnn_first_dense_layer_becomes_a_valid_convolution_of_the_map_size():
    fcn = to_fully_convolutional(fashion_cnn_with_random_biases(), (28, 28))
    convs = [m for m in fcn.head if isinstance(m, nn.Conv2d)]
    # Dense 128 on the 256@3x3 map -> 128 filters 3x3; Dense 64 and Dense 10 -> 1x1
    assert [tuple(c.weight.shape) for c in convs] == [
        (128, 256, 3, 3),
        (64, 128, 1, 1),
        (10, 64, 1, 1),
    ]
    assert all(c.padding == (0, 0) for c in convs)


def test_fashion_cnn_slides_over_a_larger_image_in_one_pass():
    model = fashion_cnn_with_random_biases()
    fcn = to_fully_convolutional(model, (28, 28))
    # 128x128: the body's stride is 8 (three 2x2 pools) -> 16x16 map -> 3x3 valid -> 14x14 grid
    assert fcn(torch.zeros(1, 1, 128, 128)).shape == (1, 10, 14, 14)


def test_each_grid_cell_is_the_dense_head_on_its_window_of_the_feature_map():
    # OverFeat's dense evaluation: cell (i, j) = the original dense layers applied to the 3x3
    # window at (i, j) of the original convolutional part's map of the whole scene.
    model = fashion_cnn_with_random_biases()
    fcn = to_fully_convolutional(model, (28, 28))
    scene = torch.rand(1, 1, 128, 128)
    feature_map = model.features[:-1](scene)  # 1 x 256 x 16 x 16
    grid = fcn(scene)
    for i, j in [(0, 0), (3, 5), (13, 13)]:
        window = feature_map[..., i : i + 3, j : j + 3].flatten(1)
        torch.testing.assert_close(
            grid[0, :, i, j], model.fc(model.head(window))[0], atol=1e-5, rtol=0
        )


def test_lenet5_rbf_output_is_applied_at_every_position():
    torch.manual_seed(1)
    model = create_model("lenet5").eval()
    fcn = to_fully_convolutional(model, (1, 32, 32))
    x = torch.randn(3, 1, 32, 32)
    # the scores are squared distances near -84, where float32's spacing is 7.6e-6: 1e-5 plus one
    # part in a million
    torch.testing.assert_close(fcn(x).flatten(1), model(x), atol=1e-5, rtol=1e-6)
    assert fcn(torch.randn(1, 1, 64, 64)).shape == (1, 10, 9, 9)  # C5 map 9x9, 1x1 kernel


class PooledNet(nn.Module):
    """A small classifier whose head pools adaptively (VGG's and AlexNet's design) or globally."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.pool = pool
        self.fc1 = nn.LazyLinear(7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize(
    ("pool", "kernel", "grid"),
    [
        (nn.AdaptiveAvgPool2d(4), 2, 5),  # a 2x2 map replicated to 4x4: folded into a 2x2 kernel
        (nn.AdaptiveAvgPool2d(2), 2, 5),  # the identity at the training size
        (nn.AdaptiveAvgPool2d(1), 2, 5),  # global average pooling
    ],
)
def test_pooling_before_the_dense_layer_is_folded_into_the_kernel(pool, kernel, grid):
    torch.manual_seed(2)
    model = PooledNet(pool)
    model(torch.zeros(1, 2, 6, 6))  # materialize the lazy layer: 6x6 -> conv 4x4 -> pool 2x2
    model.eval()
    fcn = to_fully_convolutional(model, (6, 6))
    x = torch.randn(5, 2, 6, 6)
    torch.testing.assert_close(fcn(x).flatten(1), model(x), atol=1e-5, rtol=0)
    assert fcn.head[0].weight.shape[-2:] == (kernel, kernel)
    # 14x14 -> conv 12x12 -> pool 6x6 -> 2x2 valid -> 5x5
    assert fcn(torch.randn(1, 2, 14, 14)).shape == (1, 3, grid, grid)


def test_the_original_model_is_left_unchanged():
    model = fashion_cnn_with_random_biases().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    to_fully_convolutional(model, (28, 28))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_without_dense_layers_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(FCNError, match="no nn.Linear"):
        to_fully_convolutional(model, (1, 8, 8))


def test_a_nonlinear_layer_between_flatten_and_dense_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.ReLU(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(FCNError, match=r"dense layer '3'.*not from a 4-D feature map"):
        to_fully_convolutional(model, (1, 8, 8))


def test_a_model_returning_more_than_the_last_layer_is_a_clear_error():
    class TwoOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 6 * 6, 3)

        def forward(self, x):
            logits = self.fc(self.conv(x).flatten(1))
            return logits, logits.softmax(1)

    with pytest.raises(FCNError, match="expected a single chain"):
        to_fully_convolutional(TwoOutputs(), (1, 8, 8))
