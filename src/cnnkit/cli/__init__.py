"""The ``cnnkit`` command line. Each sub-command lives in its own module with a ``register`` function.

To add a command: write ``cnnkit/cli/NAME.py`` with ``register(parser) -> None`` that adds the
command's arguments and sets ``func=run`` (``run(args) -> int``), then add its name and one-line help
to ``COMMANDS``.

Start-up is lazy: ``cnnkit --help`` imports no command module (and so neither torch nor matplotlib),
and ``cnnkit NAME ...`` imports only ``cnnkit/cli/NAME.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cnnkit import __version__

# Sub-commands in the order ``cnnkit --help`` lists them, with their one-line help.
COMMANDS: dict[str, str] = {
    "demo": "train the notes' CNN on Fashion-MNIST for a short budget",
    "train": "train a model on a dataset into a run directory",
    "speedrun": "train to a target test accuracy as fast as possible: a small net and a tuned recipe",
    "finetune": "fine-tune a pretrained model on a dataset, in the notes' two phases",
    "evaluate": "evaluate a run's best weights on its test set",
    "predict": "predict image files with a trained run (or a pretrained ImageNet model)",
    "segment": "segment image files with a trained segment run: colour overlays with a legend",
    "detect": "draw a detection run's boxes on image files and write them as COCO results",
    "slide": "slide a trained classifier over a larger image in one pass: class heat maps",
    "upscale": "super-resolve image files x2 or x4 (the shipped weights, or a superres run's)",
    "models": "list the registered models",
    "summary": "per-layer table: shapes, parameters, FLOPs and the memory of a step",
    "filters": "draw the notes' feature maps: two sample images through 7x7 line filters",
    "export": "export a run's model to ONNX, its preprocessing in the file's metadata",
    "report": "write a run's self-contained HTML report (curves, tables, predictions, feature maps)",
    "serve": "a local web app: upload an image, see the run's prediction and feature maps",
    "data": "make scene datasets, draw and convert annotated datasets (COCO, VOC, YOLO, VIA, LabelMe)",
}


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser. With ``argv`` only the command it names is imported and given its arguments
    (the others are listed by name); without, every command is (for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="cnnkit", description="Deep computer vision with CNNs, on PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, summary in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        p.set_defaults(command=name)
        if argv is None or name == chosen:
            importlib.import_module(f"cnnkit.cli.{name}").register(p)
    return parser


def _leave_process_group() -> None:
    """End a ``torchrun`` job's process group once the command is done, as PyTorch asks
    (``destroy_process_group``): a process that exits with it still alive may abort in the
    teardown ("terminate called without an active exception") while its peer is still leaving."""
    if "torch.distributed" not in sys.modules:  # the command never touched torch.distributed
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # nobody leaves while another process still needs the group
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = list(argv)  # the command line as given (`cnnkit train --nproc` passes it on)
    try:
        code = int(args.func(args) or 0)
        _leave_process_group()
        return code
    except (CLIError, OSError, ValueError) as exc:  # user-fixable: no traceback
        print(f"cnnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print(f"cnnkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
