"""The IDX parser (format: LeCun & Cortes, http://yann.lecun.com/exdb/mnist/ 'FILE FORMATS')."""

from __future__ import annotations

import gzip

import pytest
import torch

from cnnkit.data import IDXError, read_idx, write_idx


def test_header_layout_matches_the_published_format(tmp_path):
    # A hand-built file: magic 0x00000803 (ubyte, 3 dims), sizes 2, 2, 3, then 12 bytes.
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(12))
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    x = read_idx(tmp_path / "a-idx3-ubyte")
    assert x.dtype == torch.uint8
    assert x.shape == (2, 2, 3)
    assert x.flatten().tolist() == list(range(12))


def test_big_endian_int32_items(tmp_path):
    raw = (
        bytes([0, 0, 0x0C, 1, 0, 0, 0, 2])
        + (258).to_bytes(4, "big")
        + (-1).to_bytes(4, "big", signed=True)
    )
    (tmp_path / "b").write_bytes(raw)
    assert read_idx(tmp_path / "b").tolist() == [258, -1]


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_write_then_read_round_trips_raw_and_gzip(tmp_path, name):
    x = torch.randint(0, 256, (5, 4, 3), dtype=torch.uint8)
    write_idx(tmp_path / name, x)
    assert torch.equal(read_idx(tmp_path / name), x)
    assert (tmp_path / name).read_bytes()[:2] == (
        b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00"
    )


def _good(tmp_path):
    path = tmp_path / "good-idx1-ubyte"
    write_idx(path, torch.arange(10, dtype=torch.uint8))
    return path


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: b[:-3], r"truncated: shape \(10,\) of uint8 needs 18 bytes .* found 15"),
        (lambda b: b + b"\x00", "has trailing bytes"),
        (lambda b: b"\x01" + b[1:], "bad magic number"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown dtype code 0x07"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: b[:2], "too short for an IDX header"),
        (lambda b: b[:3] + b"\x05" + b[4:], "truncated header"),
    ],
)
def test_corrupt_files_raise_an_error_naming_the_file_and_the_fault(tmp_path, corrupt, message):
    path = _good(tmp_path)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream_is_reported(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6])
    with pytest.raises(IDXError, match=r"t\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_expectations_about_count_and_item_shape(tmp_path):
    path = tmp_path / "imgs"
    write_idx(path, torch.zeros(3, 28, 28, dtype=torch.uint8))
    with pytest.raises(IDXError, match="3 items, expected 60000"):
        read_idx(path, expect_count=60000)
    with pytest.raises(IDXError, match=r"items of shape \(28, 28\), expected \(32, 32\)"):
        read_idx(path, expect_item_shape=(32, 32))
    with pytest.raises(IDXError, match="dtype is torch.uint8, expected torch.float32"):
        read_idx(path, expect_dtype=torch.float32)
