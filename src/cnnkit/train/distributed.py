"""Scale-out with PyTorch's DistributedDataParallel under ``torchrun`` — no distributed layer of our own.

    torchrun --nproc_per_node 2 -m cnnkit train --model fashion_cnn --epochs 10 --out runs/ddp

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
``Trainer`` sees ``WORLD_SIZE > 1`` and then:

- joins the process group (NCCL on CUDA, Gloo on the CPU) and, on CUDA, uses ``cuda:LOCAL_RANK``
  (``cnnkit.device.pick_device`` reads ``LOCAL_RANK``);
- wraps the model in ``DistributedDataParallel``, which averages gradients across processes and
  broadcasts the BatchNorm buffers of rank 0 at every forward;
- gives every process its shard of each epoch's permutation (``TensorBatches.shard``): the same
  seeded permutation everywhere, rank r taking items r, r + W, r + 2W, … so one step of W processes
  at batch B equals one step of a single process at batch W·B on the same images; a ``DataLoader``
  (``cnnkit finetune``'s image pipeline) is rebuilt around a ``DistributedSampler``, which shards
  the same way (``shard_loader``);
- sums the training loss, correct count and image count across processes before logging, so every
  process reports (and checks for NaN) the same numbers;
- evaluates its share of the validation set (every item exactly once over all processes) and sums the
  task's metric state (``Reduce``), so every process sees the same metrics and early stopping decides
  the same everywhere; writes the run directory from rank 0 only.

``--batch-size`` is per process, as in PyTorch; the learning rate is not rescaled.

A process that fails ends the job rather than leaving the others waiting: ``torchrun`` stops the
other workers when one exits with an error, and every collective operation (the gradient all-reduce,
the metric sums, the barriers) gives up after :func:`timeout` (``$CNNKIT_DDP_TIMEOUT`` seconds,
default 1800, PyTorch's own default) with an error naming it — a process that hangs without exiting
cannot block the others longer than that.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank ``rank`` of ``world_size`` (``LOCAL_RANK`` on its host)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(
            f"environment variable WORLD_SIZE: expected an integer, got {os.environ['WORLD_SIZE']!r}"
        ) from None


#: the environment variable giving the collective operations' timeout, in seconds
TIMEOUT_VARIABLE = "CNNKIT_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


def timeout() -> timedelta:
    """How long a process waits in a collective operation for the others (``$CNNKIT_DDP_TIMEOUT``
    seconds, default 1800) before it fails with an error instead of hanging."""
    text = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(
            f"environment variable {TIMEOUT_VARIABLE}: expected a positive number of seconds, "
            f"got {text!r}"
        )
    return timedelta(seconds=seconds)


class PeerError(RuntimeError):
    """A collective operation failed or timed out: another process of the job failed or hangs."""


# what Gloo and NCCL errors say when a peer is gone or silent (Gloo's timeout inside DDP's backward
# is a plain RuntimeError, not a DistError)
_PEER_FAILURE_TEXT = ("Timed out", "timed out", "Connection closed by peer", "Connection reset")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective operation that failed because of another process."""
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and any(text in str(exc) for text in _PEER_FAILURE_TEXT)
    )


def peer_error(exc: BaseException, info: DistInfo) -> PeerError:
    """``exc`` (a ``DistError`` from a collective) as one line saying what it means."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return PeerError(
        f"rank {info.rank} of {info.world_size}: a collective operation failed or waited longer "
        f"than {timeout().total_seconds():g} s (${TIMEOUT_VARIABLE}): another process of the job "
        f"has failed or hangs, and its own error says why ({first})"
    )


def setup(device: torch.device) -> DistInfo:
    """Join the ``torchrun`` job this process belongs to (once), or return the single-process info."""
    if world_size_from_env() <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout())
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """Whether this process writes files and prints: rank 0 of a DDP job (``torchrun``'s ``RANK``
    before the process group exists), or the only process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """``tensor`` summed over every process (itself when running alone)."""
    if info.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    """Wait for every process (nothing when running alone)."""
    if info.enabled:
        dist.barrier()


Reduce = Callable[[torch.Tensor], torch.Tensor]


def reducer(info: DistInfo) -> Reduce:
    """A function summing a tensor over every process (the identity when running alone)."""
    return lambda tensor: all_reduce_sum(tensor, info)


class _Strided(torch.utils.data.Sampler[int]):
    """Items ``rank``, ``rank + world_size``, … in order: an evaluation shard without padding."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def shard_eval_loader(loader: DataLoader, info: DistInfo) -> DataLoader:
    """This process's share of an evaluation loader: every item exactly once over all processes
    (``DistributedSampler`` would repeat items to even the shares, and count them twice)."""
    if loader.batch_size is None or isinstance(loader.dataset, torch.utils.data.IterableDataset):
        return loader  # cannot be split: every process evaluates all of it
    sampler = _Strided(len(loader.dataset), info.rank, info.world_size)  # type: ignore[arg-type]
    return _with_sampler(loader, sampler, drop_last=False)


def _with_sampler(
    loader: DataLoader, sampler: torch.utils.data.Sampler, drop_last: bool
) -> DataLoader:
    """``loader`` rebuilt around ``sampler``, keeping batch size, workers, prefetching and collation."""
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )


def shard_loader(loader: DataLoader, info: DistInfo, seed: int = 0) -> DataLoader:
    """This process's share of ``loader``: the same loader around a ``DistributedSampler``.

    One that already has a ``DistributedSampler`` is returned as it is. The shuffle is kept (a
    ``RandomSampler`` becomes a shuffling ``DistributedSampler`` seeded with ``seed``; the trainer
    calls its ``set_epoch``), and so are the batch size, workers, prefetching, collate function and
    ``drop_last``. As with ``DistributedSampler``, the last items are repeated where the dataset
    does not divide by the number of processes. (Lightning rebuilds loaders the same way; PyTorch has
    no function for it.)
    """
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    if type(loader.sampler) not in (RandomSampler, SequentialSampler):
        # replacing a weighted or otherwise custom sampler would silently change what is trained on
        raise ValueError(
            f"train: under torchrun this DataLoader's {type(loader.sampler).__name__} cannot be "
            "sharded automatically: give it a DistributedSampler (or a shuffle=True/False loader)"
        )
    # batch_size is None exactly when the loader was given its own batch_sampler
    if loader.batch_size is None or isinstance(loader.dataset, torch.utils.data.IterableDataset):
        raise ValueError(
            "train: under torchrun every process needs its own share of the data, and this "
            "DataLoader (an iterable dataset, a custom batch sampler, or no batch size) cannot be "
            "sharded automatically: give it a DistributedSampler"
        )
    sampler: DistributedSampler = DistributedSampler(
        loader.dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
    )
    return _with_sampler(loader, sampler, loader.drop_last)
