"""Image pre- and post-processing exactly as the reference predictor does it,
plus fast image encoding for results.

prepare: RGB; bicubic to ceil(side*scale) (the target size) when scale != 1;
bicubic up so the short side is at least S (each side ceil(side*S/short));
Lanczos down to multiples of 64 (the diffusion resolution).
finalize: clamp to [0,1], x*255 truncated to uint8, Lanczos to the target size.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def prepare(image: Image.Image, scale: float, min_short: int) -> tuple[Image.Image, tuple[int, int]]:
    """(diffusion-resolution image, target (w, h)) for an input image."""
    img = image.convert("RGB")
    if scale != 1:
        img = img.resize(tuple(math.ceil(s * scale) for s in img.size), Image.BICUBIC)
    target = img.size
    short = min(img.size)
    if short < min_short:
        r = min_short / short
        img = img.resize(tuple(math.ceil(s * r) for s in img.size), Image.BICUBIC)
    img = img.resize(tuple(s // 64 * 64 for s in img.size), Image.LANCZOS)
    return img, target


def to_tensor01(pil: Image.Image) -> torch.Tensor:
    """[1, 3, H, W] float32 in [0, 1] (uint8 / 255 computed in float64, as the reference)."""
    arr = np.asarray(pil.convert("RGB"), dtype=np.uint8) / 255.0
    return torch.from_numpy(arr).float().clamp_(0, 1).permute(2, 0, 1)[None].contiguous()


def finalize(x01: torch.Tensor, target_size: tuple[int, int]) -> Image.Image:
    """[1, 3, H, W] in about [0, 1] -> PIL at target_size (truncating to uint8, then Lanczos)."""
    x = (x01.detach().float().clamp(0, 1)[0].permute(1, 2, 0) * 255).cpu().numpy()
    img = Image.fromarray(x.clip(0, 255).astype(np.uint8))
    return img.resize(tuple(target_size), Image.LANCZOS)


def encode_image(pil: Image.Image, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode with OpenCV (PNG ~10x faster than Pillow at 4096 px); fmt png|jpeg|webp."""
    fmt = fmt.lower()
    ext = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp"}.get(fmt)
    if ext is None:
        raise ValueError(f"output_format: expected 'png', 'jpeg' or 'webp', got {fmt!r}")
    bgr = cv2.cvtColor(np.asarray(pil.convert("RGB")), cv2.COLOR_RGB2BGR)
    flags = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, quality], ".webp": [cv2.IMWRITE_WEBP_QUALITY, quality]}.get(ext, [])
    ok, buf = cv2.imencode(ext, bgr, flags)
    if not ok:  # pragma: no cover - OpenCV without the codec
        out = io.BytesIO()
        pil.convert("RGB").save(out, format=fmt.upper().replace("JPG", "JPEG"), quality=quality)
        return out.getvalue()
    return buf.tobytes()


def save_image(pil: Image.Image, path: str | Path, quality: int = 95) -> Path:
    """Write by extension (.png, .jpg/.jpeg, .webp); no extension means PNG (".png" is added)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        path, suffix = path.with_suffix(".png"), ".png"
    if suffix not in FORMATS:
        raise ValueError(f"output path: unsupported extension {suffix!r}; use one of {sorted(FORMATS)}")
    path.write_bytes(encode_image(pil, FORMATS[suffix], quality))
    return path
