"""ONNX export of a run's model, with its preprocessing in the file, and inference with onnxruntime.

``export_onnx`` writes the model in inference mode with ``torch.onnx.export`` (the TorchScript
exporter, ``dynamo=False``: it needs no ``onnxscript`` and exports every registry model in well
under a second each) and records in the ONNX ``metadata_props`` what a consumer needs to feed it:

===========================  ======================================================================
``cnnkit.task``              the task (``classify``…) and ``cnnkit.task_options`` (JSON)
``cnnkit.input_layout``      ``NCHW``, float32
``cnnkit.input_size``        ``[C, H, W]`` (JSON)
``cnnkit.input_scale``       how pixels become inputs: uint8 / 255, then (x - mean) / std per channel
``cnnkit.mean``/``.std``     per channel, 0-1 scale (JSON)
``cnnkit.resize``            the evaluation resize policy (``stretch`` / ``center-crop``), ``cnnkit.crop_pct``
``cnnkit.class_names``       JSON list
``cnnkit.outputs``           the output names; ``cnnkit.postprocess`` what is (not) in the graph
``cnnkit.data``              the whole ``DataMeta.to_config()`` (JSON), from which cnnkit rebuilds it
``cnnkit.anchors``           detection: the anchors (JSON) and ``cnnkit.stride`` its decoding needs
``cnnkit.scale``             superres: the upscaling factor, ``cnnkit.color``, ``cnnkit.chroma``,
                             ``cnnkit.dynamic_size`` (any height and width),
                             ``cnnkit.receptive_radius`` (the context a tile needs, in pixels)
===========================  ======================================================================

What differs between tasks comes from the task's view (``cnnkit.deploy.views``): the output names,
how the model's output becomes the graph's outputs (a localizer's dict → ``logits``, ``boxes``) and
back, and the metadata its decoding needs (the detector's anchors and stride). Every task's decoding
(softmax, box decoding and NMS, argmax) stays outside the graph, so ``OnnxModel`` returns what the
model returns and the task decodes it as on the PyTorch path.

:class:`OnnxModel` reads a file back (the session, the ``DataMeta``, the task) so that
``cnnkit predict --onnx`` preprocesses, decodes and prints exactly as the PyTorch path does.
onnx and onnxruntime are the optional extra ``onnx`` (``pip install cnnkit[onnx]``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnkit.io import atomic_write_bytes

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta
    from cnnkit.tasks import Task

#: the default opset: 18, the lowest the dynamo exporter writes natively (onnxruntime ≥ 1.14 runs it)
DEFAULT_OPSET = 18
INPUT_NAME = "input"
KEY_PREFIX = "cnnkit."


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is not installed: pip install 'cnnkit[onnx]' (onnx and onnxruntime)"
        ) from None


def onnx_metadata(
    meta: DataMeta, task: Task, output_names: tuple[str, ...], postprocess: str
) -> dict[str, str]:
    """The ``metadata_props`` of an exported run (every value a string, JSON where structured)."""
    return {
        "task": task.name,
        "task_options": json.dumps(task.options()),
        "input_name": INPUT_NAME,
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "input_size": json.dumps(list(meta.input_size)),
        "input_scale": "x = (uint8 / 255 - mean[c]) / std[c]",
        "mean": json.dumps(list(meta.mean)),
        "std": json.dumps(list(meta.std)),
        "resize": meta.resize,
        "crop_pct": str(meta.crop_pct),
        "class_names": json.dumps(list(meta.class_names)),
        "outputs": json.dumps(list(output_names)),
        "postprocess": postprocess,
        "data": json.dumps(meta.to_config()),
    }


def export_onnx(
    model: torch.nn.Module,
    meta: DataMeta,
    task: Task,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    input_size: tuple[int, int] | None = None,
) -> Path:
    """Export ``model`` (put in eval mode, on the CPU) to ``path`` with the run's preprocessing in
    its metadata. The input is (1, C, H, W) at the data's input size (``input_size`` overrides H, W),
    with ``dynamic_batch`` a symbolic batch dimension ``batch``. The file is checked with
    ``onnx.checker`` and written atomically. Returns ``path``."""
    onnx = _require("onnx")
    from cnnkit.deploy.views import GraphOutputs, get_view

    view = get_view(task.name)
    channels, height, width = meta.input_size
    if input_size is not None:
        height, width = input_size
    model = model.eval().cpu()
    extra = view.export_metadata(model)
    graph = GraphOutputs(model, view).eval()  # export restores the mode it found
    example = torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = graph(example)
    n_outputs = len(output)
    names = view.output_names[:n_outputs]
    if len(names) < n_outputs:
        names = (*names, *(f"output{i}" for i in range(len(names), n_outputs)))
    errors: list[str] = []
    proto = None
    for dynamo in (False, True):
        # The TorchScript exporter first (a fraction of a second per model); torch.export through
        # the dynamo exporter where it fails or its graph disagrees with the model (AlexNet's
        # adaptive pool after a pool, Xception's 'same' padding): seconds per model.
        try:
            data = _export_bytes(
                graph, example, names, opset, dynamic_batch, dynamo=dynamo,
                dynamic_size=view.dynamic_size,
            )  # fmt: skip
        except (torch.onnx.errors.OnnxExporterError, RuntimeError) as exc:
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {str(exc)[:200]}")
            continue
        problem = _parity_problem(data, example, output)
        if problem is None:
            proto = onnx.load_from_string(data)
            break
        errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {problem}")
    if proto is None:
        raise ValueError(f"{path}: the model could not be exported to ONNX: {'; '.join(errors)}")
    props = {**onnx_metadata(meta, task, names, view.postprocess), **extra}
    if input_size is not None:
        props["input_size"] = json.dumps([channels, height, width])
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = KEY_PREFIX + key, value
    proto.producer_name = "cnnkit"
    onnx.checker.check_model(proto)
    return atomic_write_bytes(path, proto.SerializeToString())


def _export_bytes(
    model: torch.nn.Module,
    example: torch.Tensor,
    names: tuple[str, ...],
    opset: int,
    dynamic_batch: bool,
    *,
    dynamo: bool,
    dynamic_size: bool = False,
) -> bytes:
    """One ``torch.onnx.export``, through a temporary file, into memory; with ``dynamic_size`` the
    input's and outputs' height and width are symbolic (``height``, ``width``; ``out_height``…)."""
    import tempfile

    folder = tempfile.TemporaryDirectory(prefix="cnnkit-onnx-")
    buffer = Path(folder.name) / "model.onnx"
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo, which takes seconds per
        # model where it takes a fraction of one; both write standard ONNX operators
        warnings.simplefilter("ignore")
        try:
            if dynamo:
                dims: dict[int, Any] = (
                    {0: torch.export.Dim("batch", min=1)} if dynamic_batch else {}
                )
                if dynamic_size:
                    dims |= {
                        2: torch.export.Dim("height", min=2),
                        3: torch.export.Dim("width", min=2),
                    }
                batch = (dims,) if dims else None
                program = torch.onnx.export(
                    model,
                    (example,),
                    input_names=[INPUT_NAME],
                    output_names=list(names),
                    opset_version=opset,
                    dynamic_shapes=batch,
                    dynamo=True,
                    verbose=False,
                )
                assert program is not None
                program.save(buffer)
            else:
                axes: dict[str, dict[int, str]] = {
                    name: {0: "batch"} if dynamic_batch else {} for name in (INPUT_NAME, *names)
                }
                if dynamic_size:
                    axes[INPUT_NAME] |= {2: "height", 3: "width"}
                    for name in names:
                        axes[name] |= {2: "out_height", 3: "out_width"}
                torch.onnx.export(
                    model,
                    (example,),
                    buffer,
                    input_names=[INPUT_NAME],
                    output_names=list(names),
                    opset_version=opset,
                    dynamic_axes=axes if dynamic_batch or dynamic_size else None,
                    dynamo=False,
                )
            return buffer.read_bytes()
        finally:
            folder.cleanup()


#: the export's own check, relative to the largest output magnitude (≥ 1): it catches a wrong graph
#: (a padding or pooling traced wrongly is off by far more). Exact float32 parity is the parity
#: test's: through ResNet-101, PyTorch's float32 itself is ~1e-4 of the logits from float64.
EXPORT_TOLERANCE = 1e-3


def max_difference(reference: Any, outputs: Any) -> float:
    """The largest absolute difference between two outputs (tensors, or tuples of them), divided by
    the reference's largest magnitude when that exceeds 1 (float32 keeps ~7 significant digits)."""
    refs = reference if isinstance(reference, (tuple, list)) else (reference,)
    outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    if len(refs) != len(outs):
        return float("inf")
    worst = 0.0
    for ref, out in zip(refs, outs, strict=True):
        ref, out = torch.as_tensor(ref).float(), torch.as_tensor(out).float()
        if ref.shape != out.shape:
            return float("inf")
        scale = max(1.0, float(ref.abs().max()))
        worst = max(worst, float((ref - out).abs().max()) / scale)
    return worst


def _parity_problem(data: bytes, example: torch.Tensor, reference: Any) -> str | None:
    """Why the exported graph ``data`` is not the model (onnxruntime fails to load or run it, or its
    output on ``example`` differs from ``reference``), or ``None``."""
    ort = _require("onnxruntime")
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        outputs = session.run(None, {INPUT_NAME: example.numpy()})
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"onnxruntime cannot run the graph ({str(exc)[:200]})"
    difference = max_difference(reference, [torch.from_numpy(o) for o in outputs])
    if difference > EXPORT_TOLERANCE:
        return f"onnxruntime's output differs from the model's by {difference:.2e}"
    return None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``cnnkit.*`` metadata of an ONNX file, without the prefix (no weights are read)."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    return {k.removeprefix(KEY_PREFIX): v for k, v in props.items() if k.startswith(KEY_PREFIX)}


class OnnxModel:
    """An exported run read back: ``session`` (onnxruntime, CPU), ``meta`` (the ``DataMeta``),
    ``task`` (rebuilt with its options, and given what its decoding needs from the metadata: the
    detector's anchors and stride), ``metadata``. Calling it on a float (N, C, H, W) tensor returns
    the raw outputs as torch tensors in the form the model returns them (the task view's
    ``model_output``: a tensor, a localizer's dict), so ``task.decode`` takes them."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        from cnnkit.data.datasets import DataMeta
        from cnnkit.deploy.views import get_view
        from cnnkit.tasks import get_task

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX model ({exc})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {
            k.removeprefix(KEY_PREFIX): v for k, v in props.items() if k.startswith(KEY_PREFIX)
        }
        for key in ("task", "data"):
            if key not in self.metadata:
                raise ValueError(
                    f"{self.path}: metadata field '{KEY_PREFIX}{key}' is missing; expected a file "
                    "written by `cnnkit export`"
                )
        where = f"{self.path} (metadata {KEY_PREFIX}data)"
        self.meta: DataMeta = DataMeta.from_config(json.loads(self.metadata["data"]), where)
        size = json.loads(self.metadata.get("input_size", "null")) or list(self.meta.input_size)
        if tuple(size) != self.meta.input_size:  # exported at another size than the data's
            from dataclasses import replace

            c, h, w = (int(v) for v in size)
            self.meta = replace(self.meta, input_size=(c, h, w))
        self.task: Task = get_task(
            self.metadata["task"], **json.loads(self.metadata.get("task_options", "{}"))
        )
        self.view = get_view(self.task.name)
        try:
            self.view.prepare_task(self.task, self.metadata)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor | np.ndarray) -> Any:
        array = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else x
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(array, np.float32)})
        return self.view.model_output([torch.from_numpy(o) for o in outputs])
