"""Mini-batches from in-memory tensors.

For datasets that fit in memory (Fashion-MNIST is 47 MB as uint8) a ``DataLoader`` would collate
one Python sample at a time; ``TensorBatches`` indexes the whole uint8 tensor with a permutation
instead, converts and normalizes each batch in one operation, and keeps the data on the compute
device, so the hot path has no per-sample Python work.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from cnnkit.data.augment import BatchAugment

Targets = torch.Tensor | dict[str, torch.Tensor] | list[Any]


def _index_targets(targets: Targets, index: torch.Tensor) -> Targets:
    if isinstance(targets, torch.Tensor):
        return targets[index]
    if isinstance(targets, dict):
        return {k: v[index] for k, v in targets.items()}
    return [targets[i] for i in index.tolist()]


class TensorBatches:
    """Iterate ``(images, targets)`` mini-batches over uint8 images held in memory.

    ``images``: uint8 (N, H, W) or (N, C, H, W); batches come out float32 (B, C, H, W), scaled to
    [0, 1] and normalized with ``mean``/``std`` (one value per channel). With ``shuffle`` the order
    is a permutation drawn from ``seed`` and the epoch number, so a run resumed at epoch k sees the
    same batches as an uninterrupted one. ``flip=True`` mirrors a random half of each batch
    horizontally (training augmentation). ``batch_augment``
    (:class:`cnnkit.data.augment.BatchAugment`: random crop with padding, flip, erasing, per image)
    augments each batch of class-labelled images as stored (uint8), its parameters drawn from the
    same seeded generator. ``size`` (H, W) and ``channels`` resize each batch (bilinear,
    antialiased) and turn grey into RGB when the model sees the images otherwise than they are
    stored (a pretrained ImageNet model on Fashion-MNIST): the stored tensor stays small.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: Targets,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        seed: int = 0,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        flip: bool = False,
        device: torch.device | str = "cpu",
        memory_format: torch.memory_format = torch.contiguous_format,
        size: Sequence[int] | None = None,
        channels: int | None = None,
        batch_augment: BatchAugment | None = None,
    ) -> None:
        if images.dtype != torch.uint8:
            raise ValueError(f"images: expected a uint8 tensor, got {images.dtype}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4:
            raise ValueError(
                f"images: expected shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}"
            )
        count = len(next(iter(labels.values()))) if isinstance(labels, dict) else len(labels)
        if len(images) != count:
            raise ValueError(f"images and targets differ in length: {len(images)} vs {count}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        self.channels = channels or images.shape[1]
        if self.channels not in (images.shape[1], 3) or images.shape[1] not in (1, self.channels):
            raise ValueError(
                f"channels: cannot serve {images.shape[1]}-channel images as {self.channels} channels"
            )
        if (
            size is not None
            and tuple(size) != tuple(images.shape[2:])
            and not (isinstance(labels, torch.Tensor) and labels.dim() == 1)
        ):
            raise ValueError("size: only images with class targets are resized here")
        self.size = (
            tuple(size) if size is not None and tuple(size) != tuple(images.shape[2:]) else None
        )
        channels = self.channels
        if len(mean) not in (1, channels) or len(std) not in (1, channels):
            raise ValueError(
                f"mean/std: expected 1 or {channels} values, got {len(mean)}/{len(std)}"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device)

        # Targets: a tensor (class indices, label maps), a dict of tensors (localization's labels and
        # boxes) or a list of per-image targets (detection's dicts), indexed per batch. Integer
        # tensors become int64 as losses want; float ones (boxes) stay as they are.
        def prepare(t: torch.Tensor) -> torch.Tensor:
            t = t.to(self.device)
            return t if t.is_floating_point() else t.long()

        self.labels: Targets
        if isinstance(labels, torch.Tensor):
            self.labels = prepare(labels)
        elif isinstance(labels, dict):
            self.labels = {k: prepare(v) for k, v in labels.items()}
        else:
            self.labels = list(labels)
        # Per-pixel targets (N, H, W) are flipped with their images; box targets are not, so
        # flipping a set with box targets is refused.
        self.pixel_targets = (
            isinstance(labels, torch.Tensor)
            and labels.dim() == 3
            and tuple(labels.shape[1:]) == tuple(images.shape[2:])
        )
        if flip and not (isinstance(labels, torch.Tensor) and labels.dim() in (1, 3)):
            raise ValueError("flip: only class or per-pixel targets are flipped with their images")
        if batch_augment is not None and batch_augment.active:
            if not (isinstance(labels, torch.Tensor) and labels.dim() == 1):
                raise ValueError(
                    "batch_augment: only images with class targets are augmented here (crops and "
                    "erasing would not move boxes or masks)"
                )
            if flip and batch_augment.flip:
                raise ValueError("flip: given twice (flip=True and batch_augment's flip); keep one")
        self.batch_augment = (
            batch_augment if batch_augment is not None and batch_augment.active else None
        )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.flip = flip
        self.memory_format = memory_format
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # Fold /255 and the normalization into one multiply-add per batch.
        std_t = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1) / std_t
        self.epoch = 0
        self.rank, self.world_size, self.drop_last = 0, 1, True

    def shard(self, rank: int, world_size: int, drop_last: bool = True) -> TensorBatches:
        """This process's share under DDP: items ``rank``, ``rank + world_size``, … of each epoch's
        order (the same seeded permutation in every process), ``N // world_size`` of them so every
        process runs the same number of steps; with ``drop_last=False`` (evaluation) every item
        once over all processes. Shares the image tensor; ``self`` is unchanged."""
        if not 0 <= rank < world_size:
            raise ValueError(f"shard: expected 0 <= rank < world_size, got {rank} of {world_size}")
        if len(self.images) < world_size:
            raise ValueError(f"shard: {len(self.images)} images cannot feed {world_size} processes")
        part = copy.copy(self)
        part.rank, part.world_size, part.drop_last = rank, world_size, drop_last
        return part

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    @property
    def num_samples(self) -> int:
        if self.drop_last:
            return len(self.images) // self.world_size
        return len(range(self.rank, len(self.images), self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of ``epoch`` (the trainer calls this before each epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        n = len(self.images)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = order[self.rank :: self.world_size][: self.num_samples]
        n = len(order)
        order = order.to(self.device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images[index]
            if self.batch_augment is not None:
                x = self.batch_augment(x, generator)
            x = x.float()
            if self.size is not None:
                x = torch.nn.functional.interpolate(x, self.size, mode="bilinear", antialias=True)
            if x.shape[1] != self.channels:
                x = x.expand(-1, self.channels, -1, -1)
            x = torch.addcmul(self._shift, x, self._scale)
            y = _index_targets(self.labels, index)
            if self.flip:
                mirror = (torch.rand(len(index), generator=generator) < 0.5).to(self.device)
                x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(3), x)
                if self.pixel_targets:
                    assert isinstance(y, torch.Tensor)
                    y = torch.where(mirror.view(-1, 1, 1), y.flip(2), y)
            yield x.contiguous(memory_format=self.memory_format), y
