"""Super-resolution's view (``cnnkit.tasks.superres``).

- **ONNX**: the graph maps the low-resolution Y (N, 1, h, w) to the upscaled Y (N, 1, s·h, s·w),
  unclamped, with a symbolic height and width (the models are fully convolutional, so one file
  upscales any image; ``dynamic_size``). Outside the graph, as on the PyTorch path
  (``cnnkit.pretrained.superres.upscale``): RGB → ITU-R BT.601 YCbCr (MATLAB's ``rgb2ycbcr``), Y
  through the graph and clamped to [0, 1], Cb and Cr upscaled by PIL's bicubic, back to RGB. The
  metadata records the scale (``cnnkit.scale``), the colour convention (``cnnkit.color``) and
  the chroma rule (``cnnkit.chroma``); ``cnnkit upscale --onnx FILE`` runs it.
- **Drawing**: bicubic | cnnkit (| the original, in the report, where the test split gives it)
  side by side, in grey (Y), at the high resolution.
- **Report**: PSNR and SSIM on Y of cnnkit and of bicubic, and the gain, from ``test_metrics.json``
  (border crop of ``scale`` pixels, as the task measures them).
- **App**: the upload (RGB, at its own size: no resize) upscaled in colour beside its bicubic
  upscaling (``id="upscaled"``, ``id="bicubic"``, PNG data URLs), the sizes in ``id="result"``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import torch

from cnnkit.deploy.views import Table, TaskView, metric_rows, register_view

#: the colour convention, recorded in the ONNX metadata (``cnnkit.data.superres.rgb_to_ycbcr``)
COLOR = (
    "ITU-R BT.601 Y in the studio range (MATLAB rgb2ycbcr / 255): Y = (16 + 65.481 R + "
    "128.553 G + 24.966 B) / 255 for R, G, B in [0, 1]; the input is that Y, float32, not rounded"
)
#: how the chroma is upscaled, recorded in the ONNX metadata
CHROMA = (
    "CbCr bicubic outside the graph: Cb and Cr (BT.601) upscaled by PIL's bicubic "
    "(cnnkit.layers.upsample.bicubic_resize), then YCbCr -> RGB"
)
#: the gap between the pictures drawn side by side, in pixels (white)
GAP = 4


def _grey(y: torch.Tensor) -> torch.Tensor:
    """Float Y (N, 1, H, W) in [0, 1] → uint8 grey RGB (N, 3, H, W), rounded."""
    return y.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1)


def _side_by_side(*pictures: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) pictures of one size joined left to right with white gaps."""
    gap = torch.full((*pictures[0].shape[:-1], GAP), 255, dtype=torch.uint8)
    parts: list[torch.Tensor] = []
    for picture in pictures:
        parts += [gap, picture] if parts else [picture]
    return torch.cat(parts, -1)


def upscale_rgb(y: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The upscaled Y (1, s·H, s·W) in [0, 1] of the uint8 RGB ``image`` (3, H, W) → (cnnkit's
    colour picture, bicubic's), uint8 RGB (3, s·H, s·W): the chroma (and, for bicubic, Y too)
    upscaled by PIL's bicubic, as ``cnnkit.pretrained.superres.upscale`` does."""
    from cnnkit.data.superres import rgb_to_ycbcr, ycbcr_to_rgb
    from cnnkit.layers.upsample import bicubic_resize

    ycbcr = rgb_to_ycbcr(image)[None]  # 1 x 3 x H x W
    bicubic = bicubic_resize(ycbcr, y.shape[-2:])  # 1 x 3 x sH x sW
    mine = torch.cat([y[None].float().cpu(), bicubic[:, 1:]], 1)

    def rgb(ycc: torch.Tensor) -> torch.Tensor:
        return ycbcr_to_rgb(ycc)[0].clamp(0, 1).mul(255).round().to(torch.uint8)

    return rgb(mine), rgb(bicubic)


@register_view
class SuperresView(TaskView):
    task = "superres"
    output_names = ("y",)
    postprocess = (
        "none in the graph: the upscaled Y (N, 1, scale*h, scale*w) of the low-resolution Y "
        "(N, 1, h, w), not clamped; outside it cnnkit clamps Y to [0, 1] and upscales CbCr by "
        "bicubic (cnnkit.chroma)"
    )
    dynamic_size = True
    upload_channels = 3  # the app upscales the colour image: Y through the model, CbCr bicubic

    def export_metadata(self, model: torch.nn.Module) -> dict[str, str]:
        scale = getattr(model, "scale", None)
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(
                f"superres: {type(model).__name__} has no integer 'scale' attribute; expected a "
                "cnnkit super-resolution model (edsr, espcn, fsrcnn)"
            )
        meta = {"scale": str(scale), "color": COLOR, "chroma": CHROMA, "dynamic_size": "true"}
        radius = getattr(model, "receptive_radius", None)
        if isinstance(radius, int):  # `cnnkit upscale --onnx` tiles with at least this context
            meta["receptive_radius"] = str(radius)
        return meta

    def draw(
        self, images: torch.Tensor, decoded: torch.Tensor, class_names: Sequence[str]
    ) -> torch.Tensor:
        """bicubic | cnnkit: the low-resolution Y (uint8 grey (N, 3, h, w)) upscaled by PIL's
        bicubic beside the model's Y (N, 1, s·h, s·w), both (N, 3, s·H, s·W) grey."""
        from cnnkit.layers.upsample import bicubic_resize

        y = images[:, :1].float() / 255  # grey: R = G = B = Y
        bicubic = bicubic_resize(y, decoded.shape[-2:])
        return _side_by_side(_grey(bicubic), _grey(decoded.float().cpu()))

    def draw_samples(
        self, images: torch.Tensor, decoded: torch.Tensor, targets: Any, class_names: Sequence[str]
    ) -> torch.Tensor:
        """bicubic | cnnkit | original (the test split's high-resolution Y, ``targets["hr"]``)."""
        drawn = self.draw(images, decoded, class_names)
        if not isinstance(targets, dict) or "hr" not in targets:
            return drawn
        return _side_by_side(drawn, _grey(targets["hr"].float().cpu()))

    def tables(self, metrics: dict[str, Any], class_names: Sequence[str]) -> list[Table]:
        tables = [Table("test metrics", ["metric", "value"], metric_rows(metrics))]
        keys = ("test_psnr", "test_bicubic_psnr", "test_ssim", "test_bicubic_ssim")
        if all(isinstance(metrics.get(k), (int, float)) for k in keys):
            psnr, bicubic_psnr, ssim, bicubic_ssim = (float(metrics[k]) for k in keys)
            border = metrics.get("border_crop")
            tables.append(
                Table(
                    f"on Y (ITU-R BT.601), border crop {border} px: cnnkit vs bicubic",
                    ["", "cnnkit", "bicubic", "gain"],
                    [
                        ["PSNR (dB)", f"{psnr:.2f}", f"{bicubic_psnr:.2f}",
                         f"{psnr - bicubic_psnr:+.2f}"],
                        ["SSIM", f"{ssim:.4f}", f"{bicubic_ssim:.4f}",
                         f"{ssim - bicubic_ssim:+.4f}"],
                    ],
                )
            )  # fmt: skip
        return tables

    def app_input(self, meta: Any, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The upload's own Y at its own size (no resize: the model takes any size), and the
        upload itself (uint8 RGB) for ``result_html``'s colour pictures."""
        from cnnkit.data.superres import y_channel

        rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        return y_channel(rgb).float(), rgb.contiguous()

    def result_html(
        self,
        decoded: torch.Tensor,
        class_names: Sequence[str],
        task: Any,
        image: torch.Tensor | None = None,
    ) -> str:
        from cnnkit.deploy.features import data_uri, png_bytes

        out_h, out_w = decoded.shape[-2:]
        if image is None:  # no input to colour: the Y alone
            grey = _grey(decoded.float().cpu()[None])[0]
            return (
                f'<p id="result">upscaled Y: <span class="size">{out_w} × {out_h}</span></p>'
                f'<img id="upscaled" class="drawn" alt="upscaled Y" '
                f'src="{data_uri(png_bytes(grey))}">'
            )
        in_h, in_w = image.shape[-2:]
        scale = out_w // max(in_w, 1)
        mine, bicubic = upscale_rgb(decoded, image)
        return (
            f'<p id="result">upscaled ×{scale}: <span class="size" id="input-size">'
            f"{in_w} × {in_h}</span> → "
            f'<span class="size" id="output-size">{out_w} × {out_h}</span> pixels</p>'
            '<div class="pair"><figure><figcaption>cnnkit</figcaption>'
            f'<img id="upscaled" class="drawn" alt="{html.escape("upscaled by cnnkit")}" '
            f'src="{data_uri(png_bytes(mine))}"></figure>'
            "<figure><figcaption>bicubic</figcaption>"
            f'<img id="bicubic" class="drawn" alt="upscaled by bicubic interpolation" '
            f'src="{data_uri(png_bytes(bicubic))}"></figure></div>'
        )
