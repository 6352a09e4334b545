"""The model zoo. Each family lives in its own module; importing it registers its builders.

The segmentation models (``fcn``, ``deeplab``: task "segment") build their backbones from the
registry by name when they are built, so import order does not matter.
"""

from cnnkit.models import (  # noqa: F401  (importing a family module registers its builders)
    alexnet,
    deeplab,
    efficientnet,
    fashion_cnn,
    fcn,
    googlenet,
    lenet,
    localizer,
    resnet,
    speednet,
    superres,
    unet,
    vgg,
    xception,
    yolo,
)
from cnnkit.models.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
