"""``cnnkit export RUN --onnx model.onnx [--dynamic-batch] [--opset N]``: the run's best weights as an
ONNX graph, with the run's preprocessing (input layout and size, mean/std, resize policy, class
names, task) in the file's metadata (``cnnkit.deploy.onnx``). ``cnnkit predict --onnx model.onnx
IMAGE...`` runs it with onnxruntime and prints what ``cnnkit predict RUN IMAGE...`` prints.
"""

from __future__ import annotations

import argparse

BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnkit train` or `cnnkit finetune`")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    p.add_argument(
        "--dynamic-batch", action="store_true", help="a symbolic batch dimension (default: 1)"
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from cnnkit.cli import CLIError
    from cnnkit.cli._common import load_run
    from cnnkit.deploy.onnx import DEFAULT_OPSET, export_onnx, read_metadata

    _, config, model, task, meta = load_run(args.run, args.checkpoint)
    opset = args.opset or DEFAULT_OPSET
    try:
        path = export_onnx(
            model, meta, task, args.onnx, dynamic_batch=args.dynamic_batch, opset=opset
        )
    except ImportError as exc:  # the optional extra is missing: one line, not a traceback
        raise CLIError(str(exc)) from None
    props = read_metadata(path)
    batch = "N" if args.dynamic_batch else "1"
    c, h, w = meta.input_size
    # superres graphs take any height and width (cnnkit.dynamic_size)
    spatial = "height, width" if props.get("dynamic_size") == "true" else f"{h}, {w}"
    outputs = ", ".join(str(v) for v in json.loads(props["outputs"]))
    print(
        f"{path}: {config['model']['name']} ({task.name}), input {props['input_name']} "
        f"({batch}, {c}, {spatial}) float32, outputs {outputs}, opset {opset}"
    )
    print(
        f"  preprocessing: {meta.resize}, {props['input_scale']}, "
        f"mean {list(meta.mean)}, std {list(meta.std)}"
    )
    return 0
