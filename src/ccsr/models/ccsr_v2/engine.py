"""V2Upscaler: one CCSR-v2 request, from a PIL image to a PIL image.

It strings the pieces together in the official script's order (pre-resize,
VAE posterior, :func:`ccsr.models.ccsr_v2.sampler.sample_v2`, decode, colour
fix, final resize) and owns what they must not: device and dtype, the two
per-request generators, text contexts (cached per prompt), tiling, timings,
progress/cancel plumbing and the out-of-memory policy.

Seeds: a request's seed seeds two private generators, one for the official
code's request generator and one standing in for torch's global stream, so
the server never touches torch's global generator and the numbers equal the
official code's when it is seeded at the start of the request.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from pydantic import ValidationError

from ccsr.engine import allocator, color_fix, tiled_vae, tiling
from ccsr.engine.gc_pause import paused_gc
from ccsr.engine.timing import stage_timer
from ccsr.engine.cpu_kernels import speed_up
from ccsr.engine.device import empty_cache, is_out_of_memory, pick_device, pick_dtype
from ccsr.engine.memory import free_memory
from ccsr.errors import InvalidParameter, OutOfMemory
from ccsr.models.ccsr_v2 import memory, sampler
from ccsr.models.ccsr_v2.params import V2Params, batch_key, check_request, passes, sizes

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
LogFn = Callable[[str], None]


@dataclass
class V2Result:
    """The output image, the seed that made it and per-stage seconds."""

    image: Image.Image
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    passes: int = 0
    memory_plan: Optional[memory.MemoryPlan] = None


def preprocess(image: Image.Image, p: V2Params) -> tuple[Image.Image, tuple[int, int]]:
    """(diffusion-size image, output size), resized as the official script does
    (Pillow bicubic throughout)."""
    img = image.convert("RGB")
    (dw, dh), out = sizes(img.width, img.height, p)
    least = p.process_size // p.scale
    if img.width < least or img.height < least:
        r = least / min(img.size)
        img = img.resize((round(r * img.width), round(r * img.height)), Image.BICUBIC)
    img = img.resize((img.width * p.scale, img.height * p.scale), Image.BICUBIC)
    if img.size != (dw, dh):
        img = img.resize((dw, dh), Image.BICUBIC)
    return img, out


def to_tensor01(img: Image.Image) -> torch.Tensor:
    """[1, 3, H, W] float32 in [0, 1] (uint8 / 255)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float() / 255


def finish(img01: torch.Tensor, ref: Image.Image, kind: str, out_size: tuple[int, int]) -> Image.Image:
    """The official post-processing: round to uint8, colour fix against the
    resized input (its float result truncated to uint8), resize to the output size."""
    x = (img01.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
    if kind != "none":
        fixed = color_fix.color_fix(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255, to_tensor01(ref), kind)
        x = (fixed.clamp(0, 1)[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()
    pic = Image.fromarray(x)
    return pic if pic.size == out_size else pic.resize(out_size, Image.BICUBIC)


class V2Upscaler:
    """Runs CCSR-v2 requests on one set of loaded networks (:class:`V2Networks`)."""

    def __init__(self, nets: Any, *, tile_batch_size: int = 4, max_output_pixels: int = 4096 * 4096,
                 auto_memory: bool = True, memory_budget: Optional[int] = None, batch_size: int = 1):
        self.nets = nets
        self.tile_batch_size = max(1, int(tile_batch_size))
        self.max_output_pixels = int(max_output_pixels)
        self.auto_memory = bool(auto_memory)
        self.memory_budget = memory_budget
        self.batch_size = max(1, int(batch_size))
        self._contexts: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    @paused_gc()
    def from_folder(cls, path: Optional[Union[str, Path]] = None, *, device: str = "auto",
                    dtype: Union[str, torch.dtype, None] = None, allow_pickle: bool = False, tune_malloc: bool = True,
                    release_weights: bool = True, winograd: bool = True, fused_upsample: str = "auto",
                    onednn_linear: str = "auto", **kwargs: Any) -> "V2Upscaler":
        """Load a weights folder (None: ``CCSR_V2_WEIGHTS`` or the download cache).
        ``release_weights``: on a CPU, only the network at work stays resident
        (:mod:`ccsr.engine.resident`). ``winograd``: in fp32 on a CPU, large 3x3
        convolutions run through NNPACK's Winograd kernels (:mod:`ccsr.engine.winograd`;
        on by default). ``fused_upsample``, ``onednn_linear`` (auto, on, off): the
        other CPU kernel choices (:mod:`ccsr.engine.cpu_kernels`)."""
        from ccsr.models.ccsr_v2 import weights
        from ccsr.models.ccsr_v2.networks import V2Networks

        root = weights.resolve(path)
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        if tune_malloc and dev.type == "cpu":
            allocator.keep_freed_memory()
        nets = V2Networks.from_folder(root, dev, dt, allow_pickle=allow_pickle)
        if release_weights and dev.type == "cpu":
            nets.keep_weights_paged()
        speed_up((nets.unet, nets.controlnet, nets.vae, nets.text_encoder), nets.vae, dev, dt, winograd_on=winograd,
                 fused_upsample=fused_upsample, onednn_linear=onednn_linear)
        return cls(nets, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.nets.device

    @property
    def dtype(self) -> torch.dtype:
        return self.nets.dtype

    # ------------------------------------------------------------------ entry points
    def validate(self, params: Union[V2Params, dict, None], width: int, height: int, **overrides: Any) -> V2Params:
        data = params.model_dump() if isinstance(params, V2Params) else dict(params or {})
        data.update(overrides)
        try:
            p = V2Params(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidParameter(str(err["loc"][0]) if err["loc"] else "params", err["msg"]) from None
        check_request(p, width, height, self.max_output_pixels)
        return p

    def __call__(self, image: Image.Image, params: Union[V2Params, dict, None] = None, *,
                 progress: Optional[ProgressFn] = None, cancel: Any = None, log: Optional[LogFn] = None,
                 **overrides: Any) -> V2Result:
        """Upscale one image (fields as ``params`` and/or keywords), checked first."""
        p = self.validate(params, image.width, image.height, **overrides)
        return self.run(image, p, progress=progress, cancel=cancel, log=log)

    def run(self, image: Image.Image, p: V2Params, *, progress: Optional[ProgressFn] = None, cancel: Any = None,
            log: Optional[LogFn] = None) -> V2Result:
        """Upscale with parameters already checked (the service checks at submit and after decoding)."""
        return self.run_batch([image], [p], progress=progress, cancel=cancel, log=log)[0]

    def run_batch(self, images: Sequence[Image.Image], params: Sequence[V2Params], *,
                  progress: Optional[ProgressFn] = None, cancel: Any = None, log: Optional[LogFn] = None) -> list[V2Result]:
        """Requests of one input size and equal fields but the seed, their passes
        batched ``batch_size`` at a time; each item draws from its own seed's
        generators, so it equals a run by itself up to float rounding."""
        if not images or len(images) != len(params):
            raise ValueError(f"run_batch needs one parameter set per image, got {len(images)} and {len(params)}")
        if len({im.size for im in images}) != 1 or len({batch_key(p, 0, 0) for p in params}) != 1:
            raise ValueError("run_batch needs images of one size and parameters that differ only in the seed")
        out: list[V2Result] = []
        for start in range(0, len(images), self.batch_size):
            part = slice(start, start + self.batch_size)
            out.extend(self._run(list(images[part]), list(params[part]), progress, cancel, log))
        return out

    # ------------------------------------------------------------------ the work
    def context(self, prompt: str) -> torch.Tensor:
        """The prompt's text context, cached (a few prompts repeat across requests)."""
        ctx = self._contexts.get(prompt)
        if ctx is None:
            ctx = self.nets.encode_text(prompt)
            self._contexts[prompt] = ctx
            while len(self._contexts) > 16:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(prompt)
        return ctx

    def plan_memory(self, p: V2Params, width: int, height: int, batch: int = 1) -> Optional[memory.MemoryPlan]:
        """The request's memory plan (None when ``auto_memory`` is off)."""
        if not self.auto_memory:
            return None
        budget = free_memory(self.device)
        if self.memory_budget is not None:
            budget = self.memory_budget if budget is None else min(budget, self.memory_budget)
        (dw, dh), _ = sizes(width, height, p)
        return memory.plan(self.nets, self.dtype, p, dw, dh, budget=budget, tile_batch_size=self.tile_batch_size,
                           batch=batch)

    def _run(self, images: list, params: list, progress, cancel, log) -> list[V2Result]:
        say = log or (lambda msg: None)
        should_stop = cancel.is_set if hasattr(cancel, "is_set") else cancel
        seeds = [p.seed if p.seed is not None else secrets.randbelow(2**32) for p in params]
        p = params[0]
        timings: dict[str, float] = {}
        plan = self.plan_memory(p, images[0].width, images[0].height, batch=len(images))
        tile_batch = self.tile_batch_size
        if plan is not None:
            if plan.changed or not plan.fits:
                say(plan.describe())
            p = p.model_copy(update={"tile_vae": plan.tile_vae, "tile_vae_decoder_size": plan.tile_vae_decoder_size})
            tile_batch = plan.tile_batch_size
        with _oom_guard(p):
            outs = self._sample(images, p, seeds, timings, progress, should_stop, say, tile_batch)
        n = passes(p)
        return [V2Result(o, s, dict(timings), n, plan) for o, s in zip(outs, seeds)]

    def _sample(self, images, p: V2Params, seeds, timings, progress, should_stop, say, tile_batch) -> list:
        nets, dev, n = self.nets, self.device, len(images)
        guided = p.guidance_scale > 1.0
        with stage_timer(timings, "preprocess", dev):
            prepared = [preprocess(im, p) for im in images]
            x01 = torch.cat([to_tensor01(img) for img, _ in prepared])
        lr, out_size = prepared[0]
        say(f"input {images[0].width}x{images[0].height} -> diffusion {lr.width}x{lr.height} -> output "
            f"{out_size[0]}x{out_size[1]}" + (f", {n} requests batched" if n > 1 else ""))
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        globs = [torch.Generator().manual_seed(s) for s in seeds]
        with stage_timer(timings, "text", dev):
            pos = self.context(p.prompt)
            neg = self.context(p.negative_prompt) if guided else None
        with stage_timer(timings, "encode", dev):
            samples = [self._posterior_sample(x01[b : b + 1], globs[b], guided) for b in range(n)]
        first_cond = samples[0][0:1] if n == 1 else torch.cat([s[0:1] for s in samples])
        if guided:
            loop_cond = torch.cat([*(s[0:1] for s in samples), *(s[1:2] for s in samples)])
            first_ctx, loop_ctx = neg.expand(n, -1, -1), torch.cat([neg.expand(n, -1, -1), pos.expand(n, -1, -1)])
        else:
            loop_cond, first_ctx, loop_ctx = first_cond, pos.expand(n, -1, -1), pos.expand(n, -1, -1)
        model = self._model(p, first_cond, loop_cond, first_ctx, loop_ctx, should_stop, say, tile_batch)
        total = passes(p)
        say(f"sampling: {total} network pass{'es' if total > 1 else ''} (steps {p.steps}, t_max {p.t_max}, "
            f"t_min {p.t_min}, guidance {p.guidance_scale}), seed {', '.join(map(str, seeds))}")
        with stage_timer(timings, "sampling", dev):
            z = sampler.sample_v2(model, nets.schedule, first_cond, steps=p.steps, t_max=p.t_max, t_min=p.t_min,
                                  guidance_scale=p.guidance_scale, start_point=p.start_point, gens=gens, globs=globs,
                                  progress=progress, cancel=should_stop)
        timings["per_pass"] = timings["sampling"] / max(total, 1)
        outs = []
        for b in range(n):
            with stage_timer(timings, "decode", dev):
                img01 = self._decode(z[b : b + 1], p, say) / 2 + 0.5
            with stage_timer(timings, "postprocess", dev):
                outs.append(finish(img01, prepared[b][0], p.color_fix_type, out_size))
        return outs

    def _posterior_sample(self, x01: torch.Tensor, glob: torch.Generator, guided: bool) -> torch.Tensor:
        """The input's latent, a posterior sample (scaled): two under guidance, as the
        official pipeline encodes its guided batch of two (the same image twice),
        each its own draw from the request's global stream.

        One encode serves both (their posteriors are the same image's). The layout
        is the official one, on which the re-noise draw depends (sampler.py): its
        batch of two comes out of the VAE encoder channels-last (diffusers'
        attention in the mid block hands back a channels-last view, and the
        layers after it keep that layout), a single image plainly contiguous."""
        k = 2 if guided else 1
        mean, std = self.nets.posterior(x01)
        draw = torch.randn((k, *mean.shape[1:]), generator=glob).to(mean.device)
        sample = (mean.expand(k, -1, -1, -1) + std.expand(k, -1, -1, -1) * draw) * self.nets.scale_factor
        return sample.contiguous(memory_format=torch.channels_last if guided else torch.contiguous_format)

    def _model(self, p: V2Params, first_cond, loop_cond, first_ctx, loop_ctx, should_stop, say, tile_batch):
        nets = self.nets

        def plain(x: torch.Tensor, t: int, first: bool) -> torch.Tensor:
            return nets.eps(x, t, first_ctx if first else loop_ctx, first_cond if first else loop_cond)

        if p.tile_diffusion == "none":
            return plain
        h, w = first_cond.shape[-2:]
        tile = min(p.tile_diffusion_size // 8, h, w)
        stride = min(p.tile_diffusion_stride // 8, tile)
        weights = tiling.gaussian_weights(tile).float().to(self.device)
        count = len(tiling.tile_origins(h, w, tile, stride))
        say(f"tiled diffusion: {count} tiles of {tile * 8} px, stride {stride * 8} px, {tile_batch} per network call")

        def tiled(x: torch.Tensor, t: int, first: bool) -> torch.Tensor:
            ctx, cond = (first_ctx, first_cond) if first else (loop_ctx, loop_cond)
            per = x.shape[0]

            def fn(xs: torch.Tensor, cs: torch.Tensor, tt: int) -> torch.Tensor:
                return nets.eps(xs, tt, ctx.repeat(xs.shape[0] // per, 1, 1), cs)

            return tiling.tiled_eps(x, cond, t, fn, tile, stride, weights, batch_size=tile_batch, cancel=should_stop)

        return tiled

    def _decode(self, z: torch.Tensor, p: V2Params, say: LogFn) -> torch.Tensor:
        """Latent -> image in about [-1, 1]; tiled when asked or when memory runs out."""
        if not p.tile_vae:
            try:
                return self.nets.decode(z)
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                empty_cache(self.device)
                say("out of memory in the VAE decoder: retrying with tiled VAE")
        zz = (z / self.nets.scale_factor).to(self.device, self.dtype)
        out = tiled_vae.tiled_decode(self.nets.vae, zz, tile_size=p.tile_vae_decoder_size).float()
        self.nets.done_with(self.nets.vae)
        return out


@contextmanager
def _oom_guard(p: V2Params) -> Iterator[None]:
    """A device OOM the VAE fallback could not absorb becomes advice."""
    try:
        yield
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        hints = ["tile_diffusion='gaussian' with a smaller tile_diffusion_size" if p.tile_diffusion == "none"
                 else f"a smaller tile_diffusion_size (now {p.tile_diffusion_size})"]
        hints.append("tile_vae=true" if not p.tile_vae else f"a smaller tile_vae_decoder_size (now {p.tile_vae_decoder_size})")
        hints.append(f"a smaller scale (now {p.scale})")
        raise OutOfMemory("the device ran out of memory; try " + ", or ".join(hints)) from exc
