"""Small single-image super-resolution networks that upscale the luminance channel Y by ``scale``.

Both work on the low-resolution image itself (no bicubic pre-upsampling, unlike SRCNN) and upsample
only at the end, so almost all of their work is done at the low resolution:

- **ESPCN** (Shi, Caballero, Huszár, Totz, Aitken, Bishop, Rueckert & Wang, "Real-Time Single Image
  and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016):
  conv 5×5/64 – tanh – conv 3×3/32 – tanh – conv 3×3/(scale²·C), then the *sub-pixel convolution*:
  ``nn.PixelShuffle(scale)`` rearranges the scale² channels of each low-resolution cell into a
  scale × scale block of output pixels.
- **FSRCNN** (Dong, Loy & Tang, "Accelerating the Super-Resolution Convolutional Neural Network",
  ECCV 2016), FSRCNN(d=56, s=12, m=4): conv 5×5/d (feature extraction) – 1×1/s (shrinking) – m ×
  3×3/s (mapping) – 1×1/d (expanding), each followed by PReLU, then a 9×9 *transposed convolution*
  with stride ``scale`` to one channel.

Contract (registry task ``"superres"``): input (N, in_channels, h, w) low-resolution Y in [0, 1]
(``cnnkit.data.superres.rgb_to_ycbcr``: ITU-R BT.601, Y in [16, 235] / 255), any h and w; output
(N, num_classes, scale·h, scale·w), the high-resolution Y (not clamped). ``num_classes`` is the
number of output channels (1: Y), so that the registry's ``builder(num_classes=, in_channels=)``
contract holds.

``residual=True`` predicts a residual over bicubic upsampling: the output is
``bicubic_resize(x) + network(x)`` with PIL's bicubic (``cnnkit.layers.upsample.bicubic_resize``),
so an untrained network already gives bicubic and training only learns the missing detail (VDSR's
residual learning, Kim et al. 2016, on top of these low-resolution networks). The network's last
layer then starts near zero (normal, std 1e-3, as FSRCNN's deconvolution).

Deliberate differences from the papers:
- 'same' zero padding everywhere, so the output is exactly ``scale`` × the input for any size, odd
  sizes included (the papers trained on unpadded sub-images and lost a border). FSRCNN's transposed
  convolution uses padding ``4 - scale // 2`` and drops the one extra row and column it gives at
  even scales: its kernel is then centred on each low-resolution cell's block of output pixels
  (exactly at odd scales, half a pixel off at even ones, which the learned 9×9 kernel absorbs);
- the optional residual over bicubic (off by default: the papers' networks);
- ESPCN's last layer has no activation (the paper's tanh on all layers would bound the output);
- EDSR's upsampler is one sub-pixel convolution to ``scale²`` maps per output channel (ESPCN's tail),
  not the paper's conv + ``PixelShuffle(2)`` stages followed by a 3×3 convolution at the high
  resolution: with one output channel (Y) those stages would cost more than the whole body at ×4.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.layers.upsample import bicubic_resize
from cnnkit.models.registry import register_model

#: upscaling factors the builders accept (FSRCNN's 9×9 transposed convolution needs scale ≤ 8)
SCALES = range(1, 9)
DEFAULT_SCALE = 2
#: std of the last layer's initial weights with ``residual=True`` (FSRCNN's deconvolution init)
RESIDUAL_INIT_STD = 1e-3


def _check(name: str, scale: int, in_channels: int, num_classes: int) -> None:
    if scale not in SCALES or in_channels < 1 or num_classes < 1:
        raise ValueError(
            f"{name}: scale={scale}, in_channels={in_channels}, num_classes={num_classes}; "
            f"expected an integer scale from {SCALES.start} to {SCALES.stop - 1} and at least one "
            "channel in and out"
        )


class SuperResolution(nn.Module):
    """What both families share: ``scale``, the residual over bicubic, the output size check."""

    def __init__(self, scale: int, in_channels: int, num_classes: int, residual: bool) -> None:
        super().__init__()
        if residual and in_channels != num_classes:
            raise ValueError(
                f"{type(self).__name__.lower()}: residual=True adds the bicubic upsampled input to "
                f"the output: expected as many channels in as out, got in_channels={in_channels}, "
                f"num_classes={num_classes}"
            )
        self.scale, self.residual = int(scale), bool(residual)
        self.in_channels, self.num_classes = in_channels, num_classes

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) → (N, num_classes, scale·h, scale·w): the network without the residual."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] * self.scale, x.shape[-1] * self.scale
        out = self.body(x)  # N x num_classes x scale·h x scale·w
        if self.residual:
            base = bicubic_resize(x.float(), (height, width))  # N x C x scale·h x scale·w
            out = out + base.to(out.dtype)
        return out

    @property
    def receptive_radius(self) -> int:
        """Low-resolution pixels each output pixel depends on, either side: the convolutions'
        half-widths summed (stride-1 'same' convolutions; a transposed convolution's half-width
        in low-resolution pixels), and the residual's bicubic (2 px)."""
        radius = 0
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                radius += -(-(module.kernel_size[0] // 2) // self.scale)
            elif isinstance(module, nn.Conv2d):
                radius += module.kernel_size[0] // 2 * module.dilation[0]
        return max(radius, 2) if self.residual else radius

    def _init_last(self, layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
        if self.residual:
            nn.init.normal_(layer.weight, std=RESIDUAL_INIT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, residual={self.residual}"


class ESPCN(SuperResolution):
    """ESPCN: ``widths`` feature maps after ``kernels[:-1]``, the last convolution makes
    ``scale² · num_classes`` maps that ``PixelShuffle`` turns into the output."""

    def __init__(
        self,
        scale: int = DEFAULT_SCALE,
        in_channels: int = 1,
        num_classes: int = 1,
        widths: tuple[int, ...] = (64, 32),
        kernels: tuple[int, ...] = (5, 3, 3),
        residual: bool = False,
    ) -> None:
        super().__init__(scale, in_channels, num_classes, residual)
        _check("espcn", scale, in_channels, num_classes)
        if len(kernels) != len(widths) + 1 or any(k % 2 == 0 for k in kernels):
            raise ValueError(
                f"espcn: widths={widths}, kernels={kernels}; expected one odd kernel per layer "
                "(len(widths) + 1)"
            )
        layers: list[nn.Module] = []
        width_in = in_channels
        for width, kernel in zip(widths, kernels[:-1], strict=True):
            layers += [nn.Conv2d(width_in, width, kernel, padding=kernel // 2), nn.Tanh()]
            width_in = width
        self.features = nn.Sequential(*layers)
        self.to_subpixels = nn.Conv2d(
            width_in, num_classes * scale**2, kernels[-1], padding=kernels[-1] // 2
        )
        self.shuffle = nn.PixelShuffle(scale)
        self._init_last(self.to_subpixels)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # N x widths[-1] x h x w
        x = self.to_subpixels(x)  # N x num_classes·scale² x h x w
        return self.shuffle(x)  # N x num_classes x scale·h x scale·w


class FSRCNN(SuperResolution):
    """FSRCNN(d, s, m): extraction, shrinking, ``m`` mapping layers, expanding (each with PReLU),
    then the transposed convolution that upsamples by ``scale``."""

    def __init__(
        self,
        scale: int = DEFAULT_SCALE,
        in_channels: int = 1,
        num_classes: int = 1,
        d: int = 56,
        s: int = 12,
        m: int = 4,
        residual: bool = False,
    ) -> None:
        super().__init__(scale, in_channels, num_classes, residual)
        _check("fsrcnn", scale, in_channels, num_classes)
        if min(d, s) < 1 or m < 0:
            raise ValueError(f"fsrcnn: d={d}, s={s}, m={m}; expected d, s >= 1 and m >= 0")

        def conv(width_in: int, width_out: int, kernel: int) -> list[nn.Module]:
            return [
                nn.Conv2d(width_in, width_out, kernel, padding=kernel // 2),
                nn.PReLU(width_out),
            ]

        layers = conv(in_channels, d, 5) + conv(d, s, 1)
        for _ in range(m):
            layers += conv(s, s, 3)
        layers += conv(s, d, 1)
        self.features = nn.Sequential(*layers)
        # kernel 9, stride r, padding 4 - r//2: output (h-1)·r - 2·padding + 9 = r·h + (1 - r % 2)
        self.deconv = nn.ConvTranspose2d(d, num_classes, 9, stride=scale, padding=4 - scale // 2)
        for module in self.features:
            if isinstance(module, nn.Conv2d):  # the paper: He init for PReLU (slope 0.25)
                nn.init.kaiming_normal_(module.weight, a=0.25, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.deconv.weight, std=RESIDUAL_INIT_STD)  # the paper's deconv init
        if self.deconv.bias is not None:
            nn.init.zeros_(self.deconv.bias)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] * self.scale, x.shape[-1] * self.scale
        x = self.features(x)  # N x d x h x w
        x = self.deconv(x)  # N x num_classes x scale·h (+1 at even scales) x scale·w (+1)
        return x[..., :height, :width]  # N x num_classes x scale·h x scale·w


class ResidualBlock(nn.Module):
    """EDSR's block: ``x + res_scale · conv(relu(conv(x)))``, no BatchNorm (Lim et al. §3.1: BN
    removes the range flexibility of the features and costs memory, with no gain for SR)."""

    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return x + out * self.res_scale if self.res_scale != 1.0 else x + out


class EDSR(SuperResolution):
    """EDSR: ``head`` (3×3/F), ``trunk`` (``blocks`` residual blocks, then 3×3/F, with a skip from
    the head: the paper's "body"), ``to_subpixels`` (3×3 to ``scale² · num_classes`` maps) and
    ``PixelShuffle``."""

    def __init__(
        self,
        scale: int = DEFAULT_SCALE,
        in_channels: int = 1,
        num_classes: int = 1,
        features: int = 32,
        blocks: int = 8,
        res_scale: float = 1.0,
        residual: bool = False,
    ) -> None:
        super().__init__(scale, in_channels, num_classes, residual)
        _check("edsr", scale, in_channels, num_classes)
        if features < 1 or blocks < 0 or not res_scale > 0:
            raise ValueError(
                f"edsr: features={features}, blocks={blocks}, res_scale={res_scale}; expected "
                "features >= 1, blocks >= 0 and res_scale > 0"
            )
        self.head = nn.Conv2d(in_channels, features, 3, padding=1)
        self.trunk = nn.Sequential(
            *(ResidualBlock(features, res_scale) for _ in range(blocks)),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.to_subpixels = nn.Conv2d(features, num_classes * scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self._init_last(self.to_subpixels)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)  # N x F x h x w
        x = x + self.trunk(x)  # N x F x h x w: the long skip
        return self.shuffle(self.to_subpixels(x))  # N x num_classes x scale·h x scale·w


@register_model(
    input_size=(1, 17, 17),  # the paper's low-resolution training sub-images (17r x 17r HR)
    min_size=1,
    classifier="to_subpixels",
    paper="Shi et al., Real-Time Single Image and Video Super-Resolution Using an Efficient "
    "Sub-Pixel Convolutional Neural Network, CVPR 2016",
    task="superres",
)
def espcn(
    num_classes: int = 1,
    in_channels: int = 1,
    scale: int = DEFAULT_SCALE,
    widths: tuple[int, ...] | list[int] = (64, 32),
    kernels: tuple[int, ...] | list[int] = (5, 3, 3),
    residual: bool = False,
) -> ESPCN:
    """ESPCN (l=3, (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3, tanh): about 21k parameters at
    ×2 on Y."""
    return ESPCN(scale, in_channels, num_classes, tuple(widths), tuple(kernels), residual)


@register_model(
    input_size=(1, 17, 17),  # a low-resolution patch as ESPCN's (the paper's vary with the scale)
    min_size=1,
    classifier="deconv",
    paper="Dong, Loy & Tang, Accelerating the Super-Resolution Convolutional Neural Network, "
    "ECCV 2016",
    task="superres",
)
def fsrcnn(
    num_classes: int = 1,
    in_channels: int = 1,
    scale: int = DEFAULT_SCALE,
    d: int = 56,
    s: int = 12,
    m: int = 4,
    residual: bool = False,
) -> FSRCNN:
    """FSRCNN(56, 12, 4), the paper's accurate setting: about 12k parameters on Y."""
    return FSRCNN(scale, in_channels, num_classes, d, s, m, residual)


@register_model(
    input_size=(1, 17, 17),  # a low-resolution patch as ESPCN's
    min_size=1,
    classifier="to_subpixels",
    paper="Lim, Son, Kim, Nah & Lee, Enhanced Deep Residual Networks for Single Image "
    "Super-Resolution, CVPRW 2017",
    task="superres",
)
def edsr(
    num_classes: int = 1,
    in_channels: int = 1,
    scale: int = DEFAULT_SCALE,
    features: int = 32,
    blocks: int = 8,
    res_scale: float = 1.0,
    residual: bool = False,
) -> EDSR:
    """EDSR's baseline design at F=32, 8 residual blocks (the paper's baseline: F=64, 16 blocks):
    about 160k parameters at ×2 on Y."""
    return EDSR(scale, in_channels, num_classes, features, blocks, res_scale, residual)
