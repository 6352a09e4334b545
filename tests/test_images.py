"""cnnkit's one image decoder (``cnnkit.data.images``) and every place that decodes through it:
orientation, bit depth, colour modes, the size limit, and errors that name the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.images import (
    ImageDecodeError,
    ImageTooLargeError,
    image_size,
    pixel_limit,
    read_image,
)

# ---- generated files ----------------------------------------------------------------------------


def _sideways_jpeg(path: Path) -> Path:
    """A 16 wide x 8 tall JPEG, left half white, right half black, stored with EXIF orientation 6.

    EXIF 2.32, tag 0x0112, value 6: "the 0th row is the visual right-hand side, the 0th column the
    visual top", so a viewer shows it 8 wide x 16 tall with the stored left half (white) on top.
    """
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG holding only its signature, an IHDR chunk (8-bit RGB) and IEND: the header of a
    ``width`` x ``height`` image without its pixels, a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# ---- orientation --------------------------------------------------------------------------------


def test_exif_orientation_6_comes_out_upright(tmp_path):
    image = read_image(_sideways_jpeg(tmp_path / "phone.jpg"))
    assert image.shape == (3, 16, 8)  # 8 wide, 16 tall
    assert image[:, :7].float().mean() > 250  # the stored left half is the visual top
    assert image[:, 9:].float().mean() < 5


def test_image_size_reports_the_upright_size_from_the_header(tmp_path):
    assert image_size(_sideways_jpeg(tmp_path / "phone.jpg")) == (8, 16)  # (width, height)


# ---- bit depth ----------------------------------------------------------------------------------

# PNG 2nd ed. §13.12, sample depth rescaling: floor(v * 255 / 65535 + 1/2).
# 65535 → 255; 32768 → floor(127.502 + 0.5) = 128; 257 → 1; 128 → floor(0.498 + 0.5) = 0.
SIXTEEN_BIT = np.array([[65535, 32768, 257, 128, 0]])
EIGHT_BIT = [255, 128, 1, 0, 0]


@pytest.mark.parametrize(
    ("mode", "suffix", "raw"),
    [
        ("I;16", ".png", SIXTEEN_BIT.astype("<u2").tobytes()),
        ("I;16B", ".tif", SIXTEEN_BIT.astype(">u2").tobytes()),
        ("I", ".tif", SIXTEEN_BIT.astype("<i4").tobytes()),
    ],
)
def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(tmp_path, mode, suffix, raw):
    path = tmp_path / f"deep{suffix}"
    Image.frombytes(mode, (5, 1), raw).save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode  # the file really holds this mode
    assert read_image(path, "L").flatten().tolist() == EIGHT_BIT


# ---- colour modes -------------------------------------------------------------------------------


def test_grey_with_alpha_becomes_rgb_grey(tmp_path):
    Image.fromarray(np.array([[[40, 0], [200, 255]]], np.uint8), mode="LA").save(
        tmp_path / "la.png"
    )
    image = read_image(tmp_path / "la.png")
    assert image.shape == (3, 1, 2)
    assert image[:, 0, 0].tolist() == [40, 40, 40] and image[:, 0, 1].tolist() == [200, 200, 200]


def test_palette_image_with_transparency_takes_its_palette_colours(tmp_path, recwarn):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putdata([0, 1])
    image.info["transparency"] = 1
    image.save(tmp_path / "p.png", transparency=1)
    pixels = read_image(tmp_path / "p.png")
    assert pixels[:, 0, 0].tolist() == [255, 0, 0] and pixels[:, 0, 1].tolist() == [0, 0, 255]
    assert not [w for w in recwarn if "Palette images with Transparency" in str(w.message)]


def test_cmyk_converts_to_rgb(tmp_path):
    # pure process colours: C=M=Y=K=0 is white, M+Y is red, K alone is black
    cmyk = np.array([[[0, 0, 0, 0], [0, 255, 255, 0], [0, 0, 0, 255]]], np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "print.tif")
    pixels = read_image(tmp_path / "print.tif")
    assert pixels[:, 0].T.tolist() == [[255, 255, 255], [255, 0, 0], [0, 0, 0]]


def test_rgb_to_grey_uses_itu_r_601_luma(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "red.png")
    # L = 0.299 R + 0.587 G + 0.114 B = 76.2 → 76 (Pillow's convert("L"))
    assert read_image(tmp_path / "red.png", "L").tolist() == [[[76]]]


# ---- the size limit -----------------------------------------------------------------------------


def test_a_huge_header_is_refused_naming_its_size_and_the_limit(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    assert pixel_limit() == 2 * 89_478_485  # Pillow's default MAX_IMAGE_PIXELS, doubled
    with pytest.raises(ImageTooLargeError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert (
        "400,000,000 pixels" in message and "larger than the limit of 178,956,970 pixels" in message
    )
    assert "not a decodable" not in message


def test_the_limit_follows_pillows_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # our limit: 2,000 pixels
    Image.new("RGB", (40, 40)).save(tmp_path / "small.png")  # 1,600 pixels: decoded
    Image.new("RGB", (50, 50)).save(tmp_path / "large.png")  # 2,500 pixels: refused
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow warns past MAX_IMAGE_PIXELS
        assert read_image(tmp_path / "small.png").shape == (3, 40, 40)
    with pytest.raises(ImageTooLargeError, match=r"2,500 pixels, larger than the limit of 2,000"):
        read_image(tmp_path / "large.png")


# ---- errors name the file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.png", None, "no such file"),
        ("text.png", b"not an image", "not a decodable image"),
        ("empty.jpg", b"", "not a decodable image"),
    ],
)
def test_unreadable_files_are_named_errors(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=problem) as caught:
        read_image(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_truncated_png_is_a_named_error_not_an_oserror_traceback(tmp_path):
    Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)).save(
        tmp_path / "whole.png"
    )
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.png: not a decodable image"):
        read_image(tmp_path / "cut.png")


# ---- every decoding site goes through read_image ------------------------------------------------


def test_image_folders_decode_upright(tmp_path):
    from cnnkit.data.folder import decode_image

    pixels = decode_image(_sideways_jpeg(tmp_path / "phone.jpg"), 8)  # shorter side 8
    assert pixels.shape == (3, 16, 8)


def test_annotated_datasets_decode_upright_at_the_annotated_size(tmp_path):
    from cnnkit.data.annotations import AnnotatedDataset, AnnotatedImage, Annotations

    _sideways_jpeg(tmp_path / "phone.jpg")
    record = AnnotatedImage("phone.jpg", width=8, height=16, boxes=[[0, 0, 8, 8]], labels=[0])
    image, target = AnnotatedDataset(Annotations(["white"], [record], image_root=tmp_path))[0]
    assert image.shape == (3, 16, 8) and image[:, :7].float().mean() > 250
    assert target["boxes"].canvas_size == (16, 8)


def test_annotation_readers_take_image_sizes_after_the_exif_rotation(tmp_path):
    from cnnkit.data.annotations import read_annotations

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _sideways_jpeg(tmp_path / "images" / "phone.jpg")
    (tmp_path / "labels" / "phone.txt").write_text("0 0.5 0.25 1.0 0.5\n")  # the white top half
    (tmp_path / "data.yaml").write_text("names: [white]\ntrain: images\n")
    annotations = read_annotations(tmp_path / "data.yaml", "yolo")
    assert (annotations.images[0].width, annotations.images[0].height) == (8, 16)
    assert annotations.images[0].boxes.tolist() == [[0.0, 0.0, 8.0, 8.0]]


def test_cli_predict_decodes_upright(tmp_path):
    from cnnkit.cli.predict import read_image as predict_read_image

    image = predict_read_image(_sideways_jpeg(tmp_path / "phone.jpg"), 1)
    assert image.shape == (1, 16, 8) and image.dtype == torch.uint8
