"""The README's super-resolution table: the shipped ×2 and ×4 weights against bicubic on the
held-out photos (``cnnkit.data.photos.HELD_OUT``: never trained on), and a crop picture.

For each photo and scale: the photo cropped to a multiple of the scale is the original; its
low-resolution version is PIL's bicubic downscaling (``cnnkit.data.superres.low_resolution``); it is
upscaled back by PIL's bicubic and by cnnkit (``cnnkit.pretrained.superres``), and both are scored
against the original on Y (ITU-R BT.601) with a border of ``scale`` pixels left out: PSNR and SSIM
as ``cnnkit.metrics`` computes them (torchmetrics; skimage agrees, tests/test_superres.py).
``--crop`` writes ``docs/images/superres_crop.png``: bicubic | cnnkit | original of one region.

Usage: ``OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/superres_table.py``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from peers import cpu_line

ROOT = Path(__file__).resolve().parents[1]
CROP = {"photo": "astronaut", "scale": 4, "box": (150, 50, 270, 170)}  # left, top, right, bottom
CROP_FILE = ROOT / "docs" / "images" / "superres_crop.png"


def measure(photo: torch.Tensor, model: torch.nn.Module, scale: int) -> dict[str, float]:
    """Bicubic's and the model's PSNR/SSIM on Y of ``photo`` (uint8 RGB) at ``scale``."""
    from cnnkit.data.superres import low_resolution, y_channel
    from cnnkit.layers.upsample import bicubic_resize
    from cnnkit.metrics import psnr, ssim
    from cnnkit.pretrained.superres import upscale_y

    hr, lr = low_resolution(photo, scale)
    hr_y, lr_y = y_channel(hr)[None], y_channel(lr)[None]
    bicubic = bicubic_resize(lr_y, hr_y.shape[-2:]).clamp(0, 1)
    upscale_y(model, lr_y)  # warm-up: the timed pass is the second
    start = time.perf_counter()
    ours = upscale_y(model, lr_y)
    seconds = time.perf_counter() - start
    return {
        "bicubic_psnr": psnr(bicubic, hr_y, border=scale).item(),
        "bicubic_ssim": ssim(bicubic, hr_y, border=scale).item(),
        "psnr": psnr(ours, hr_y, border=scale).item(),
        "ssim": ssim(ours, hr_y, border=scale).item(),
        "seconds": seconds,
    }


def crop_picture(models: dict[int, torch.nn.Module]) -> None:
    """bicubic | cnnkit | original of ``CROP``'s region, in RGB (chroma bicubic for both)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.data.photos import sample_photo
    from cnnkit.data.superres import low_resolution, rgb_to_ycbcr, y_channel, ycbcr_to_rgb
    from cnnkit.io import atomic_write
    from cnnkit.layers.upsample import bicubic_resize
    from cnnkit.metrics import psnr
    from cnnkit.pretrained.superres import upscale

    scale = CROP["scale"]
    photo = torch.from_numpy(sample_photo(CROP["photo"])).permute(2, 0, 1).contiguous()
    hr, lr = low_resolution(photo, scale)
    ycbcr = rgb_to_ycbcr(lr)[None]
    bicubic = ycbcr_to_rgb(bicubic_resize(ycbcr, hr.shape[-2:]))[0].clamp(0, 1)
    bicubic = bicubic.mul(255).round().to(torch.uint8)
    ours = upscale(models[scale], lr)
    left, top, right, bottom = CROP["box"]
    panels = [("bicubic", bicubic), ("cnnkit", ours), ("original", hr)]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (title, image) in zip(axes, panels, strict=True):
        part = image[:, top:bottom, left:right]
        if title != "original":
            db = psnr(y_channel(part)[None], y_channel(hr[:, top:bottom, left:right])[None]).item()
            title = f"{title} ({db:.2f} dB)"
        ax.imshow(part.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{CROP['photo']} (held out), x{scale}: crop {right - left}x{bottom - top} px")
    fig.tight_layout()
    CROP_FILE.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(CROP_FILE, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    print(f"wrote {CROP_FILE.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-crop", action="store_true", help="skip the crop picture")
    args = parser.parse_args()
    from cnnkit.data.photos import HELD_OUT, sample_photo
    from cnnkit.pretrained.superres import load_superres

    torch.set_num_threads(1)
    models = {scale: load_superres(scale) for scale in (2, 4)}
    print(f"{cpu_line()}, 1 thread, fp32; Y (BT.601), border crop = scale")
    print(
        "| photo | size | scale | bicubic PSNR | bicubic SSIM | cnnkit PSNR | cnnkit SSIM "
        "| gain (dB) | cnnkit time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rows: dict[int, list[dict[str, float]]] = {scale: [] for scale in models}
    for name in HELD_OUT:
        photo = torch.from_numpy(sample_photo(name)).permute(2, 0, 1).contiguous()
        for scale, model in models.items():
            m = measure(photo, model, scale)
            rows[scale].append(m)
            print(
                f"| {name} | {photo.shape[2]}x{photo.shape[1]} | x{scale} "
                f"| {m['bicubic_psnr']:.2f} | {m['bicubic_ssim']:.4f} "
                f"| {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr'] - m['bicubic_psnr']:+.2f} "
                f"| {m['seconds'] * 1000:.0f} ms |"
            )
    for scale, measured in rows.items():
        mean = {k: sum(m[k] for m in measured) / len(measured) for k in measured[0]}
        print(
            f"| mean of {len(measured)} | | x{scale} | {mean['bicubic_psnr']:.2f} "
            f"| {mean['bicubic_ssim']:.4f} | {mean['psnr']:.2f} | {mean['ssim']:.4f} "
            f"| {mean['psnr'] - mean['bicubic_psnr']:+.2f} | |"
        )
    if not args.no_crop:
        crop_picture(models)


if __name__ == "__main__":
    main()
