"""A small, fast network for time-to-accuracy on Fashion-MNIST (``cnnkit speedrun``), after airbench.

Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU" (2024; ``airbench94.py``): three
conv groups, each conv 3×3 → max-pool 2 → BatchNorm → GELU → conv 3×3 → BatchNorm → GELU, widths
64/256/256; then max-pooling to 1×1, a dense layer without bias and the logits scaled by 1/9.
Convolutions have no bias (BatchNorm follows) and start as a partial identity (``dirac_`` on the
first ``in_channels`` filters: an implicit residual); BatchNorm's running statistics move fast
(momentum 0.4, airbench's "0.6" in its convention) with eps 1e-12.

Deliberate differences, for 1×28×28 grey images on a CPU:

- the whitening layer is an option (``whiten=True``, off by default): airbench's 2×2 convolution
  (no padding) whose filters are the eigenvectors of the training images' 2×2-patch covariance
  scaled by 1/sqrt(eigenvalue + 5e-4), each also negated (2·C·4 channels), never trained. A builder
  has no training data, so the covariance is an option (``patch_covariance``) that ``cnnkit
  train`` computes from the training split (``Classify.model_options_from_data``) and records in
  ``config.json``; the filters are a buffer, not a parameter (airbench trains their bias for the
  first epochs: left out). On one grey channel it gives 8 channels at 27×27, so the groups run at
  13×13, 6×6 and 3×3 (14, 7, 3 without): fewer FLOPs per image, and with ReLU test 94.07%
  against 93.70% (GELU, no whitening) in the 9-minute speedrun (seed 0, batch 256,
  docs/notes/issue-15.md). ``stem_width`` adds a plain 3×3 conv + GELU instead;
- widths 32/64/128 by default (``widths``): a fifth of the CIFAR net's FLOPs, for two CPU cores
  (the speedrun's recipe may choose others);
- BatchNorm's weights train (airbench freezes them at 1): every parameter receives a gradient,
  as ``DistributedDataParallel`` and the zoo's contract want;
- global max-pooling (``AdaptiveMaxPool2d(1)``) instead of ``MaxPool2d(3)``: the same at 28×28
  (the 3×3 map pooled whole) and any input of at least 8×8 works.

``residual=True``: airbench96's group — a third conv after the second, and the pooled map added
back after it (482,144 parameters at the default widths; 93.63% test in the 9-minute speedrun,
against 93.68% without, docs/notes/issue-15.md).

288,160 parameters at the default widths, 1 channel, 10 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.models.features import make_feature_info
from cnnkit.models.registry import register_model

#: airbench's BatchNorm: "momentum 0.6" of the running average is PyTorch's momentum 1 - 0.6
BN_MOMENTUM = 0.4
BN_EPS = 1e-12
LOGIT_SCALE = 1 / 9
#: airbench's GELU, or ReLU: 1.17x the training images/s of the default speednet on a 2-core AVX2
#: EPYC (1,318 vs 1,127 at batch 1024, interleaved; torch.compile was slower there, 921-966)
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


#: airbench's ``init_whiten`` eps: added to the eigenvalues before the 1/sqrt scaling
WHITEN_EPS = 5e-4
WHITEN_SIZE = 2  # airbench's patch size


def whitening_filters(
    covariance: torch.Tensor, in_channels: int, eps: float = WHITEN_EPS
) -> torch.Tensor:
    """(2D, C, s, s) filters, D = C·s², from a patch covariance (D, D): the eigenvectors scaled by
    1/sqrt(eigenvalue + eps), then the same negated (airbench's ``init_whiten``), so the layer's
    outputs are decorrelated, of unit variance (up to eps) on the patches the covariance came from."""
    size = round((covariance.shape[0] / in_channels) ** 0.5)
    if covariance.shape != (in_channels * size * size,) * 2:
        raise ValueError(
            f"whitening_filters: expected a (C·s², C·s²) covariance for C = {in_channels}, got "
            f"{tuple(covariance.shape)}"
        )
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())  # ascending
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
    filters = filters.reshape(-1, in_channels, size, size).float()
    return torch.cat([filters, -filters])


class PatchWhitening(nn.Module):
    """A fixed convolution (no padding, no bias) by :func:`whitening_filters`, kept as a buffer:
    checkpoints carry it, the optimizer and DDP never see it."""

    weight: torch.Tensor

    def __init__(self, covariance: torch.Tensor, in_channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", whitening_filters(covariance, in_channels))
        self.size = self.weight.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        least = self.size + 7  # so that the three max-pools leave at least 1x1
        if min(x.shape[-2:]) < least:
            raise ValueError(
                f"speednet with whitening: expected images of at least {least}x{least}, got "
                f"{x.shape[-2]}x{x.shape[-1]}"
            )
        return F.conv2d(x, self.weight.to(x.dtype))  # N x 2D x (H - s + 1) x (W - s + 1)


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        # an implicit residual: the first in_channels filters start as the identity (airbench)
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Module):
    """conv → max-pool 2 → BN → GELU → conv → BN → GELU (airbench's ``ConvGroup``); ``residual``:
    then conv → BN → GELU, plus the pooled map (airbench96's)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        activation: str = "gelu",
        ceil_mode: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2, ceil_mode=ceil_mode)
        self.norm1 = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = _conv(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activation = ACTIVATIONS[activation]()
        # airbench96: a third conv, and the pooled map added back after it
        self.conv3 = _conv(out_channels, out_channels) if residual else None
        self.norm3 = (
            nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM) if residual else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))  # N x C x H/2 x W/2
        y = self.activation(self.norm2(self.conv2(x)))
        if self.conv3 is None or self.norm3 is None:
            return y
        return x + self.activation(self.norm3(self.conv3(y)))


class SpeedNet(nn.Module):
    """Three conv groups (reductions 2, 4, 8), global max-pooling, a bias-free dense layer scaled by
    ``logit_scale``. ``num_classes=0``: the pooled features (N, widths[-1]); ``features_only``: the
    three groups' maps (``feature_info``)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        stem_width: int = 0,
        logit_scale: float = LOGIT_SCALE,
        features_only: bool = False,
        activation: str = "gelu",
        ceil_mode: bool = False,
        residual: bool = False,
        whiten: bool = False,
        patch_covariance: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1 or stem_width < 0:
            raise ValueError(
                f"speednet: expected three positive widths and stem_width >= 0, got widths "
                f"{list(widths)}, stem_width {stem_width}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"speednet: activation={activation!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        if whiten and stem_width:
            raise ValueError("speednet: whiten and stem_width are two different stems; choose one")
        if whiten and patch_covariance is None:
            raise ValueError(
                "speednet: whiten=True needs patch_covariance (the training images' 2x2-patch "
                "covariance: `cnnkit train` computes it, in Python cnnkit.data.patch_covariance)"
            )
        self.features_only = features_only
        self.logit_scale = logit_scale
        self.stem: nn.Module
        if whiten:
            values = torch.tensor(list(patch_covariance or ()), dtype=torch.float64)
            dim = in_channels * WHITEN_SIZE**2
            if values.numel() != dim * dim:
                raise ValueError(
                    f"speednet: patch_covariance has {values.numel()} values; expected {dim * dim} "
                    f"(({in_channels} channels x {WHITEN_SIZE}x{WHITEN_SIZE} patches)^2, row-major)"
                )
            self.stem = PatchWhitening(values.reshape(dim, dim), in_channels)
            stem_channels = 2 * dim  # N x 2D x (H - 1) x (W - 1)
        elif stem_width:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 3, padding=1), ACTIVATIONS[activation]()
            )
            stem_channels = stem_width
        else:
            self.stem, stem_channels = nn.Identity(), in_channels
        channels = [stem_channels, *widths]
        self.groups = nn.Sequential(
            *(
                ConvGroup(channels[i], channels[i + 1], activation, ceil_mode, residual)
                for i in range(3)
            )
        )  # N x w1 x H/2 x W/2 → N x w2 x H/4 x W/4 → N x w3 x H/8 x W/8
        self.feature_channels, self.feature_strides = list(widths), [2, 4, 8]
        self.feature_info = make_feature_info(
            self.feature_channels, self.feature_strides, [f"groups.{i}" for i in range(3)]
        )
        self.num_features = widths[-1]
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())  # N x w3
        with_fc = num_classes > 0 and not features_only
        self.fc = nn.Linear(widths[-1], num_classes, bias=False) if with_fc else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map: (N, widths[-1], 3, 3) at 28×28."""
        return self.groups(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.stem(x)
        if self.features_only:
            maps = []
            for group in self.groups:
                x = group(x)
                maps.append(x)
            return maps
        x = self.pool(self.groups(x))
        if isinstance(self.fc, nn.Identity):
            return x
        return self.fc(x) * self.logit_scale


@register_model(
    input_size=(1, 28, 28),
    min_size=8,
    classifier="fc",
    paper="Jordan 2024, '94% on CIFAR-10 in 3.29 Seconds on a Single GPU' (airbench94), adapted",
)
def speednet(
    num_classes: int = 10,
    in_channels: int = 1,
    widths: Sequence[int] = (32, 64, 128),
    stem_width: int = 0,
    logit_scale: float = LOGIT_SCALE,
    features_only: bool = False,
    activation: str = "gelu",
    ceil_mode: bool = False,
    residual: bool = False,
    whiten: bool = False,
    patch_covariance: Sequence[float] | None = None,
) -> SpeedNet:
    """airbench's network for 1×28×28 (288,160 parameters at widths 32/64/128, 10 classes);
    ``activation`` "gelu" (airbench's) or "relu"; ``ceil_mode``: the max-pools keep a last odd row
    and column (28 → 14 → 7 → 4 instead of → 3: the third group then sees the whole 7×7 map);
    ``residual``: a third conv per group and the pooled map added back (airbench96); ``whiten``:
    airbench's fixed 2×2 patch-whitening stem, from ``patch_covariance`` (the (C·4)² values of
    :func:`cnnkit.data.patch_covariance` on the training images, row-major; 290,176 parameters
    at the default widths on one channel)."""
    return SpeedNet(
        num_classes, in_channels, tuple(widths), stem_width, logit_scale, features_only,
        activation, ceil_mode, residual, whiten, patch_covariance,
    )  # fmt: skip
