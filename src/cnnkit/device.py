"""Device and precision selection: the one place that decides where and how tensors compute.

CUDA when present (bf16 autocast, ``channels_last``), else Apple MPS, else the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "bf16")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: the one asked for, else CUDA, else MPS, else the CPU.

    Under ``torchrun`` (``LOCAL_RANK`` set) CUDA means this process's own GPU, ``cuda:LOCAL_RANK``.
    """
    if device is not None and str(device) != "auto":
        return _checked(device)
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(local_rank)) if local_rank else torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _checked(device: str | torch.device) -> torch.device:
    """``device`` if this machine has it; a ValueError naming it and what there is otherwise."""
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device {str(device)!r}: not a device name; expected auto, cpu, cuda, cuda:N or mps"
        ) from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {str(device)!r}: this machine has no CUDA GPU; use cpu or auto"
            )
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s)")
    elif chosen.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r}: MPS is not available here; use cpu or auto")
    elif chosen.type != "cpu":
        raise ValueError(f"device {str(device)!r}: expected auto, cpu, cuda, cuda:N or mps")
    return chosen


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX tiles), where bf16 autocast
    speeds training up; on AVX2-only CPUs oneDNN emulates it and it is many times slower than fp32.

    Asks torch's own CPU-feature probes (``torch.cpu._is_avx512_bf16_supported``,
    ``_is_amx_tile_supported``), the ones its kernels dispatch on."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: set to 0 to leave glibc's allocator as it is
KEEP_HEAP_ENV = "CNNKIT_KEEP_HEAP"


@functools.cache  # once per process: every Trainer asks
def keep_freed_memory() -> bool:
    """Serve tensors from a heap that keeps freed memory, instead of a fresh ``mmap`` each time.

    glibc gives every allocation over its mmap threshold (128 KB, rising to at most 32 MB) pages
    of its own and returns them when freed, so each training step faults in and zeroes its large
    activations again (50,000-117,000 page faults per speedrun step on 2 AVX2 cores; max-pool
    backward's zero-fill alone took 7-11% of the step). Keeping the memory (``mallopt``: no mmap, never trim) ran that step 1.2-1.4x faster
    (docs/notes/issue-15.md). jemalloc or tcmalloc through ``LD_PRELOAD`` do the same (PyTorch's
    CPU tuning guide); this needs no package and no restart. The heap then stays at its peak
    size until the process ends. Linux with glibc only; a no-op elsewhere or with
    ``CNNKIT_KEEP_HEAP=0``. Returns whether it applied."""
    import ctypes
    import platform

    if os.environ.get(KEEP_HEAP_ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


@dataclass(frozen=True)
class Precision:
    """How a step computes: ``fp32`` or ``bf16`` autocast, and whether activations are channels-last."""

    device: torch.device
    name: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, got {self.name!r}"
            )

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op in fp32)."""
        if self.name == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def default_precision(device: torch.device, precision: str | None = None) -> Precision:
    """The precision to compute in on ``device``.

    ``"auto"`` (the CLI's default) decides at run time: bf16 autocast on CUDA and on CPUs that compute
    bf16 natively (:func:`cpu_has_native_bf16`: the notes' CNN trained 3.0x faster in bf16 than fp32 on
    one core of an AMX Xeon, ``benchmarks/precision_speed.py``), fp32 elsewhere (on AVX2-only CPUs
    bf16 is emulated and about 10x slower; MPS). ``None`` (the Python API's default) is bf16 on CUDA
    and exact fp32 on every CPU, so library results do not depend on which CPU runs them.
    ``channels_last`` everywhere but MPS: oneDNN's CPU convolutions run the notes' Fashion-MNIST CNN
    1.7x faster channels-last (284 vs 167 training images/s, 2-core AMD EPYC).
    """
    if precision is None:
        precision = "bf16" if device.type == "cuda" else "fp32"
    elif precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        precision = "bf16" if native else "fp32"
    return Precision(device=device, name=precision, channels_last=device.type != "mps")


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None`` leaves it unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
