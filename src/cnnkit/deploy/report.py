"""``cnnkit report RUN``: one self-contained HTML file about a run: no other file and no network is
needed to open it (images are inlined as base64 ``data:`` URIs, the style is inline).

Sections: the run's configuration; the metric curves (``viz.training.history_figure`` over
``metrics.jsonl``/``steps.jsonl``); the task's tables (its view's: for classification the test
metrics, per-class accuracy and the confusion matrix, computed on the test split; localization's
accuracy, mean IoU and hit rate, also per true class; detection's COCO summary and AP per class;
segmentation's pixel accuracy, mean IoU and IoU per class); test images with
their predictions drawn by the task's view; and the feature maps of the first convolution layers for
one test image.
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from cnnkit.io import atomic_write_bytes

#: the report's default name inside the run directory
REPORT = "report.html"

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.2em .6em;
text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}img{max-width:100%}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
"""


def _figure(uri: str, caption: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _curves(history: list[dict[str, Any]], steps: list[dict[str, Any]], metric: str) -> str:
    from cnnkit.deploy.features import data_uri
    from cnnkit.viz.training import history_figure, plt

    if not history:
        return "<p>no epoch was recorded.</p>"
    fig = history_figure(history, steps=steps, metric=metric)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return _figure(data_uri(buffer.getvalue()), f"loss and {metric} per epoch")


def write_report(
    run_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    samples: int = 16,
    feature_layers: int = 3,
    evaluate: bool = True,
) -> Path:
    """Write the HTML report of the run in ``run_path`` to ``out`` (default ``RUN/report.html``).

    With ``evaluate`` the test split is loaded again (``load_data_from_meta``) for the tables that
    need the model (the confusion matrix), the drawn predictions and the feature maps; without it,
    or when the data cannot be loaded, the report says so and shows the rest."""
    from torchvision.utils import make_grid

    from cnnkit.cli._common import load_run
    from cnnkit.deploy.features import capture, conv_layers, data_uri, maps_grid, png_bytes
    from cnnkit.deploy.views import get_view, to_uint8_rgb
    from cnnkit.train import rundir

    run, config, model, task, meta = load_run(Path(run_path))
    view = get_view(task.name)
    names = list(meta.class_names)
    test_path = run / rundir.TEST_METRICS
    metrics = json.loads(test_path.read_text()) if test_path.is_file() else {}
    parts = [f"<h1>cnnkit run {html.escape(str(run.path))}</h1>"]
    model_name = config.get("model", {}).get("name", "?")
    parts.append(
        f"<p>model <b>{html.escape(str(model_name))}</b>, task <b>{html.escape(task.name)}</b>, "
        f"data <b>{html.escape(meta.name)}</b> ({len(names)} classes, input "
        f"{' × '.join(map(str, meta.input_size))})</p>"
    )
    parts.append("<h2>Metric curves</h2>")
    parts.append(_curves(run.read_metrics(), run.read_steps(), task.history_metric()))
    parts.append("<h2>Test results</h2>")
    if not metrics:
        parts.append(f"<p>{html.escape(str(test_path))} is missing: the run did not finish.</p>")
    parts.extend(table.to_html() for table in view.tables(metrics, names))

    test = None
    if evaluate:
        from cnnkit.data.datasets import load_data_from_meta

        try:
            data = load_data_from_meta(meta, workers=0)
            test = data.batches("test", 256, device=torch.device("cpu"), workers=0)
        except (OSError, ValueError) as exc:
            parts.append(
                f"<p>the test split could not be loaded again ({html.escape(str(exc))}).</p>"
            )
    if test is not None:
        parts.extend(table.to_html() for table in view.extra_tables(model, task, test, names))
        x, y = next(iter(test))
        x = x[:samples]
        with torch.no_grad():
            decoded = task.decode(model.eval()(x))
        targets = {k: v[:samples] for k, v in y.items()} if isinstance(y, dict) else y
        drawn = view.draw_samples(to_uint8_rgb(meta.to_display(x)), decoded, targets, names)
        grid = make_grid(drawn, nrow=8, padding=2, pad_value=255)
        parts.append("<h2>Sample predictions</h2>")
        parts.append(_figure(data_uri(png_bytes(grid)), f"the first {len(x)} test images"))
        layers = conv_layers(model)[:feature_layers]
        maps = capture(model, x[:1], layers)
        parts.append("<h2>Feature maps</h2>")
        parts.append(
            _figure(
                data_uri(
                    png_bytes(
                        view.draw(to_uint8_rgb(meta.to_display(x[:1])), decoded[:1], names)[0]
                    )
                ),
                "the image",
            )
        )
        for name in layers:
            channels = maps[name].shape[1]
            caption = f"layer {name}: the first {min(16, channels)} of {channels} maps"
            parts.append(_figure(data_uri(png_bytes(maps_grid(maps[name][0]))), caption))
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cnnkit report: {html.escape(str(model_name))}</title><style>{STYLE}</style>"
        f"</head><body>{''.join(parts)}</body></html>\n"
    )
    target = Path(out) if out is not None else run / REPORT
    return atomic_write_bytes(target, page.encode("utf-8"))
