"""The notes' feature-map demo: ``cnnkit.viz.plot_feature_maps`` and ``cnnkit filters``.

Reference: Géron, *Hands-On Machine Learning* (2019), ch. 14, "TensorFlow Implementation"
(``filters[:, 3, :, 0] = 1`` vertical line, ``filters[3, :, :, 1] = 1`` horizontal line,
``tf.nn.conv2d(images, filters, strides=1, padding="same")``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cnnkit.cli import main
from cnnkit.viz import feature_maps, line_filters, plot_feature_maps, random_filters

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _vertical_white_line(height: int = 15, width: int = 15) -> np.ndarray:
    image = np.zeros((1, height, width, 3), np.float32)
    image[0, :, width // 2, :] = 1.0
    return image


def test_line_filters_are_the_notes_filters():
    filters = line_filters()
    expected = np.zeros((7, 7, 3, 2), np.float32)
    expected[:, 3, :, 0] = 1
    expected[3, :, :, 1] = 1
    np.testing.assert_array_equal(filters, expected)


def test_vertical_filter_sums_a_vertical_line_horizontal_filter_crosses_it():
    # interior pixel on the line: vertical filter covers 7 line pixels x 3 channels = 21;
    # the horizontal filter crosses the line in 1 pixel x 3 channels = 3
    maps, pooled = feature_maps(_vertical_white_line(), line_filters())
    assert maps.shape == (1, 15, 15, 2) and pooled is None
    assert maps[0, 7, 7].tolist() == [21.0, 3.0]
    # top row: 'SAME' zero padding leaves 4 of the 7 cells on the image
    assert maps[0, 0, 7, 0] == 12.0


@pytest.mark.parametrize(
    ("pool", "expected_shape"),
    [("max", (1, 7, 7, 2)), ("avg", (1, 7, 7, 2)), ("depth", (1, 15, 15, 1))],
)
def test_pooled_map_shapes(pool, expected_shape):
    _, pooled = feature_maps(_vertical_white_line(), line_filters(), pool=pool)
    assert pooled.shape == expected_shape


def test_depth_pool_keeps_the_strongest_filter():
    maps, pooled = feature_maps(_vertical_white_line(), line_filters(), pool="depth")
    np.testing.assert_array_equal(pooled[..., 0], maps.max(axis=3))


def test_random_filters_are_zero_mean_unit_norm():
    filters = random_filters(4, seed=1)
    assert filters.shape == (7, 7, 3, 4)
    np.testing.assert_allclose(filters.sum(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(filters.reshape(-1, 4), axis=0), 1, rtol=1e-5)


def test_plot_has_image_maps_and_pooled_columns(tmp_path):
    images = np.concatenate([_vertical_white_line(), _vertical_white_line()])
    out = tmp_path / "maps.png"
    fig = plot_feature_maps(images, line_filters(), stride=2, pool="max", out=out)
    assert fig.axes[0].get_gridspec().get_geometry() == (2, 5)  # image + 2 maps + 2 pooled
    assert fig.axes[1].get_title().startswith("vertical line filter")  # the notes' captions
    assert out.read_bytes()[:8] == PNG_MAGIC
    plt.close(fig)


def test_cli_filters_writes_png(tmp_path, capsys, monkeypatch):
    # small stand-ins for the sample images keep this test fast; the real ones are in the parity tests
    line = _vertical_white_line()
    small = np.concatenate([line, line.transpose(0, 2, 1, 3)])  # a vertical and a horizontal line
    monkeypatch.setattr("cnnkit.data.samples.load_sample_images", lambda: small)
    out = tmp_path / "fm.png"
    code = main(
        [
            "filters",
            "--filters",
            "random",
            "3",
            "--pool",
            "depth",
            "--stride",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "2 images x 5 panels" in capsys.readouterr().out  # image + 3 maps + 1 depth-pooled


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--filters", "random", "x"], "--filters random x: expected 'lines' or 'random N'"),
        (["--filters", "random", "0"], "--filters random 0: expected 'lines' or 'random N'"),
        (["--stride", "0"], "--stride 0: expected a positive integer"),
    ],
)
def test_cli_filters_errors(argv, message, capsys, tmp_path):
    assert main(["filters", *argv, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
