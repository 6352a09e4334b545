"""``cnnkit data``: make Fashion-MNIST scene datasets, draw any annotated dataset, convert formats.

- ``cnnkit data make-scenes --out DIR --n 5000 --split train --format coco`` writes ``DIR/images/``
  (greyscale PNGs), the annotations and ``DIR/preview.png`` (``cnnkit.data.scenes``);
- ``cnnkit data show PATH --out preview.png`` draws the first images with their boxes and masks;
- ``cnnkit data convert PATH --to yolo --out DIR`` rewrites a dataset in another format, images
  copied (``cnnkit.data.annotations``);
- ``cnnkit data photos --out DIR [--held-out]`` writes the photos (colour and grey) scikit-learn
  and scikit-image install as PNGs, a folder for ``--task superres --data photos:DIR``
  (``cnnkit.data.photos``; ``--held-out``: the README's test photos instead; each PNG written
  atomically).

Every dataset folder is built under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cnnkit.cli import CLIError

FORMATS = ("coco", "voc", "yolo", "via", "labelme")  # cnnkit.data.annotations.FORMATS, not imported
SPLITS = ("train", "valid", "test")  # cnnkit.data.scenes.SPLITS
BACKGROUNDS = ("plain", "noise", "clutter", "mixed")  # cnnkit.data.scenes.BACKGROUNDS
PREVIEW = "preview.png"
MASK_FORMATS = ("coco", "labelme")  # the formats cnnkit writes masks in


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Datasets with boxes and masks: Fashion-MNIST scenes and the formats "
        "annotation tools write (COCO, Pascal VOC, YOLO, VIA, LabelMe)."
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    make = actions.add_parser(
        "make-scenes",
        help="write a dataset of Fashion-MNIST scenes with boxes and masks",
        description="Compose Fashion-MNIST items onto canvases (seeded, deterministic) and write "
        "the images, their annotations and a preview PNG into a new folder.",
    )
    make.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    make.add_argument("--n", type=int, default=5000, help="number of scenes (default 5000)")
    make.add_argument(
        "--split", choices=SPLITS, default="train", help="Fashion-MNIST split to draw from"
    )
    make.add_argument("--format", choices=FORMATS, default="coco")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--canvas", type=int, default=128, help="canvas side in pixels (default 128)")
    make.add_argument(
        "--max-objects", type=int, default=6, help="items per scene, at most (1: localization)"
    )
    make.add_argument("--background", choices=BACKGROUNDS, default="plain")
    make.add_argument("--preview", type=int, default=8, help="scenes in preview.png (default 8)")

    show = actions.add_parser(
        "show",
        help="draw an annotated dataset's first images with boxes and masks",
        description="Read a dataset in any supported format and draw its first images.",
    )
    show.add_argument("path", help="annotation file or dataset folder")
    show.add_argument("--format", choices=FORMATS, default=None, help="default: detected")
    show.add_argument("--out", default=PREVIEW, help="PNG to write (default preview.png)")
    show.add_argument("--count", type=int, default=8, help="images to draw (default 8)")
    show.add_argument(
        "--skip-invalid", action="store_true", help="skip bad records, warn at the end"
    )

    convert = actions.add_parser(
        "convert",
        help="rewrite an annotated dataset in another format",
        description="Read a dataset and write it, images copied, in another format. Masks are "
        "kept by COCO and LabelMe; VOC and YOLO hold boxes, and VIA is written with rectangles.",
    )
    convert.add_argument("path", help="annotation file or dataset folder")
    convert.add_argument(
        "--format", choices=FORMATS, default=None, help="input format (default: detected)"
    )
    convert.add_argument("--to", choices=FORMATS, required=True, help="output format")
    convert.add_argument(
        "--out", required=True, help="folder to create (must not exist, or be empty)"
    )
    convert.add_argument(
        "--skip-invalid", action="store_true", help="skip bad records, warn at the end"
    )

    photo_parser = actions.add_parser(
        "photos",
        help="write the photos scikit-learn and scikit-image install (superres training)",
        description="Write the real photos (colour and grey) that scikit-learn and scikit-image "
        "install as PNGs: the training photos, or with --held-out the photos the README measures on.",
    )
    photo_parser.add_argument(
        "--out", required=True, help="folder to write NAME.png into (created)"
    )
    photo_parser.add_argument(
        "--held-out", action="store_true", help="the held-out test photos instead of the others"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    actions = {"make-scenes": make_scenes, "show": show, "convert": convert, "photos": photos}
    return actions[args.action](args)


def photos(args: argparse.Namespace) -> int:
    from cnnkit.data.photos import write_sample_photos

    paths = write_sample_photos(args.out, held_out=args.held_out)
    which = "held-out" if args.held_out else "training"
    print(f"wrote {len(paths)} {which} photos to {args.out}: {', '.join(p.stem for p in paths)}")
    return 0


def print_warnings(warnings: list[str]) -> None:
    for message in warnings:
        print(f"warning: {message}")
    if warnings:
        print(f"{len(warnings)} invalid record(s) skipped")


def make_scenes(args: argparse.Namespace) -> int:
    from cnnkit.data.annotations import write_dataset
    from cnnkit.data.scenes import make_scenes as generate
    from cnnkit.viz.annotations import save_annotation_grid

    if args.n < 1 or args.canvas < 32 or not 1 <= args.max_objects <= 255:
        raise CLIError(
            f"--n {args.n}, --canvas {args.canvas}, --max-objects {args.max_objects}: "
            "expected n >= 1, canvas >= 32, 1 <= max-objects <= 255"
        )
    start = time.perf_counter()
    scenes = generate(
        args.n,
        args.split,
        args.seed,
        canvas=args.canvas,
        max_objects=args.max_objects,
        background=args.background,
    )
    generated = time.perf_counter() - start
    count = min(args.preview, len(scenes))

    def write_images(folder: Path) -> None:
        scenes.save_images(folder)
        if count:  # inside the temporary folder, so the preview appears with the rest
            targets = [scenes.target(i) for i in range(count)]
            images = [scenes.images[i] for i in range(count)]
            save_annotation_grid(folder.parent / PREVIEW, images, targets, scenes.classes)

    out = write_dataset(scenes.to_annotations(), args.out, args.format, write_images=write_images)
    objects = sum(len(labels) for labels in scenes.labels)
    print(
        f"wrote {out}: {len(scenes)} {args.split} scenes ({objects} objects, "
        f"{args.canvas}x{args.canvas}, {args.background} background) as {args.format}; "
        f"generated in {generated:.1f} s, {time.perf_counter() - start:.1f} s in all"
    )
    if count:
        print(f"preview: {out / PREVIEW}")
    return 0


def show(args: argparse.Namespace) -> int:
    from cnnkit.data.annotations import read_annotations
    from cnnkit.viz.annotations import preview_annotations

    if args.count < 1:
        raise CLIError(f"--count {args.count}: expected a positive integer")
    annotations = read_annotations(args.path, args.format, skip_invalid=args.skip_invalid)
    if not annotations.images:
        raise CLIError(f"{args.path}: no images to draw")
    path = preview_annotations(annotations, args.out, count=args.count)
    objects = sum(len(image) for image in annotations.images)
    print(
        f"{args.path}: {len(annotations)} images, {objects} objects, {len(annotations.classes)} "
        f"classes; drew {min(args.count, len(annotations))} into {path}"
    )
    print_warnings(annotations.warnings)
    return 0


def convert(args: argparse.Namespace) -> int:
    from cnnkit.data.annotations import read_annotations, write_dataset

    annotations = read_annotations(args.path, args.format, skip_invalid=args.skip_invalid)
    out = write_dataset(annotations, args.out, args.to)
    objects = sum(len(image) for image in annotations.images)
    print(f"wrote {out}: {len(annotations)} images, {objects} objects as {args.to}")
    with_masks = sum(image.masks is not None for image in annotations.images)
    if with_masks and args.to not in MASK_FORMATS:
        print(f"note: the masks of {with_masks} images are not written ({args.to} keeps boxes)")
    print_warnings(annotations.warnings)
    return 0
