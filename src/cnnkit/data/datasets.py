"""One dataset description for every command: ``train``, ``finetune``, ``evaluate`` and ``predict``.

``load_data(source)`` gives an :class:`ImageData`: the train / valid / test splits as uint8 images
with their targets, and a :class:`DataMeta` that says everything a run must record to use the data
again — the input size the model sees, the class names, the per-channel mean/std, how an image of
another size is brought to the input size (the *evaluation resize policy*), and how to load the same
splits again. ``config.json`` holds ``DataMeta.to_config()``; ``cnnkit evaluate`` reloads the data
from it and ``cnnkit predict`` preprocesses image files with :meth:`DataMeta.preprocess`, exactly as
the run's validation images were.

Sources: ``fashion-mnist`` (the book's 55,000 / 5,000 / 10,000 split, in memory, served by
``TensorBatches``), or a folder of class sub-folders / a .csv or .json list of images (split 75/15/10,
stratified and seeded, decoded once, served by a ``DataLoader`` with ``transforms.v2``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from cnnkit.data.augment import BatchAugment
from cnnkit.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

RESIZE_POLICIES = ("stretch", "center-crop")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class DataMeta:
    """What a run records about its data (``config.json``'s ``data``).

    ``resize``: how an image of another size becomes ``input_size``: ``stretch`` (to H × W, aspect
    not kept: Fashion-MNIST's items already fill their 28 × 28 frame) or ``center-crop`` (the shorter
    side to ``size / crop_pct``, then the centre ``size`` × ``size``: the ImageNet evaluation
    recipe). ``mean``/``std`` are per channel on the 0-1 scale. ``source`` holds what
    :func:`load_data` needs to load the same splits again.
    """

    name: str
    input_size: tuple[int, int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "stretch"
    crop_pct: float = 1.0
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize: expected one of {RESIZE_POLICIES}, got {self.resize!r}")

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_size": list(self.input_size),
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "crop_pct": self.crop_pct,
            "source": self.source,
        }

    @classmethod
    def from_config(cls, spec: Any, where: str | os.PathLike) -> DataMeta:
        """The ``data`` section of a run's ``config.json``; errors name the file and the field.

        Runs written before the resize policy was recorded: a ``crop_pct`` means center-crop."""
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: field 'data' must be an object, got {type(spec).__name__}")
        try:
            name = spec.get("name") or spec.get("source") or "?"
            resize = spec.get("resize") or ("center-crop" if "crop_pct" in spec else "stretch")
            found = spec.get("source")
            source: dict[str, Any] = found if isinstance(found, dict) else {}
            if not source and "root" in spec:
                source = {"root": spec["root"]}
            channels, height, width = (int(v) for v in spec["input_size"])
            return cls(
                name=str(name),
                input_size=(channels, height, width),
                class_names=tuple(str(c) for c in spec["class_names"]),
                mean=tuple(float(v) for v in spec["mean"]),
                std=tuple(float(v) for v in spec["std"]),
                resize=resize,
                crop_pct=float(spec.get("crop_pct") or 1.0),
                source=source,
            )
        except KeyError as exc:
            raise ValueError(f"{where}: field 'data.{exc.args[0]}' is missing") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: field 'data' is malformed ({exc})") from None

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) image of any size → the normalized float (C, h, w) the model takes,
        by this dataset's evaluation resize policy (the one place that defines it)."""
        channels, height, width = self.input_size
        image = match_channels(image, channels)
        if self.resize == "center-crop":
            shorter = max(height, width)
            image = TF.resize(image, round(shorter / self.crop_pct), antialias=True)
            image = TF.center_crop(image, [height, width])
        elif tuple(image.shape[1:]) != (height, width):
            image = TF.resize(image, [height, width], antialias=True)
        return TF.normalize(image.float() / 255, list(self.mean), list(self.std))

    def to_display(self, x: torch.Tensor) -> np.ndarray:
        """Normalized batches (N, C, H, W) → images in [0, 1] for plotting: (N, H, W) or (N, H, W, C)."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        images = (x.detach().float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1)
        return (images.squeeze(-1) if images.shape[-1] == 1 else images).numpy()


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey ↔ RGB for a uint8 (C, H, W) or (N, C, H, W) tensor (RGB → grey by ITU-R 601 luma, as PIL)."""
    have = image.shape[-3]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:])
    if have == 3 and channels == 1:
        return TF.rgb_to_grayscale(image)
    raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")


Images = torch.Tensor | list[torch.Tensor]


@dataclass(frozen=True)
class Augment:
    """Training augmentation. ``flip``: random horizontal flips. For images decoded from files also
    ``crop_scale`` (random resized crop's area range; ``None`` for none) and colour ``jitter``. For
    in-memory images ``batch``: whole-batch augmentation with per-image parameters
    (:class:`cnnkit.data.augment.BatchAugment`: crop with padding, flip, erasing)."""

    flip: bool = False
    crop_scale: tuple[float, float] | None = None
    jitter: float = 0.0
    batch: BatchAugment | None = None


@dataclass(frozen=True)
class ImageData:
    """A dataset's splits and its :class:`DataMeta`.

    Each split is ``(images, labels)``: uint8 images as one (N, C, H, W) tensor (served by
    ``TensorBatches``, no per-sample Python) or a list of (C, H, W) tensors of varied sizes
    (served by a ``DataLoader``); ``None`` for an empty split. ``warnings``: the bad records of
    annotation files that ``skip_invalid`` left out, one message each."""

    meta: DataMeta
    splits: dict[str, tuple[Images, Any] | None]
    warnings: tuple[str, ...] = ()

    # Shorthands of the first half's ImageClassificationData.
    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    @property
    def mean(self) -> tuple[float, ...]:
        return self.meta.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.meta.std

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.meta.input_size

    def _split(self, name: str) -> tuple[Images, Any]:
        split = self.splits.get(name)
        if split is None:
            raise ValueError(f"{self.meta.name}: the {name!r} split is empty")
        return split

    @property
    def train(self) -> tuple[Images, Any]:
        return self._split("train")

    @property
    def valid(self) -> tuple[Images, Any]:
        return self._split("valid")

    @property
    def test(self) -> tuple[Images, Any]:
        return self._split("test")

    def limit(self, split: str, n: int | None) -> ImageData:
        """The same data with only the first ``n`` items of ``split`` (``None``: all)."""
        if n is None:
            return self
        if n < 1:
            raise ValueError(f"limit: expected a positive number of images, got {n}")
        images, targets = self._split(split)
        if isinstance(targets, dict):
            targets = {k: v[:n] for k, v in targets.items()}
        else:
            targets = targets[:n]
        return replace(self, splits={**self.splits, split: (images[:n], targets)})

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        device: torch.device | str = "cpu",
        memory_format: torch.memory_format = torch.contiguous_format,
        workers: int = 2,
        collate: Callable | None = None,
    ) -> Any:
        """Mini-batches ``(x, y)`` of ``split``: normalized float images of ``meta.input_size``."""
        from cnnkit.data.batches import TensorBatches

        images, labels = self._split(split)
        augment = augment or Augment()
        if isinstance(images, torch.Tensor):
            return TensorBatches(
                images, labels, batch_size, shuffle=shuffle, seed=seed, mean=self.mean,
                std=self.std, flip=augment.flip, device=device, memory_format=memory_format,
                size=self.input_size[1:], channels=self.input_size[0], batch_augment=augment.batch,
            )  # fmt: skip
        if augment.batch is not None and augment.batch.active:
            raise ValueError(
                f"{self.meta.name}: batch augmentation (--batch-augment) works on in-memory images "
                "(fashion-mnist); image files are augmented one by one (--flip)"
            )
        from cnnkit.data.folder import ImageDataset, eval_transform, loader, train_transform

        size = self.input_size[1]
        if augment.crop_scale is not None or augment.jitter or augment.flip:
            transform = train_transform(
                size, self.mean, self.std, augment.crop_scale, augment.jitter, augment.flip
            )
        else:
            transform = eval_transform(size, self.mean, self.std)
        dataset = ImageDataset(images, labels.tolist(), transform)
        return loader(dataset, batch_size, shuffle, workers, 2, seed, collate)


#: a channel whose std is below this (a constant channel: one grey level, a single pixel) is not
#: scaled (std 1), as Keras' ``Normalization`` floors the std, instead of dividing by ~0 (inf, NaN)
MIN_STD = 1e-6


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale; a constant
    channel gets std 1 (``MIN_STD``)."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(1) if x.shape[1] > 1 else torch.zeros(len(x))
    std = torch.where(std.isfinite() & (std >= MIN_STD), std, torch.ones_like(std))
    return tuple(x.mean(1).tolist()), tuple(std.tolist())


def patch_covariance(
    images: Images, meta: DataMeta, size: int = 2, max_images: int = 60_000
) -> torch.Tensor:
    """The covariance (D, D), D = C·size², float64, of every ``size`` × ``size`` patch (stride 1)
    of the normalized images the model sees: uint8 (N, C, H, W) normalized with ``meta``'s
    mean/std, or a list of uint8 (C, H, W) images passed through ``meta.preprocess``; at most
    ``max_images``, evenly spaced. What a patch-whitening layer is initialized from (airbench's
    ``init_whiten``: the eigenvectors of this matrix). Patch order: channel, row, column, as
    ``F.unfold`` and a ``Conv2d`` weight (C, size, size) flatten them."""
    count = len(images)
    if count == 0:
        raise ValueError(f"{meta.name}: no training images to compute the patch covariance of")
    indices = torch.linspace(0, count - 1, min(count, max_images)).round().long().unique()
    dim = meta.channels * size * size
    # Sums of the patches and of their outer products, in float64, E[pp^T] - E[p]E[p]^T, a chunk
    # at a time: torch.cov wants every patch at once (40 M patches of Fashion-MNIST: 1.3 GB)
    total = torch.zeros(dim, dtype=torch.float64)
    outer = torch.zeros(dim, dim, dtype=torch.float64)
    patches = 0
    mean = torch.tensor(meta.mean).view(1, -1, 1, 1)
    std = torch.tensor(meta.std).view(1, -1, 1, 1)
    for start in range(0, len(indices), 2_000):  # 2,000 images at a time: ~30 MB at 28x28
        chunk = indices[start : start + 2_000]
        if isinstance(images, torch.Tensor):
            x = (images[chunk].float() / 255 - mean) / std
        else:
            x = torch.stack([meta.preprocess(images[int(i)]) for i in chunk])
        p = F.unfold(x, size).transpose(1, 2).reshape(-1, dim).double()  # (patches, D)
        total += p.sum(0)
        outer += p.T @ p
        patches += len(p)
    centre = total / patches
    return outer / patches - torch.outer(centre, centre)


def _fashion_mnist(
    root: str | os.PathLike | None,
    channels: int | None,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    *,
    task: str = "classify",
    options: dict[str, Any] | None = None,
) -> ImageData:
    """Fashion-MNIST's 55,000 / 5,000 / 10,000 split. ``options``: ``train_on_valid=true`` trains
    on the validation images too (60,000: a final run after tuning, as airbench trains on all of
    CIFAR-10's training set); validation figures are then not held out."""
    options = dict(options or {})
    if task != "classify":
        raise ValueError(
            f"--data fashion-mnist: labels whole images (the classify task); "
            f"for {task} use --data scenes"
        )
    unknown = sorted(set(options) - {"train_on_valid"})
    if unknown:
        raise ValueError(f"--data-option {unknown[0]!r}: fashion-mnist takes train_on_valid")
    train_on_valid = options.get("train_on_valid", False)
    if not isinstance(train_on_valid, bool):
        raise ValueError(f"--data-option train_on_valid={train_on_valid!r}: expected true or false")
    (xt, yt), (xv, yv), (xs, ys) = load_fashion_mnist(root)
    if train_on_valid:
        xt, yt = torch.cat([xt, xv]), torch.cat([yt, yv])
    xt, xv, xs = xt.unsqueeze(1), xv.unsqueeze(1), xs.unsqueeze(1)
    channels = channels or 1
    if mean is None or std is None:
        mean, std = channel_stats(xt)
        mean, std = mean * channels, std * channels
    size = image_size or 28
    meta = DataMeta(
        "fashion-mnist",
        (channels, size, size),
        FASHION_MNIST_CLASSES,
        tuple(mean),
        tuple(std),
        source={
            "root": None if root is None else str(root),
            **({"options": options} if options else {}),
        },
    )
    return ImageData(meta, {"train": (xt, yt), "valid": (xv, yv), "test": (xs, ys)})


def _image_files(
    root: str | os.PathLike,
    channels: int | None,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    crop_pct: float = 0.875,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    workers: int = 2,
) -> ImageData:
    from cnnkit.data.folder import (
        SPLIT_FRACTIONS,
        SplitError,
        decode_images,
        find_images,
        stratified_split,
    )

    fractions = tuple(fractions or SPLIT_FRACTIONS)
    images = find_images(root)
    if len(images.classes) < 2:
        raise ValueError(
            f"{root}: found {len(images.classes)} class ({', '.join(images.classes)}); "
            "classification needs at least two"
        )
    size = image_size or 224
    channels = channels or 3
    try:
        parts = stratified_split(images.labels, fractions, seed, images.classes)
    except SplitError as exc:
        raise SplitError(f"{root}: train/valid/test fractions {fractions}: {exc}") from None
    indices = dict(zip(SPLITS, parts, strict=True))
    pixels = decode_images(images.paths, round(size / crop_pct), threads=max(1, workers))
    if channels != 3:
        pixels = [match_channels(p, channels) for p in pixels]
    labels = torch.as_tensor(images.labels, dtype=torch.long)
    splits: dict[str, tuple[Images, Any] | None] = {
        name: ([pixels[i] for i in index], labels[index]) if len(index) else None
        for name, index in indices.items()
    }
    if splits["train"] is None:
        raise ValueError(f"{root}: the training split is empty (fractions={fractions})")
    if mean is None or std is None:
        train_pixels = [pixels[i] for i in indices["train"]]
        sums = torch.stack([p.float().div(255).mean((1, 2)) for p in train_pixels])
        squares = torch.stack([p.float().div(255).pow(2).mean((1, 2)) for p in train_pixels])
        mean = sums.mean(0).tolist()
        std = (squares.mean(0) - sums.mean(0) ** 2).clamp(min=1e-12).sqrt().tolist()
    meta = DataMeta(
        str(root),
        (channels, size, size),
        images.classes,
        tuple(mean),
        tuple(std),
        resize="center-crop",
        crop_pct=crop_pct,
        source={
            "root": str(Path(root).resolve()),
            "fractions": list(fractions),
            "seed": seed,
            "counts": {k: len(v) for k, v in indices.items()},
        },
    )
    return ImageData(meta, splits)


#: scenes per split of ``--data scenes`` unless ``--data-option`` says otherwise
SCENE_COUNTS = {"train": 5000, "valid": 500, "test": 1000}
#: what each task learns from a scene: its semantic mask, its boxes, its one item
SCENE_TARGETS = {"segment": "semantic", "detect": "boxes", "localize": "single"}


def _scenes(
    root: str | os.PathLike | None,
    channels: int | None,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    *,
    task: str = "detect",
    options: dict[str, Any] | None = None,
    **_: Any,
) -> ImageData:
    """Fashion-MNIST scenes (``cnnkit.data.scenes``) made in memory, targets for ``task``:
    ``segment`` label maps (N, H, W) (0 background, class k → k + 1), ``detect`` per-image dicts
    of ``boxes`` (xyxy pixels) and ``labels``, ``localize`` one item per scene as
    ``{"labels": (N,), "boxes": (N, 4)}``. ``options``: ``n_train``, ``n_valid``, ``n_test``, ``canvas``,
    ``max_objects``, ``background``, ``seed``."""
    from cnnkit.data.scenes import make_scenes

    if task not in SCENE_TARGETS:
        raise ValueError(
            f"--data scenes: the {task} task does not train on scenes; "
            f"tasks that do: {', '.join(SCENE_TARGETS)}"
        )
    options = dict(options or {})
    known = {"n_train", "n_valid", "n_test", "canvas", "max_objects", "background", "seed"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"--data-option {unknown[0]!r}: scenes take {', '.join(sorted(known))}")
    canvas = int(options.get("canvas", image_size or 128))
    single = task == "localize"
    max_objects = 1 if single else int(options.get("max_objects", 6))
    seed = int(options.get("seed", 0))
    background = str(options.get("background", "plain"))
    fashion = load_fashion_mnist(root)
    splits: dict[str, tuple[Images, Any] | None] = {}
    for index, name in enumerate(SPLITS):
        n = int(options.get(f"n_{name}", SCENE_COUNTS[name]))
        scenes = make_scenes(
            n, name, seed, canvas=canvas, max_objects=max_objects, background=background,
            data=fashion[index],
        )  # fmt: skip
        target: Any
        if task == "segment":
            target = scenes.semantic
        elif single:
            target = {"labels": torch.cat(scenes.labels), "boxes": torch.cat(scenes.boxes)}
        else:
            target = [
                {"boxes": boxes, "labels": labels}
                for boxes, labels in zip(scenes.boxes, scenes.labels, strict=True)
            ]
        splits[name] = (scenes.images, target)
        if name == "train":
            train_images = scenes.images
    if mean is None or std is None:
        mean, std = channel_stats(train_images)
    classes: tuple[str, ...] = FASHION_MNIST_CLASSES
    if task == "segment":
        from cnnkit.data.segmentation import semantic_class_names

        classes = semantic_class_names(FASHION_MNIST_CLASSES)
    meta = DataMeta(
        "scenes",
        (1, canvas, canvas),
        classes,
        tuple(mean),
        tuple(std),
        source={
            "root": None if root is None else str(root),
            "task": task,
            "options": {**options, "canvas": canvas, "max_objects": max_objects, "seed": seed},
        },
    )
    return ImageData(meta, splits)


DATASETS: dict[str, Callable[..., ImageData]] = {
    "fashion-mnist": _fashion_mnist,
    "scenes": _scenes,
}


def load_data(
    source: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float = 0.875,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    workers: int = 2,
    task: str = "classify",
    options: dict[str, Any] | None = None,
    skip_invalid: bool = False,
) -> ImageData:
    """A dataset by name (``fashion-mnist``, ``scenes``) or path (a folder of class sub-folders, or a .csv or
    .json list of images; for ``task="segment"`` a folder of ``images/`` and ``masks/``, or annotation
    files with polygons, RLE or masks (COCO, VIA, LabelMe); for ``task="detect"`` annotation files; for
    ``task="superres"`` ``photos:DIR``, patches of any folder of photos), seen at ``channels`` × ``image_size`` × ``image_size`` (default: the
    data's own for named datasets, 3 × 224 for image files) and normalized with ``mean``/``std``
    (default: computed on the training split). ``skip_invalid``: annotation files' bad records are
    left out (listed in ``ImageData.warnings``) instead of raising."""
    name = str(source)
    path = Path(source)
    if skip_invalid and (task not in ("segment", "detect") or name in DATASETS):
        raise ValueError(
            f"--skip-invalid: leaves out bad records of annotation files (--task detect or "
            f"segment); --data {name!r} with --task {task} reads none"
        )
    if name in DATASETS:
        return DATASETS[name](root, channels, image_size, mean, std, task=task, options=options)
    if name.startswith("photos:") or task == "superres":  # cnnkit.data.superres
        from cnnkit.data.superres import PREFIX, photo_data

        if not name.startswith(PREFIX):
            raise ValueError(
                f"--data {name!r}: the superres task trains on {PREFIX}DIR, random patches of a "
                "folder of photos"
            )
        return photo_data(name.removeprefix(PREFIX), options=options, seed=seed, task=task)
    if task == "segment":  # images/ + masks/, or annotations with outlines (data.segmentation)
        from cnnkit.data.segmentation import segmentation_data

        return segmentation_data(
            path, channels, image_size, mean, std, fractions, seed, skip_invalid
        )
    if task == "detect" and path.exists():  # annotation files (COCO, VOC, YOLO, VIA, LabelMe)
        from cnnkit.data.annotated import load_annotated

        return load_annotated(path, channels, image_size, mean, std, fractions, seed, skip_invalid)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in (".csv", ".json")):
        return _image_files(
            path, channels, image_size, mean, std, crop_pct, fractions, seed, workers
        )
    what = "is not a .csv or .json list" if path.exists() else "does not exist"
    raise ValueError(
        f"--data {name!r}: {what}; expected one of the datasets {', '.join(DATASETS)}, "
        "a folder with one sub-folder per class, or a .csv/.json list of images"
    )


def load_data_from_meta(meta: DataMeta, workers: int = 2) -> ImageData:
    """The splits a run was trained on, from its recorded :class:`DataMeta`."""
    source = meta.source
    if source.get("format") == "photos":
        from cnnkit.data.superres import photo_data_from_meta

        return replace(photo_data_from_meta(meta), meta=meta)
    if meta.name in DATASETS:
        data = DATASETS[meta.name](
            source.get("root"), meta.input_size[0], meta.input_size[1], meta.mean, meta.std,
            task=source.get("task", "classify"), options=source.get("options"),
        )  # fmt: skip
    elif source.get("format") in ("segmentation-folder", "segmentation-annotations"):
        from cnnkit.data.segmentation import segmentation_data

        data = segmentation_data(
            source.get("root", meta.name), meta.input_size[0], source.get("image_size"), meta.mean,
            meta.std, source.get("fractions"), int(source.get("seed", 0)),
            bool(source.get("skip_invalid", False)),
        )  # fmt: skip
    elif "format" in source:  # annotation files, for detection
        from cnnkit.data.annotated import load_annotated

        data = load_annotated(
            source["root"], meta.input_size[0], meta.input_size[1], meta.mean, meta.std,
            source.get("fractions"), int(source.get("seed", 0)),
            bool(source.get("skip_invalid", False)),
        )  # fmt: skip
    else:
        data = _image_files(
            source.get("root", meta.name),
            meta.input_size[0],
            meta.input_size[1],
            meta.mean,
            meta.std,
            meta.crop_pct,
            source.get("fractions"),
            int(source.get("seed", 0)),
            workers,
        )
    return replace(data, meta=meta)


def load_dataset(name: str, root: str | os.PathLike | None = None) -> ImageData:
    """A dataset by name or path at its own size (see :func:`load_data`)."""
    return load_data(name, root=root)


ImageClassificationData = ImageData  # the first half's name
