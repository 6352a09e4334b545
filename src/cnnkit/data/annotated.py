"""Detection datasets from annotation files (COCO, Pascal VOC, YOLO, VIA, LabelMe:
``cnnkit.data.annotations``) as an :class:`ImageData` for the ``detect`` task.

Every image is decoded once and stretched to ``image_size`` × ``image_size`` (the ``stretch``
evaluation policy, which ``cnnkit detect`` undoes when it maps boxes back to a file's pixels), its
boxes scaled by the same factors per axis; the images are one uint8 tensor served by
``TensorBatches``, the targets one dict per image (``boxes`` xyxy pixels of the stretched image,
``labels``). The split is by image, seeded, 75/15/10 unless ``fractions`` say otherwise; a dataset
this small a detector learns from fits in memory (1,000 images of 128 × 128 RGB are 49 MB).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF

from cnnkit.data.datasets import SPLITS, DataMeta, ImageData, Images, channel_stats, match_channels

#: the fractions of the images in train / valid / test
DETECTION_FRACTIONS = (0.75, 0.15, 0.10)


def load_annotated(
    path: str | os.PathLike,
    channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    skip_invalid: bool = False,
) -> ImageData:
    """The annotated dataset at ``path`` (any format of ``read_annotations``), split by image and
    stretched to ``channels`` × ``image_size`` × ``image_size`` (default 3 × 128).
    ``skip_invalid``: bad records (and images that cannot be decoded) are left out, listed in
    ``ImageData.warnings``, instead of raising."""
    from PIL import Image

    from cnnkit.data.annotations import detect_format, read_annotations

    fmt = detect_format(path)
    annotations = read_annotations(path, fmt, skip_invalid=skip_invalid)
    if len(annotations) == 0:
        raise ValueError(f"{path}: the {fmt} annotations list no image")
    size, channels = image_size or 128, channels or 3
    fractions = tuple(fractions or DETECTION_FRACTIONS)
    pixels, targets = [], []
    warnings = list(annotations.warnings)
    for index, record in enumerate(annotations.images):
        file = annotations.image_path(index)
        try:
            with Image.open(file) as image:
                decoded = TF.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
        except (OSError, ValueError):
            message = f"{file}: not a decodable image (listed by the {fmt} annotations in {path})"
            if not skip_invalid:
                raise ValueError(message) from None
            warnings.append(message)
            continue
        height, width = decoded.shape[-2:]
        pixels.append(TF.resize(match_channels(decoded, channels), [size, size], antialias=True))
        scale = torch.tensor([size / width, size / height] * 2)
        targets.append({"boxes": record.boxes.float() * scale, "labels": record.labels.long()})
    if not pixels:
        raise ValueError(f"{path}: no image to train on ({len(warnings)} invalid records skipped)")
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed)).tolist()
    counts = [round(f * len(order)) for f in fractions[:2]]
    bounds = [0, counts[0], counts[0] + counts[1], len(order)]
    images = torch.stack(pixels)
    splits: dict[str, tuple[Images, Any] | None] = {}
    for name, start, end in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        members = order[start:end]
        splits[name] = (images[members], [targets[i] for i in members]) if members else None
    if splits["train"] is None:
        raise ValueError(f"{path}: the training split is empty ({len(order)} images, {fractions})")
    if mean is None or std is None:
        mean, std = channel_stats(splits["train"][0])  # type: ignore[arg-type]
    meta = DataMeta(
        str(path),
        (channels, size, size),
        tuple(annotations.classes),
        tuple(mean),
        tuple(std),
        source={
            "root": str(Path(path).resolve()),
            "task": "detect",
            "format": fmt,
            "fractions": list(fractions),
            "seed": seed,
            "counts": {k: 0 if v is None else len(v[1]) for k, v in splits.items()},
            **({"skip_invalid": True} if skip_invalid else {}),  # so evaluate skips them again
        },
    )
    return ImageData(meta, splits, tuple(warnings))
