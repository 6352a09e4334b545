"""Argument checking for ``cnnkit.ops``: TensorFlow's argument forms, with errors that say why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def to_float_tensor(
    value: np.ndarray | torch.Tensor, name: str, op: str, like: torch.Tensor | None = None
) -> torch.Tensor:
    """A floating-point tensor from a numpy array or tensor (no copy when it already is one).

    ``like`` gives the dtype and device, so numpy filters follow the images they are applied to.
    """
    tensor = torch.as_tensor(value)
    if like is not None:
        return tensor.to(dtype=like.dtype, device=like.device)
    if not tensor.is_floating_point():
        raise TypeError(
            f"{op}: {name} has dtype {tensor.dtype}; expected a floating-point array "
            f"(scale 8-bit images to [0, 1] first, e.g. images / 255, as the notes do)"
        )
    return tensor


def nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def nchw_to_nhwc(x: torch.Tensor) -> torch.Tensor:
    # contiguous: callers index and reshape the result as TensorFlow's NHWC tensors.
    return x.permute(0, 2, 3, 1).contiguous()


def parse_padding(padding: str, op: str, keras: bool = False, more: str = "") -> bool:
    """True for 'SAME', False for 'VALID', in any case, as ``tf.nn`` and Keras accept: the one
    parser of padding strings (ops and layers). Errors spell the names as ``tf.nn`` does, or as
    Keras does with ``keras=True``, followed by ``more`` (the other forms a caller accepts)."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper() == "SAME"
    names = "'same', 'valid'" if keras else "'SAME', 'VALID'"
    expected = f"{names}{more}" if more else names.replace(", ", " or ") + " (any case)"
    raise ValueError(f"{op}: padding={padding!r}; expected {expected}")


def _positive_ints(values: Sequence[int], name: str, op: str, found: object) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{op}: {name}={found!r}{_holds(found, v)}; expected positive integers")
        if v < 1:
            raise ValueError(
                f"{op}: {name}={found!r}{_holds(found, v)}; expected positive integers"
            )
        out.append(int(v))
    return tuple(out)


def _holds(found: object, value: object) -> str:
    return "" if found is value else f" holds {value!r}"


def _as_tuple(value: Any) -> tuple:
    if isinstance(value, int | np.integer | float | str) or not hasattr(value, "__len__"):
        return (value,)
    return tuple(value)


def parse_window(value: int | Sequence[int], name: str, op: str) -> tuple[int, int]:
    """``(height, width)`` from an int, a 1- or 2-element sequence, or the NHWC ``[1, h, w, 1]``."""
    ints = _positive_ints(_as_tuple(value), name, op, value)
    if len(ints) == 1:
        return ints[0], ints[0]
    if len(ints) == 2:
        return ints[0], ints[1]
    if len(ints) == 4:
        if ints[0] != 1 or ints[3] != 1:
            raise ValueError(
                f"{op}: {name}={list(_as_tuple(value))}; the 4-element form is [1, {name}_height, "
                f"{name}_width, 1] (NHWC): the batch and channel entries must be 1"
            )
        return ints[1], ints[2]
    raise ValueError(
        f"{op}: {name}={value!r} has {len(ints)} elements; expected an int, 2 elements "
        f"(height, width) or 4 elements [1, height, width, 1]"
    )


def parse_pool_window(
    ksize: int | Sequence[int], strides: int | Sequence[int], op: str
) -> tuple[tuple[int, int], tuple[int, int], int]:
    """``(kernel, stride, depth)`` of a pooling call; ``depth > 1`` means pooling along channels.

    TensorFlow pools along depth when ksize is ``(1, 1, 1, k)``; it then requires strides
    ``(1, 1, 1, k)`` and pools along nothing else (``tensorflow/core/kernels/maxpooling_op.cc``).
    """
    k4 = len(_as_tuple(ksize)) == 4
    s4 = len(_as_tuple(strides)) == 4
    if k4:
        kv = _positive_ints(_as_tuple(ksize), "ksize", op, ksize)
        if kv[0] != 1:
            raise ValueError(
                f"{op}: ksize={list(_as_tuple(ksize))}; pooling along the batch is not supported"
            )
        if kv[3] > 1:
            sv = _positive_ints(_as_tuple(strides), "strides", op, strides) if s4 else ()
            if kv[1:3] != (1, 1) or sv != kv:
                raise ValueError(
                    f"{op}: ksize={list(_as_tuple(ksize))}, strides={strides!r}; depth pooling needs "
                    f"ksize=(1, 1, 1, k) and strides=(1, 1, 1, k) with the same k, and cannot "
                    f"also pool along height or width (as in TensorFlow)"
                )
            return (1, 1), (1, 1), kv[3]
    kernel = parse_window(ksize, "ksize", op)
    stride = parse_window(strides, "strides", op)
    return kernel, stride, 1


def check_output_size(op: str, axis: str, size: int, kernel_size: int, dilation: int = 1) -> None:
    """'VALID' needs the (dilated) window to fit: TensorFlow refuses a negative output size too."""
    extent = dilation * (kernel_size - 1) + 1
    if extent > size:
        raise ValueError(
            f"{op}: 'VALID' window of {extent} cells along {axis} does not fit the input's "
            f"{size} cells (the output would have {size - extent + 1}); "
            f"expected a window no larger than the input, or padding='SAME'"
        )
