"""Peak-memory estimate of a request, and the plan that makes it fit.

Before a request runs, :func:`plan` estimates the activation memory of its
three heavy stages (VAE encoder at the diffusion size, UNet + ControlNet at the
latent size and tile batch, VAE decoder at the output size) and, when the peak
would not fit the device's free memory, turns on tiled VAE, shrinks the VAE
tiles, lowers the diffusion tile batch and finally parks tiled-VAE tiles on
the CPU, in that order, until it fits. Tiled diffusion itself is never switched
on here: it changes the picture (the seed's noise order and the blending), so
it stays the user's choice; a request that does not fit even with every VAE
option is run as asked and, if memory does run out, the out-of-memory retry
and advice of the upscaler take over.

The estimate is a linear model: each stage's peak is a coefficient times a
"unit" (pixels x widest channel count x bytes per element). The coefficients
were measured on a CPU in fp32 with the tiny and the full-size architecture
by ``benchmarks/bench_memory.py`` (results in
``benchmarks/results/memory-calibration-cpu.json``) and rounded up with a
margin, so the estimate is above every measured peak. Half precision adds the
float32 copies GroupNorm32 makes of its input; that term is derived, not
measured (no GPU was available when this was written: ``benchmarks/gpu_check.py``
measures it on CUDA). Attention is assumed to use a memory-efficient SDPA
kernel (linear in the token count), which torch picks on CUDA and on CPUs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional

import torch

from ccsr.engine.memory import HEADROOM, K_DEC, K_ENC, K_NET, element_size, free_memory, measure_peak, weight_bytes  # noqa: F401 (re-exported)

from ccsr.models.ccsr_v1.params import UpscaleParams, diffusion_size, min_short_side, target_size

if TYPE_CHECKING:
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig

#: Peak activation bytes per unit, measured (fp32, CPU) and rounded up; see the module doc.
K_HELD = 3.0  # tiled VAE: full-image activations held between GroupNorms (per pixel x vae.ch x size)
K_IMG = 12.0  # float32 RGB copies of the output image (decode, colour fix, finalize): per pixel x 3 x 4 bytes
#: Smallest VAE tiles the planner goes down to (encoder: pixels; decoder: latent pixels).
MIN_ENCODER_TILE, MIN_DECODER_TILE = 256, 32
#: Padding of tiled VAE (pixels around encoder tiles, latent pixels around decoder tiles).
ENCODER_PAD, DECODER_PAD = 32, 11


@dataclass(frozen=True)
class MemoryPlan:
    """What a request will run with, and why."""

    tile_vae: bool
    tile_vae_encoder_size: int
    tile_vae_decoder_size: int
    tile_batch_size: int
    offload_vae: bool  # park tiled-VAE tiles on the CPU between GroupNorms
    stages: dict  # estimated peak activation bytes of encode / sampling / decode
    peak: int  # the largest stage, in bytes (weights not included: they are already resident)
    budget: Optional[int]  # bytes the plan was made for (None: no limit known)
    fits: bool
    changed: bool  # the plan differs from what the request asked for

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        gib = 1024 ** 3
        budget = "unknown" if self.budget is None else f"{self.budget / gib:.2f} GiB"
        vae = (f"tiled VAE (encoder {self.tile_vae_encoder_size} px, decoder {self.tile_vae_decoder_size} latent px"
               f"{', tiles parked on the CPU' if self.offload_vae else ''})" if self.tile_vae else "untiled VAE")
        return (f"memory plan: estimated peak {self.peak / gib:.2f} GiB of {budget} free, {vae}, "
                f"tile batch {self.tile_batch_size}{'' if self.fits else ' (does not fit even so: running the smallest plan)'}")


def _half_extra(unit_px_ch: float, dtype: torch.dtype) -> float:
    # GroupNorm32 makes a float32 copy of its input and a float32 output before casting back.
    return 0.0 if dtype == torch.float32 else 2 * unit_px_ch * 4


def net_bytes(config: CCSRConfig, latent_pixels: int, dtype: torch.dtype) -> float:
    """UNet + ControlNet of one network call over ``latent_pixels`` (batch x h x w).

    Plus two copies of the widest 3x3 convolution's weights: on a CPU, oneDNN
    reorders a convolution's weights at every call (measured: the full-size
    model's 256 px call adds 125 MB, mostly these copies; the tiny model's,
    whose weights are small, grows with the pixels alone). Counted on every
    device: on a GPU it is a small overestimate.
    """
    unit = latent_pixels * config.unet.model_channels
    widest = config.unet.model_channels * max(config.unet.channel_mult)
    weight_copies = 2 * widest * widest * 9 * element_size(dtype)
    return K_NET * unit * element_size(dtype) + _half_extra(unit, dtype) + weight_copies


def vae_bytes(config: CCSRConfig, pixels: int, dtype: torch.dtype, k: float) -> float:
    unit = pixels * config.vae.ch * config.vae.ch_mult[0]
    return k * unit * element_size(dtype) + _half_extra(unit, dtype)


def tiled_vae_bytes(config: CCSRConfig, height: int, width: int, tile: int, pad: int, dtype: torch.dtype,
                    k: float, offload: bool) -> float:
    """Tiled VAE at full resolution ``height`` x ``width`` with tiles of ``tile`` (+``pad``) in the same units.

    All tiles advance in lockstep, so between GroupNorms every tile's activation
    (and its resnet residual) is held: about the whole image's, plus the margins.
    Only the tile being computed has the transient activations of the untiled network.
    """
    ty, tx = min(height, tile + 2 * pad), min(width, tile + 2 * pad)
    n_y, n_x = math.ceil(height / tile), math.ceil(width / tile)
    padded = min(n_y * ty, height + 2 * pad * n_y) * min(n_x * tx, width + 2 * pad * n_x)
    transient = vae_bytes(config, ty * tx, dtype, k)
    held = 0.0 if offload else K_HELD * padded * config.vae.ch * config.vae.ch_mult[0] * element_size(dtype)
    return held + transient


def estimate(config: CCSRConfig, dtype: torch.dtype, p: UpscaleParams, width: int, height: int, *,
             tile_batch_size: int, tile_vae: bool, encoder_tile: int, decoder_tile: int,
             offload_vae: bool = False, batch: int = 1) -> dict[str, float]:
    """Peak activation bytes per stage of the request ``p`` on a ``width`` x ``height`` input
    (``batch`` such requests sampled together: untiled, they share each network call;
    tiled, each runs its own tile batches)."""
    dw, dh = diffusion_size(width, height, p.scale, min_short_side(p))
    tw, th = target_size(width, height, p.scale)
    lh, lw = dh // 8, dw // 8
    image = K_IMG * max(dw * dh, tw * th) * 3 * 4
    up = 2 ** (len(config.vae.ch_mult) - 1)

    if tile_vae and max(dh, dw) > encoder_tile + 2 * ENCODER_PAD:
        enc = tiled_vae_bytes(config, dh, dw, encoder_tile, ENCODER_PAD, dtype, K_ENC, offload_vae)
    else:
        enc = vae_bytes(config, dh * dw, dtype, K_ENC)

    if p.tile_diffusion == "none":
        net = net_bytes(config, batch * lh * lw, dtype)
    else:
        from ccsr.engine.tiling import tile_origins

        tile = min(p.tile_diffusion_size // 8, lh, lw)
        stride = min(p.tile_diffusion_stride // 8, tile)
        batch = min(tile_batch_size, len(tile_origins(lh, lw, tile, stride)))
        net = net_bytes(config, batch * tile * tile, dtype)

    if p.tile_diffusion == "mix":  # decoded one diffusion tile at a time
        dlh = dlw = min(p.tile_diffusion_size // 8, lh, lw)
    else:
        dlh, dlw = lh, lw
    if tile_vae and max(dlh, dlw) > decoder_tile + 2 * DECODER_PAD:
        dec = tiled_vae_bytes(config, dlh * up, dlw * up, decoder_tile * up, DECODER_PAD * up, dtype, K_DEC, offload_vae)
    else:
        dec = vae_bytes(config, dlh * dlw * up * up, dtype, K_DEC)
    return {"encode": enc + image, "sampling": net, "decode": dec + image}


def plan(config: CCSRConfig, dtype: torch.dtype, p: UpscaleParams, width: int, height: int, *,
         tile_batch_size: int, budget: Optional[int], allow_offload: bool = True, batch: int = 1) -> MemoryPlan:
    """The first of these that fits ``budget`` x HEADROOM: the request as asked; tiled VAE at
    the asked tile sizes; VAE tiles halved down to their minimum; tile batch halved down
    to 1 (tiled diffusion only); tiled-VAE tiles parked on the CPU at the asked, then
    halved sizes (when ``allow_offload``). When none fits, the one with the smallest
    estimate (``fits`` False). ``budget`` None (unknown) keeps the request as asked.

    Tiles advance in lockstep (engine/tiled_vae.py), so without parking, tiled VAE
    saves only the transient part of the untiled peak, and small tiles cost their
    margins: parking is what makes large outputs fit a small GPU."""
    asked = dict(tile_vae=p.tile_vae, encoder_tile=p.tile_vae_encoder_size, decoder_tile=p.tile_vae_decoder_size,
                 tile_batch_size=tile_batch_size, offload_vae=False)

    def candidates():
        yield asked
        c = dict(asked, tile_vae=True)
        yield c
        while c["encoder_tile"] > MIN_ENCODER_TILE or c["decoder_tile"] > MIN_DECODER_TILE:
            c = dict(c, encoder_tile=max(MIN_ENCODER_TILE, c["encoder_tile"] // 2),
                     decoder_tile=max(MIN_DECODER_TILE, c["decoder_tile"] // 2))
            yield c
        while c["tile_batch_size"] > 1 and p.tile_diffusion != "none":  # untiled, there is no tile batch
            c = dict(c, tile_batch_size=c["tile_batch_size"] // 2)
            yield c
        if allow_offload:  # parked tiles: small tiles no longer cost their margins' share of held activations
            c = dict(asked, tile_vae=True, tile_batch_size=c["tile_batch_size"], offload_vae=True)
            yield c
            while c["encoder_tile"] > MIN_ENCODER_TILE or c["decoder_tile"] > MIN_DECODER_TILE:
                c = dict(c, encoder_tile=max(MIN_ENCODER_TILE, c["encoder_tile"] // 2),
                         decoder_tile=max(MIN_DECODER_TILE, c["decoder_tile"] // 2))
                yield c

    def make(c: dict, fits: bool) -> MemoryPlan:
        stages = estimate(config, dtype, p, width, height, batch=batch, **c)
        return MemoryPlan(c["tile_vae"], c["encoder_tile"], c["decoder_tile"], c["tile_batch_size"], c["offload_vae"],
                          {k: int(v) for k, v in stages.items()}, int(max(stages.values())), budget, fits, c != asked)

    if budget is None:
        return make(asked, True)
    limit = budget * HEADROOM
    best, best_peak = asked, math.inf
    for c in candidates():
        peak = max(estimate(config, dtype, p, width, height, batch=batch, **c).values())
        if peak <= limit:
            return make(c, True)
        if peak < best_peak:
            best, best_peak = c, peak
    # Nothing fits (often the untiled diffusion itself): the smallest plan gives it its best chance.
    return make(best, False)


