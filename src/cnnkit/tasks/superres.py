"""Single-image super-resolution: upscale the luminance Y of an image by ``scale`` (the notes' last
words: scaling beyond the input size).

Model-output contract (registry task ``"superres"``, ``models/superres.py``): the upscaled Y
(N, 1, s·h, s·w) for a low-resolution Y input (N, 1, h, w). Targets: a dict ``{"hr": (N, 1, s·h,
s·w), "lr": (N, 1, h, w)}`` of float Y in [0, 1] (``cnnkit.data.superres``: ITU-R BT.601, MATLAB's
``rgb2ycbcr`` / 255; the low-resolution image made by PIL's bicubic). Decoded: Y clamped to [0, 1].

Loss: ``l1`` (default; the mean absolute error, as EDSR and most later SR work) or ``mse`` (the
papers of ESPCN and FSRCNN). Metrics, on Y: PSNR and SSIM of each image, averaged over images
(``cnnkit.metrics.psnr``/``ssim``, computed by torchmetrics), with **a border of ``scale`` pixels
cropped on each side** (the SR papers' convention: the border that the network and bicubic see
padded); the output clamped to [0, 1] first, as an image holds it. The same metrics of PIL's
bicubic upscaling of the input (``bicubic_psnr``, ``bicubic_ssim``) and the gain in PSNR
(``psnr_gain``) are reported beside them. The monitored metric is the validation PSNR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.upsample import bicubic_resize
from cnnkit.metrics import psnr, ssim
from cnnkit.tasks.base import SumMetric, Task, ratio
from cnnkit.tasks.registry import register_task

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta

LossFn = Callable[..., torch.Tensor]
#: the ``loss`` option → its function (called with ``reduction="sum"`` for streaming)
LOSSES: dict[str, LossFn] = {"l1": F.l1_loss, "mse": F.mse_loss}


def unpack(output: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(prediction, hr, lr, scale)`` from a model output and a target dict, shapes checked."""
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        shown = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"superres: the model returned {shown}; expected the upscaled image (N, C, H, W)"
        )
    if not isinstance(target, dict) or not {"hr", "lr"} <= set(target):
        raise ValueError(
            "superres: expected targets {'hr': (N, C, H, W), 'lr': (N, C, h, w)} "
            f"(cnnkit.data.superres), got {type(target).__name__}"
        )
    hr, lr = target["hr"].float(), target["lr"].float()
    scale = hr.shape[-1] // max(lr.shape[-1], 1)
    if output.shape != hr.shape or tuple(hr.shape[-2:]) != (
        lr.shape[-2] * scale,
        lr.shape[-1] * scale,
    ):
        raise ValueError(
            f"superres: the model's output has shape {tuple(output.shape)}, the targets "
            f"{tuple(hr.shape)} and the low-resolution inputs {tuple(lr.shape)}; expected the "
            "output and targets alike, an integer scale times the inputs (does --model-option "
            "scale match the data's scale?)"
        )
    return output.float(), hr, lr, scale


class TrainPSNR(SumMetric):
    """PSNR of the training patches (no border crop, no SSIM: cheap on the step's outputs)."""

    names = ("images", "psnr")

    def update(self, output: Any, target: Any) -> None:
        pred, hr, _, _ = unpack(output, target)
        values = psnr(pred.detach().clamp(0, 1), hr)
        self.add(images=len(values), psnr=values.sum())

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        return {"psnr": ratio(totals["psnr"], totals["images"])}


class SuperResMetrics(SumMetric):
    """Loss, PSNR and SSIM of the model and of bicubic upscaling, per image with a ``scale``-pixel
    border crop, summed over images (and processes) and averaged at the end."""

    names = ("images", "pixels", "loss", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim")

    def __init__(self, loss_fn: LossFn) -> None:
        super().__init__()
        self.loss_fn = loss_fn

    def update(self, output: Any, target: Any) -> None:
        pred, hr, lr, scale = unpack(output, target)
        pred = pred.detach()
        image = pred.clamp(0, 1)
        bicubic = bicubic_resize(lr, hr.shape[-2:]).clamp(0, 1)
        self.add(
            images=len(hr),
            pixels=hr.numel(),
            loss=self.loss_fn(pred, hr, reduction="sum"),
            psnr=psnr(image, hr, border=scale).sum(),
            ssim=ssim(image, hr, border=scale).sum(),
            bicubic_psnr=psnr(bicubic, hr, border=scale).sum(),
            bicubic_ssim=ssim(bicubic, hr, border=scale).sum(),
        )

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        images = totals["images"]
        scores = {
            "loss": ratio(totals["loss"], totals["pixels"]),
            **{
                k: ratio(totals[k], images)
                for k in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
            },
        }
        scores["psnr_gain"] = scores["psnr"] - scores["bicubic_psnr"]
        return scores


def builder_default_scale(model: str) -> int:
    """The ``scale`` a registered super-resolution builder uses when none is given."""
    from cnnkit.models import model_info

    parameter = model_info(model).parameters.get("scale")
    if parameter is None or not isinstance(parameter.default, int):
        raise ValueError(f"--model {model}: its builder takes no integer 'scale' option")
    return parameter.default


@register_task
class SuperRes(Task):
    """Super-resolution of Y with ``loss`` ``"l1"`` or ``"mse"``; monitors the validation PSNR."""

    name = "superres"
    model_task = "superres"
    monitor = "val_psnr"
    monitor_mode = "max"
    progress_keys: ClassVar[dict[str, str]] = {"psnr": "psnr"}

    def __init__(self, loss: str = "l1") -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss_name, self.loss_fn = loss, LOSSES[loss]

    def options(self) -> dict[str, Any]:
        return {"loss": self.loss_name}

    # ---- model and data
    def data_options(self, model: str, options: dict[str, Any]) -> dict[str, Any]:
        """The data's ``scale`` is the model's (``--model-option scale``, else its default)."""
        return {"scale": int(options.get("scale", builder_default_scale(model)))}

    def build_model(self, name: str, meta: DataMeta, **options: Any) -> nn.Module:
        from cnnkit.models import create_model

        spec = self.model_spec(name, meta, options)
        data_scale = meta.source.get("options", {}).get("scale")
        model_scale = int(options.get("scale", builder_default_scale(name)))
        if data_scale is not None and int(data_scale) != model_scale:
            raise ValueError(
                f"--model {name} upscales by {model_scale} but the data's low-resolution images "
                f"are 1/{data_scale} of the originals (--data-option scale={data_scale}); "
                "give both the same scale"
            )
        return create_model(
            name, num_classes=spec["num_classes"], in_channels=spec["in_channels"], **options
        )

    def model_spec(self, name: str, meta: DataMeta, options: dict[str, Any]) -> dict[str, Any]:
        """Y in, Y out: ``num_classes`` is the number of output channels."""
        return {
            "name": name,
            "num_classes": meta.channels,
            "in_channels": meta.channels,
            "options": options,
        }

    # ---- training
    def loss(self, output: Any, target: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred, hr, _, _ = unpack(output, target)
        value = self.loss_fn(pred, hr)
        return value, {self.loss_name: value}

    def train_metrics(self) -> TrainPSNR:
        return TrainPSNR()

    def eval_metrics(self) -> SuperResMetrics:
        return SuperResMetrics(self.loss_fn)

    # ---- inference
    def decode(self, output: Any) -> torch.Tensor:
        """The upscaled images clamped to [0, 1]."""
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"superres: the model returned {type(output).__name__}, not a tensor")
        return output.float().clamp(0, 1)

    def format_prediction(
        self, decoded: torch.Tensor, class_names: Sequence[str], top: int = 3
    ) -> list[str]:
        height, width = decoded.shape[-2:]
        return [f"upscaled Y: {width}x{height} (`cnnkit upscale --run RUN` writes images)"]

    def history_metric(self) -> str:
        return "psnr"

    def report(
        self, trainer: Any, test: Any, meta: DataMeta, run_dir: Path | None
    ) -> dict[str, Any]:
        """Test loss, PSNR and SSIM of the model and of bicubic, and the scale and border crop."""
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in trainer.evaluate(test).items()}
        scale = meta.source.get("options", {}).get("scale")
        metrics["scale"] = scale
        metrics["border_crop"] = scale  # PSNR and SSIM leave out `scale` pixels on each side
        return metrics

    def print_report(self, metrics: dict[str, Any], meta: DataMeta) -> None:
        border = metrics.get("border_crop")
        print(
            f"  on Y (BT.601), border crop {border} px    cnnkit    bicubic\n"
            f"  PSNR (dB)                          {metrics['test_psnr']:7.2f}   "
            f"{metrics['test_bicubic_psnr']:7.2f}   ({metrics['test_psnr_gain']:+.2f} dB)\n"
            f"  SSIM                               {metrics['test_ssim']:7.4f}   "
            f"{metrics['test_bicubic_ssim']:7.4f}\n"
            f"  loss ({self.loss_name})                          {metrics['test_loss']:.5f}"
        )
