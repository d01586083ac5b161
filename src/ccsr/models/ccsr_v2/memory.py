"""Peak-memory estimate of a CCSR-v2 request, and the plan that makes it fit.

The same approach as CCSR v1's plan (models/ccsr_v1/memory.py): each heavy
stage's activation peak is a coefficient times a unit (pixels x the widest
channel count x bytes per element). v2's stages are the VAE encoder (always
whole, as the official code runs it), UNet + ControlNet at the latent size
(twice the batch in a guided loop) and the VAE decoder at the diffusion size.
When the peak would not fit the device's free memory (or ``memory_budget``),
the plan turns on the tiled decoder, shrinks its tiles, then lowers the
diffusion tile batch, in that order. Tiled diffusion is never switched on
here: it changes the picture, so it stays the user's choice. The
coefficients are the shared engine's (the networks are the same SD-2 blocks as v1's),
which over-estimate v2's peaks on the CPU (benchmarks/bench_v2.py prints
both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from ccsr.engine.memory import K_DEC, K_ENC, K_NET, element_size
from ccsr.engine.tiled_vae import DECODER_PAD
from ccsr.models.ccsr_v2.params import V2Params

MIN_DECODER_TILE = 32


@dataclass(frozen=True)
class MemoryPlan:
    """What a request will run with, and why."""

    tile_vae: bool
    tile_vae_decoder_size: int
    tile_batch_size: int
    stages: dict
    peak: int
    budget: Optional[int]
    fits: bool
    changed: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        gib = 1024**3
        budget = "unknown" if self.budget is None else f"{self.budget / gib:.2f} GiB"
        vae = f"tiled VAE decoder ({self.tile_vae_decoder_size} latent px)" if self.tile_vae else "untiled VAE"
        return (f"memory plan: estimated peak {self.peak / gib:.2f} GiB of {budget} free, {vae}, tile batch "
                f"{self.tile_batch_size}{'' if self.fits else ' (does not fit even so: running the smallest plan)'}")


def _widths(nets: Any) -> tuple[int, int]:
    """(UNet's first width, VAE's first width)."""
    return int(nets.unet.config.block_out_channels[0]), int(nets.vae.config.block_out_channels[0])


def stages(nets: Any, dtype: torch.dtype, p: V2Params, width: int, height: int, *, tile_vae: bool, decoder_tile: int,
           tile_batch: int, batch: int = 1) -> dict[str, int]:
    """Estimated activation bytes of each stage for a diffusion image of ``width`` x ``height``."""
    unet_w, vae_w = _widths(nets)
    e = element_size(dtype)
    guided = 2 if p.guidance_scale > 1 else 1
    lat = (width // 8) * (height // 8)
    if p.tile_diffusion != "none":
        t = p.tile_diffusion_size // 8
        lat = min(lat, t * t) * tile_batch
    encode = K_ENC * width * height * vae_w * e * batch  # one encode per image, guided or not (the engine)
    sampling = K_NET * lat * unet_w * e * guided * batch
    if tile_vae:
        side = (decoder_tile + 2 * DECODER_PAD) * 8
        decode = K_DEC * side * side * vae_w * e + 3.0 * width * height * vae_w * e
    else:
        decode = K_DEC * width * height * vae_w * e
    return {"encode": int(encode), "sampling": int(sampling), "decode": int(decode)}


def plan(nets: Any, dtype: torch.dtype, p: V2Params, width: int, height: int, *, budget: Optional[int],
         tile_batch_size: int, batch: int = 1) -> MemoryPlan:
    """The cheapest change to ``p`` whose estimated peak fits ``budget`` (bytes)."""
    options = [(p.tile_vae, p.tile_vae_decoder_size, tile_batch_size)]
    dec = p.tile_vae_decoder_size if p.tile_vae else 128
    while dec >= MIN_DECODER_TILE:
        options.append((True, dec, tile_batch_size))
        dec //= 2
    tb = tile_batch_size
    while tb > 1:
        tb //= 2
        options.append((True, MIN_DECODER_TILE, tb))
    chosen = options[-1]
    est = {}
    for opt in options:
        est = stages(nets, dtype, p, width, height, tile_vae=opt[0], decoder_tile=opt[1], tile_batch=opt[2], batch=batch)
        if budget is None or max(est.values()) <= budget:
            chosen = opt
            break
    est = stages(nets, dtype, p, width, height, tile_vae=chosen[0], decoder_tile=chosen[1], tile_batch=chosen[2], batch=batch)
    peak = max(est.values())
    return MemoryPlan(chosen[0], chosen[1], chosen[2], est, peak, budget, budget is None or peak <= budget,
                      chosen != options[0])
