"""Tiled diffusion: sliding windows over the latent, blended noise predictions.

Sizes here are in latent units (the request's pixel sizes divided by 8).
The condition latent is computed once for the whole image by the caller and
sliced per tile; the reference instead re-encodes each tile's pixels at every
step, so results differ slightly where a tile's encoder receptive field
reaches past its edge.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from ccsr.errors import Cancelled

BatchedEpsFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """0, s, 2s, ... while <= L-T, plus L-T when (L-T) % s != 0; [0] when L <= T."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if (length - tile) % stride:
        starts.append(length - tile)
    return starts


def tile_origins(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(y, x) of every tile, rows outer, columns inner (the reference's order)."""
    return [(y, x) for y in window_starts(height, tile, stride) for x in window_starts(width, tile, stride)]


def gaussian_weights(tile: int) -> torch.Tensor:
    """The reference's fixed Gaussian window, float64 [tile, tile].

    g(k) = exp(-(k-mid)^2 / L^2 / (2*0.01)) / sqrt(2*pi*0.01), with mid = (L-1)/2
    along x but L/2 along y (the reference's asymmetry, kept); w = outer(gy, gx).
    """
    var = 0.01
    k = np.arange(tile, dtype=np.float64)

    def g(mid: float) -> np.ndarray:
        return np.exp(-((k - mid) ** 2) / (tile * tile) / (2 * var)) / math.sqrt(2 * math.pi * var)

    return torch.from_numpy(np.outer(g(tile / 2), g((tile - 1) / 2)))


def uniform_weights(tile: int) -> torch.Tensor:
    """Plain averaging ("mix" mode)."""
    return torch.ones(tile, tile, dtype=torch.float64)


def tiled_eps(
    x: torch.Tensor,
    cond: torch.Tensor,
    i: int,
    eps_fn: BatchedEpsFn,
    tile: int,
    stride: int,
    weights: torch.Tensor,
    batch_size: int = 1,
    cancel: Optional[Callable[[], bool]] = None,
) -> torch.Tensor:
    """Noise prediction for the whole latent from overlapping tiles.

    Tiles of x [B,C,H,W] and of the condition latent (same B, H, W) are
    stacked ``batch_size`` tiles at a time (tile-major: each tile's B items
    together) and passed to ``eps_fn(x_batch, cond_batch, i)``; results are
    blended: eps = sum(w * eps_tile) / sum(w). ``cancel`` is
    checked before every batch. Pass ``weights`` as float32 on x's device to
    spare a conversion per call.
    """
    per, _, h, w = x.shape
    if h < tile or w < tile or cond.shape[0] != per:
        raise ValueError(f"tiled_eps needs latents at least {tile}x{tile} and one condition each, got "
                         f"{tuple(x.shape)} and {tuple(cond.shape)}")
    wt = weights.to(device=x.device, dtype=torch.float32)
    acc = torch.zeros_like(x, dtype=torch.float32)
    norm = torch.zeros((h, w), device=x.device, dtype=torch.float32)
    origins = tile_origins(h, w, tile, stride)
    for b in range(0, len(origins), batch_size):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        part = origins[b : b + batch_size]
        xs = torch.cat([x[:, :, y : y + tile, c : c + tile] for y, c in part])
        cs = torch.cat([cond[:, :, y : y + tile, c : c + tile] for y, c in part])
        out = eps_fn(xs, cs, i).float()
        for k, (y, c) in enumerate(part):
            acc[:, :, y : y + tile, c : c + tile] += out[k * per : (k + 1) * per] * wt
            norm[y : y + tile, c : c + tile] += wt
    return (acc / norm).to(x.dtype)


def mix_decode(
    z: torch.Tensor,
    ref01: torch.Tensor,
    tile: int,
    stride: int,
    decode01: Callable[[torch.Tensor], torch.Tensor],
    fix: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """"mix" mode's decode: each latent tile decoded to [0,1] pixels by ``decode01``,
    colour-fixed by ``fix(tile_pixels, ref_tile)`` against its own input tile,
    then averaged in pixel space (as ``sample_with_mixdiff_ccsr``)."""
    _, _, h, w = z.shape
    out = torch.zeros_like(ref01, dtype=torch.float32)
    count = torch.zeros(ref01.shape[-2:], device=ref01.device, dtype=torch.float32)
    for y, c in tile_origins(h, w, tile, stride):
        py, pc, pt = y * 8, c * 8, tile * 8
        pix = decode01(z[:, :, y : y + tile, c : c + tile])
        pix = fix(pix, ref01[:, :, py : py + pt, pc : pc + pt])
        out[:, :, py : py + pt, pc : pc + pt] += pix.float()
        count[py : py + pt, pc : pc + pt] += 1
    return out / count
