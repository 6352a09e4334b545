"""``cnnkit detect RUN IMAGE... --out DIR``: a detection run's boxes on image files.

Each image is preprocessed as the run's validation images were (``DataMeta.preprocess``: stretched
to the input size for the scenes), detected, and its boxes are mapped back to the file's own pixels.
``DIR`` receives one PNG per image with the boxes, labels and scores drawn (those scoring at least
``--score-threshold``), ``detections.json`` in COCO's result format (``image_id``, ``category_id``,
``bbox`` as [x, y, w, h] pixels, ``score``: every detection the task decodes, since mAP needs the
low-scoring tail) and ``images.json`` with COCO's ``images`` (id, file name, width, height) and
``categories`` (the class indices as ids, with their names) that the results refer to.

``cnnkit detect --onnx model.onnx IMAGE... --out DIR`` does the same with a file written by
``cnnkit export`` on onnxruntime (the CPU): the graph gives the raw grid, the task decodes it with
the anchors and stride recorded in the file, as here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnkit.cli import CLIError
from cnnkit.cli._common import add_run_and_images

BEST, LAST = "best.safetensors", "last.safetensors"  # cnnkit.train.rundir's names (a test checks)
RESULTS, IMAGES = "detections.json", "images.json"


def register(p: argparse.ArgumentParser) -> None:
    add_run_and_images(p, "detect")
    p.add_argument("--out", required=True, help="folder for the drawn images and the JSON files")
    p.add_argument(
        "--score-threshold", type=float, default=0.3, help="draw detections scoring at least this"
    )
    p.add_argument("--checkpoint", choices=[BEST, LAST], default=BEST)
    p.add_argument("--device", default="auto", help="for a run's PyTorch model (--onnx: the CPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from cnnkit.cli._common import ImageFiles, run_or_onnx
    from cnnkit.device import pick_device
    from cnnkit.io import atomic_write_bytes
    from cnnkit.viz.detection import draw_detections, one_label_per_box, save_png

    paths, model, task, meta = run_or_onnx(args.run, args.images, args.onnx, args.checkpoint)
    if task.name != "detect":
        source = args.onnx or args.run
        raise CLIError(f"{source}: a {task.name} run; `cnnkit detect` takes detect runs")
    device = torch.device("cpu")
    if args.onnx is None:  # the OnnxModel runs on onnxruntime's CPU provider
        device = pick_device(args.device)
        model = model.to(device).eval()
        task.setup(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, height, width = meta.input_size
    images: list[dict] = []
    results: list[dict] = []
    files = ImageFiles(paths, meta.channels)
    for path, image in files:
        with torch.no_grad():
            x = meta.preprocess(image).unsqueeze(0).to(device)
            found = {k: v.cpu() for k, v in task.decode(model(x))[0].items()}
        # input pixels → the file's pixels (the stretch policy scales each axis on its own)
        file_h, file_w = image.shape[-2:]
        scale = torch.tensor([file_w / width, file_h / height] * 2)
        found["boxes"] = found["boxes"] * scale
        image_id = len(images) + 1
        images.append(
            {"id": image_id, "file_name": str(path), "width": int(file_w), "height": int(file_h)}
        )
        for box, score, label in zip(
            found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                    "score": round(float(score), 5),
                }
            )
        drawn = draw_detections(image, found, meta.class_names, args.score_threshold)
        target = out / f"{Path(path).stem}.png"
        save_png(drawn, target)
        best = one_label_per_box(found)
        shown = int((best["scores"] >= args.score_threshold).sum())
        print(f"{path}: {shown} detection(s) >= {args.score_threshold:g} -> {target}")
        for line in task.format_prediction(best, meta.class_names, top=shown):
            print(f"  {line}")
    categories = [{"id": i, "name": name} for i, name in enumerate(meta.class_names)]
    atomic_write_bytes(out / RESULTS, (json.dumps(results) + "\n").encode())
    atomic_write_bytes(
        out / IMAGES,
        (json.dumps({"images": images, "categories": categories}, indent=1) + "\n").encode(),
    )
    print(f"COCO results in {out / RESULTS} ({len(results)} detections), images in {out / IMAGES}")
    return 1 if files.failures else 0
