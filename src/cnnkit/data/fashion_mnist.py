"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), with the book's split: 55,000 / 5,000 / 10,000.

Where the files are looked for, in order (the first folder holding all four files wins):
``root`` (used alone when given), ``$CNNKIT_DATA/fashion-mnist``, ``~/.cache/cnnkit/fashion-mnist``,
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). Failing all, the four
files are downloaded into the cache and verified against sha256 digests of their *uncompressed* IDX
content, so a re-compressed copy (Debian repacks the gzip files) verifies too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.data.idx import read_idx
from cnnkit.io import cache_dir, download

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
VALID_SIZE = 5_000  # the book keeps the last 5,000 training images for validation


@dataclass(frozen=True)
class _File:
    name: str  # file name as published (gzip)
    sha256: str  # of the uncompressed IDX bytes
    count: int
    item_shape: tuple[int, ...]


_FILES = {
    "train_images": _File(
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        60_000,
        (28, 28),
    ),
    "train_labels": _File(
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60_000,
        (),
    ),
    "test_images": _File(
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        10_000,
        (28, 28),
    ),
    "test_labels": _File(
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10_000,
        (),
    ),
}

Split = tuple[torch.Tensor, torch.Tensor]


def _cache_root() -> Path:
    return cache_dir("fashion-mnist")


def candidate_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for the four files, in order."""
    if root is not None:
        return [Path(root)]
    roots = []
    if os.environ.get("CNNKIT_DATA"):
        roots.append(Path(os.environ["CNNKIT_DATA"]) / "fashion-mnist")
    roots += [_cache_root(), DEBIAN_ROOT]
    return roots


def _locate(folder: Path, file: _File) -> Path | None:
    """The file in ``folder``, gzip-compressed or raw (``.gz`` stripped), if present."""
    for name in (file.name, file.name.removesuffix(".gz")):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for key, file in _FILES.items():
        path = _locate(folder, file)
        assert path is not None
        tensors[key] = read_idx(
            path,
            expect_dtype=torch.uint8,
            expect_ndim=1 + len(file.item_shape),
            expect_count=file.count,
            expect_item_shape=file.item_shape,
        )
    for part in ("train", "test"):
        labels = tensors[f"{part}_labels"]
        if int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            path = _locate(folder, _FILES[f"{part}_labels"])
            raise ValueError(f"{path}: label {int(labels.max())} found, expected 0..9")
    return tensors


def download_fashion_mnist(
    dest: str | os.PathLike | None = None,
    *,
    base_url: str = OFFICIAL_URL,
    fetch: Callable[[str, Path], None] | None = None,
) -> Path:
    """Download the four files into ``dest`` (default: the cache), verifying each sha256.

    Each file is written to a temporary name and renamed into place only once verified, so an
    interrupted or corrupt download never leaves a half file where the loader would find it.
    ``fetch(url, path)`` is the transfer; tests pass a local one.
    """
    dest = Path(dest) if dest is not None else _cache_root()
    dest.mkdir(parents=True, exist_ok=True)
    for file in _FILES.values():
        target = dest / file.name
        if target.is_file():
            continue
        url = base_url.rstrip("/") + "/" + file.name
        download(url, target, file.sha256, digest=_uncompressed_sha256, fetch=fetch)
    return dest


def _uncompressed_sha256(path: Path) -> str:
    # The digests are of the uncompressed IDX bytes, so Debian's re-gzipped files verify too.
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


_HOW_TO_GET = (
    "Fashion-MNIST not found. Get it one of these ways:\n"
    "  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (files in /usr/share/datasets/fashion-mnist)\n"
    f"  - download the four files from {OFFICIAL_URL} into $CNNKIT_CACHE/fashion-mnist\n"
    "    (default ~/.cache/cnnkit/fashion-mnist)\n"
    "    or into $CNNKIT_DATA/fashion-mnist, or pass root=FOLDER\n"
    "  - or allow cnnkit to download them: load_fashion_mnist(download=True)"
)


def load_fashion_mnist(
    root: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[Split, Split, Split]:
    """Fashion-MNIST as ``(x_train, y_train), (x_valid, y_valid), (x_test, y_test)``.

    Images are uint8 tensors (N, 28, 28), labels int64. The validation set is the last 5,000
    training images, as in the book. A corrupt file is always an error, never skipped in favour of
    another location.
    """
    tensors = None
    for folder in candidate_roots(root):
        if all(_locate(folder, f) is not None for f in _FILES.values()):
            tensors = _load_folder(folder)
            break
    if tensors is None:
        if root is not None:
            missing = [f.name for f in _FILES.values() if _locate(Path(root), f) is None]
            raise FileNotFoundError(f"{root}: missing {', '.join(missing)}.\n{_HOW_TO_GET}")
        if not download:
            raise FileNotFoundError(_HOW_TO_GET)
        try:
            tensors = _load_folder(download_fashion_mnist())
        except OSError as exc:
            raise FileNotFoundError(f"download failed ({exc}).\n{_HOW_TO_GET}") from exc
    x_train, y_train = tensors["train_images"], tensors["train_labels"].long()
    x_test, y_test = tensors["test_images"], tensors["test_labels"].long()
    n = len(x_train) - VALID_SIZE
    return (x_train[:n], y_train[:n]), (x_train[n:], y_train[n:]), (x_test, y_test)
