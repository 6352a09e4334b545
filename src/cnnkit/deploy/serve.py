"""``cnnkit serve``'s web app (Starlette, run by uvicorn): pick or drop an image, see the run's
prediction from the task's view (the top-5 classes with bars; the box and class; the detections
drawn and listed; the segmentation overlay and each class's share of the pixels) and the feature
maps of a chosen convolution layer.

The page is plain HTML with a form (no script, no external file), so it works offline and is easy to
drive from a test. Uploads are checked by :mod:`cnnkit.deploy.uploads`; a refused or broken file
gets its message on the page (status 400) and the server goes on serving. Inference runs in a worker
thread (the event loop keeps answering), one request at a time per model (the feature-map hooks are
per model). Starlette and uvicorn are the optional extra ``serve``.
"""

from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnkit.deploy.uploads import UploadError, UploadLimits, decode_upload

if TYPE_CHECKING:
    from cnnkit.data.datasets import DataMeta
    from cnnkit.tasks import Task

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}
form{display:flex;gap:.8em;flex-wrap:wrap;align-items:center;padding:1em;background:#f4f6f8;
border-radius:8px}.error{color:#a00;background:#fee;padding:.8em;border-radius:6px}
.bar{display:flex;align-items:center;gap:.6em;margin:.25em 0}.name{width:11em}
.track{flex:1;background:#eee;height:1.1em;border-radius:3px}.fill{display:block;height:100%;
background:#3b82f6;border-radius:3px}.p{width:5em;text-align:right}
.result{display:flex;gap:2em;align-items:flex-start;margin-top:1em}.result>div{flex:1}
img.input{image-rendering:pixelated;width:196px;border:1px solid #ccc}
img.drawn{image-rendering:pixelated;max-width:100%;border:1px solid #ccc;margin-top:.6em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:middle;
border:1px solid #999}
"""


@dataclass
class ServedRun:
    """One run the app serves: its model (eval mode, CPU), task, data description, conv layers."""

    key: str
    path: Path
    model: torch.nn.Module
    task: Task
    meta: DataMeta
    layers: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_runs(paths: list[str | os.PathLike]) -> dict[str, ServedRun]:
    """Each run directory's best model, keyed by its folder name (``-2``… on a clash)."""
    from cnnkit.cli._common import load_run
    from cnnkit.deploy.features import conv_layers

    runs: dict[str, ServedRun] = {}
    for path in paths:
        run, _, model, task, meta = load_run(Path(path))
        key, n = run.path.name, 1
        while key in runs:
            n += 1
            key = f"{run.path.name}-{n}"
        runs[key] = ServedRun(key, run.path, model.eval(), task, meta, conv_layers(model))
    if not runs:
        raise ValueError("cnnkit serve: no run to serve")
    return runs


def predict_html(served: ServedRun, image: torch.Tensor, layer: str) -> str:
    """The result panel for one decoded uint8 image: the input as the model sees it, the task
    view's prediction and the feature maps of ``layer``."""
    from cnnkit.deploy.features import capture, data_uri, maps_grid, png_bytes
    from cnnkit.deploy.views import get_view

    view = get_view(served.task.name)
    x, shown = view.app_input(served.meta, image)
    x = x.unsqueeze(0)
    with served.lock, torch.no_grad():
        if layer not in served.layers:
            layer = served.layers[0] if served.layers else ""
        maps = capture(served.model, x, [layer]) if layer else {}
        output = served.model(x)
    decoded = served.task.decode(output)[0]
    parts = [
        '<div class="result"><div>',
        f'<img class="input" alt="the input as the model sees it" src="{data_uri(png_bytes(shown))}">',
        "</div><div>",
        view.result_html(decoded, served.meta.class_names, served.task, shown),
        "</div></div>",
    ]
    if layer:
        grid = maps_grid(maps[layer][0], limit=32)
        channels = maps[layer].shape[1]
        parts.append(
            f"<h3>feature maps of {html.escape(layer)} (first {min(32, channels)} of {channels})</h3>"
            f'<img id="maps" alt="feature maps" src="{data_uri(png_bytes(grid))}">'
        )
    return "".join(parts)


def page(runs: dict[str, ServedRun], chosen: str | None, layer: str | None, body: str) -> str:
    chosen = chosen if chosen in runs else next(iter(runs))
    run_options = "".join(
        f'<option value="{html.escape(k)}"{" selected" if k == chosen else ""}>'
        f"{html.escape(k)} ({html.escape(r.task.name)}, {len(r.meta.class_names)} classes)</option>"
        for k, r in runs.items()
    )
    layer_groups = "".join(
        f'<optgroup label="{html.escape(k)}">'
        + "".join(
            f'<option value="{html.escape(name)}"{" selected" if k == chosen and name == layer else ""}>'
            f"{html.escape(name)}</option>"
            for name in r.layers
        )
        + "</optgroup>"
        for k, r in runs.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>cnnkit serve</title>'
        f"<style>{STYLE}</style></head><body><h1>cnnkit serve</h1>"
        '<form method="post" action="/predict" enctype="multipart/form-data">'
        f'<label>run <select name="run" id="run">{run_options}</select></label>'
        '<label>image <input type="file" name="image" id="image" '
        'accept="image/png,image/jpeg,image/gif,image/webp,image/bmp"></label>'
        f'<label>feature maps of <select name="layer" id="layer">{layer_groups}</select></label>'
        '<button type="submit" id="submit">predict</button></form>'
        f'<div id="panel">{body}</div></body></html>\n'
    )


def create_app(runs: dict[str, ServedRun], limits: UploadLimits | None = None) -> Any:
    """The Starlette app: ``GET /`` the page, ``POST /predict`` the page with a result or an error,
    ``GET /health`` ``ok``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse
    from starlette.routing import Route

    from cnnkit.deploy.views import get_view

    limits = limits or UploadLimits()

    def error(
        message: str, chosen: str | None = None, layer: str | None = None, status: int = 400
    ) -> HTMLResponse:
        body = f'<p class="error" id="error">{html.escape(message)}</p>'
        return HTMLResponse(page(runs, chosen, layer, body), status_code=status)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page(runs, None, None, "<p>pick or drop an image, then predict.</p>"))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def predict(request: Request) -> HTMLResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes + 2**16:
            return error(
                f"the upload is larger than {limits.max_bytes / 2**20:.0f} MiB", status=413
            )
        try:
            async with request.form(max_files=1, max_fields=4, max_part_size=2**16) as form:
                chosen = str(form.get("run") or "")
                layer = str(form.get("layer") or "")
                upload = form.get("image")
                if upload is None or isinstance(upload, str) or not upload.filename:
                    return error("choose an image file first", chosen, layer)
                data = await upload.read(limits.max_bytes + 1)
        except Exception as exc:  # Starlette's multipart errors: a malformed or oversized form
            return error(f"the form could not be read ({exc})")
        served = runs.get(chosen) or next(iter(runs.values()))
        try:
            channels = get_view(served.task.name).upload_channels or served.meta.channels
            image = await run_in_threadpool(decode_upload, data, channels, limits)
            body = await run_in_threadpool(predict_html, served, image, layer)
        except UploadError as exc:
            return error(f"{upload.filename}: {exc}", served.key, layer)
        return HTMLResponse(page(runs, served.key, layer, body))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/predict", predict, methods=["POST"]),
        ]
    )
