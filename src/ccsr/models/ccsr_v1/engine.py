"""CCSRUpscaler: the whole request, from a PIL image to a PIL image.

It strings the pure pieces together in the reference's order (preprocess,
condition encode, sampler, decode, colour fix, final resize) and owns the
things they must not: device and dtype choice, the per-request generator,
timings, progress/cancel plumbing and the out-of-memory policy. The condition
latent and the text context are computed once per request (the context once
per loaded checkpoint), never per tile or per step.
"""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
from PIL import Image
from pydantic import ValidationError

from ccsr.errors import InvalidParameter, OutOfMemory
from ccsr.models.ccsr_v1.params import NATIVE_SIZE, UpscaleParams, batch_key, check_request, diffusion_size, min_short_side  # noqa: F401 (re-exported)
from ccsr.engine.gc_pause import paused_gc
from ccsr.engine import allocator, color_fix, tiled_vae, tiling
from ccsr.engine.timing import stage_timer
from ccsr.engine.cpu_kernels import speed_up
from ccsr.models.ccsr_v1 import memory, preprocess, sampler, schedule
from ccsr.engine.device import empty_cache, is_out_of_memory, pick_device, pick_dtype

log = logging.getLogger(__name__)

#: Padding of tiled VAE: 32 pixels around encoder tiles, 11 latent pixels around decoder tiles.
ENCODER_PAD, DECODER_PAD = 32, 11

ProgressFn = Callable[[int, int], None]
LogFn = Callable[[str], None]


@dataclass
class UpscaleResult:
    """The output image, the seed that made it (always reported) and per-stage seconds."""

    image: Image.Image
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    memory_plan: Optional[memory.MemoryPlan] = None  # None when automatic memory planning is off


@dataclass(frozen=True)
class _Options:
    """What the memory plan decided beyond the request's own fields."""

    tile_batch: int
    offload: Optional[str] = None  # where tiled-VAE tiles are parked between GroupNorms


def _as_cancel(cancel: Any) -> Optional[Callable[[], bool]]:
    """Accept a threading/multiprocessing Event, a callable, or None."""
    if cancel is None:
        return None
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel


class CCSRUpscaler:
    """Runs CCSR v1 requests on one loaded model.

    Thread-compatible for concurrent *calls* only in the sense that each call
    has its own generator and state; the model itself is shared and read-only.
    """

    def __init__(self, model, *, tile_batch_size: int = 4, max_output_pixels: int = 4096 * 4096,
                 auto_memory: bool = True, memory_budget: Optional[int] = None, batch_size: int = 1):
        self.model = model
        self.tile_batch_size = max(1, int(tile_batch_size))
        self.max_output_pixels = int(max_output_pixels)
        #: Plan tiled VAE / tile sizes from a peak-memory estimate before each request (models/ccsr_v1/memory.py).
        self.auto_memory = bool(auto_memory)
        #: Bytes a request may use on the device; None: the device's free memory at the time.
        self.memory_budget = memory_budget
        #: Most requests :meth:`run_batch` sends through the network together.
        self.batch_size = max(1, int(batch_size))

    # ------------------------------------------------------------------ loading
    @classmethod
    @paused_gc()
    def from_checkpoint(
        cls,
        path: Optional[Union[str, os.PathLike]] = None,
        config: Optional[Union[str, os.PathLike, Any]] = None,
        device: str = "auto",
        dtype: Union[str, torch.dtype, None] = None,
        compile: str = "off",
        channels_last: Optional[bool] = None,
        tune_malloc: bool = True,
        winograd: bool = True,
        fused_upsample: str = "auto",
        onednn_linear: str = "auto",
        **kwargs: Any,
    ) -> "CCSRUpscaler":
        """Load a .ckpt/.safetensors checkpoint. ``path`` None finds the default
        weights (``CCSR_WEIGHTS`` or the Hugging Face cache); ``config`` is an
        official-format YAML path or a CCSRConfig (default: inferred).
        ``compile`` and ``channels_last``: see :meth:`CCSRModel.optimize`.
        ``tune_malloc``: on a CPU, keep freed activation buffers in the process
        for the next network call (process-wide; see engine/allocator.py).
        ``winograd``: in fp32 on a CPU, large 3x3 convolutions run through
        NNPACK's Winograd kernels (engine/winograd.py; on by default).
        ``fused_upsample``, ``onednn_linear`` (auto, on, off): the other CPU
        kernel choices (engine/cpu_kernels.py)."""
        from ccsr.models.ccsr_v1 import weights
        from ccsr.models.ccsr_v1.networks.model import CCSRModel
        from ccsr.models.ccsr_v1.networks.config import CCSRConfig

        path = weights.resolve(path)
        if config is not None and not isinstance(config, CCSRConfig):
            config = CCSRConfig.from_yaml(Path(config))
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        if tune_malloc and dev.type == "cpu":
            allocator.keep_freed_memory()
        model = CCSRModel.from_file(path, config, device=dev, dtype=dt)
        model.optimize(compile=compile, channels_last=channels_last)
        speed_up((model.unet, model.controlnet, model.vae), model.vae, dev, dt, winograd_on=winograd,
                 fused_upsample=fused_upsample, onednn_linear=onednn_linear)
        return cls(model, **kwargs)

    @classmethod
    def from_pretrained(cls, weights: Optional[Union[str, os.PathLike]] = None, **kwargs: Any) -> "CCSRUpscaler":
        """The official weights from the cache (see ``ccsr weights download``)."""
        return cls.from_checkpoint(weights, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def dtype_name(self) -> str:
        return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    # ------------------------------------------------------------------ running
    def validate(self, params: Union[UpscaleParams, dict, None], width: int, height: int, **overrides: Any) -> UpscaleParams:
        """Parse and check a request for an input of this size; raises InvalidParameter."""
        if isinstance(params, UpscaleParams):
            data = params.model_dump()
        else:
            data = dict(params or {})
        data.update(overrides)
        try:
            p = UpscaleParams(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidParameter(str(err["loc"][0]) if err["loc"] else "params", err["msg"]) from None
        check_request(p, width, height, self.max_output_pixels)
        return p

    def __call__(
        self,
        image: Image.Image,
        params: Union[UpscaleParams, dict, None] = None,
        *,
        progress: Optional[ProgressFn] = None,
        cancel: Any = None,
        log: Optional[LogFn] = None,
        **overrides: Any,
    ) -> UpscaleResult:
        """Upscale one image. Fields may come as ``params`` and/or keyword
        overrides (``scale=4, seed=1``). ``progress(step, total)`` follows the
        network evaluations (steps are reported only there, not also as log
        lines: ``log`` gets the stage messages); ``cancel`` (an Event or a callable) is checked
        before each evaluation and raises :class:`ccsr.errors.Cancelled`."""
        p = self.validate(params, image.width, image.height, **overrides)
        return self.run(image, p, progress=progress, cancel=cancel, log=log)

    def run(
        self,
        image: Image.Image,
        p: UpscaleParams,
        *,
        progress: Optional[ProgressFn] = None,
        cancel: Any = None,
        log: Optional[LogFn] = None,
    ) -> UpscaleResult:
        """Upscale with parameters already checked for this image (the service
        checks them at its two trust boundaries, :func:`ccsr.models.ccsr_v1.params.check_params`
        at submit and :func:`ccsr.models.ccsr_v1.params.check_size` once the image is decoded,
        so the worker does not check a third time). ``__call__`` is the checked
        entry point for everyone else."""
        return self.run_batch([image], [p], progress=progress, cancel=cancel, log=log)[0]

    def run_batch(
        self,
        images: Sequence[Image.Image],
        params: Sequence[UpscaleParams],
        *,
        progress: Optional[ProgressFn] = None,
        cancel: Any = None,
        log: Optional[LogFn] = None,
    ) -> list[UpscaleResult]:
        """Run requests of one input size and the same fields but the seed (checked as
        for :meth:`run`) with their network evaluations batched, ``batch_size`` at a
        time. Item b gets the noise of its own seed, drawn in the order a run by
        itself draws it, so each result equals :meth:`run`'s up to float rounding of
        batched kernels. ``progress`` counts the evaluations of each batch."""
        if not images or len(images) != len(params):
            raise ValueError(f"run_batch needs one parameter set per image, got {len(images)} images and {len(params)}")
        if len({im.size for im in images}) != 1 or len({batch_key(p, 0, 0) for p in params}) != 1:
            raise ValueError("run_batch needs images of one size and parameters that differ only in the seed")
        out: list[UpscaleResult] = []
        for start in range(0, len(images), self.batch_size):
            part = slice(start, start + self.batch_size)
            out.extend(self._run_batch(list(images[part]), list(params[part]), progress, cancel, log))
        return out

    def plan_memory(self, p: UpscaleParams, width: int, height: int, batch: int = 1) -> Optional[memory.MemoryPlan]:
        """The memory plan of a request (None when ``auto_memory`` is off); see models/ccsr_v1/memory.py."""
        config = getattr(self.model, "config", None)
        if not self.auto_memory or config is None:
            return None
        budget = memory.free_memory(self.device)
        if self.memory_budget is not None:
            budget = self.memory_budget if budget is None else min(budget, self.memory_budget)
        return memory.plan(config, self.dtype, p, width, height, tile_batch_size=self.tile_batch_size,
                           budget=budget, allow_offload=self.device.type != "cpu", batch=batch)

    def _run_batch(self, images: list, params: list, progress, cancel, log) -> list[UpscaleResult]:
        seeds = [p.seed if p.seed is not None else secrets.randbelow(2**32) for p in params]
        say = log or (lambda msg: None)
        timings: dict[str, float] = {}
        should_stop = _as_cancel(cancel)
        p = params[0]
        plan = self.plan_memory(p, images[0].width, images[0].height, batch=len(images))
        opts = _Options(self.tile_batch_size)
        if plan is not None:
            if plan.changed or not plan.fits:
                say(plan.describe())
            p = p.model_copy(update=dict(tile_vae=plan.tile_vae, tile_vae_encoder_size=plan.tile_vae_encoder_size,
                                         tile_vae_decoder_size=plan.tile_vae_decoder_size))
            opts = _Options(plan.tile_batch_size, "cpu" if plan.offload_vae else None)
        with _oom_guard(p):
            outs, evaluations = self._run(images, p, seeds, timings, progress, should_stop, say, opts)
        return [UpscaleResult(o, seed, dict(timings), evaluations, plan) for o, seed in zip(outs, seeds)]

    def _run(self, images: list, p: UpscaleParams, seeds: list[int], timings: dict, progress, should_stop, say,
             opts: _Options):
        model, n = self.model, len(images)
        with stage_timer(timings, "preprocess", self.device):
            prepared = [preprocess.prepare(im, p.scale, min_short_side(p)) for im in images]
            lr, target = prepared[0]
            x01 = torch.cat([preprocess.to_tensor01(item[0]) for item in prepared]).to(self.device)
        image = images[0]
        say(f"input {image.width}x{image.height} -> diffusion {lr.width}x{lr.height} -> output {target[0]}x{target[1]}"
            + (f", {n} requests batched" if n > 1 else ""))
        with stage_timer(timings, "condition_encode", self.device):
            cond = torch.cat([self._encode(x01[b : b + 1], p, say, opts) for b in range(n)])
        sched = schedule.make_schedule(p.steps)
        ts = torch.as_tensor(sched.timesteps, device=self.device)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        shape = tuple(cond.shape)
        total = sampler.num_evaluations(sched.num_steps, p.t_max, p.t_min)

        if p.tile_diffusion == "none":
            def eps_fn(x: torch.Tensor, i: int) -> torch.Tensor:
                return model.eps(x, ts[i], cond)
        else:
            tile = min(p.tile_diffusion_size // 8, shape[-1], shape[-2])
            stride = min(p.tile_diffusion_stride // 8, tile)
            weights = tiling.gaussian_weights(tile) if p.tile_diffusion == "gaussian" else tiling.uniform_weights(tile)
            weights = weights.float().to(self.device)  # once, not at every step; cast on the CPU (no float64 on MPS)
            n_tiles = len(tiling.tile_origins(shape[-2], shape[-1], tile, stride))
            say(f"tiled diffusion ({p.tile_diffusion}): {n_tiles} tiles of {tile * 8} px, stride {stride * 8} px, batch {opts.tile_batch}")
            tile_batch = [opts.tile_batch]

            def one_item(x: torch.Tensor, c: torch.Tensor, i: int) -> torch.Tensor:
                def run() -> torch.Tensor:
                    return tiling.tiled_eps(
                        x, c, i, lambda xb, cb, j: model.eps(xb, ts[j], cb), tile, stride, weights,
                        batch_size=tile_batch[0], cancel=should_stop,
                    )
                try:
                    return run()
                except RuntimeError as exc:
                    if tile_batch[0] == 1 or not is_out_of_memory(exc):
                        raise
                # retried outside the except block, so the failed call's tensors are freed first
                empty_cache(self.device)
                say(f"out of memory with {tile_batch[0]} diffusion tiles per network call: retrying one at a time")
                tile_batch[0] = 1
                return run()

            def eps_fn(x: torch.Tensor, i: int) -> torch.Tensor:
                return torch.cat([one_item(x[b : b + 1], cond[b : b + 1], i) for b in range(n)])

        say(f"sampling: {p.steps} steps, {total} network evaluations, seed {', '.join(map(str, seeds))}")
        with stage_timer(timings, "sampling", self.device):
            z = sampler.sample_ccsr(
                eps_fn, sched, shape, p.t_max, p.t_min, generators[0] if n == 1 else generators,
                device=self.device, dtype=torch.float32,
                unused_draw=p.tile_diffusion == "none", progress=progress, cancel=should_stop,
            )
        timings["per_evaluation"] = timings["sampling"] / total
        outs = []
        for b in range(n):
            zb, ref = z[b : b + 1], x01[b : b + 1]
            if p.tile_diffusion == "mix":
                with stage_timer(timings, "decode", self.device):
                    fixed = tiling.mix_decode(
                        zb, ref, tile, stride, lambda zt: self._decode01(zt, p, say, opts),
                        lambda pix, r: color_fix.color_fix(pix, r, p.color_fix_type),
                    )
                timings["color_fix"] = 0.0  # done per tile inside the decode, as the reference does
            else:
                with stage_timer(timings, "decode", self.device):
                    img01 = self._decode01(zb, p, say, opts)
                with stage_timer(timings, "color_fix", self.device):
                    fixed = color_fix.color_fix(img01.float(), ref.float(), p.color_fix_type)
            with stage_timer(timings, "postprocess", self.device):
                outs.append(preprocess.finalize(fixed, target))
        return outs, total

    def _encode(self, x01: torch.Tensor, p: UpscaleParams, say: LogFn, opts: _Options) -> torch.Tensor:
        """Condition latent of the whole image, once (tiled encoder when asked or when memory runs out)."""
        if p.tile_vae:
            return self._tiled_encode(x01, p, opts)
        try:
            return self.model.encode_condition(x01)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            empty_cache(self.device)
            say("out of memory in the VAE encoder: retrying with tiled VAE")
        return self._tiled_encode(x01, p, opts)

    def _tiled_encode(self, x01: torch.Tensor, p: UpscaleParams, opts: _Options) -> torch.Tensor:
        vae = self.model.vae
        x = (x01 * 2 - 1).to(self.device, self.dtype)
        mean = tiled_vae.tiled_encode(vae, x, tile_size=p.tile_vae_encoder_size, pad=ENCODER_PAD, offload=opts.offload)
        return (mean * self.model.scale_factor).float()

    def _decode01(self, z: torch.Tensor, p: UpscaleParams, say: LogFn, opts: _Options) -> torch.Tensor:
        """Latent -> image in about [0, 1] (unclamped), tiled when asked or when memory runs out."""
        if not p.tile_vae:
            try:
                return (self.model.decode(z).float() + 1) / 2
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                empty_cache(self.device)
                say("out of memory in the VAE decoder: retrying with tiled VAE")
        zz = (z / self.model.scale_factor).to(self.device, self.dtype)
        out = tiled_vae.tiled_decode(self.model.vae, zz, tile_size=p.tile_vae_decoder_size, pad=DECODER_PAD, offload=opts.offload)
        return (out.float() + 1) / 2


@contextmanager
def _oom_guard(p: UpscaleParams) -> Iterator[None]:
    """Turn a device OOM that the VAE fallbacks could not absorb into advice."""
    try:
        yield
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        hints = []
        if p.tile_diffusion == "none":
            hints.append("tile_diffusion='gaussian' (or 'mix') with a smaller tile_diffusion_size")
        else:
            hints.append(f"a smaller tile_diffusion_size (now {p.tile_diffusion_size})")
        if not p.tile_vae:
            hints.append("tile_vae=true")
        else:
            hints.append(f"smaller tile_vae_decoder_size / tile_vae_encoder_size (now {p.tile_vae_decoder_size} / {p.tile_vae_encoder_size})")
        hints.append(f"a smaller scale (now {p.scale})")
        raise OutOfMemory("the device ran out of memory; try " + ", or ".join(hints)) from exc
