"""The model zoo. Each family lives in its own module; importing it registers its builders."""

from cnnkit.models import fashion_cnn  # noqa: F401  (registers fashion_cnn)
from cnnkit.models.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
