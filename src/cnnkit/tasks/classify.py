"""Image classification: one label per image (the first half of the notes).

Model-output contract: logits (N, num_classes); in training a model may return ``(logits, *aux)``
(GoogLeNet's auxiliary classifiers), whose losses are added with weight :data:`AUX_LOSS_WEIGHT`.
Targets: int64 class indices (N,). A model whose paper has its own loss defines
``criterion(logits, target, label_smoothing=0.0)`` (LeNet-5's RBF MAP loss), used instead of
cross-entropy.

Test-time augmentation (``tta="flip"``): at evaluation and prediction the output is the log of the
mean of the softmax of the image and of its horizontal mirror, ``log((softmax(f(x)) +
softmax(f(flip(x)))) / 2)``: log-probabilities are logits whose softmax is that mean, so decoding,
accuracy and the loss (the negative log of the averaged probability) need no other change.
``tta="flip-translate"`` (airbench's ``tta_level=2``, Jordan 2024): half the weight on that pair, the
other half on the same pair shifted one pixel down-right and one pixel up-left (the image padded
by one pixel that repeats its edge, cut at offsets (0, 0) and (2, 2)): six forward passes, a
weighted mean of their softmaxes. airbench averages logits and pads by reflection; here
probabilities keep the flip mode's form, and edge padding scored higher than reflection on the
speedrun's validation images (94.78 / 94.84 / 94.76% against 94.72 / 94.76 / 94.68%, three runs;
zero fill about as edge, but it would need the normalized background value).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.tasks.base import Reduce, SumMetric, Task, _identity, layout_of, ratio
from cnnkit.tasks.registry import register_task

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta, ImageData

#: test-time augmentations ``Classify(tta=…)`` takes
TTA_CHOICES = ("flip", "flip-translate")

#: ``flip-translate``: the shift of its translated views, in pixels (airbench: 1)
TTA_SHIFT = 1

#: weight of each auxiliary classifier's loss (Szegedy et al. 2014, "Going deeper with convolutions":
#: "their loss gets added to the total loss of the network with a discount weight (0.3)")
AUX_LOSS_WEIGHT = 0.3


def split_output(output: Any) -> tuple[torch.Tensor, Sequence[torch.Tensor]]:
    """``logits`` or ``(logits, *aux_logits)`` → ``(logits, aux_logits)``."""
    if isinstance(output, torch.Tensor):
        return output, ()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0], tuple(output[1:])
    raise TypeError(
        f"classify: the model returned {type(output).__name__}; expected a tensor of logits "
        "(N, num_classes) or a tuple (logits, *aux_logits)"
    )


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2 or target.dim() != 1 or len(logits) != len(target):
        raise ValueError(
            f"classify: the model's output has shape {tuple(logits.shape)} and the targets "
            f"{tuple(target.shape)}; expected logits (N, num_classes) and class indices (N,) "
            "(per-pixel labels are the segment task's)"
        )


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Number of samples whose label is among the ``k`` highest scores (a 0-dim tensor)."""
    k = min(k, logits.shape[1])
    if k == 1:
        return (logits.argmax(1) == labels).sum()
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(1).sum()


class TrainAccuracy(SumMetric):
    names = ("images", "correct")

    def update(self, output: Any, target: torch.Tensor) -> None:
        logits, _ = split_output(output)
        self.add(images=float(len(target)), correct=topk_correct(logits.detach(), target))

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        return {"accuracy": ratio(totals["correct"], totals["images"])}


class EvalMetrics(SumMetric):
    """Loss (the unsmoothed training criterion), accuracy and top-k accuracy; with ``num_classes``
    also a confusion matrix (rows true classes, columns predictions), kept on the device."""

    names = ("images", "loss", "correct", "topk")

    def __init__(
        self, criterion: Callable[..., torch.Tensor], top_k: int, num_classes: int | None = None
    ) -> None:
        super().__init__()
        self.criterion, self.top_k, self.num_classes = criterion, top_k, num_classes
        self._matrix: torch.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self._matrix = None

    def update(self, output: Any, target: torch.Tensor) -> None:
        logits, _ = split_output(output)
        logits = logits.float()
        _check_shapes(logits, target)
        self.add(
            images=float(len(target)),
            loss=self.criterion(logits, target, reduction="sum"),
            correct=topk_correct(logits, target),
            topk=topk_correct(logits, target, self.top_k),
        )
        if self.num_classes is not None:
            index = target * self.num_classes + logits.argmax(1)
            counts = torch.bincount(index, minlength=self.num_classes**2)
            self._matrix = counts if self._matrix is None else self._matrix + counts

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        n = totals["images"]
        return {
            "loss": ratio(totals["loss"], n),
            "accuracy": ratio(totals["correct"], n),
            f"top{self.top_k}": ratio(totals["topk"], n),
        }

    def matrix(self, reduce: Reduce = _identity) -> torch.Tensor:
        """The (num_classes, num_classes) confusion matrix over every process."""
        if self.num_classes is None:
            raise ValueError("EvalMetrics: built without num_classes, so it keeps no matrix")
        k = self.num_classes
        counts = self._matrix if self._matrix is not None else torch.zeros(k * k, dtype=torch.long)
        return reduce(counts).view(k, k).cpu()


def _cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing, reduction=reduction)


@register_task
class Classify(Task):
    """Classification with cross-entropy (``label_smoothing`` optional) or the model's own
    ``criterion``; auxiliary outputs weighted ``aux_loss_weight``; metrics accuracy and top-``top_k``;
    ``tta="flip"``: evaluation averages each image's probabilities with its mirror's;
    ``tta="flip-translate"`` adds both shifted by a pixel diagonally (see the module's docstring)."""

    name = "classify"
    monitor = "val_accuracy"
    monitor_mode = "max"
    progress_keys: ClassVar[dict[str, str]] = {"accuracy": "acc"}

    def __init__(
        self,
        label_smoothing: float = 0.0,
        aux_loss_weight: float = AUX_LOSS_WEIGHT,
        top_k: int = 5,
        tta: str | None = None,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
        if tta is not None and tta not in TTA_CHOICES:
            raise ValueError(f"tta: expected one of {', '.join(TTA_CHOICES)} or none, got {tta!r}")
        self.tta = tta
        self.label_smoothing = label_smoothing
        self.aux_loss_weight = aux_loss_weight
        self.top_k = top_k
        self.criterion: Callable[..., torch.Tensor] = _cross_entropy

    def options(self) -> dict[str, Any]:
        return {
            "label_smoothing": self.label_smoothing,
            "aux_loss_weight": self.aux_loss_weight,
            "top_k": self.top_k,
            # only when set, so that runs written before TTA existed resume unchanged
            **({"tta": self.tta} if self.tta else {}),
        }

    def model_options_from_data(
        self, data: ImageData, model: str | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``patch_covariance`` when ``options`` ask for a whitening stem (``whiten=true``) of a
        model whose builder takes it (``speednet``): the 2×2-patch covariance of the training
        images (:func:`cnnkit.data.patch_covariance`), rounded to 1e-7, row-major."""
        from cnnkit.data.datasets import patch_covariance
        from cnnkit.models import model_info

        options = options or {}
        if (
            model is None
            or options.get("whiten") is not True
            or "patch_covariance" in options  # given by the user: theirs wins, none to compute
            or "patch_covariance" not in model_info(model).parameters
        ):
            return {}
        covariance = patch_covariance(data.train[0], data.meta)
        return {"patch_covariance": [round(float(v), 7) for v in covariance.flatten()]}

    def setup(self, model: nn.Module) -> None:
        # A model may carry its paper's loss (LeNet-5's RBF criterion); cross-entropy otherwise.
        self.criterion = getattr(getattr(model, "module", model), "criterion", _cross_entropy)
        if self.tta is not None and self.criterion is not _cross_entropy:
            raise ValueError(
                f"tta: {type(getattr(model, 'module', model)).__name__} has its own criterion, "
                "whose outputs are not logits to average; test-time augmentation needs a "
                "cross-entropy classifier"
            )

    def loss(
        self, output: Any, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, aux = split_output(output)
        _check_shapes(logits, target)
        main = self.criterion(logits.float(), target, label_smoothing=self.label_smoothing)
        total, parts = main, {"classification": main}
        for i, aux_logits in enumerate(aux, 1):
            part = self.criterion(aux_logits.float(), target, label_smoothing=self.label_smoothing)
            parts[f"aux{i}"] = part
            total = total + self.aux_loss_weight * part
        return total, parts

    def infer(self, model: nn.Module, x: torch.Tensor) -> Any:
        if self.tta is None:
            return model(x)
        views = [x, x.flip(-1)]
        weights = [0.5, 0.5]
        if self.tta == "flip-translate":
            s, (h, w) = TTA_SHIFT, x.shape[-2:]
            if min(h, w) <= s:
                raise ValueError(
                    f"tta flip-translate: images of {h}x{w} pixels are too small to shift by {s}"
                )
            padded = F.pad(x, (s, s, s, s), mode="replicate")
            shifted = [padded[..., :h, :w], padded[..., 2 * s :, 2 * s :]]
            views += [v for view in shifted for v in (view, view.flip(-1))]
            weights = [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
        # the cut views are strided, made dense in the input's layout
        memory_format = layout_of(x)
        log_probs = torch.stack(
            [
                split_output(model(v.contiguous(memory_format=memory_format)))[0]
                .float()
                .log_softmax(-1)
                + math.log(weight)
                for v, weight in zip(views, weights, strict=True)
            ]
        )
        # the weighted mean of the softmaxes, as log-probabilities (logits whose softmax is it)
        return torch.logsumexp(log_probs, 0)

    def train_metrics(self) -> TrainAccuracy:
        return TrainAccuracy()

    def eval_metrics(self, num_classes: int | None = None) -> EvalMetrics:
        return EvalMetrics(self.criterion, self.top_k, num_classes)

    def decode(self, output: Any) -> torch.Tensor:
        logits, _ = split_output(output)
        return logits.float().softmax(1)

    def format_prediction(
        self, decoded: torch.Tensor, class_names: Sequence[str], top: int = 3
    ) -> list[str]:
        top_k = decoded.topk(min(top, len(class_names)))
        return [
            f"{class_names[i]:<14s} {p:7.2%}"
            for p, i in zip(top_k.values.tolist(), top_k.indices.tolist(), strict=True)
        ]

    def report(
        self, trainer: Any, test: Any, meta: DataMeta, run_dir: Path | None
    ) -> dict[str, Any]:
        """Test loss and accuracy, per-class accuracy; with ``run_dir`` the confusion matrix and a
        grid of the first 32 test images with predicted / true labels."""
        names = list(meta.class_names)
        metric = self.eval_metrics(num_classes=len(names))
        scores = trainer.evaluate(test, metric=metric)
        matrix = metric.matrix(trainer.reduce)
        recall = matrix.diag().double() / matrix.sum(1).clamp(min=1).double()
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in scores.items()}
        metrics["per_class_accuracy"] = dict(zip(names, recall.tolist(), strict=True))
        if run_dir is not None:
            from cnnkit.train import rundir
            from cnnkit.viz.training import plot_confusion_matrix, plot_predictions

            plot_confusion_matrix(matrix.numpy(), names, run_dir / rundir.CONFUSION_PLOT)
            x, y = next(iter(test))
            x, y = x[:32], y[:32]
            preds = trainer.predict(x).argmax(1)
            plot_predictions(
                meta.to_display(x),
                preds.tolist(),
                y.tolist(),
                names,
                run_dir / rundir.PREDICTIONS_PLOT,
            )
        return metrics

    def print_report(self, metrics: dict[str, Any], meta: DataMeta) -> None:
        print(
            f"  loss      {metrics['test_loss']:.4f}\n  accuracy  {metrics['test_accuracy']:.2%}\n"
        )
        names = list(metrics["per_class_accuracy"])
        width = max(len(n) for n in names)
        print(f"  {'class':<{width}}  accuracy")
        for name, acc in metrics["per_class_accuracy"].items():
            print(f"  {name:<{width}}  {acc:7.2%}")
