"""CCSR-v2's request parameters: one definition for the Python API, the CLI,
the HTTP schema and the playground.

Names follow the rest of the service (``steps``, ``scale``,
``color_fix_type``); defaults are the official one-step recipe at scale 4
(the official script's own defaults, with its README's ``upscale 4``). The
two-step recipe is ``steps=6, t_min=0.5, guidance_scale=4.5``.

Cross-field rules come in two halves, one per trust boundary:
:func:`check_params` (no image needed: at submit) and :func:`check_size`
(once the image is decoded). Both reject what the official code would crash
on or silently get wrong (an empty sampling loop, a tile stride that is not a
multiple of 8), naming the field.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ccsr.errors import InvalidParameter

StartPoint = Literal["lr", "noise"]
ColorFix = Literal["adain", "wavelet", "none"]
TileDiffusion = Literal["none", "gaussian"]

#: Largest seed accepted (torch seeds are 64-bit).
MAX_SEED = 2**63 - 1
DEFAULT_PROMPT = "clean, high-resolution, 8k"
DEFAULT_NEGATIVE_PROMPT = "blurry, dotted, noise, raster lines, unclear, lowres, over-smoothed"
#: The timestep the first pass predicts from (the official ``start_steps``).
START_STEP = 999


class V2Params(BaseModel):
    """Everything that changes a CCSR-v2 picture, except the image itself."""

    model_config = ConfigDict(extra="forbid")

    scale: int = Field(4, ge=1, le=8, description="Upscaling factor (a whole number, as the official code takes it).")
    prompt: str = Field(DEFAULT_PROMPT, max_length=1000, description="Text prompt, always encoded (CLIP truncates it to 77 tokens).")
    negative_prompt: str = Field(DEFAULT_NEGATIVE_PROMPT, max_length=1000, description="Negative prompt; used only when guidance_scale > 1.")
    guidance_scale: float = Field(1.0, ge=1.0, le=30.0, description="Classifier-free guidance in the sampling loop when above 1 (the two-step recipe uses 4.5); 1 turns it off.")
    steps: int = Field(1, ge=1, le=1000, description="N, the length of the DDPM schedule (not the number of network passes): 1 is the one-step recipe, 6 with t_min 0.5 the two-step one. Passes = 1 + round(N*t_max) - round(N*t_min).")
    t_max: float = Field(0.6666, gt=0, le=1, description="Re-noise point of the first pass's prediction: timestep index -round(N*t_max) of the schedule.")
    t_min: float = Field(0.0, ge=0, lt=1, description="The loop stops round(N*t_min) timesteps early and returns the last predicted clean latent.")
    start_point: StartPoint = Field("lr", description="lr: start from the input's latent noised to t=999; noise: from pure noise.")
    color_fix_type: ColorFix = Field("adain", description="Colour correction of the result against the resized input.")
    process_size: int = Field(512, ge=64, le=4096, description="An input whose short side is below process_size // scale is first resized up (bicubic) to that size.")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="Seed for reproducibility; random when not given (the result reports it).")
    tile_diffusion: TileDiffusion = Field("none", description="gaussian: the networks run on overlapping latent tiles blended with Gaussian weights (for large outputs).")
    tile_diffusion_size: int = Field(512, ge=64, le=4096, description="Tile size of tiled diffusion, in output pixels (a multiple of 8).")
    tile_diffusion_stride: int = Field(256, ge=8, le=4096, description="Stride of tiled diffusion's tiles, in output pixels (a multiple of 8, at most the tile size).")
    tile_vae: bool = Field(False, description="Decode the latent in tiles (for large outputs); the encoder always runs whole.")
    tile_vae_decoder_size: int = Field(224, ge=16, le=2048, description="Tile size of the tiled VAE decoder, in latent pixels (x8 output pixels).")


def schedule_spans(p: V2Params) -> tuple[int, int]:
    """(kept, dropped): round(N*t_max) and round(N*t_min), Python's round (half
    to even) as the official code computes them."""
    return round(p.steps * p.t_max), round(p.steps * p.t_min)


def passes(p: V2Params) -> int:
    """Network passes of a request: the first pass, then the loop's
    (one pass for N = 1 whatever t_max and t_min say)."""
    if p.steps == 1:
        return 1
    kept, dropped = schedule_spans(p)
    return (1 if p.t_max != 1 else 0) + kept - dropped


def check_params(p: V2Params) -> None:
    """Rules that need no image (at submit). Raises :class:`InvalidParameter`
    naming the field at fault."""
    kept, dropped = schedule_spans(p)
    if p.steps == 1:
        if p.t_max == 1:
            raise InvalidParameter("t_max", "must be below 1 with steps=1 (the one pass is the t_max re-noise pass)")
        if p.t_min > 0:
            raise InvalidParameter("t_min", f"must be 0 with steps=1 (one pass has nothing to stop early), got {p.t_min}")
    else:
        if p.t_min >= p.t_max:
            raise InvalidParameter("t_min", f"must be smaller than t_max ({p.t_max}), got {p.t_min}")
        if kept < 1:
            raise InvalidParameter("t_max", f"round(steps*t_max) = round({p.steps}*{p.t_max}) is 0: no timestep to re-noise to; raise t_max or steps")
        if p.t_min > 0 and dropped < 1:
            raise InvalidParameter("t_min", f"round(steps*t_min) = round({p.steps}*{p.t_min}) is 0: set t_min to 0 or raise it")
        if kept - dropped < 1:
            raise InvalidParameter("steps", f"{p.steps} steps with t_max={p.t_max} and t_min={p.t_min} leave no sampling step "
                                   f"(round(steps*t_max) - round(steps*t_min) = {kept - dropped}); use more steps or a wider t range")
    if p.tile_diffusion != "none":
        for name in ("tile_diffusion_size", "tile_diffusion_stride"):
            if getattr(p, name) % 8:
                raise InvalidParameter(name, f"must be a multiple of 8, got {getattr(p, name)}")
        if p.tile_diffusion_stride > p.tile_diffusion_size:
            raise InvalidParameter("tile_diffusion_stride", f"must not exceed tile_diffusion_size ({p.tile_diffusion_size}), got {p.tile_diffusion_stride}")


def sizes(width: int, height: int, p: V2Params) -> tuple[tuple[int, int], tuple[int, int]]:
    """((diffusion w, h), (output w, h)) for an input size, computed as the
    official script does (without touching pixels): a side below
    process_size // scale scales the image up first, then x scale, then down
    to multiples of 8; the output is the original size x scale."""
    w, h = width, height
    least = p.process_size // p.scale
    if w < least or h < least:
        r = least / min(w, h)
        w, h = round(r * w), round(r * h)
    w, h = w * p.scale, h * p.scale
    return (w // 8 * 8, h // 8 * 8), (width * p.scale, height * p.scale)


def check_size(p: V2Params, width: int, height: int, max_output_pixels: int) -> None:
    """Rules that need the input size: the output and the diffusion image fit
    ``max_output_pixels``. Raises :class:`InvalidParameter` naming the field."""
    if width < 1 or height < 1:
        raise InvalidParameter("image_url", f"image has no pixels ({width}x{height})")
    (dw, dh), (ow, oh) = sizes(width, height, p)
    if ow * oh > max_output_pixels:
        raise InvalidParameter("scale", f"output {ow}x{oh} = {ow * oh} pixels exceeds the limit of {max_output_pixels} "
                               "pixels (setting max_output_pixels); lower the scale or the input size")
    if dw * dh > max_output_pixels:
        raise InvalidParameter("process_size", f"the diffusion image would be {dw}x{dh} = {dw * dh} pixels (an input "
                               f"side below process_size // scale is enlarged first), over the limit of {max_output_pixels} "
                               "(setting max_output_pixels); lower process_size")
    if dw < 8 or dh < 8:
        raise InvalidParameter("image_url", f"image {width}x{height} is too thin: the diffusion image would be {dw}x{dh}")


def check_request(p: V2Params, width: int, height: int, max_output_pixels: int) -> None:
    """Both checks, for callers holding the image from the start."""
    check_params(p)
    check_size(p, width, height, max_output_pixels)


def batch_key(p: V2Params, width: int, height: int) -> tuple:
    """Requests with equal keys share the networks' batch: one input size and
    every field but the seed equal."""
    return (width, height, tuple(sorted(p.model_dump(exclude={"seed"}).items())))

