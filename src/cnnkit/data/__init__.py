"""Datasets: Fashion-MNIST, the notes' sample images, datasets by name, in-memory mini-batches,
annotated boxes and masks (five annotation formats) and Fashion-MNIST scenes."""

from cnnkit.data.annotations import (
    AnnotatedDataset,
    AnnotatedImage,
    AnnotationError,
    Annotations,
    collate_detection,
    read_annotations,
    write_annotations,
    write_dataset,
)
from cnnkit.data.batches import TensorBatches
from cnnkit.data.datasets import DATASETS, ImageClassificationData, load_dataset, patch_covariance
from cnnkit.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    download_fashion_mnist,
    load_fashion_mnist,
)
from cnnkit.data.idx import IDXError, read_idx, write_idx
from cnnkit.data.images import ImageDecodeError, ImageTooLargeError, image_size, read_image
from cnnkit.data.samples import load_sample_images
from cnnkit.data.scenes import Scenes, make_scenes

__all__ = [
    "AnnotatedDataset",
    "AnnotatedImage",
    "AnnotationError",
    "Annotations",
    "Scenes",
    "collate_detection",
    "make_scenes",
    "read_annotations",
    "write_annotations",
    "write_dataset",
    "DATASETS",
    "ImageClassificationData",
    "load_dataset",
    "patch_covariance",
    "FASHION_MNIST_CLASSES",
    "IDXError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "image_size",
    "read_image",
    "TensorBatches",
    "download_fashion_mnist",
    "load_fashion_mnist",
    "load_sample_images",
    "read_idx",
    "write_idx",
]
