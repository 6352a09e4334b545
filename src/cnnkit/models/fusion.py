"""Folding BatchNorm into the convolution before it, for inference.

In evaluation mode a BatchNorm layer is an affine map per channel with fixed statistics, so a
convolution followed by it is one convolution with rescaled weights and a bias. Folding removes a
pass over every feature map (on two AVX2 cores: see the README's detection speed table).

The arithmetic is torch's (``torch.nn.utils.fusion.fuse_conv_bn_eval``); what is written here is
finding the pairs, because torch's graph-level pass (``torch.fx.experimental.optimization.fuse``)
needs a symbolically traceable model and exact ``nn.Conv2d`` types, and cnnkit's models are neither
(TensorFlow-'same' convolutions are a subclass that pads by the input's shape; the detector's crop
classifier picks boxes by value). A pair is folded when the convolution's output goes to the
BatchNorm and nowhere else, which the module states:

- consecutive children of an ``nn.Sequential`` (a Sequential passes each output only to the next);
- the ``(conv, norm)`` attribute names a block lists in ``conv_bn_pairs`` (the residual units, the
  YOLO head), because its ``forward`` applies them back to back.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, nn.BatchNorm2d)
        and norm.running_mean is not None
        and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def _fold(parent: nn.Module, conv_name: str, norm_name: str) -> bool:
    conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
    if not _foldable(conv, norm):
        return False
    setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
    setattr(parent, norm_name, nn.Identity())
    return True


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d into it, in place; returns the number
    of pairs folded. The model must be in evaluation mode (the folded weights are the running
    statistics'); outputs are unchanged up to float rounding (1e-5 relative in the tests). Training
    the folded model is not the same as training the original: fold a copy for inference."""
    if model.training:
        raise ValueError(
            "fuse_conv_bn: the model is in training mode; call model.eval() first (folding uses "
            "BatchNorm's running statistics)"
        )
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for conv_name, norm_name in zip(names, names[1:], strict=False):
                folded += _fold(module, conv_name, norm_name)
        for conv_name, norm_name in getattr(module, "conv_bn_pairs", ()):
            folded += _fold(module, conv_name, norm_name)
    return folded
