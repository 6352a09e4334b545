"""Image datasets from files: a folder of class sub-folders, or a CSV/JSON list of (path, label).

The notes' transfer-learning recipe (Géron, ch. 14, the tf_flowers example) as a PyTorch pipeline:

1. find the images: ``scan_folder`` (torchvision's ``ImageFolder`` layout, classes sorted by name) or
   ``read_list`` (CSV with ``path`` and ``label`` columns, or JSON ``[{"path", "label"}]`` / pairs);
2. split them with a seeded, stratified split: the notes' 75 / 15 / 10 (scikit-learn's
   ``train_test_split(stratify=...)``, so every split keeps the class proportions);
3. decode and resize each image once (``decode_images``, in threads: PIL releases the GIL), keeping
   uint8 tensors whose shorter side is ``image_size / crop_pct`` (256 for 224), so epochs cost no JPEG
   decoding; training then takes random crops of the whole image, evaluation the center crop;
4. serve batches through a ``DataLoader`` with worker processes and prefetching; training batches are
   augmented with ``torchvision.transforms.v2`` (random resized crop, horizontal flip, colour jitter).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from cnnkit.data.images import read_image

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLIT_FRACTIONS = (0.75, 0.15, 0.10)  # the notes' train / valid / test


@dataclass(frozen=True)
class ImageList:
    """Image files with integer labels indexing ``classes``."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageList:
        return ImageList(
            tuple(self.paths[i] for i in indices),
            tuple(self.labels[i] for i in indices),
            self.classes,
        )

    def counts(self) -> list[int]:
        """Images per class, in class order."""
        return np.bincount(
            np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes)
        ).tolist()


# ---- Finding the images -----------------------------------------------------------------------


def scan_folder(root: str | os.PathLike) -> ImageList:
    """``root/CLASS/*.jpg`` → an ``ImageList``; classes are the sub-folder names, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(
            f"{root}: expected one sub-folder per class (ImageFolder layout), found none"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not files:
            raise ValueError(
                f"{root / name}: class folder holds no image ({', '.join(IMAGE_EXTENSIONS)})"
            )
        paths += files
        labels += [label] * len(files)
    return ImageList(tuple(paths), tuple(labels), tuple(classes))


def read_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None) -> ImageList:
    """A CSV (``path,label`` header) or JSON list of images; relative paths are under ``root``
    (default: the list file's folder). Labels are class names; classes are sorted."""
    list_file = Path(list_file)
    root = Path(root) if root is not None else list_file.parent
    rows: list[tuple[str, str]] = []
    if list_file.suffix.lower() == ".csv":
        with open(list_file, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise ValueError(
                    f"{list_file}: expected a header with 'path' and 'label' columns, "
                    f"found {reader.fieldnames}"
                )
            rows = [(row["path"], row["label"]) for row in reader]
    elif list_file.suffix.lower() == ".json":
        for index, item in enumerate(json.loads(list_file.read_text())):
            if isinstance(item, dict) and "path" in item and "label" in item:
                rows.append((item["path"], str(item["label"])))
            elif isinstance(item, list | tuple) and len(item) == 2:
                rows.append((item[0], str(item[1])))
            else:
                raise ValueError(
                    f"{list_file}: item {index} is {item!r}; expected "
                    '{"path": ..., "label": ...} or [path, label]'
                )
    else:
        raise ValueError(f"{list_file}: expected a .csv or .json list of images")
    if not rows:
        raise ValueError(f"{list_file}: the list is empty")
    classes = tuple(sorted({label for _, label in rows}))
    class_index = {name: i for i, name in enumerate(classes)}
    paths = tuple(root / path for path, _ in rows)
    return ImageList(paths, tuple(class_index[label] for _, label in rows), classes)


def find_images(source: str | os.PathLike) -> ImageList:
    """A folder (ImageFolder layout) or a .csv/.json list."""
    return scan_folder(source) if Path(source).is_dir() else read_list(source)


# ---- Splitting --------------------------------------------------------------------------------


class SplitError(ValueError):
    """Too few images for a stratified split at the asked fractions; the message names the class."""


def _check_cut(
    labels: np.ndarray, fraction: float, cut: str, class_names: Sequence[str], first: bool
) -> None:
    """Refuse, naming the class, a cut that ``train_test_split(stratify=...)`` would refuse with
    a message naming no class. Its rules (``StratifiedShuffleSplit``): every class at least 2
    members; both parts, ``ceil(fraction * n)`` and the rest, at least one image per class."""
    classes, counts = np.unique(labels, return_counts=True)
    fewest = int(np.argmin(counts))
    name, count = class_names[int(classes[fewest])], int(counts[fewest])
    images = f"{count} image{'s' if count != 1 else ''}"
    where = "" if first else " left after the test split"
    n_cut = math.ceil(fraction * len(labels))  # as scikit-learn rounds it
    n_rest = len(labels) - n_cut
    rest = "the train and valid splits get" if cut == "test" else "the train split gets"
    if count < 2:
        problem = (
            f"class {name!r} has {images}{where}, too few to give the {cut} split one and keep "
            "one (at least 2 needed)"
        )
    elif n_cut < len(classes):
        problem = (
            f"the {cut} split gets {n_cut} of {len(labels)} images{where}, fewer than the "
            f"{len(classes)} classes (class {name!r} has {images}{where})"
        )
    elif n_rest < len(classes):
        problem = (
            f"{rest} {n_rest} of {len(labels)} images{where}, fewer than the "
            f"{len(classes)} classes (class {name!r} has {images}{where})"
        )
    else:
        return
    raise SplitError(
        f"{problem}: a stratified split needs at least 2 images of each class and splits of at "
        f"least one image per class; add images to class {name!r} or change the fractions"
    )


def stratified_split(
    labels: Sequence[int],
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded, stratified train / valid / test split (fractions summing to 1).

    A zero fraction gives an empty split. scikit-learn rounds each split's size to whole images and
    allocates them over the classes in proportion, so 100 images of each of 10 classes split
    75/15/10 give exactly 75, 15 and 10 per class. Too few images for the fractions raise
    :class:`SplitError` naming the class (``class_names``, default the label numbers).
    """
    from sklearn.model_selection import train_test_split

    if (
        len(fractions) != 3
        or not all(f >= 0 for f in fractions)
        or not abs(sum(fractions) - 1) <= 1e-6
    ):  # nan fails
        raise ValueError(
            f"fractions={tuple(fractions)}; expected (train, valid, test) >= 0 summing to 1"
        )
    label_array = np.asarray(labels)
    names = (
        list(class_names)
        if class_names is not None
        else [str(i) for i in range(max(labels, default=-1) + 1)]
    )
    indices = np.arange(len(label_array))
    train_frac, valid_frac, test_frac = fractions
    empty = np.array([], dtype=np.int64)
    rest, test = indices, empty
    if test_frac > 0:
        _check_cut(label_array, test_frac, "test", names, first=True)
        rest, test = train_test_split(
            indices, test_size=test_frac, stratify=label_array, random_state=seed
        )
    train, valid = rest, empty
    if valid_frac > 0:
        valid_share = valid_frac / (train_frac + valid_frac)
        _check_cut(label_array[rest], valid_share, "valid", names, first=test_frac == 0)
        train, valid = train_test_split(
            rest, test_size=valid_share, stratify=label_array[rest], random_state=seed
        )
    return np.sort(train), np.sort(valid), np.sort(test)


# ---- Decoding once ----------------------------------------------------------------------------


def decode_image(path: str | os.PathLike, shorter_side: int) -> torch.Tensor:
    """A file as a 3×H×W uint8 tensor whose shorter side is ``shorter_side`` (aspect kept), decoded
    by :func:`cnnkit.data.images.read_image` (upright, 8 bits, RGB; JPEGs drafted at a reduced
    scale, much faster than decoding then resizing)."""
    pixels = read_image(path, "RGB", draft=shorter_side)
    return TF.resize(pixels, shorter_side, antialias=True)


def decode_images(paths: Sequence[Path], shorter_side: int, threads: int = 2) -> list[torch.Tensor]:
    """``decode_image`` over all files in threads; unreadable files are one error listing them all."""

    def one(path: Path) -> torch.Tensor | str:
        try:
            return decode_image(path, shorter_side)
        except (OSError, ValueError) as exc:  # ImageDecodeError's message starts with the path
            return str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"

    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(one, paths))
    bad = [r for r in results if isinstance(r, str)]
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise ValueError("cannot read these images:\n  " + "\n  ".join(bad[:10]) + more)
    return results  # type: ignore[return-value]


class ImageDataset(Dataset):
    """Decoded uint8 images (a list of 3×H×W tensors) and labels, with a per-item transform."""

    def __init__(
        self,
        images: list[torch.Tensor],
        labels: Sequence[int],
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


# ---- Transforms -------------------------------------------------------------------------------


def train_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] | None = (0.5, 1.0),
    jitter: float = 0.2,
    flip: bool = True,
) -> v2.Compose:
    """Random resized crop (``scale``; ``None``: the centre crop), horizontal flip, colour jitter,
    then scaling and normalization.

    ``scale`` is milder than ImageNet training's (0.08, 1): a short fine-tuning on few images
    should still see most of each object. ``mean``/``std`` are on the 0-1 scale.
    """
    steps: list[Any] = [
        v2.RandomResizedCrop(image_size, scale=scale, antialias=True)
        if scale is not None
        else v2.CenterCrop(image_size)
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if jitter:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """The center crop of the cached image (whose shorter side is ``image_size / crop_pct``)."""
    return v2.Compose(
        [
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


# ---- Everything together ----------------------------------------------------------------------


@dataclass
class FolderData:
    """Train / valid / test loaders over one image collection (``ImageData.batches`` of each split),
    its classes, and the dataset's description ``meta``."""

    classes: tuple[str, ...]
    splits: dict[str, ImageList]
    train: DataLoader
    valid: DataLoader | None
    test: DataLoader | None
    meta: DataMeta


def loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    prefetch: int,
    seed: int,
    collate: Callable | None = None,
) -> DataLoader:
    """A ``DataLoader`` with ``workers`` prefetching processes and a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        prefetch_factor=prefetch if workers > 0 else None,
        # Workers are started afresh each epoch, seeded from the loader's generator (which the
        # Trainer reseeds with seed + epoch), so random augmentation repeats exactly on --resume;
        # persistent workers would carry their random state over from the epochs before.
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        collate_fn=collate,
    )


def load_image_folder(
    source: str | os.PathLike,
    image_size: int = 224,
    crop_pct: float = 0.875,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    seed: int = 0,
    batch_size: int = 32,
    workers: int = 2,
    prefetch: int = 2,
    augment: bool = True,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    jitter: float = 0.2,
) -> FolderData:
    """Find, split, decode once and serve an image collection (:func:`cnnkit.data.load_data` with
    loaders made).

    ``source``: a folder of class sub-folders or a .csv/.json list. ``mean``/``std`` (0-1 scale) and
    ``crop_pct`` should be those of the pretrained weights (``Preprocess.mean_01``). With ``augment``
    the training images get ``train_transform(crop_scale, jitter)``: (1, 1) and 0 leave only the flip.
    """
    from cnnkit.data.datasets import Augment, load_data

    data = load_data(
        source, image_size=image_size, crop_pct=crop_pct, mean=mean, std=std,
        fractions=fractions, seed=seed, workers=workers,
    )  # fmt: skip
    images = find_images(source)
    indices = stratified_split(images.labels, fractions, seed)
    splits = {
        name: images.subset(i) for name, i in zip(("train", "valid", "test"), indices, strict=True)
    }
    plain = Augment()
    augmented = Augment(flip=True, crop_scale=crop_scale, jitter=jitter) if augment else plain

    def make(split: str, shuffle: bool, how: Augment) -> DataLoader | None:
        if data.splits.get(split) is None:
            return None
        made = data.batches(
            split, batch_size, shuffle=shuffle, seed=seed, augment=how, workers=workers
        )
        if prefetch != 2 and workers > 0:
            made = loader(made.dataset, batch_size, shuffle, workers, prefetch, seed)
        return made

    train = make("train", True, augmented)
    assert train is not None  # load_data refuses an empty training split
    return FolderData(
        images.classes,
        splits,
        train,
        make("valid", False, plain),
        make("test", False, plain),
        data.meta,
    )
