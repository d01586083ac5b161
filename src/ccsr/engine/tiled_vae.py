"""Tiled VAE encode/decode with GroupNorm statistics shared across tiles.

Written from the algorithm (not from any existing tiled-VAE code): the input
is cut into tiles, each with a margin of ``pad`` units of its neighbours
(clipped at the image border); every tile runs through the diffusers
Encoder/Decoder layer by layer, in lockstep with the others. At each
GroupNorm the per-group mean and variance are aggregated over all tiles,
pixel-count weighted, using only each tile's interior (its margin excluded),
so they equal the statistics the untiled network would see. Each tile
reports its float32 mean and variance, combined with the parallel-variance
formula: stable without float64, which MPS lacks. Convolutions are local,
so with a margin at least as wide as the receptive field, tiling is exact
up to float rounding (the tests check this on a VAE without attention).

Approximations: the mid-block self-attention is global in the untiled
network; tiled, each tile attends only within itself (margin included), and
margins narrower than the receptive field leave small seams. Measured on a
small random VAE (tests/engine/test_tiled_vae.py) with attention and
margins narrower than the receptive field: mean |tiled - untiled| is about 3%
of the output's standard deviation, the max about 20-35% (the test allows 5%
and 50%). Without attention and with a wide margin: max |diff| < 1e-4.
Trained VAEs have smoother features than random ones; the reference's
algorithm has the same approximations.

Memory: tiles are processed one at a time; between GroupNorms only the tile
activations are held, optionally parked on ``offload`` (e.g. "cpu").

Each tile is a Python generator that yields its partial statistics at every
GroupNorm and receives the aggregated ones back; the driver advances all
tiles in turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generator, Optional

import torch
import torch.nn.functional as F

#: Context around each tile: pixels for the encoder, latent pixels for the decoder.
ENCODER_PAD, DECODER_PAD = 32, 11

Stats = tuple[torch.Tensor, torch.Tensor, int]  # mean [B,G], variance [B,G], count per group (float32)


@dataclass(frozen=True)
class _Tile:
    outer: tuple[int, int, int, int]  # y0, y1, x0, x1 of the padded tile in input units
    inner: tuple[int, int, int, int]  # interior, relative to the padded tile


def _splits(length: int, tile: int, align: int) -> list[int]:
    """Boundaries 0 = b0 < b1 < ... = length, about ``tile`` apart, on multiples of ``align``."""
    n = max(1, math.ceil(length / tile))
    cuts = sorted({round(k * length / n) // align * align for k in range(1, n)} - {0, length})
    return [0, *cuts, length]


def plan_tiles(height: int, width: int, tile: int, pad: int, align: int = 1) -> list[_Tile]:
    """Interiors partition the image; each tile adds up to ``pad`` of margin per side."""
    out = []
    ys, xs = _splits(height, tile, align), _splits(width, tile, align)
    for y0, y1 in zip(ys, ys[1:]):
        for x0, x1 in zip(xs, xs[1:]):
            oy0, oy1 = max(0, y0 - pad), min(height, y1 + pad)
            ox0, ox1 = max(0, x0 - pad), min(width, x1 + pad)
            out.append(_Tile((oy0, oy1, ox0, ox1), (y0 - oy0, y1 - oy0, x0 - ox0, x1 - ox0)))
    return out


class _Ctx:
    """One tile's state. The current activation lives in ``self.x`` (not in
    generator locals) so that parking it while other tiles run really frees
    the device copy; ``scale`` maps input units to the current resolution."""

    def __init__(self, x: torch.Tensor, inner: tuple[int, int, int, int], offload: Optional[torch.device]):
        self.x, self.inner, self.scale = x, inner, 1.0
        self.device, self.offload = x.device, offload

    def park(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.offload is None else t.to(self.offload)

    def unpark(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device)

    def interior(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1, x0, x1 = (int(v * self.scale) for v in self.inner)
        return x[:, :, y0:y1, x0:x1]

    def norm(self, gn: torch.nn.GroupNorm) -> Generator[Stats, tuple, None]:
        """GroupNorm of ``self.x`` with statistics from all tiles (yields this tile's share)."""
        b, g = self.x.shape[0], gn.num_groups
        part = self.interior(self.x).float().unflatten(1, (g, -1))  # a view when x is float32
        var, mean = torch.var_mean(part, dim=(2, 3, 4), correction=0)
        stats = mean, var, part[0, 0].numel()
        del part
        self.x = self.park(self.x)
        mean, var = yield stats
        x = self.unpark(self.x)
        y = (x.float().reshape(b, g, -1) - mean[..., None]) * torch.rsqrt(var[..., None] + gn.eps)
        y = y.reshape(x.shape)
        if gn.affine:
            y = y * gn.weight.float()[None, :, None, None] + gn.bias.float()[None, :, None, None]
        self.x = y.to(x.dtype)


def _resnet(block, ctx: _Ctx):
    if getattr(block, "upsample", None) is not None or getattr(block, "downsample", None) is not None:
        raise NotImplementedError("resampling resnets are not used by AutoencoderKL")
    res = ctx.park(ctx.x)
    yield from ctx.norm(block.norm1)
    ctx.x = block.conv1(block.nonlinearity(ctx.x))
    yield from ctx.norm(block.norm2)
    h = block.conv2(block.dropout(block.nonlinearity(ctx.x)))
    x = ctx.unpark(res)
    del res
    if block.conv_shortcut is not None:
        x = block.conv_shortcut(x)
    ctx.x = (x + h) / block.output_scale_factor


def _attention(attn, ctx: _Ctx):
    """The VAE's spatial self-attention, restricted to this tile."""
    res = ctx.park(ctx.x)
    yield from ctx.norm(attn.group_norm)
    b, c, hh, ww = ctx.x.shape
    seq = ctx.x.reshape(b, c, hh * ww).transpose(1, 2)
    q, k, v = attn.to_q(seq), attn.to_k(seq), attn.to_v(seq)
    d = k.shape[-1] // attn.heads
    q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, attn.heads * d)
    out = attn.to_out[1](attn.to_out[0](out)).transpose(1, 2).reshape(b, c, hh, ww)
    if attn.residual_connection:
        out = out + ctx.unpark(res)
    ctx.x = out / attn.rescale_output_factor


def _mid(mid, ctx: _Ctx):
    yield from _resnet(mid.resnets[0], ctx)
    for attn, res in zip(mid.attentions, mid.resnets[1:]):
        if attn is not None:
            yield from _attention(attn, ctx)
        yield from _resnet(res, ctx)


def _tail(net, ctx: _Ctx):
    yield from ctx.norm(net.conv_norm_out)
    ctx.x = net.conv_out(net.conv_act(ctx.x))


def _encode_tile(vae, ctx: _Ctx):
    enc = vae.encoder
    ctx.x = enc.conv_in(ctx.x)
    for block in enc.down_blocks:
        for res in block.resnets:
            yield from _resnet(res, ctx)
        for down in block.downsamplers or []:
            ctx.x, ctx.scale = down(ctx.x), ctx.scale / 2
    yield from _mid(enc.mid_block, ctx)
    yield from _tail(enc, ctx)
    x = vae.quant_conv(ctx.x) if vae.quant_conv is not None else ctx.x
    return ctx.park(ctx.interior(x[:, : x.shape[1] // 2]).clone())


def _decode_tile(vae, ctx: _Ctx):
    dec = vae.decoder
    if vae.post_quant_conv is not None:
        ctx.x = vae.post_quant_conv(ctx.x)
    ctx.x = dec.conv_in(ctx.x)
    yield from _mid(dec.mid_block, ctx)
    for block in dec.up_blocks:
        for res in block.resnets:
            yield from _resnet(res, ctx)
        for up in block.upsamplers or []:
            ctx.x, ctx.scale = up(ctx.x), ctx.scale * 2
    yield from _tail(dec, ctx)
    return ctx.park(ctx.interior(ctx.x).clone())


def _lockstep(gens: list) -> list:
    """Advance every tile to its next GroupNorm, aggregate, send the result back."""
    replies: list = [None] * len(gens)
    results: list = [None] * len(gens)
    while True:
        stats = []
        for k, g in enumerate(gens):
            if results[k] is not None:
                continue
            try:
                stats.append(g.send(replies[k]))
            except StopIteration as stop:
                results[k] = stop.value
        if not stats:
            return results
        if len(stats) != len(gens):
            raise RuntimeError("tiles diverged: not all reached the same GroupNorm")
        n = sum(t[2] for t in stats)
        mean = sum(m * (k / n) for m, _, k in stats)
        var = sum((v + (m - mean) ** 2) * (k / n) for m, v, k in stats)
        replies = [(mean, var)] * len(gens)


def _run(vae, x: torch.Tensor, tile: int, pad: int, align: int, factor: float, fn, offload) -> torch.Tensor:
    dtype = next(vae.parameters()).dtype
    x = x.to(dtype)
    b, _, h, w = x.shape
    plan = plan_tiles(h, w, tile, pad, align)
    off = None if offload is None else torch.device(offload)
    gens = []
    for t in plan:
        y0, y1, x0, x1 = t.outer
        gens.append(fn(vae, _Ctx(x[:, :, y0:y1, x0:x1], t.inner, off)))
    parts = _lockstep(gens)
    out = None
    for t, p in zip(plan, parts):
        if out is None:
            out = torch.empty(b, p.shape[1], int(h * factor), int(w * factor), dtype=p.dtype, device=x.device)
        y0, y1, x0, x1 = t.outer
        iy0, iy1, ix0, ix1 = t.inner
        out[:, :, int((y0 + iy0) * factor) : int((y0 + iy1) * factor), int((x0 + ix0) * factor) : int((x0 + ix1) * factor)] = p.to(x.device)
    return out


def _factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def tiled_encode(vae, x: torch.Tensor, tile_size: int = 1024, pad: int = ENCODER_PAD, offload=None) -> torch.Tensor:
    """``vae.encode(x).latent_dist.mode()`` (the unscaled mean), tiled when x is large.

    x is [B, 3, H, W] in [-1, 1]; tile_size and pad are in pixels. Inputs no
    larger than tile_size + 2*pad on both sides take the plain path. Tiled
    inputs need H and W divisible by the VAE's downsampling factor (8 for SD).
    """
    f = _factor(vae)
    if max(x.shape[-2:]) <= tile_size + 2 * pad:
        return vae.encode(x.to(next(vae.parameters()).dtype)).latent_dist.mode()
    if x.shape[-2] % f or x.shape[-1] % f:
        raise ValueError(f"tiled_encode needs H and W divisible by {f}, got {tuple(x.shape[-2:])}")
    pad = math.ceil(pad / f) * f
    return _run(vae, x, max(tile_size, f) // f * f, pad, f, 1 / f, _encode_tile, offload)


@torch.no_grad()
def tiled_decode(vae, z: torch.Tensor, tile_size: int = 226, pad: int = DECODER_PAD, offload=None) -> torch.Tensor:
    """``vae.decode(z).sample`` (z unscaled, i.e. already divided by the scale factor),
    tiled when z is large; tile_size and pad are in latent units."""
    if max(z.shape[-2:]) <= tile_size + 2 * pad:
        return vae.decode(z.to(next(vae.parameters()).dtype)).sample
    return _run(vae, z, tile_size, pad, 1, _factor(vae), _decode_tile, offload)
