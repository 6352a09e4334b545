"""What the training commands share: one argument set (``train``, ``finetune``, ``demo``), the
run directory's default name, rebuilding a run's task, data and model from its ``config.json``, and
finishing a run (the task's test report and the plots)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.cli import CLIError

if TYPE_CHECKING:
    import torch

    from cnnkit.data.datasets import DataMeta, ImageData
    from cnnkit.tasks import Task
    from cnnkit.train import RunDir, Trainer

# Choices listed here rather than imported, so that ``--help`` needs no torch; a test checks them
# against cnnkit.train.optim and cnnkit.tasks, their owners.
OPTIMIZER_CHOICES = ("sgd", "adam", "adamw", "nadam", "rmsprop")
NONFINITE_CHOICES = ("stop", "skip")
SCHEDULE_CHOICES = ("constant", "step", "cosine", "onecycle")
TASK_CHOICES = ("classify", "localize", "detect", "segment", "superres")
#: each task's test-time augmentations (cnnkit.tasks.classify and .segment's TTA_CHOICES)
TTA_BY_TASK = {"classify": ("flip", "flip-translate"), "segment": ("flip", "flip-scale")}
TTA_CHOICES = tuple(dict.fromkeys(c for choices in TTA_BY_TASK.values() for c in choices))


def parse_options(pairs: list[str], option: str = "--model-option") -> dict[str, Any]:
    """``["key=value", ...]`` → dict, values parsed as JSON when they can be (``3``, ``true``)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"{option}: expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _positive_float(name: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1.5h`` → seconds (a positive number)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 300, 90s, 5m or 1.5h, got {text!r}"
        )
    return seconds


def _fraction(name: str) -> Any:
    """A number in [0, 1) (weight decay, label smoothing): NaN, infinities and the rest refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0.0 <= value < 1.0:  # also false for NaN
            raise argparse.ArgumentTypeError(f"expected a number from 0 up to 1, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def _decay(text: str) -> float:
    """``--ema``: a decay strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:  # also false for NaN
        raise argparse.ArgumentTypeError(f"expected a decay between 0 and 1, got {text!r}")
    return value


def _batch_augment(text: str) -> str:
    """``--batch-augment``: checked here, kept as its normalized text (``crop=2,flip,erase=0.5``)."""
    from cnnkit.data.augment import BatchAugment

    try:
        return BatchAugment.parse(text).spec()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--batch-augment: ")) from None


def _int_at_least(low: int, expected: str) -> Any:
    """An argparse type: an integer >= ``low``, else "expected <expected>, got '<text>'"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def add_training_arguments(p: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """The options ``cnnkit train``, ``cnnkit finetune`` and ``cnnkit demo`` share."""
    if model_required:
        p.add_argument("--model", required=True, help="a registered model (see `cnnkit models`)")
    p.add_argument(
        "--data",
        default="fashion-mnist",
        help="fashion-mnist, scenes (Fashion-MNIST items on 128x128 canvases), a folder with one "
        "sub-folder per class, or a .csv/.json list; for --task segment a folder of images/ and masks/, "
        "or annotations with polygons/RLE/masks (COCO, VIA, LabelMe); for --task detect annotation "
        "files; for --task superres photos:DIR (random patches of any folder of photos)",
    )
    p.add_argument("--data-root", default=None, help="folder holding a named dataset's files")
    p.add_argument(
        "--data-option", action="append", default=[], metavar="KEY=VALUE",
        help="dataset option, e.g. scenes' n_train=2000",
    )  # fmt: skip
    p.add_argument("--task", choices=TASK_CHOICES, default="classify")
    p.add_argument(
        "--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option"
    )
    p.add_argument("--epochs", type=_positive_int, default=10, help="all epochs of the run")
    p.add_argument(
        "--out", default=None, help="run directory (default: a new runs/TASK/MODEL-N, printed)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument(
        "--model-option", action="append", default=[], metavar="KEY=VALUE", help="builder option"
    )
    p.add_argument("--batch-size", default="128", help="an integer, or 'auto' (largest that fits)")
    p.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, default="adamw")
    p.add_argument(
        "--lr",
        type=_positive_float("--lr"),
        default=None,
        help="peak learning rate (default: per optimizer)",
    )
    p.add_argument("--weight-decay", type=_fraction("--weight-decay"), default=None)
    p.add_argument("--schedule", choices=SCHEDULE_CHOICES, default="onecycle")
    p.add_argument(
        "--time-budget", type=parse_duration, default=None, metavar="DURATION",
        help="train for this long (300, 90s, 5m): the schedule follows elapsed time and the run "
        "stops on time, validated and tested; --epochs is then a maximum",
    )  # fmt: skip
    p.add_argument(
        "--label-smoothing",
        type=_fraction("--label-smoothing"),
        default=0.0,
        help="classification: label smoothing",
    )
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, mps"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--on-nonfinite", choices=NONFINITE_CHOICES, default="stop",
        help="a NaN/inf loss or gradient: stop the run (the last good checkpoint kept) or skip the batch",
    )  # fmt: skip
    p.add_argument("--flip", action="store_true", help="augment with random horizontal flips")
    p.add_argument(
        "--batch-augment", type=_batch_augment, default=None, metavar="SPEC",
        help="augment whole in-memory batches with per-image parameters: crop[=PADDING] (random "
        "crop with padding, default 2), flip, erase[=P] (random erasing, default 0.5), e.g. "
        "crop,flip,erase",
    )  # fmt: skip
    p.add_argument(
        "--ema", type=_decay, default=None, metavar="DECAY",
        help="evaluate and keep a moving average of the weights (e.g. 0.99), updated every step",
    )  # fmt: skip
    p.add_argument(
        "--tta", choices=TTA_CHOICES, default=None,
        help="test-time augmentation at validation and test; classify: flip (each image averaged "
        "with its mirror), flip-translate (both also shifted a pixel diagonally, 6 passes, "
        "airbench's); segment: flip, flip-scale (both also enlarged 1.25x, 4 passes)",
    )  # fmt: skip
    p.add_argument(
        "--val-every", type=_nonnegative_int, default=1, metavar="N",
        help="validate after every N-th epoch and after the last (0: after the last only; "
        "validation's time counts against --time-budget)",
    )  # fmt: skip
    p.add_argument(
        "--patience", type=_positive_int, default=None, help="early stopping on the task's metric"
    )
    p.add_argument(
        "--train-limit", type=_positive_int, default=None, help="train on the first N images only"
    )
    p.add_argument(
        "--image-size", type=_positive_int, default=None,
        help="input side the model sees (default: the data's own; 224 for image files)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes for image files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--tensorboard", action="store_true",
        help="write TensorBoard event files into RUN/tensorboard (scalars, weights, predictions, graph)",
    )  # fmt: skip


def task_from_args(args: argparse.Namespace) -> Task:
    from cnnkit.tasks import get_task

    options = parse_options(args.task_option, "--task-option")
    if args.task == "classify" and args.label_smoothing:
        options.setdefault("label_smoothing", args.label_smoothing)
    if getattr(args, "tta", None):
        offered = TTA_BY_TASK.get(args.task, ())
        if args.tta not in offered:
            raise CLIError(
                f"--tta {args.tta}: --task {args.task} takes "
                + (", ".join(offered) if offered else "no test-time augmentation")
            )
        options.setdefault("tta", args.tta)
        if not _trains_on_mirrored_images(args):
            print(
                f"warning: --tta {args.tta}, but training never mirrors an image (--flip or "
                "--batch-augment flip): mirrored images are new to the model, which can cost more "
                "than the average gains (Fashion-MNIST's shoes all point one way: the demo's model "
                "scored 80.9% with flip TTA, 90.3% without)",
                file=sys.stderr,
            )
    return get_task(args.task, **options)


def _trains_on_mirrored_images(args: argparse.Namespace) -> bool:
    from cnnkit.data.augment import BatchAugment

    spec = getattr(args, "batch_augment", None)
    return bool(getattr(args, "flip", False)) or (
        spec is not None and BatchAugment.parse(spec).flip
    )


class ImageFiles:
    """Image files decoded one by one for a run's model (``channels`` 1 or 3): a file that cannot be
    read is reported on stderr and counted in ``failures``, and the others go on."""

    def __init__(self, paths: list[str], channels: int) -> None:
        self.paths, self.channels, self.failures = paths, channels, 0

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        from cnnkit.cli.predict import read_image

        for path in self.paths:
            try:
                image = read_image(path, self.channels)
            except (FileNotFoundError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                self.failures += 1
                continue
            yield path, image


def default_run_dir(task: str, model: str, root: str | Path = "runs") -> Path:
    """``runs/TASK/MODEL-N`` with the first N not taken."""
    base = Path(root) / task
    n = 1
    while (base / f"{model}-{n}").exists():
        n += 1
    return base / f"{model}-{n}"


# ---- a run's config ------------------------------------------------------------------------------

# --resume compares the run's config.json with the one the new command would write. Settings that
# change where the run goes, not what it computes, may differ; more epochs extend it; anything
# else is refused, naming the option.
RESUME_MAY_CHANGE = {
    "cnnkit_version", "command", "resumes",
    "trainer.device", "trainer.channels_last", "trainer.on_nonfinite",
}  # fmt: skip
# config keys (a key or the start of one) → the option that sets them, most specific first
_OPTION_OF_KEY = (
    ("model.name", "--model"), ("model.options", "--model-option"),
    ("model.num_classes", "--data (its classes)"), ("model.in_channels", "--data (its channels)"),
    ("data.train_limit", "--train-limit"), ("data.flip", "--flip"),
    ("data.batch_augment", "--batch-augment"), ("task.options.tta", "--tta"),
    ("trainer.ema", "--ema"), ("trainer.ema_every", "--ema"), ("trainer.val_every", "--val-every"),
    ("data.input_size", "--image-size"), ("data.source.options", "--data-option"),
    ("data.source.skip_invalid", "--skip-invalid"),
    ("data.source.root", "--data-root"), ("data", "--data"),
    ("task.name", "--task"), ("task.options.label_smoothing", "--label-smoothing"),
    ("task.options", "--task-option"),
    ("trainer.lr", "--lr"), ("trainer.weight_decay", "--weight-decay"),
    ("trainer.schedule", "--schedule"), ("trainer.batch_size", "--batch-size"),
    ("trainer.seed", "--seed"), ("trainer.precision", "--precision"),
    ("trainer.grad_clip", "grad_clip"), ("trainer.epochs", "--epochs"),
    ("trainer.world_size", "the number of processes (--nproc, torchrun)"),
    ("trainer.device", "--device"), ("trainer.on_nonfinite", "--on-nonfinite"),
    ("trainer.channels_last", "the memory layout (--device)"),
    ("trainer", "--optimizer"), ("demo", "the command (cnnkit demo)"),
    ("speedrun", "the command (cnnkit speedrun)"),
)  # fmt: skip


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists are values)."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _option_of(key: str) -> str:
    for start, option in _OPTION_OF_KEY:
        if key == start or key.startswith(start + "."):
            return option
    return key


_MISSING = object()


def compare_resume_config(
    old: dict[str, Any], new: dict[str, Any], where: str | Path
) -> tuple[dict[str, Any], list[str]]:
    """Check a ``--resume`` against the run's ``config.json`` (``old``; ``new`` is what this command
    would write). Returns the config to write — the run's own, with the extension recorded in
    ``resumes`` — and lines for stdout saying what the extension means. A setting that would change
    what the run computes raises :class:`CLIError` naming each option that differs."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    refused: dict[str, list[str]] = {}
    changed: dict[str, list[Any]] = {}
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, _MISSING), flat_new.get(key, _MISSING)
        if before == after or key.split(".")[0] in RESUME_MAY_CHANGE:
            continue
        if key in RESUME_MAY_CHANGE:
            if before is not _MISSING:  # a key older versions did not write is no change
                changed[key] = [before, after]
            continue
        if key == "trainer.epochs" and isinstance(before, int) and isinstance(after, int):
            if after > before:
                changed[key] = [before, after]
                continue
            detail = f"--epochs {after} (the run has {before}: a run is extended, never shortened)"
        else:
            shown_old = "absent" if before is _MISSING else json.dumps(before)
            shown_new = "absent" if after is _MISSING else json.dumps(after)
            detail = f"{key} {shown_new} now, {shown_old} in the run"
        refused.setdefault(_option_of(key), []).append(detail)
    if refused:
        listed = "; ".join(
            f"{option} ({', '.join(details)})" for option, details in refused.items()
        )
        raise CLIError(
            f"{where}: --resume with settings that change the run: {listed}. Resume with the "
            "run's own settings, or start a new run (another --out, or --overwrite)"
        )
    notes: list[str] = []
    merged = {**old}
    if changed:
        merged["trainer"] = {**old.get("trainer", {}), **new.get("trainer", {})}
        record = {"command": new.get("command"), "changed": changed}
        merged["resumes"] = [*old.get("resumes", []), record]
    if "trainer.epochs" in changed:
        before, after = changed["trainer.epochs"]
        schedule = new.get("trainer", {}).get("schedule")
        if schedule in ("cosine", "onecycle"):
            meaning = (
                f"the {schedule} schedule is re-planned over {after} epochs, and the epochs left "
                f"follow the {after}-epoch curve from the point the finished epochs reach on it "
                f"(the learning rate jumps from the {before}-epoch curve to it)"
            )
        else:
            meaning = f"the {schedule} schedule does not depend on the run's length: it goes on"
        notes.append(f"--epochs {after} extends the run's {before} epochs: {meaning}")
    for key in sorted(changed.keys() - {"trainer.epochs"}):
        before, after = changed[key]
        notes.append(
            f"{_option_of(key)}: {key} was {before}, is now {after} (recorded in config.json)"
        )
    return merged, notes


def model_from_config(config: dict[str, Any], source: Path) -> torch.nn.Module:
    from cnnkit.models import create_model

    spec = config.get("model")
    if not isinstance(spec, dict):
        raise CLIError(f"{source}: field 'model' is missing or not an object")
    try:
        return create_model(
            spec["name"],
            num_classes=spec["num_classes"],
            in_channels=spec["in_channels"],
            **spec.get("options", {}),
        )
    except KeyError as exc:
        raise CLIError(f"{source}: field 'model.{exc.args[0]}' is missing") from None


def task_from_config(config: dict[str, Any], source: Path) -> Task:
    """The run's task (runs written before tasks existed are classification)."""
    from cnnkit.tasks import get_task

    spec = config.get("task", {"name": "classify", "options": {}})
    if not isinstance(spec, dict) or "name" not in spec:
        raise CLIError(f"{source}: field 'task' must be an object with a 'name'")
    try:
        return get_task(spec["name"], **spec.get("options", {}))
    except ValueError as exc:
        raise CLIError(f"{source}: field 'task': {exc}") from None


def load_run(
    path: str | Path, checkpoint: str | None = None, fuse: bool = False
) -> tuple[RunDir, dict[str, Any], torch.nn.Module, Task, DataMeta]:
    """A run directory's config, its model with the ``checkpoint`` weights (default: the best) in
    evaluation mode, its task and its data description. ``fuse``: ready for inference only —
    BatchNorm folded into the convolutions (``cnnkit.models.fusion``) and the weights
    channels-last, the layout oneDNN's convolutions run fastest and training uses (the folded
    weights are new, contiguous tensors: without it a grey model's stem ran NCHW, and oneDNN's
    NCHW max-pool is about 10x slower than its NHWC one on a 2-core AVX2 EPYC)."""
    from cnnkit.data.datasets import DataMeta
    from cnnkit.train import RunDir, rundir
    from cnnkit.train.checkpoint import load_checkpoint

    run = RunDir(path)
    config = run.read_config()
    where = run / rundir.CONFIG
    if not isinstance(config, dict):
        raise CLIError(f"{where}: expected a JSON object, got {type(config).__name__}")
    if "data" not in config:
        raise CLIError(f"{where}: field 'data' is missing")
    meta = DataMeta.from_config(config["data"], where)
    task = task_from_config(config, where)
    model = model_from_config(config, where)
    load_checkpoint(run / (checkpoint or rundir.BEST), model)
    task.setup(model)  # detection decodes with the model's anchors and stride
    model.eval()
    if fuse:
        import torch

        from cnnkit.models.fusion import fuse_conv_bn

        fuse_conv_bn(model)
        model.to(memory_format=torch.channels_last)  # convolutions then return channels_last
    return run, config, model, task, meta


def run_or_onnx(
    run: str | None, images: list[str], onnx: str | None, checkpoint: str | None = None
) -> tuple[list[str], Any, Task, DataMeta]:
    """The image paths, the model, its task and data description for a command that applies a
    model to image files (``predict``, ``detect``, ``segment``): a run directory's PyTorch model
    (``load_run``), or with ``onnx`` an exported file's ``OnnxModel`` (onnxruntime), whose task and
    data description come from the file's metadata; then the positional ``run`` is an image. Either
    model returns raw outputs that ``task.decode`` decodes."""
    if onnx is not None:
        paths = [p for p in (run, *images) if p is not None]
        if not paths:
            raise CLIError("expected at least one image after --onnx FILE")
        from cnnkit.deploy.onnx import OnnxModel

        try:
            onnx_model = OnnxModel(onnx)
        except ImportError as exc:  # the optional extra is missing
            raise CLIError(str(exc)) from None
        return paths, onnx_model, onnx_model.task, onnx_model.meta
    if run is None or not images:
        raise CLIError("expected a run directory and at least one image")
    _, _, model, task, meta = load_run(run, checkpoint, fuse=True)
    return list(images), model, task, meta


def finish_run(run: RunDir, trainer: Trainer, data: ImageData, workers: int = 2) -> dict[str, Any]:
    """Evaluate the best weights on the test split with the task's report (``workers`` loader
    processes, the run's ``--workers``); write ``test_metrics.json``, the history plot and the
    task's plots. Under torchrun every process calls it (each evaluates its share of the test
    split) and rank 0 writes."""
    from cnnkit.train import distributed, rundir
    from cnnkit.train.checkpoint import load_checkpoint
    from cnnkit.viz.training import plot_history

    distributed.barrier(trainer.dist)  # rank 0 has written the last checkpoints
    if (run / rundir.BEST).is_file():
        load_checkpoint(run / rundir.BEST, trainer.eval_model)  # the EMA's weights with --ema
    metrics: dict[str, Any] = {}
    writes = trainer.dist.is_main
    if data.splits.get("test") is not None:
        test = data.batches("test", 500, device=trainer.device, workers=workers)
        metrics = trainer.task.report(trainer, test, data.meta, run.path if writes else None)
        if writes:
            run.write_json(rundir.TEST_METRICS, metrics)
    if trainer.history and writes:
        plot_history(
            trainer.history,
            run / rundir.HISTORY_PLOT,
            steps=trainer.steps,
            metric=trainer.task.history_metric(),
            loss_label=_loss_label(trainer.task),
        )
    return metrics


def _loss_label(task: Task) -> str:
    smoothing = task.options().get("label_smoothing")
    return f"train_loss (label smoothing {smoothing:g})" if smoothing else "train_loss"


def add_run_and_images(p: argparse.ArgumentParser, task: str) -> None:
    """The positional run directory (an image with ``--onnx``), the images, and ``--onnx FILE`` of a
    command that applies a ``task`` run to image files (``detect``, ``segment``; see ``run_or_onnx``)."""
    p.add_argument(
        "run", nargs="?", default=None,
        help=f"run directory written by `cnnkit train --task {task}` (an image with --onnx)",
    )  # fmt: skip
    p.add_argument("images", nargs="*", help="PNG/JPEG/GIF/WebP files, any size and colour mode")
    p.add_argument(
        "--onnx", default=None, metavar="FILE",
        help=f"an ONNX file written by `cnnkit export` from a {task} run, run with onnxruntime",
    )  # fmt: skip
