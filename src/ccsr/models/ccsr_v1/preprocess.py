"""Image pre- and post-processing exactly as the reference predictor does it.

prepare: RGB; bicubic to ceil(side*scale) (the target size) when scale != 1;
bicubic up so the short side is at least S (each side ceil(side*S/short));
Lanczos down to multiples of 64 (the diffusion resolution).
finalize: clamp to [0,1], x*255 truncated to uint8, Lanczos to the target size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ccsr.engine.images import to_tensor01  # noqa: F401 (the engine reads it from here)


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


def finalize(x01: torch.Tensor, target_size: tuple[int, int]) -> Image.Image:
    """[1, 3, H, W] in about [0, 1] -> PIL at target_size (truncating to uint8, then Lanczos)."""
    x = (x01.detach().float().clamp(0, 1)[0].permute(1, 2, 0) * 255).cpu().numpy()
    img = Image.fromarray(x.clip(0, 255).astype(np.uint8))
    return img.resize(tuple(target_size), Image.LANCZOS)


