"""Pretrained ImageNet models: real weights, their preprocessing, and ``decode_predictions``.

>>> p = cnnkit.pretrained.load("efficientnet_lite0")
>>> probs = p.predict([image])                    # (1, 1000) probabilities
>>> cnnkit.pretrained.decode_predictions(probs, top=3)
[[('n02123159', 'tiger cat', 0.41), ...]]
"""

from cnnkit.pretrained.imagenet import decode_predictions, format_predictions, imagenet_classes
from cnnkit.pretrained.loader import Pretrained, load, load_weights
from cnnkit.pretrained.preprocess import CROPS, Preprocess
from cnnkit.pretrained.weights import WEIGHTS, Weights, get_weights, list_weights

__all__ = [
    "CROPS",
    "WEIGHTS",
    "Preprocess",
    "Pretrained",
    "Weights",
    "decode_predictions",
    "format_predictions",
    "get_weights",
    "imagenet_classes",
    "list_weights",
    "load",
    "load_weights",
]
