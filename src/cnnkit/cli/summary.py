"""``cnnkit summary MODEL``: a Keras-style per-layer table with FLOPs and the memory of a step.

cnnkit summary resnet50 --batch 32 --optimizer adam
cnnkit summary fashion_cnn --inference --batch 256
cnnkit summary vgg16 --precision bf16 --json
"""

from __future__ import annotations

import argparse
import json

import torch

from cnnkit.cli import CLIError
from cnnkit.memory import OPTIMIZERS, MemoryReport, estimate
from cnnkit.models import create_model, list_models, model_info

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=f"a registered model: {', '.join(list_models())}")
    p.add_argument("--input", help="C,H,W of one image (default: the paper's input size)")
    p.add_argument("--num-classes", type=int, help="default: the builder's own default")
    p.add_argument("--batch", type=int, default=1, help="batch size for the memory columns")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--train", dest="mode", action="store_const", const="train")
    mode.add_argument("--inference", dest="mode", action="store_const", const="inference")
    p.set_defaults(mode="train")
    p.add_argument("--optimizer", default="sgd", choices=["none", *OPTIMIZERS])
    p.add_argument("--precision", default="fp32", choices=list(PRECISION_DTYPES))
    p.add_argument("--device", default="cpu", help="the device to plan for (cpu or cuda)")
    p.add_argument("--no-suggestions", action="store_true", help="skip the what-if traces")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def parse_input(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CLIError(f"--input: expected C,H,W as three positive integers, got {text!r}")
    return shape


def mib(nbytes: int | None) -> str:
    """Bytes in the largest binary unit that keeps the number at or above 1 (KiB, MiB, GiB)."""
    if nbytes is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} B"


def _count(n: int) -> str:
    return f"{n:,}" if n else "0"


def _flops(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n) if n else "0"


def format_report(report: MemoryReport) -> str:
    """The table as text, Keras' ``model.summary()`` layout with FLOPs and memory columns."""
    memory_title = "Saved for bwd" if report.mode == "train" else "Output"
    header = ["Layer (type)", "Output shape", "Param #", "Non-train.", "FLOPs/img", memory_title]
    rows = []
    for layer in report.layers:
        shape = "-" if layer.output_shape is None else str(list(layer.output_shape))
        memory = layer.saved_bytes if report.mode == "train" else layer.output_bytes
        rows.append(
            [
                f"{layer.name or '(model)'} ({layer.type})",
                shape,
                _count(layer.trainable_params),
                _count(layer.non_trainable_params),
                _flops(layer.flops // report.batch_size),
                mib(memory) if memory else "0",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "=" * (sum(widths) + 2 * (len(widths) - 1))

    def line(cells: list[str]) -> str:
        left = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        return "  ".join(left + [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)])

    total = report.trainable_params + report.non_trainable_params
    what = "training step" if report.mode == "train" else "inference pass"
    optimizer = f", optimizer {report.optimizer}" if report.mode == "train" else ""
    out = [
        f'Model: "{report.model}"  input {list(report.input_shape)}, batch {report.batch_size}, '
        f"{what}, {report.precision}{optimizer}, {report.device}",
        rule,
        line(header),
        rule,
        *(line(r) for r in rows),
        rule,
        f"Total params: {total:,} ({mib(report.param_bytes + report.buffer_bytes)})",
        f"Trainable params: {report.trainable_params:,}",
        f"Non-trainable params: {report.non_trainable_params:,}",
        f"FLOPs per image (forward, eval): {_flops(report.flops)} ({report.flops:,})",
        rule,
        f"Parameters and buffers      {mib(report.param_bytes + report.buffer_bytes):>14}",
    ]
    if report.mode == "train":
        out += [
            f"Gradients                   {mib(report.grad_bytes):>14}",
            f"Optimizer state             {mib(report.optimizer_bytes):>14}",
            f"Input batch                 {mib(report.input_bytes):>14}",
            f"Activations saved for bwd   {mib(report.activation_bytes):>14}",
        ]
    where = report.peak_phase + (f", in {report.peak_layer}" if report.peak_layer else "")
    out += [
        f"Inference peak              {mib(report.inference_peak_bytes):>14}"
        f"  (parameters + live activations {mib(report.inference_activation_bytes)})",
        f"Predicted peak of the step  {mib(report.peak_bytes):>14}  (reached during {where})",
    ]
    if report.suggestions:
        out += [rule, "What would cut the peak most:"]
        for s in report.suggestions:
            if s.peak_bytes is None:
                out.append(f"  {s.change}: not possible, {s.note}")
            else:
                sign = "-" if s.saving_bytes >= 0 else "+"
                out.append(
                    f"  {s.change}: peak {mib(s.peak_bytes)} ({sign}{mib(abs(s.saving_bytes))})"
                )
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    shape = parse_input(args.input) if args.input else info.input_size
    if args.batch < 1:
        raise CLIError(f"--batch: expected a positive integer, got {args.batch}")
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = info.parameters["num_classes"].default
    model = create_model(args.model, num_classes=num_classes, in_channels=shape[0])
    try:
        report = estimate(
            model,
            shape,
            args.batch,
            mode=args.mode,
            optimizer=args.optimizer,
            dtype=PRECISION_DTYPES[args.precision],
            device=args.device,
            suggestions=not args.no_suggestions,
        )
    except RuntimeError as exc:  # the model's own error on this input
        raise CLIError(f"{args.model} rejects input {list(shape)}: {exc}") from None
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    return 0
