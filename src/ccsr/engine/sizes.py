"""Output sizes, shared by every upscaler (and the limits checked before one runs)."""

from __future__ import annotations

import math


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Output size for an input size: ceil(side * scale), as the reference does."""
    if scale == 1:
        return width, height
    return math.ceil(width * scale), math.ceil(height * scale)
