"""Colour correction of the decoded image against the preprocessed input.

Both work on [B, C, H, W] tensors in [0, 1] and return unclamped results
(the caller clamps), as the reference (borrowed from StableSR) does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mean_std(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(*x.shape[:2], -1)
    return flat.mean(dim=2)[..., None, None], (flat.var(dim=2) + eps).sqrt()[..., None, None]


def adain(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per channel: (x - mean(x)) / std(x) * std(ref) + mean(ref); std = sqrt(unbiased var + 1e-5)."""
    xm, xs = _mean_std(x)
    rm, rs = _mean_std(ref)
    return (x - xm) / xs * rs + rm


def _blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    k = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=x.dtype, device=x.device) / 16
    c = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="replicate")
    return F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c, dilation=radius)


def _split(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low): 5 dilated blurs (radius 2^i); high sums what each blur removed."""
    high = torch.zeros_like(x)
    for i in range(levels):
        low = _blur(x, 2**i)
        high += x - low
        x = low
    return high, x


def wavelet(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """High frequencies of x plus the low frequencies of ref."""
    return _split(x)[0] + _split(ref)[1]


def color_fix(x: torch.Tensor, ref: torch.Tensor, kind: str) -> torch.Tensor:
    """Dispatch on the request's ``color_fix_type``: "adain", "wavelet" or "none"."""
    if kind == "adain":
        return adain(x, ref)
    if kind == "wavelet":
        return wavelet(x, ref)
    if kind == "none":
        return x
    raise ValueError(f"color_fix_type: expected 'none', 'wavelet' or 'adain', got {kind!r}")
