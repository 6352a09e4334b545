"""The model zoo. Each family lives in its own module; importing it registers its builders."""

from cnnkit.models import (  # noqa: F401  (importing a family module registers its builders)
    alexnet,
    efficientnet,
    fashion_cnn,
    googlenet,
    lenet,
    resnet,
    vgg,
    xception,
    yolo,
)
from cnnkit.models.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
