"""cnnkit.ops and cnnkit.layers reproduce TensorFlow 2 to 1e-5 (absolute, float32).

Reference: ``tests/fixtures/tf/ops_parity.npz``, made by ``scripts/make_tf_fixtures.py`` with
TensorFlow 2.21 (``tf.nn.conv2d``, ``tf.nn.max_pool2d``, ``tf.nn.avg_pool2d``,
``tf.nn.local_response_normalization``, ``tf.reduce_mean``, ``keras.layers.Conv2DTranspose``,
``tf.nn.separable_conv2d``) on odd and even sizes, strides 1-3, both paddings, dilation 1 and 2.
Each op is also checked against its layer (NCHW) to 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit import layers, ops

FIXTURE = Path(__file__).parent / "fixtures" / "tf" / "ops_parity.npz"
TF_ATOL = 1e-5
LAYER_ATOL = 1e-6

_data = np.load(FIXTURE, allow_pickle=False)
_cases = json.loads(str(_data["index"]))


def _case_id(case: dict) -> str:
    return case["kind"] + "-" + "-".join(f"{k}={v}" for k, v in case["call"].items())


def _cases_of(*kinds: str) -> list:
    return [
        pytest.param(c, id=f"{i:03d}-{_case_id(c)}")
        for i, c in enumerate(_cases)
        if c["kind"] in kinds
    ]


def _inputs(case: dict) -> dict[str, np.ndarray]:
    return {name: _data[key] for name, key in case["inputs"].items()}


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).numpy()


def _close(actual: np.ndarray | torch.Tensor, expected: np.ndarray, atol: float) -> None:
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else actual
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("case", _cases_of("conv2d"))
def test_conv2d_matches_tf_nn_conv2d(case: dict) -> None:
    inp = _inputs(case)
    out = ops.conv2d(inp["images"], inp["filters"], **case["call"])
    _close(out, _data[case["expected"]], TF_ATOL)


@pytest.mark.parametrize("case", _cases_of("conv2d"))
def test_conv2d_layer_matches_op(case: dict) -> None:
    inp, call = _inputs(case), case["call"]
    filters = torch.from_numpy(inp["filters"])
    kh, kw, cin, cout = filters.shape
    strides = call["strides"]
    stride = tuple(strides[1:3]) if isinstance(strides, list) else strides
    layer = layers.Conv2d(
        cin, cout, (kh, kw), stride, call["padding"].lower(), call["dilations"], bias=False
    )
    with torch.no_grad():
        layer.weight.copy_(filters.permute(3, 2, 0, 1))
        out = layer(_nchw(inp["images"]))
    _close(_nhwc(out), ops.conv2d(inp["images"], inp["filters"], **call).numpy(), LAYER_ATOL)


@pytest.mark.parametrize("case", _cases_of("max_pool", "avg_pool"))
def test_pool_matches_tf_nn_pool(case: dict) -> None:
    pool = ops.max_pool if case["kind"] == "max_pool" else ops.avg_pool
    out = pool(_inputs(case)["images"], **case["call"])
    _close(out, _data[case["expected"]], TF_ATOL)


@pytest.mark.parametrize("case", _cases_of("max_pool", "avg_pool"))
def test_pool_layer_matches_op(case: dict) -> None:
    images, call = _inputs(case)["images"], case["call"]
    ksize = call["ksize"]
    if isinstance(ksize, list) and len(ksize) == 4:  # the notes' depth pooling
        layer: torch.nn.Module = layers.DepthMaxPool2d(ksize[3])
    else:
        cls = layers.MaxPool2d if case["kind"] == "max_pool" else layers.AvgPool2d
        layer = cls(
            tuple(ksize) if isinstance(ksize, list) else ksize, call["strides"], call["padding"]
        )
    op = ops.max_pool if case["kind"] == "max_pool" else ops.avg_pool
    _close(_nhwc(layer(_nchw(images))), op(images, **call).numpy(), LAYER_ATOL)


@pytest.mark.parametrize("case", _cases_of("local_response_normalization"))
def test_lrn_matches_tf_and_layer(case: dict) -> None:
    images = _inputs(case)["images"]
    out = ops.local_response_normalization(images, **case["call"])
    _close(out, _data[case["expected"]], TF_ATOL)
    layer_out = layers.LocalResponseNorm(**case["call"])(_nchw(images))
    _close(_nhwc(layer_out), out.numpy(), LAYER_ATOL)


@pytest.mark.parametrize("case", _cases_of("global_avg_pool"))
def test_global_avg_pool_matches_tf_reduce_mean_and_layer(case: dict) -> None:
    images = _inputs(case)["images"]
    out = ops.global_avg_pool(images)
    _close(out, _data[case["expected"]], TF_ATOL)
    _close(layers.GlobalAvgPool2d()(_nchw(images)), out.numpy(), LAYER_ATOL)


@pytest.mark.parametrize("case", _cases_of("conv2d_transpose"))
def test_conv_transpose_layer_matches_keras_conv2d_transpose(case: dict) -> None:
    inp, call = _inputs(case), case["call"]
    kernel = torch.from_numpy(inp["kernel"])  # Keras: [kh, kw, out, in]
    layer = layers.ConvTranspose2d(
        kernel.shape[3], kernel.shape[2], call["kernel_size"], call["strides"], call["padding"]
    )
    with torch.no_grad():
        layer.weight.copy_(kernel.permute(3, 2, 0, 1))  # torch: [in, out, kh, kw]
        layer.bias.copy_(torch.from_numpy(inp["bias"]))
        out = layer(_nchw(inp["images"]))
    _close(_nhwc(out), _data[case["expected"]], TF_ATOL)


@pytest.mark.parametrize("case", _cases_of("separable_conv2d"))
def test_separable_conv_layer_matches_tf_nn_separable_conv2d(case: dict) -> None:
    inp, call = _inputs(case), case["call"]
    depthwise = torch.from_numpy(inp["depthwise"])  # [kh, kw, in, multiplier]
    pointwise = torch.from_numpy(inp["pointwise"])  # [1, 1, in * multiplier, out]
    kh, kw, cin, multiplier = depthwise.shape
    layer = layers.SeparableConv2d(
        cin, pointwise.shape[3], (kh, kw), call["strides"], call["padding"].lower(),
        depth_multiplier=multiplier, bias=False,
    )  # fmt: skip
    with torch.no_grad():
        # TF's depthwise output channel c * multiplier + m is torch's group c, filter m.
        layer.depthwise.weight.copy_(
            depthwise.reshape(kh, kw, cin * multiplier).permute(2, 0, 1)[:, None]
        )
        layer.pointwise.weight.copy_(pointwise[0, 0].T[:, :, None, None])
        out = layer(_nchw(inp["images"]))
    _close(_nhwc(out), _data[case["expected"]], TF_ATOL)


@pytest.fixture(scope="module")
def notes_example() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_sample_image

    images = np.array([load_sample_image("china.jpg"), load_sample_image("flower.jpg")]) / 255
    images = images.astype(np.float32)
    decoded_like_fixture = np.allclose(
        images.astype(np.float64).sum(axis=(1, 2, 3)), _data["notes/images_sums"], rtol=1e-9
    )
    if not decoded_like_fixture:
        pytest.skip("this Pillow decodes the sample JPEGs differently from the fixture's")
    filters = np.zeros((7, 7, 3, 2), np.float32)
    filters[:, 3, :, 0] = 1  # vertical line
    filters[3, :, :, 1] = 1  # horizontal line
    return images, filters


@pytest.mark.parametrize("stride", [1, 2])
def test_notes_feature_map_example_matches_tf(notes_example: tuple, stride: int) -> None:
    """The notes' first example (``tf.nn.conv2d(images, filters, strides=1, padding="same")``)."""
    images, filters = notes_example
    out = ops.conv2d(images, filters, strides=stride, padding="same").numpy()
    key = f"notes/stride{stride}"
    assert out.shape == tuple(_data[f"{key}/shape"])
    _close(out[:, :12, :12, :], _data[f"{key}/top_left"], TF_ATOL)
    _close(out[:, -12:, -12:, :], _data[f"{key}/bottom_right"], TF_ATOL)
    np.testing.assert_allclose(
        out.astype(np.float64).sum(axis=(1, 2)), _data[f"{key}/sums"], rtol=1e-6
    )
