"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun's format, raw or gzip-compressed).

Written by hand because no maintained library parses IDX with the validation we want (torchvision's
reader is private, ``torchvision.datasets.mnist.read_sn3_pascalvincent_tensor``, and checks neither
the item count against the file size nor the header): every failure names the file and the fault.

Layout: 2 zero bytes, a dtype code, the number of dimensions ``ndim``, ``ndim`` big-endian uint32
sizes, then the items in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

# IDX dtype code → (numpy big-endian dtype, torch dtype)
_DTYPES: dict[int, tuple[str, torch.dtype]] = {
    0x08: (">u1", torch.uint8),
    0x09: (">i1", torch.int8),
    0x0B: (">i2", torch.int16),
    0x0C: (">i4", torch.int32),
    0x0D: (">f4", torch.float32),
    0x0E: (">f8", torch.float64),
}


class IDXError(ValueError):
    """A file that is not valid IDX; the message names the file and what was wrong."""


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip: a raw IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXError(f"{path}: corrupt or truncated gzip stream ({exc})") from None


def read_idx(
    path: str | os.PathLike,
    *,
    expect_dtype: torch.dtype | None = None,
    expect_ndim: int | None = None,
    expect_count: int | None = None,
    expect_item_shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Read an IDX file (``.gz`` or raw) into a tensor, checking the header and the size.

    The ``expect_*`` arguments add checks for a known dataset; any mismatch raises :class:`IDXError`.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: {len(data)} bytes, too short for an IDX header (4 bytes)")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{path}: bad magic number 0x{data[:4].hex()}: IDX files start with two zero bytes"
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in _DTYPES)
        raise IDXError(
            f"{path}: unknown dtype code 0x{code:02X} in the header; expected one of {valid}"
        )
    if ndim == 0:
        raise IDXError(f"{path}: header declares 0 dimensions; expected at least 1")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXError(f"{path}: truncated header: {ndim} dimensions need {header_len} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    np_dtype, torch_dtype = _DTYPES[code]
    itemsize = np.dtype(np_dtype).itemsize
    expected_len = header_len + math.prod(shape) * itemsize  # Python ints: no int64 overflow
    if len(data) != expected_len:
        what = "truncated" if len(data) < expected_len else "has trailing bytes"
        raise IDXError(
            f"{path}: {what}: shape {shape} of {np.dtype(np_dtype).name} needs {expected_len} bytes "
            f"of data and header, found {len(data)}"
        )
    if expect_dtype is not None and torch_dtype != expect_dtype:
        raise IDXError(f"{path}: dtype is {torch_dtype}, expected {expect_dtype}")
    if expect_ndim is not None and ndim != expect_ndim:
        raise IDXError(f"{path}: {ndim} dimensions {shape}, expected {expect_ndim}")
    if expect_count is not None and shape[0] != expect_count:
        raise IDXError(f"{path}: {shape[0]} items, expected {expect_count}")
    if expect_item_shape is not None and shape[1:] != expect_item_shape:
        raise IDXError(f"{path}: items of shape {shape[1:]}, expected {expect_item_shape}")
    try:
        array = np.frombuffer(data, dtype=np_dtype, offset=header_len).reshape(shape)
    except ValueError as exc:  # an empty array whose other sizes overflow numpy's index type
        raise IDXError(f"{path}: shape {shape} cannot be held in memory ({exc})") from None
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


def write_idx(
    path: str | os.PathLike, tensor: torch.Tensor, *, compress: bool | None = None
) -> None:
    """Write a tensor as IDX (gzip when ``path`` ends in ``.gz`` unless ``compress`` says otherwise)."""
    path = Path(path)
    codes = {t: (c, n) for c, (n, t) in _DTYPES.items()}
    if tensor.dtype not in codes:
        raise ValueError(f"write_idx: dtype {tensor.dtype} has no IDX code")
    code, np_dtype = codes[tensor.dtype]
    header = bytes([0, 0, code, tensor.dim()]) + np.asarray(tensor.shape, dtype=">u4").tobytes()
    payload = header + tensor.numpy().astype(np_dtype).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
